"""Regenerate the Python gRPC code in clients/src/conveyor/v1 from proto/.

Usage: python scripts/gen_proto.py [--check]

With --check, generate into a temporary folder and exit 1 if the committed
files differ (tests/test_generated_code.py runs this).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "clients" / "src"
PACKAGE_DIR = Path("conveyor") / "v1"


def generate(out_root: Path) -> list[Path]:
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir() if "_pb2" in p.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    committed_dir = OUT_ROOT / PACKAGE_DIR
    if not args.check:
        for old in committed_dir.glob("*_pb2*.py*"):
            old.unlink()
        for path in generate(OUT_ROOT):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        fresh_names = {p.name for p in fresh}
        committed_names = {p.name for p in committed_dir.glob("*_pb2*.py*")}
        stale = sorted(fresh_names ^ committed_names)
        stale += [
            p.name
            for p in fresh
            if p.name in committed_names and not filecmp.cmp(p, committed_dir / p.name, False)
        ]
        if stale:
            print("generated code is stale; run `make proto`: " + ", ".join(sorted(stale)))
            return 1
        shutil.rmtree(tmp, ignore_errors=True)
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
