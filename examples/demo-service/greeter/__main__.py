"""``python3 -m greeter NAME`` greets; ``python3 -m greeter serve`` serves HTTP."""

import sys

from greeter import greet
from greeter.server import serve


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        serve()
    else:
        print(greet(" ".join(args)))


if __name__ == "__main__":
    main()
