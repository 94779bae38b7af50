"""Generate Python code and type stubs from proto/ into libs/proto/src.

python scripts/proto.py           write the generated code
python scripts/proto.py --check   fail if the committed code differs from a fresh build
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "libs" / "proto" / "src"
PACKAGE = "parley"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Make every generated directory a regular package so `parley.x.v1` imports resolve.
    for directory in [out / PACKAGE, *(p for p in (out / PACKAGE).rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (out / PACKAGE / "py.typed").touch()


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    found = [f"only in {cmp.left}: {n}" for n in cmp.left_only]
    found += [f"only in {cmp.right}: {n}" for n in cmp.right_only]
    found += [f"differs: {Path(cmp.left) / n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        found += differences(a / sub, b / sub)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = differences(Path(tmp) / PACKAGE, OUT_DIR / PACKAGE)
        if stale:
            print("generated gRPC code is stale; run `make proto`:", *stale, sep="\n  ")
            return 1
        print("generated gRPC code is up to date")
        return 0
    shutil.rmtree(OUT_DIR / PACKAGE, ignore_errors=True)
    generate(OUT_DIR)
    print(f"generated {OUT_DIR / PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
