"""Replay one case by hand.

``python -m tests.fuzzing SEED INDEX`` writes the case's raw bytes to stdout;
``python -m tests.fuzzing SEED INDEX HOST:PORT`` sends it to a proxy started with
:func:`tests.fuzzing.fuzz_routes` and prints what came back. The case's description goes to
stderr either way.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from . import make_case
from .client import roundtrip

USAGE = "usage: python -m tests.fuzzing SEED INDEX [HOST:PORT]"


def main(argv: Sequence[str]) -> int:
    if len(argv) not in (2, 3) or not all(arg.isdigit() for arg in argv[:2]):
        print(USAGE, file=sys.stderr)
        return 2
    case = make_case(int(argv[0]), int(argv[1]))
    print(case.describe(), file=sys.stderr)
    if len(argv) == 2:
        sys.stdout.buffer.write(case.data)
        return 0
    host, _, port = argv[2].rpartition(":")
    reply = asyncio.run(roundtrip(host, int(port), case.data, 30.0, case.ending))
    print(reply.outcome.value, reply.detail)
    if reply.response is not None:
        print(reply.response.status)
        for name, value in reply.response.headers:
            print(f"{name}: {value}")
        print()
    sys.stdout.buffer.write(reply.response.body if reply.response else reply.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
