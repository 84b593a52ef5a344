"""Command line: ``llm-proxy --config config.yaml [--host H] [--port P] [--allow-remote]
[--workers N] [--check] [--version]``, plus ``llm-proxy keys ...`` and ``llm-proxy spend ...``
(see proxy/auth/cli.py).

The entry point is the one place that reads the process environment besides config.py:
systemd's ``NOTIFY_SOCKET`` and socket activation (``LISTEN_FDS``/``LISTEN_PID``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

from . import config as config_mod
from .app import make_app
from .heap import settle_heap
from .listeners import Plan, activation_sockets
from .sdnotify import Notifier
from .service import Service, Startup, loop_factory, run, serve
from .supervisor import Launch, Supervisor
from .version import __version__

AUTH_COMMANDS = ("keys", "spend")
"""Subcommands handled by proxy/auth/cli.py; anything else is the server's command line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llm-proxy", description="Transparent LLM gateway")
    parser.add_argument("--config", "-c", default="config.yaml", help="YAML config file")
    parser.add_argument("--host", help="listen host (overrides the file)")
    parser.add_argument("--port", type=int, help="listen port (overrides the file)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a listen host other than loopback (as listen.allow_remote: true)",
    )
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
    parser.add_argument("--version", action="version", version=f"llm-proxy {__version__}")
    return parser.parse_args(argv)


_FLAGS = {
    "listen.host": ("--host", "host"),
    "listen.port": ("--port", "port"),
    "listen.allow_remote": ("--allow-remote", "allow_remote"),
    "workers": ("--workers", "workers"),
}
"""Config keys the command line overrides: key path -> (flag, argparse attribute)."""


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The file plus the command line's overrides; also what a reload re-runs."""
    overrides: dict[str, Any] = {}
    flags = []
    for key, (flag, attr) in _FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            section, _, name = key.rpartition(".")
            if section:
                overrides.setdefault(section, {})[name] = value
            else:
                overrides[name] = value
            flags.append((key, flag))
    try:
        return config_mod.load(args.config, overrides=overrides)
    except config_mod.ConfigError as exc:
        message = str(exc)
        for key, flag in flags:  # the value came from the command line: say so
            if message.startswith(key + ":"):
                raise config_mod.ConfigError(f"{flag}: {message}") from None
        raise


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
        return EXIT_CONFIG
    if args.check:
        print(f"llm-proxy: {args.config} is valid ({len(cfg.routes)} routes)")
        return 0
    try:
        loop_factory(args.loop)
    except ImportError as exc:
        print(f"llm-proxy: --loop {args.loop}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    launch = Launch(
        loader=functools.partial(load_config, args),
        notifier=Notifier.from_env(os.environ),
        inherited=activation_sockets(os.environ, os.getpid()),
        loop=args.loop,
        startup=Startup(config_path=os.path.abspath(args.config)),
    )
    try:
        if cfg.workers > 1:
            return Supervisor(cfg, launch).run()
        service = Service(
            plan=Plan.from_config(cfg.listen, launch.inherited),
            notifier=launch.notifier,
            loader=launch.loader,
            startup=launch.startup,
        )
        app = make_app(cfg)
        settle_heap()
        run(serve(app, cfg, service=service), args.loop)
    except OSError as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 1
    return 0


EXIT_CONFIG = 2
"""The exit status for a config the proxy refuses; the systemd unit does not restart on it
(``RestartPreventExitStatus=2``): a bad file stays bad until someone edits it."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
