"""One attempt's request as its upstream takes it, and the records the attempt loop trades in.

A leg is the request rebuilt for one upstream: forwarded as it came (a model name mapped at
most), translated into another API family, or answered by the proxy itself. It also knows
the scopes it draws on (the credential and model actually sent) and its estimated cost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import Upstream
from ..crossing import LocalResponse, outcome_of, plan_for, prepare
from ..errors import ProxyError
from ..exchange import Exchange
from ..forward import LiveResponse, Outgoing, UpstreamResponse
from ..jsonbytes import json_bytes
from ..outcomes import TranslationOutcome
from ..stream_content import StreamFamily, stream_family
from ..translate import LocalAnswer, Passthrough, ResponseStore, Translation, Unsupported
from ..translate.families import provider_of
from .gate import Admission, ScopeGate
from .ratelimits import Cost
from .scope import credential_of, request_scopes

_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_OUTPUT = re.compile(rb'"max_(?:completion_|output_)?tokens"\s*:\s*(\d{1,9})')


@dataclass(frozen=True, slots=True)
class Answer:
    """Relay ``response`` to the client; ``upstream`` is the one that sent it."""

    response: UpstreamResponse
    upstream: Upstream
    translation: TranslationOutcome | None = None
    """Set when the answer came through a translation between API families."""
    settle: Callable[[], Awaitable[None]] | None = None
    """To await once the client has the whole answer (a translation keeps its state)."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No upstream answered: the client gets the proxy's own ``error``."""

    error: ProxyError


Dispatch = Answer | GiveUp


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream's answer as received, before it is turned into the client's API."""

    response: UpstreamResponse
    upstream: Upstream
    plan: Translation | None = None
    translation: TranslationOutcome | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """An attempt that did not produce the final answer, and what it allows next."""

    wait_s: float
    retry_same: bool
    """Trying this upstream again may help (never after a timeout, quota or malformed answer)."""
    fall_back: bool = True
    """Trying the next upstream may help (not after a timeout unless the route allows it)."""
    answer: Reply | None = None
    """The upstream's own error answer, kept in case nothing better comes."""
    error: ProxyError | None = None
    fixed: bool = False
    """A plugin fixed the request after this refusal: send it again at once (not counted)."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One attempt's request in the upstream's own API, and how to read its answer."""

    upstream: Upstream
    outgoing: Outgoing
    provider: str
    """The API style the upstream answers in ("openai" or "anthropic")."""
    claim: Admission
    plan: Translation | None = None
    translation: TranslationOutcome | None = None

    def reply(self, response: UpstreamResponse) -> Reply:
        return Reply(response, self.upstream, self.plan, self.translation)

    def held_family(self, live: LiveResponse) -> StreamFamily | None:
        """The grammar of a stream whose head can be held: an uncompressed SSE answer on an
        endpoint whose events the proxy knows. Anything else commits on its first byte."""
        headers = live.headers
        if not headers.get("Content-Type", "").startswith("text/event-stream"):
            return None
        if headers.get("Content-Encoding", "identity").lower() != "identity":
            return None
        return stream_family(self.provider, self.outgoing.tail)


async def make_leg(
    ex: Exchange, upstream: Upstream, gate: ScopeGate, store: ResponseStore | None
) -> Leg | Reply:
    """The request as this upstream takes it, or the proxy's own answer for it."""
    assert ex.route is not None
    plan = plan_for(ex, upstream, store)
    if isinstance(plan, Unsupported):
        return Reply(LocalResponse(plan.response()), upstream)
    if isinstance(plan, Passthrough):
        body = body_for(ex, upstream)
        outgoing = Outgoing.forwarded(ex, upstream, body)
        provider = ex.route.provider.name
        claim = _claim(ex, gate, upstream, outgoing, provider, _model_in(ex, body))
        return Leg(upstream, outgoing, provider, claim)
    prepared = await prepare(ex, upstream, plan)
    if isinstance(prepared, LocalAnswer):
        outcome = outcome_of(plan, prepared)
        return Reply(LocalResponse(prepared.response), upstream, translation=outcome)
    provider = provider_of(plan.upstream)
    sent = prepared.request.body
    model = sent.get("model") if sent is not None else None
    claim = _claim(
        ex, gate, upstream, prepared.outgoing, provider, model if isinstance(model, str) else None
    )
    outcome = outcome_of(plan, prepared.request)
    return Leg(upstream, prepared.outgoing, provider, claim, plan, outcome)


def body_for(ex: Exchange, upstream: Upstream) -> bytes:
    """The body for this upstream: the model field mapped only when a mapping applies."""
    if not upstream.models:
        return ex.body
    try:
        data = json.loads(ex.body)
    except (ValueError, RecursionError):
        return ex.body
    if isinstance(data, dict) and data.get("model") in upstream.models:
        data["model"] = upstream.models[data["model"]]
        return json_bytes(data)
    return ex.body


def _model_in(ex: Exchange, body: bytes) -> str | None:
    """The model a forwarded body names: from the bytes when that is unambiguous, else
    from the parsed JSON (a nested "model" key, in a tool schema say, must not mislead)."""
    found = _MODEL.findall(body)
    if len(found) == 1:
        try:
            name = json.loads(b'"' + found[0] + b'"')
        except ValueError:
            return None
        return name if isinstance(name, str) else None
    if not found:
        return None
    data = ex.json_object() if body is ex.body else None
    model = data.get("model") if data is not None else None
    return model if isinstance(model, str) else None


def _claim(
    ex: Exchange,
    gate: ScopeGate,
    upstream: Upstream,
    outgoing: Outgoing,
    provider: str,
    model: str | None,
) -> Admission:
    assert ex.route is not None
    scopes = request_scopes(
        upstream.name,
        credential_of(outgoing.headers),
        model,
        "anthropic" if provider == "anthropic" else "openai",
        gate.fingerprint,
    )
    return Admission(scopes, gate.policy(ex.route.config.pacing), _cost(ex, outgoing.body))


def _cost(ex: Exchange, body: bytes) -> Cost:
    """What the request takes from the provider's buckets: its input tokens (the context
    budget's count when there is one, else about four bytes a token) and its output cap."""
    assert ex.route is not None
    if ex.context is not None:
        prompt = ex.context.prompt_tokens_est
    else:
        prompt = len(body) // 4
    caps = [int(v) for v in _OUTPUT.findall(body)]
    output = max(caps) if caps else ex.route.config.context.reserve_output_tokens
    return Cost(float(prompt), float(output))
