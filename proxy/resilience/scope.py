"""Which limit a request draws on, and which limit an answer's headers describe.

Providers enforce limits per credential and per model (Anthropic: per model class), and an
overload (529, or 503 without rate-limit headers) concerns the whole upstream. Keying
cooldowns and pacing by upstream alone lets key A's exhaustion hold key B back; keying them by
the raw key would put secrets in Redis and logs. A scope therefore carries a keyed hash of the
credential (HMAC-SHA256 with a secret the proxy holds), never the credential.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote

from multidict import CIMultiDict, CIMultiDictProxy

from ..config import Provider

__all__ = [
    "ANY_CREDENTIAL",
    "NO_CREDENTIAL",
    "Fingerprinter",
    "LimitKind",
    "RequestScopes",
    "Scope",
    "answer_scope",
    "anthropic_model_class",
    "credential_of",
    "has_rate_limit_headers",
    "model_key",
    "request_scopes",
]

ANY_CREDENTIAL = "*"
"""The credential field of an upstream-wide scope: an overload hits every key alike."""
NO_CREDENTIAL = "none"
"""The fingerprint of a request sent upstream without any credential."""

_FINGERPRINT_HEX = 16  # 64 bits: collisions between a deployment's keys are negligible
_FINGERPRINTS_KEPT = 1024
_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


class LimitKind(StrEnum):
    UPSTREAM = "upstream"
    """The upstream as a whole: overloads (529, 503 without rate-limit headers)."""
    MODEL = "model"
    """One credential's request/token limits for one model (Anthropic: one model class)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One limit: cooldowns and pacing state are stored under ``key``."""

    upstream: str
    credential: str
    """Fingerprint of the credential sent upstream, ``ANY_CREDENTIAL`` for an upstream scope."""
    kind: LimitKind
    model: str = ""
    """Model key (``model_key``); empty for an upstream scope."""

    @property
    def key(self) -> str:
        """Canonical store key, ``upstream/credential/kind/model`` with each part %-escaped."""
        return _store_key(self.upstream, self.credential, self.kind, self.model)

    @classmethod
    def from_key(cls, key: str) -> Scope | None:
        """The scope a store key names (None for a key that is not one)."""
        parts = [unquote(part, errors="surrogatepass") for part in key.split("/")]
        if len(parts) != 4:
            return None
        upstream, credential, kind, model = parts
        try:
            return cls(upstream, credential, LimitKind(kind), model)
        except ValueError:
            return None

    @property
    def label(self) -> str:
        """A metrics/log label without the fingerprint: ``upstream`` or ``upstream:model``."""
        return self.upstream if self.kind is LimitKind.UPSTREAM else f"{self.upstream}:{self.model}"


@functools.lru_cache(maxsize=4096)
def _store_key(upstream: str, credential: str, kind: LimitKind, model: str) -> str:
    """Memoised: every attempt looks its scopes' keys up several times, and escaping four
    parts cost more than the cooldown and pacing lookups they serve."""
    parts = (upstream, credential, kind.value, model)
    return "/".join(quote(part.encode("utf-8", "surrogatepass"), safe="") for part in parts)


@dataclass(frozen=True, slots=True)
class RequestScopes:
    """The scopes one attempt draws on: the upstream, and its per-model limit when known."""

    upstream: Scope
    model: Scope | None

    @property
    def all(self) -> tuple[Scope, ...]:
        return (self.upstream,) if self.model is None else (self.upstream, self.model)


class Fingerprinter:
    """Keyed hash of credentials: stable for one secret, useless to anyone without it.

    Processes that share state (Redis) must share the secret, else the same key gets
    different scopes in each; without a configured secret each process draws a random one.
    """

    __slots__ = ("_known", "_secret")

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret else secrets.token_bytes(32)
        self._known: dict[str, str] = {}
        """Recent credentials' fingerprints: each request needs its own and its client's,
        and an HMAC costs more than the rest of its admission."""

    def __repr__(self) -> str:
        return "Fingerprinter(<secret>)"

    def __call__(self, credential: str | None) -> str:
        if not credential:
            return NO_CREDENTIAL
        known = self._known.get(credential)
        if known is not None:
            return known
        digest = hmac.new(self._secret, credential.encode(), hashlib.sha256).hexdigest()
        if len(self._known) >= _FINGERPRINTS_KEPT:
            self._known.clear()  # many distinct keys: start over rather than grow
        known = self._known[credential] = digest[:_FINGERPRINT_HEX]
        return known


def credential_of(headers: Mapping[str, str]) -> str | None:
    """The credential in outgoing request headers (``x-api-key``, ``Authorization: Bearer``,
    Azure ``api-key``), so one key sent in either header gets one scope."""
    for name in ("x-api-key", "authorization", "api-key"):
        value = _last(headers, name).strip()
        if name == "authorization" and value[:7].lower() == "bearer ":
            value = value[7:].strip()
        if value:
            return value
    return None


def _last(headers: Mapping[str, str], name: str) -> str:
    """The last value of header ``name`` (any case), "" when absent; a multidict is read in
    place (no lower-cased copy of every header per attempt)."""
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        values = headers.getall(name, None)
        return values[-1] if values else ""
    value = ""
    for key, each in headers.items():
        if str(key).lower() == name:
            value = str(each)
    return value


_CUT = re.compile(r"[@:].*$")  # Vertex "claude-sonnet-4@20250514", Bedrock "...-v1:0"
_TOKEN = re.compile(r"[a-z]+|\d+")
_COMBINED_CLASSES = frozenset({("opus", 4), ("sonnet", 4), ("fable", 5)})
"""Anthropic classes whose minor versions share one limit ("Claude Sonnet 4.x"); every other
model has its own per major.minor ("Claude Haiku 4.5", "Claude Sonnet 3.7")."""


def anthropic_model_class(model: str) -> str:
    """Stable key of the Anthropic limit a model draws on: ``claude-sonnet-4`` for every
    Sonnet 4.x (dated or not, Bedrock or Vertex spelling), ``claude-haiku-4-5``,
    ``claude-sonnet-3-7``. Names that do not parse are their own class."""
    name = model.strip().lower()
    at = name.find("claude")
    if at < 0:
        return name
    tokens = _TOKEN.findall(_CUT.sub("", name[at + len("claude") :]))
    tier = next((t for t in tokens if t.isalpha() and t not in ("v", "latest")), None)
    versions = [int(t) for t in tokens if t.isdigit() and len(t) <= 2]
    if tier is None or not versions:
        return name
    major = versions[0]
    if (tier, major) in _COMBINED_CLASSES or len(versions) == 1:
        return f"claude-{tier}-{major}"
    return f"claude-{tier}-{major}-{versions[1]}"


def model_key(provider: Provider, model: str) -> str:
    """The per-model limit key: Anthropic's model class, else the model name as sent."""
    if provider == "anthropic":
        return anthropic_model_class(model)
    return model.strip().lower()


def request_scopes(
    upstream: str,
    credential: str | None,
    model: str | None,
    provider: Provider,
    fingerprint: Fingerprinter,
) -> RequestScopes:
    """Scopes of one attempt, from what is actually sent upstream: the credential after the
    route's swap and the model after the upstream's mapping. No model (``GET /v1/models``):
    only the upstream scope."""
    whole = Scope(upstream, ANY_CREDENTIAL, LimitKind.UPSTREAM)
    if not model:
        return RequestScopes(whole, None)
    limit = Scope(upstream, fingerprint(credential), LimitKind.MODEL, model_key(provider, model))
    return RequestScopes(whole, limit)


def has_rate_limit_headers(headers: Mapping[str, str]) -> bool:
    return any(str(name).lower().startswith(_RATE_LIMIT_PREFIXES) for name in headers)


def answer_scope(scopes: RequestScopes, status: int, headers: Mapping[str, str]) -> Scope:
    """The scope an answer speaks about: an overload (529, or a 5xx without rate-limit
    headers) about the whole upstream; a 429 or any rate-limit headers about the per-model
    limit (the upstream when the request had no model)."""
    if scopes.model is None:
        return scopes.upstream
    if status == 529 or (status >= 500 and not has_rate_limit_headers(headers)):
        return scopes.upstream
    return scopes.model
