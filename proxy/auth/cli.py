"""``llm-proxy keys ...`` and ``llm-proxy spend ...``: the same store as the server, via --config.

``keys create`` writes the secret alone on stdout (``KEY=$(llm-proxy keys create ...)`` works)
and everything else on stderr; it is never shown again. ``--json`` prints machine-readable JSON
on stdout instead. Exit status: 0 done, 1 store problem (unreachable, no such key, name taken),
2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from .. import config as config_mod
from .keys import Budget, KeyLimits, KeyRecord, parse_budget
from .manage import KeyManager, NewKey, SpendReport, key_view
from .runtime import make_store
from .store import SpendGroup, StoreError
from .timespec import parse_expires, parse_since

__all__ = ["main"]


def budget(text: str) -> Budget:
    """argparse names the type in its error: 'invalid budget value'."""
    return parse_budget(text)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default="config.yaml", help="YAML config file")
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser = argparse.ArgumentParser(prog="llm-proxy", description="Client keys and spend")
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="create, list, rotate, revoke client keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[common], help="a new key (secret shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="input + output tokens per minute")
    create.add_argument("--max-concurrent", type=int, help="requests in flight at once")
    create.add_argument("--budget", type=budget, help="USD per period: 50/month, 5/day")
    create.add_argument(
        "--routes",
        action="extend",
        nargs="+",
        default=[],
        help="route prefixes it may use (default: all)",
    )
    create.add_argument(
        "--models",
        action="extend",
        nargs="+",
        default=[],
        help="model glob patterns it may use, e.g. 'gpt-4o*' (default: all)",
    )
    create.add_argument("--expires", help="30d from now, or a date: 2026-12-31")
    listing = actions.add_parser("list", parents=[common], help="keys and their limits")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    for name, text in (("rotate", "a new secret, same key"), ("revoke", "stop a key")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("key", help="key id or name")
    spend = commands.add_parser("spend", parents=[common], help="spend from the ledger")
    spend.add_argument("--by", choices=[g.value for g in SpendGroup], default="key")
    spend.add_argument("--since", default="7d", help="7d, 12h, or a date (default 7d)")
    spend.add_argument("--key", help="only this key (id or name)")
    return parser


def _split(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(part.strip() for v in values for part in v.split(",") if part.strip())


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"llm-proxy: config error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, cfg))
    except ValueError as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"llm-proxy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    store = make_store(cfg.store)
    await store.open()
    try:
        keys = KeyManager(store)
        if args.command == "spend":
            since = parse_since(args.since, time.time())
            _print_spend(await keys.spend(SpendGroup(args.by), since, args.key), args.json)
        elif args.action == "create":
            _print_new(await _create(keys, args), args.json)
        elif args.action == "rotate":
            _print_new(await keys.rotate(args.key), args.json)
        elif args.action == "revoke":
            record = await keys.revoke(args.key)
            _out({"key": key_view(record)}) if args.json else _say(f"revoked {_label(record)}")
        else:
            records = [r for r in await keys.list() if args.all or r.revoked is None]
            _print_keys(records, args.json)
    finally:
        await store.close()
    return 0


async def _create(keys: KeyManager, args: argparse.Namespace) -> NewKey:
    limits = KeyLimits(
        rpm=args.rpm, tpm=args.tpm, max_concurrent=args.max_concurrent, budget=args.budget
    )
    expires = parse_expires(args.expires, time.time()) if args.expires else None
    return await keys.create(
        args.name, limits, routes=_split(args.routes), models=_split(args.models), expires=expires
    )


def _out(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _label(record: KeyRecord) -> str:
    return f"{record.id} ({record.name})"


def _print_new(made: NewKey, as_json: bool) -> None:
    if as_json:
        _out({"key": key_view(made.record), "secret": made.secret})
        return
    _say(f"key {_label(made.record)}: {_limits_text(made.record)}")
    _say("its secret is printed below, once; only a hash of it is stored")
    print(made.secret)


def _limits_text(record: KeyRecord) -> str:
    limits = record.limits
    parts = [
        f"{name} {value}"
        for name, value in (
            ("rpm", limits.rpm),
            ("tpm", limits.tpm),
            ("concurrent", limits.max_concurrent),
            ("budget", limits.budget),
            ("routes", ",".join(record.routes) or None),
            ("models", ",".join(record.models) or None),
        )
        if value is not None
    ]
    return ", ".join(parts) or "no limits"


def _date(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _status(record: KeyRecord, now: float) -> str:
    if record.revoked is not None:
        return "revoked"
    return "active" if record.is_active(now) else "expired"


def _print_keys(records: list[KeyRecord], as_json: bool) -> None:
    if as_json:
        _out({"keys": [key_view(r) for r in records]})
        return
    now = time.time()
    rows = [("ID", "NAME", "SECRET", "STATUS", "CREATED", "EXPIRES", "LIMITS")]
    rows += [
        (
            r.id,
            r.name,
            r.secret_hint + "...",
            _status(r, now),
            _date(r.created),
            _date(r.expires),
            _limits_text(r),
        )
        for r in records
    ]
    _table(rows)


def _print_spend(report: SpendReport, as_json: bool) -> None:
    view = report.view()
    if as_json:
        _out(view)
        return
    by = report.by.value
    rows = [(by.upper(), "REQUESTS", "INPUT", "CACHED", "OUTPUT", "COST_USD")]
    for row in view["rows"]:
        label = row[by] if row.get("name") is None else f"{row['name']} ({row[by]})"
        cost = f"{row['cost_usd']:.6f}" + ("+?" if row["unpriced_attempts"] else "")
        rows.append(
            (
                label,
                str(row["requests"]),
                str(row["input_tokens"]),
                str(row["cached_read_tokens"]),
                str(row["output_tokens"]),
                cost,
            )
        )
    rows.append(("TOTAL", "", "", "", "", f"{view['total_cost_usd']:.6f}"))
    _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
