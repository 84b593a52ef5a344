"""Where keys and the spend ledger live: one protocol, a SQLite and a PostgreSQL backend.

Both backends run the same portable SQL (written here with ``?`` placeholders; the PostgreSQL
backend numbers them) and the same migrations-as-data: ``migrations/<backend>/NNNN_name.sql``,
applied in order on ``open()`` and recorded in ``schema_version``, under a lock so two processes
starting at once (a server and the CLI) never apply one twice. Backend exceptions become the
typed errors below here, at this boundary, and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from .keys import Budget, BudgetPeriod, KeyLimits, KeyRecord

if TYPE_CHECKING:
    from .ledger import LedgerRow

__all__ = [
    "KeyConflict",
    "KeyNotFound",
    "KeyRevoked",
    "Migration",
    "SpendGroup",
    "SpendLine",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "migrations",
]

PICO = 10**12
"""Ledger costs are integer pico-USD: exact sums for prices with up to 6 decimals per 1M tokens."""


class StoreError(Exception):
    """Base of everything a store raises."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is locked; the operation may succeed later."""


class KeyNotFound(StoreError):
    pass


class KeyRevoked(StoreError):
    """A revoked key cannot be rotated (create a new one)."""


class KeyConflict(StoreError):
    """A key with that name already exists."""


class SpendGroup(enum.Enum):
    KEY = "key"
    MODEL = "model"
    ROUTE = "route"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class SpendLine:
    """Ledger totals for one group. Token sums follow proxy.usage.Usage: ``input_tokens``
    includes cache reads and writes, ``output_tokens`` includes reasoning."""

    group: str
    requests: int
    attempts: int
    input_tokens: int
    cached_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_picousd: int
    unpriced: int
    """Attempts whose cost is unknown (model without a price): not in ``cost_picousd``."""

    @property
    def cost_usd(self) -> float:
        return self.cost_picousd / PICO


class Store(Protocol):
    """Keys and ledger. Every method raises StoreUnavailable when the database is down."""

    async def open(self) -> None:
        """Connect, create the database if needed and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    async def create_key(self, record: KeyRecord) -> None:
        """Raises KeyConflict when the name is taken."""
        ...

    async def get_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    async def find_key(self, ref: str) -> KeyRecord | None:
        """By id, else by name."""
        ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def rotate_key(self, key_id: str, key_hash: str, hint: str, at: float) -> KeyRecord:
        """A new secret for the same key (limits and ledger kept); the old one stops working.
        Raises KeyNotFound or KeyRevoked."""
        ...

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        """Idempotent: a second revoke keeps the first time. Raises KeyNotFound."""
        ...

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        """Insert in one transaction; a row already stored (same ``row_id``) is skipped, so
        replaying a batch after an ambiguous failure never double-counts."""
        ...

    async def spend(
        self, by: SpendGroup, since: float, key_id: str | None = None
    ) -> list[SpendLine]: ...

    async def key_spend_picousd(self, key_id: str, since: float) -> int:
        """Priced spend of one key since ``since`` (what a budget counter starts from)."""
        ...


# -- migrations ---------------------------------------------------------------------------

_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """Statements end with ``;`` at a line end (our files have no ``;`` inside literals)."""
        body = "\n".join(ln for ln in self.sql.splitlines() if not ln.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*\n", body + "\n") if s.strip()]


def migrations(backend: str) -> list[Migration]:
    """The package's migrations for ``backend`` (``sqlite``/``postgres``), in version order."""
    found = []
    for entry in (resources.files("proxy.auth") / "migrations" / backend).iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version"
    " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"
)


# -- portable SQL -------------------------------------------------------------------------

KEY_COLUMNS = (
    "id, name, key_hash, secret_hint, created, expires, revoked, rotated, rpm, tpm,"
    " max_concurrent, budget_usd, budget_period, routes, models"
)
INSERT_KEY = f"INSERT INTO keys ({KEY_COLUMNS}) VALUES ({', '.join('?' * 15)})"
SELECT_KEY_BY_HASH = f"SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = ?"
SELECT_KEY_BY_ID = f"SELECT {KEY_COLUMNS} FROM keys WHERE id = ?"
SELECT_KEY_BY_NAME = f"SELECT {KEY_COLUMNS} FROM keys WHERE name = ?"
SELECT_KEYS = f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created, id"
ROTATE_KEY = (
    "UPDATE keys SET key_hash = ?, secret_hint = ?, rotated = ? WHERE id = ? AND revoked IS NULL"
)
REVOKE_KEY = "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL"

LEDGER_COLUMNS = (
    "row_id, request_id, attempt, ts, day, key_id, route, upstream, model_requested, model_served,"
    " input_tokens, cached_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,"
    " cost_picousd, usage_source, status, latency_ms"
)
INSERT_LEDGER = (
    f"INSERT INTO ledger ({LEDGER_COLUMNS}) VALUES ({', '.join('?' * 19)})"
    " ON CONFLICT (row_id) DO NOTHING"
)


@functools.lru_cache(maxsize=64)
def insert_ledger_rows(n: int) -> str:
    """One INSERT of ``n`` rows (SQLite): a single statement step per chunk instead of one
    per row. Each step lets go of the GIL and takes it back; per row, on a busy event loop,
    that hand-over cost the loop more than the insert itself."""
    one = f"({', '.join('?' * 19)})"
    return (
        f"INSERT INTO ledger ({LEDGER_COLUMNS}) VALUES {', '.join([one] * n)}"
        " ON CONFLICT (row_id) DO NOTHING"
    )


KEY_SPEND = "SELECT COALESCE(SUM(cost_picousd), 0) FROM ledger WHERE key_id = ? AND ts >= ?"

_GROUP_EXPR = {
    SpendGroup.KEY: "COALESCE(key_id, '-')",
    SpendGroup.MODEL: "COALESCE(model_served, model_requested, '-')",
    SpendGroup.ROUTE: "route",
    SpendGroup.DAY: "day",
}


def spend_query(by: SpendGroup, one_key: bool) -> str:
    where = "ts >= ?" + (" AND key_id = ?" if one_key else "")
    return (
        f"SELECT {_GROUP_EXPR[by]} AS grp, COUNT(DISTINCT request_id), COUNT(*),"
        " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_read_tokens), 0),"
        " COALESCE(SUM(cache_write_tokens), 0), COALESCE(SUM(output_tokens), 0),"
        " COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cost_picousd), 0),"
        " SUM(CASE WHEN cost_picousd IS NULL THEN 1 ELSE 0 END)"
        f" FROM ledger WHERE {where} GROUP BY grp ORDER BY grp"
    )


# -- row mapping --------------------------------------------------------------------------


def _real(value: float | None) -> float | None:
    return None if value is None else float(value)


def key_params(r: KeyRecord) -> tuple[Any, ...]:
    budget = r.limits.budget
    return (
        r.id,
        r.name,
        r.key_hash,
        r.secret_hint,
        float(r.created),
        _real(r.expires),
        _real(r.revoked),
        _real(r.rotated),
        r.limits.rpm,
        r.limits.tpm,
        r.limits.max_concurrent,
        _real(budget.amount_usd) if budget else None,
        budget.period.value if budget else None,
        json.dumps(list(r.routes)),
        json.dumps(list(r.models)),
    )


def key_from_row(row: Sequence[Any] | Mapping[str, Any]) -> KeyRecord:
    values = list(row.values()) if isinstance(row, Mapping) else list(row)
    (
        id_,
        name,
        key_hash,
        hint,
        created,
        expires,
        revoked,
        rotated,
        rpm,
        tpm,
        conc,
        budget_usd,
        budget_period,
        routes,
        models,
    ) = values
    budget = None if budget_usd is None else Budget(budget_usd, BudgetPeriod(budget_period))
    return KeyRecord(
        id=id_,
        name=name,
        key_hash=key_hash,
        secret_hint=hint,
        created=created,
        expires=expires,
        revoked=revoked,
        rotated=rotated,
        limits=KeyLimits(rpm=rpm, tpm=tpm, max_concurrent=conc, budget=budget),
        routes=tuple(json.loads(routes)),
        models=tuple(json.loads(models)),
    )


def checked_update(record: KeyRecord | None, key_id: str, applied: bool | None = None) -> KeyRecord:
    """What an UPDATE ... WHERE revoked IS NULL did: the record, KeyNotFound, or KeyRevoked
    when ``applied`` says the update did not take (the key was revoked already)."""
    if record is None:
        raise KeyNotFound(key_id)
    if applied is False:
        raise KeyRevoked(key_id)
    return record


def utc_day(ts: float) -> str:
    return _utc_day(int(ts // 86400))


@functools.lru_cache(maxsize=4)
def _utc_day(day: int) -> str:
    """Per day number: every ledger row asks, and nearly all ask for today."""
    return dt.datetime.fromtimestamp(day * 86400, dt.UTC).strftime("%Y-%m-%d")


def ledger_params(row: LedgerRow) -> tuple[Any, ...]:
    cost = None if row.cost_usd is None else round(row.cost_usd * PICO)
    return (
        row.row_id,
        row.request_id,
        row.attempt,
        float(row.ts),
        utc_day(row.ts),
        row.key_id,
        row.route,
        row.upstream,
        row.model_requested,
        row.model_served,
        row.input_tokens,
        row.cached_read_tokens,
        row.cache_write_tokens,
        row.output_tokens,
        row.reasoning_tokens,
        cost,
        row.usage_source,
        row.status,
        float(row.latency_ms),
    )


def spend_from_row(row: Sequence[Any]) -> SpendLine:
    grp, *counts = row
    return SpendLine(str(grp), *(int(c or 0) for c in counts))
