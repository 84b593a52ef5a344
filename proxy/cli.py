"""Command line: ``llm-proxy --config config.yaml [--host H] [--port P] [--check]``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from . import config as config_mod
from .app import make_app
from .service import serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llm-proxy", description="Transparent LLM gateway")
    parser.add_argument("--config", "-c", default="config.yaml", help="YAML config file")
    parser.add_argument("--host", help="listen host (overrides the file)")
    parser.add_argument("--port", type=int, help="listen port (overrides the file)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    listen = cfg.listen
    if args.host is not None:
        listen = dataclasses.replace(listen, host=args.host)
    if args.port is not None:
        listen = dataclasses.replace(listen, port=args.port)
    return dataclasses.replace(cfg, listen=listen)


def main(argv: list[str] | None = None) -> int:
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
        asyncio.run(serve(make_app(cfg), cfg))
    except OSError as exc:
        print(f"llm-proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
