"""``web/vendor.js`` is what ``services/gateway/web-src`` builds from its lock file, byte for
byte: the checked-in bundle holds the locked libraries and nothing else.

Installs the locked packages from the npm registry into a temporary folder and rebuilds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from parley_gateway.page import WEB

SOURCE = Path(__file__).resolve().parents[1] / "web-src"
FILES = ("package.json", "package-lock.json", "vendor.js", "build.mjs")


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "Node.js and npm rebuild the page's vendor.js"
        if os.environ.get("CI"):
            pytest.fail(reason + ": install them (Node.js 20)")
        pytest.skip(reason)
    return node, npm


def test_vendor_js_is_the_build_of_the_locked_packages(tmp_path: Path) -> None:
    node, npm = _tools()
    for name in FILES:
        shutil.copy(SOURCE / name, tmp_path / name)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = tmp_path / "vendor.out.js"
    subprocess.run(
        [node, "build.mjs", str(out)], cwd=tmp_path, check=True, capture_output=True, timeout=120
    )
    assert out.read_bytes() == (WEB / "vendor.js").read_bytes(), (
        "web/vendor.js differs from its build: run `npm ci && npm run build` in "
        "services/gateway/web-src and commit the result"
    )


def test_the_lock_pins_every_library_the_bundle_names() -> None:
    declared = json.loads((SOURCE / "package.json").read_text())["devDependencies"]
    locked = json.loads((SOURCE / "package-lock.json").read_text())["packages"]
    for name, version in declared.items():
        assert locked[f"node_modules/{name}"]["version"] == version, name
        assert locked[f"node_modules/{name}"]["integrity"].startswith("sha512-"), name
    bundle = (WEB / "vendor.js").read_text()
    assert f"DOMPurify {declared['dompurify']}" in bundle
