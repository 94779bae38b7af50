"""``promtool check rules`` accepts the rules, and ``promtool test rules`` shows each alert
firing on its synthetic series and silent on healthy ones (deploy/observability/tests)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from .queries import ALERTS, OBSERVABILITY, RULES


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (scripts/system-packages.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS) + 9} rules found" in checked.stdout


def test_each_alert_fires_on_its_series_and_not_on_healthy_ones() -> None:
    tests = sorted((OBSERVABILITY / "tests").glob("*.yaml"))
    assert {path.stem for path in tests} == {alert.name for alert in ALERTS}
    for path in tests:
        cases = yaml.safe_load(path.read_text())["tests"]
        # One case where it fires, one where it stays silent.
        expected = [case["alert_rule_test"][0]["exp_alerts"] for case in cases]
        assert [bool(alerts) for alerts in expected] == [True, False], path.name
    tested = subprocess.run(
        [promtool(), "test", "rules", *(path.name for path in tests)],
        cwd=OBSERVABILITY / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(tests)
