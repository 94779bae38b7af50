"""deploy/terraform checked without a cloud, part three: Terraform's own checks where its binary
is here (`fmt`; the environments' files against the variables' validations; `validate` of each
configuration whose providers a local mirror holds), and checkov, with nothing failed but
skips written down with their reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .charts_render import REPO, uv
from .test_terraform import (
    CONFIGS,
    ENVIRONMENTS,
    TERRAFORM,
    TERRAFORM_BIN,
    blocks,
    config_id,
    configs,
    console,
    needs_terraform,
    quiet_environment,
    required_providers,
)


@needs_terraform
def test_terraform_fmt_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(TERRAFORM_BIN), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        env=quiet_environment(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_terraform
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_files_pass_every_variable_validation(environment: str, tmp_path: Path) -> None:
    """Terraform checks the root's variables (types, validations) against the file."""
    shutil.copy(TERRAFORM / "variables.tf", tmp_path)
    var_file = TERRAFORM / "environments" / f"{environment}.tfvars"
    assert console(tmp_path, "var.environment", f"-var-file={var_file}") == environment


HASHICORP = Path("registry.terraform.io") / "hashicorp"


def plugin_mirror() -> Path | None:
    """A local provider mirror (registry.terraform.io/hashicorp/<name>/<version>/...), if any."""
    candidates = [
        os.environ.get("TF_PLUGIN_MIRROR", ""),
        str(Path.home() / ".terraform.d" / "plugins"),
        "/usr/local/share/terraform/plugins",
        "/usr/share/terraform/plugins",
        "/opt/tf-plugins",  # where the CI machine's image keeps one
    ]
    for candidate in filter(None, candidates):
        if (Path(candidate) / HASHICORP).is_dir():
            return Path(candidate)
    return None


def missing_providers(config: Path, mirror: Path | None) -> set[str]:
    needed = set(required_providers(config))
    if mirror is None:
        return needed
    return {name for name in needed if not (mirror / HASHICORP / name).is_dir()}


def validate(config: Path, mirror: Path, scratch: Path) -> str:
    """`terraform init` and `validate` on a copy of one configuration; returns their errors."""
    work = scratch / config_id(config).replace("/", "-")
    shutil.copytree(config, work / "config")
    rc = f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n'
    environment = {**quiet_environment(work, rc), "TF_DATA_DIR": str(work / "data")}
    for command in (["init", "-backend=false", "-input=false"], ["validate"]):
        result = subprocess.run(
            [str(TERRAFORM_BIN), *command, "-no-color"],
            cwd=work / "config",
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
        )
        if result.returncode != 0:
            return result.stdout + result.stderr
    return ""


@pytest.fixture(scope="module")
def validations(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, str]:
    """The errors of every configuration Terraform can validate here, validated at once."""
    mirror = plugin_mirror()
    ready = [
        config
        for config in CONFIGS
        if mirror and not missing_providers(config, mirror) and not blocks(config, "module")
    ]
    if mirror is None or not ready:
        return {}
    scratch = tmp_path_factory.mktemp("terraform-validate")
    with ThreadPoolExecutor(max_workers=len(ready)) as pool:
        errors = pool.map(lambda config: validate(config, mirror, scratch), ready)
        return dict(zip(ready, errors, strict=True))


@needs_terraform
@configs
def test_terraform_validate(config: Path, validations: dict[Path, str]) -> None:
    if config not in validations:
        missing = missing_providers(config, plugin_mirror())
        if missing:
            pytest.skip(f"providers {sorted(missing)} cannot be installed offline here")
        pytest.skip("calls modules: they are validated one by one")
    assert not validations[config], validations[config]


# Policy


@pytest.fixture(scope="module")
def checkov() -> dict[str, Any]:
    result = subprocess.run(
        [
            *(uv(), "run", "--project", "deploy/checkov", "--frozen", "checkov"),
            *("-d", "deploy/terraform", "--framework", "terraform"),
            *("--compact", "--skip-download", "--output", "json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_checkov_finds_nothing_but_written_down_skips(checkov: dict[str, Any]) -> None:
    assert checkov["summary"]["parsing_errors"] == 0
    failed = [
        (check["check_id"], check["resource"], check["file_path"])
        for check in checkov["results"]["failed_checks"]
    ]
    assert not failed
    for check in checkov["results"]["skipped_checks"]:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 30, f"{check['check_id']} on {check['resource']}: no reason given"


def test_checkov_scanned_every_configuration(checkov: dict[str, Any]) -> None:
    results = checkov["results"]
    scanned = {Path(check["file_path"].lstrip("/")).parent for check in results["passed_checks"]}
    assert scanned >= {config.relative_to(TERRAFORM) for config in CONFIGS}
