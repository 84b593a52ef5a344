"""Key administration shared by the CLI and the admin API: create, list, rotate, revoke, spend.

A new or rotated secret is returned once (``NewKey.secret``) and never stored; only its hash is.
``on_change(old_hash)`` lets a serving process drop the key from its own cache at once (other
instances see the change within the cache TTL).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .keys import KeyLimits, KeyRecord, hash_secret, new_key_id, new_secret
from .store import KeyNotFound, SpendGroup, SpendLine, Store

__all__ = ["KeyManager", "NewKey", "SpendReport", "key_view"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True, slots=True)
class NewKey:
    record: KeyRecord
    secret: str
    """Shown once to whoever created or rotated the key; the store has only its hash."""


@dataclass(frozen=True, slots=True)
class SpendReport:
    by: SpendGroup
    since: float
    lines: tuple[SpendLine, ...]
    key_names: dict[str, str]
    """Key id -> name, for labelling ``by=key`` groups."""

    def view(self) -> dict[str, Any]:
        """The JSON shape of ``llm-proxy spend --json`` and ``GET /admin/spend``."""
        rows = []
        for line in self.lines:
            row: dict[str, Any] = {self.by.value: line.group}
            if self.by is SpendGroup.KEY:
                row["name"] = self.key_names.get(line.group)
            row.update(
                requests=line.requests,
                attempts=line.attempts,
                input_tokens=line.input_tokens,
                cached_read_tokens=line.cached_read_tokens,
                cache_write_tokens=line.cache_write_tokens,
                output_tokens=line.output_tokens,
                reasoning_tokens=line.reasoning_tokens,
                cost_usd=round(line.cost_usd, 12),
                unpriced_attempts=line.unpriced,
            )
            rows.append(row)
        total = sum(line.cost_picousd for line in self.lines) / 10**12
        return {
            "by": self.by.value,
            "since": self.since,
            "rows": rows,
            "total_cost_usd": round(total, 12),
        }


def key_view(record: KeyRecord) -> dict[str, Any]:
    """A key as JSON for the CLI and the admin API; never the hash."""
    limits = record.limits
    return {
        "id": record.id,
        "name": record.name,
        "secret_hint": record.secret_hint,
        "created": record.created,
        "expires": record.expires,
        "revoked": record.revoked,
        "rotated": record.rotated,
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "max_concurrent": limits.max_concurrent,
        "budget": None if limits.budget is None else str(limits.budget),
        "routes": list(record.routes),
        "models": list(record.models),
    }


class KeyManager:
    def __init__(
        self,
        store: Store,
        *,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._clock = clock

    async def create(
        self,
        name: str,
        limits: KeyLimits | None = None,
        *,
        routes: Sequence[str] = (),
        models: Sequence[str] = (),
        expires: float | None = None,
    ) -> NewKey:
        """Raises ValueError for a bad name or route, KeyConflict when the name is taken."""
        if not _NAME.fullmatch(name) or name.startswith("key_"):
            raise ValueError(
                f"name {name!r}: 1-100 of A-Z a-z 0-9 . _ -, starting with a letter or digit,"
                " not starting with 'key_'"
            )
        for route in routes:
            if not route.startswith("/") or route.endswith("/"):
                raise ValueError(f"route {route!r}: a route prefix like /openai")
        secret = new_secret()
        record = KeyRecord(
            id=new_key_id(),
            name=name,
            key_hash=hash_secret(secret),
            secret_hint=secret[:7],
            created=self._clock(),
            expires=expires,
            limits=limits or KeyLimits(),
            routes=tuple(routes),
            models=tuple(models),
        )
        await self._store.create_key(record)
        return NewKey(record, secret)

    async def list(self) -> list[KeyRecord]:
        return await self._store.list_keys()

    async def find(self, ref: str) -> KeyRecord:
        """By id or name; raises KeyNotFound."""
        record = await self._store.find_key(ref)
        if record is None:
            raise KeyNotFound(ref)
        return record

    async def rotate(self, ref: str) -> NewKey:
        old = await self.find(ref)
        secret = new_secret()
        record = await self._store.rotate_key(
            old.id, hash_secret(secret), secret[:7], self._clock()
        )
        self._changed(old.key_hash)
        return NewKey(record, secret)

    async def revoke(self, ref: str) -> KeyRecord:
        old = await self.find(ref)
        record = await self._store.revoke_key(old.id, self._clock())
        self._changed(old.key_hash)
        return record

    async def spend(self, by: SpendGroup, since: float, key_ref: str | None = None) -> SpendReport:
        key_id = None if key_ref is None else (await self.find(key_ref)).id
        lines = await self._store.spend(by, since, key_id)
        names = {}
        if by is SpendGroup.KEY:
            names = {k.id: k.name for k in await self._store.list_keys()}
        return SpendReport(by, since, tuple(lines), names)

    def _changed(self, key_hash: str) -> None:
        if self._on_change is not None:
            self._on_change(key_hash)
