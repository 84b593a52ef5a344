"""Client keys: the secret a client holds, the hash the store keeps, the record it describes.

A secret is ``lp-`` followed by 43 URL-safe characters (32 random bytes), so it survives any
header, URL or shell quoting and is recognisable in a leaked-secrets scan. The store keeps only
a keyed BLAKE2b hash of it. A fast hash is the right tool here, not bcrypt/argon2: those slow
down guessing of *low-entropy* passwords, but a 256-bit random secret cannot be guessed at any
speed, while a slow hash would cost milliseconds of CPU on every request that misses the cache
(every request of an attacker spraying made-up keys). The key (a constant domain tag) only
keeps these hashes from matching any other system's plain SHA/BLAKE2 of the same string.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import re
import secrets
from dataclasses import dataclass, field

__all__ = [
    "SECRET_PREFIX",
    "Budget",
    "BudgetPeriod",
    "KeyLimits",
    "KeyRecord",
    "hash_secret",
    "looks_like_secret",
    "new_key_id",
    "new_secret",
    "parse_budget",
]

SECRET_PREFIX = "lp-"
_SECRET_BYTES = 32
_HASH_KEY = b"llm-proxy client key v1"
_SECRET_SHAPE = re.compile(r"lp-[A-Za-z0-9_-]{43}")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_key_id() -> str:
    """A public, stable id (ledger rows, CLI, admin API); never enough to authenticate."""
    return "key_" + secrets.token_hex(8)


def looks_like_secret(value: str) -> bool:
    """Shape check before any hashing or lookup: most garbage never reaches the cache."""
    return _SECRET_SHAPE.fullmatch(value) is not None


def hash_secret(secret: str) -> str:
    return hashlib.blake2b(secret.encode(), key=_HASH_KEY, digest_size=32).hexdigest()


class BudgetPeriod(enum.Enum):
    """Budget windows on UTC calendar boundaries: a day, a month, or the key's lifetime."""

    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Budget:
    amount_usd: float
    period: BudgetPeriod

    def __post_init__(self) -> None:
        if not self.amount_usd > 0:
            raise ValueError(f"budget must be > 0 USD, got {self.amount_usd!r}")

    def __str__(self) -> str:
        return f"{self.amount_usd:g}/{self.period.value}"


def parse_budget(text: str) -> Budget:
    """``50/month``, ``2.5/day``, ``100/total`` (a bare ``100`` means total)."""
    amount, _, period = text.strip().partition("/")
    try:
        value = float(amount.lstrip("$"))
        return Budget(value, BudgetPeriod(period.strip().lower() or "total"))
    except ValueError:
        raise ValueError(
            f"budget {text!r}: expected AMOUNT/PERIOD with PERIOD day, month or total"
        ) from None


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Per-key limits; None means no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    """Input + output tokens per minute, as the provider bills them."""
    max_concurrent: int | None = None
    budget: Budget | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as stored. Times are epoch seconds (UTC); ``secret_hint`` is the secret's first
    7 characters (``lp-`` + 4), enough to tell keys apart in a list, useless to an attacker."""

    id: str
    name: str
    key_hash: str = field(repr=False)
    secret_hint: str
    created: float
    expires: float | None = None
    revoked: float | None = None
    rotated: float | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)
    routes: tuple[str, ...] = ()
    """Route prefixes this key may use (``/openai``); empty: every route."""
    models: tuple[str, ...] = ()
    """Glob patterns (``gpt-4o*``) for the model a request names; empty: every model."""

    def is_active(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def allows_route(self, route: str) -> bool:
        return not self.routes or route in self.routes

    def allows_model(self, model: str | None) -> bool:
        """A request that names no model (``GET /v1/models``) is not model-restricted."""
        if not self.models or model is None:
            return True
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.models)
