"""``python -m tests.fuzzing SEED INDEX``: one case's raw bytes on stdout, its description on
stderr, to replay a violation by hand (``| nc -q 5 127.0.0.1 PORT``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import make_case


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or not all(arg.isdigit() for arg in argv):
        print("usage: python -m tests.fuzzing SEED INDEX", file=sys.stderr)
        return 2
    case = make_case(int(argv[0]), int(argv[1]))
    print(case.describe(), file=sys.stderr)
    sys.stdout.buffer.write(case.data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
