"""Pack the greeter into a zipapp, reproducibly: the same sources give the
same bytes (sorted entries, fixed times and modes), so the same digest.

Usage: python3 pack.py dist/greeter.pyz   (then: python3 dist/greeter.pyz serve)
"""

import sys
import zipfile
from pathlib import Path

MAIN = b"from greeter.__main__ import main\n\nmain()\n"


def add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def pack(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        add(archive, "__main__.py", MAIN)
        for path in sorted(Path("greeter").rglob("*.py")):
            add(archive, path.as_posix(), path.read_bytes())


if __name__ == "__main__":
    pack(Path(sys.argv[1]))
