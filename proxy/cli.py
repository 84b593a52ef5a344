"""Command line: ``llm-proxy --config config.yaml [--host H] [--port P] [--workers N] [--check]``,
plus ``llm-proxy keys ...`` and ``llm-proxy spend ...`` (see proxy/auth/cli.py).

The entry point is the one place that reads the process environment besides config.py:
systemd's ``NOTIFY_SOCKET`` and socket activation (``LISTEN_FDS``/``LISTEN_PID``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

from . import config as config_mod
from .app import make_app
from .listeners import Plan, activation_sockets
from .sdnotify import Notifier
from .service import Service, loop_factory, run, serve
from .supervisor import Launch, Supervisor

AUTH_COMMANDS = ("keys", "spend")
"""Subcommands handled by proxy/auth/cli.py; anything else is the server's command line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llm-proxy", description="Transparent LLM gateway")
    parser.add_argument("--config", "-c", default="config.yaml", help="YAML config file")
    parser.add_argument("--host", help="listen host (overrides the file)")
    parser.add_argument("--port", type=int, help="listen port (overrides the file)")
    parser.add_argument(
        "--workers", type=int, help="worker processes sharing the port (overrides the file)"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop when installed (auto), or the one named",
    )
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The file plus the command line's overrides; also what a reload re-runs."""
    cfg = config_mod.load(args.config)
    listen = cfg.listen
    if args.host is not None:
        listen = dataclasses.replace(listen, host=args.host)
    if args.port is not None:
        listen = dataclasses.replace(listen, port=args.port)
    try:
        workers = cfg.workers if args.workers is None else args.workers
        return dataclasses.replace(cfg, listen=listen, workers=workers)
    except config_mod.ConfigError as exc:
        raise config_mod.ConfigError(f"--workers: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in AUTH_COMMANDS:  # llm-proxy keys ... / llm-proxy spend ...
        from .auth.cli import main as auth_main

        return auth_main(argv)
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except config_mod.ConfigError as exc:
        print(f"llm-proxy: config error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"llm-proxy: {args.config} is valid ({len(cfg.routes)} routes)")
        return 0
    try:
        loop_factory(args.loop)
    except ImportError as exc:
        print(f"llm-proxy: --loop {args.loop}: {exc}", file=sys.stderr)
        return 2
    launch = Launch(
        loader=functools.partial(load_config, args),
        notifier=Notifier.from_env(os.environ),
        inherited=activation_sockets(os.environ, os.getpid()),
        loop=args.loop,
    )
    try:
        if cfg.workers > 1:
            return Supervisor(cfg, launch).run()
        service = Service(
            plan=Plan.from_config(cfg.listen, launch.inherited),
            notifier=launch.notifier,
            loader=launch.loader,
        )
        run(serve(make_app(cfg), cfg, service=service), args.loop)
    except OSError as exc:
        print(f"llm-proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
