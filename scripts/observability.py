"""Build Parley's dashboards, Prometheus rules and alert unit tests from deploy/observability/src.

python scripts/observability.py           write them (deploy/observability, the umbrella chart)
python scripts/observability.py --check   fail if a committed file differs from a fresh build
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from parley_observability.build import outputs

ROOT = Path(__file__).resolve().parent.parent

# Folders that hold nothing but built files: anything else in them is left over.
BUILT_FOLDERS = (
    PurePosixPath("deploy/observability/grafana/dashboards"),
    PurePosixPath("deploy/observability/prometheus"),
    PurePosixPath("deploy/observability/tests"),
    PurePosixPath("deploy/helm/parley/files"),
)


def stale(wanted: dict[PurePosixPath, str]) -> list[str]:
    """What differs between the working tree and ``wanted``."""
    found = []
    for path, text in wanted.items():
        on_disk = ROOT / path
        if not on_disk.exists():
            found.append(f"missing: {path}")
        elif on_disk.read_text() != text:
            found.append(f"differs: {path}")
    for folder in BUILT_FOLDERS:
        for file in sorted((ROOT / folder).rglob("*")):
            relative = PurePosixPath(file.relative_to(ROOT).as_posix())
            if file.is_file() and relative not in wanted:
                found.append(f"not built: {relative}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    wanted = outputs()
    differences = stale(wanted)
    if args.check:
        if differences:
            print(
                "built observability files are stale; run `python scripts/observability.py`:",
                *differences,
                sep="\n  ",
            )
            return 1
        print("built observability files are up to date")
        return 0
    for folder in BUILT_FOLDERS:
        for file in (ROOT / folder).rglob("*"):
            if file.is_file() and PurePosixPath(file.relative_to(ROOT).as_posix()) not in wanted:
                file.unlink()
    for path, text in wanted.items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
    print(f"wrote {len(wanted)} files ({len(differences)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
