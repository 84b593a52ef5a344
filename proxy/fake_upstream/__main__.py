"""``python -m proxy.fake_upstream [--host H] [--port P] [--rpm N --tpm N ...]``: run the
fake standalone.

The first stdout line is ``listening on http://HOST:PORT`` (the bound port, so ``--port 0``
works for scripts). Faults are scripted over ``POST /_fake/faults``, context windows over
``POST /_fake/context`` or ``--context-window MODEL=TOKENS``, rate limits over
``POST /_fake/limits`` (or set at start with ``--rpm``/``--tpm``/...; counts: ``GET``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from .app import FakeUpstream
from .caching import PromptCache
from .limits import Limits
from .windows import FLAVOURS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.fake_upstream",
        description="Deterministic fake OpenAI/Anthropic server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument(
        "--chunks",
        type=int,
        default=5,
        help="content chunks per response (x-fake-chunks overrides)",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="pause between SSE events (x-fake-chunk-delay-ms overrides)",
    )
    parser.add_argument("--access-log", action="store_true", help="log each request to stderr")
    parser.add_argument(
        "--context-window",
        action="append",
        default=[],
        type=_window,
        metavar="MODEL=TOKENS",
        help="refuse requests for MODEL that do not fit TOKENS (repeatable)",
    )
    parser.add_argument(
        "--context-flavour",
        choices=FLAVOURS,
        default="openai",
        help="error shape of an over-window request on OpenAI paths (llama: llama.cpp)",
    )
    parser.add_argument(
        "--cache-block-tokens", type=int, default=1024, help="prompt cache block size"
    )
    limits = parser.add_argument_group("rate limits (per credential and model; off by default)")
    limits.add_argument("--rpm", type=float, help="requests per window")
    limits.add_argument("--tpm", type=float, help="tokens per window (Anthropic: combined)")
    limits.add_argument("--input-tpm", type=float, help="Anthropic input tokens per window")
    limits.add_argument("--output-tpm", type=float, help="Anthropic output tokens per window")
    limits.add_argument("--limit-window-s", type=float, default=60.0, help="refill window")
    limits.add_argument("--skew-s", type=float, default=0.0, help="offset of the fake's clock")
    limits.add_argument(
        "--header-lag-ms", type=float, default=0.0, help="headers report the state this old"
    )
    return parser.parse_args(argv)


def _window(raw: str) -> tuple[str, int]:
    model, sep, tokens = raw.rpartition("=")
    if not sep or not model or not tokens.isdigit() or int(tokens) <= 0:
        raise argparse.ArgumentTypeError(f"expected MODEL=TOKENS, got {raw!r}")
    return model, int(tokens)


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        rpm=args.rpm,
        tpm=args.tpm,
        input_tpm=args.input_tpm,
        output_tpm=args.output_tpm,
        window_s=args.limit_window_s,
        skew_s=args.skew_s,
        header_lag_s=args.header_lag_ms / 1000,
    )


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM; announce the bound URL first."""
    fake = FakeUpstream(
        chunks=args.chunks,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        context_windows=dict(args.context_window),
        context_flavour=args.context_flavour,
        prompt_cache=PromptCache(block_tokens=args.cache_block_tokens),
        limits=limits_from(args),
    )
    runner = web.AppRunner(
        fake.make_app(),
        handler_cancellation=True,
        access_log=web.access_logger if args.access_log else None,
    )
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed: the fake must not be the bottleneck in benchmarks."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.access_log:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
