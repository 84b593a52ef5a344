"""Client keys on the request path (``auth: {mode: keys}``): who may send this request, what it
may cost, and what it did cost.

``on_request`` identifies the key the client's SDK sent (``Authorization: Bearer`` or
``x-api-key``), then reads the body for the model and the worst case (``auth/reserve.py``) and
admits the request against the key's route and model permissions, limits and budget. A refusal
is raised as a provider-shaped 401/403/429/503: nothing is sent upstream. ``on_report`` settles
the reservation to the real usage (released when nothing was used: refused later, failed,
cancelled) and queues one ledger row per attempt that reached a provider.

Order: first in the plugin list. A request that is not allowed must cost nothing: no token
count, no trim, no learned correction, and an unknown key must get its 401 whatever else is
wrong with the request (an oversized prompt included), which only holds if the key is checked
before any other plugin answers. The price is that the reservation cannot use the context
budget's count (``ex.context`` does not exist yet): it uses the byte bound, which is a true
upper bound for every model (a count is not: it is exact only for OpenAI's tokenizers) and
costs a scan instead of a tokenization. A later trim only makes the request cheaper than
reserved. The upstream credential swap does not depend on this plugin at all: the router marks
every route of a keys-mode config (``RouteTarget.client_keys``), and forward.py never sends a
client's credential on such a route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web

from ..auth.errors import refusal_error
from ..auth.gate import Admission, Gate, Refusal, RefusalKind
from ..auth.ledger import LedgerRow, LedgerWriter
from ..auth.reserve import BodyUnreadable, WorstCase, decode_body, parse_object, worst_case
from ..auth.wire import client_secret
from ..errors import BadRequest
from ..exchange import Exchange
from ..outcomes import AttemptReason, ClientKeyOutcome, SlotKey
from ..usage import Usage
from . import Plugin

__all__ = ["AuthPlugin", "ledger_rows"]

OFF_LOOP_BYTES = 256 << 10
"""Bodies larger than this are parsed in a thread."""
_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, source="none")

CountRefusal = Callable[[str, RefusalKind], None]
"""(route name, kind): called once per refused request (metrics)."""


@dataclass(slots=True)
class _Admitted:
    admission: Admission
    model: str | None
    """The model the client asked for, as it asked (the ledger's ``model_requested``)."""


_ADMITTED: SlotKey[_Admitted] = SlotKey("auth")


class AuthPlugin(Plugin):
    name = "auth"

    def __init__(
        self,
        gate: Gate,
        ledger: LedgerWriter,
        *,
        max_body_bytes: int,
        count_refusal: CountRefusal | None = None,
    ) -> None:
        self._gate = gate
        self._ledger = ledger
        self._max_body = max_body_bytes
        self._count_refusal = count_refusal

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        assert ex.route is not None
        route = ex.route.name
        key = await self._gate.identify(client_secret(ex.request.headers))
        if isinstance(key, Refusal):
            self._refuse(ex, route, key)
        worst = await self._worst_case(ex)
        outcome = await self._gate.admit(
            key,
            route,
            worst.model,
            input_tokens=worst.input_tokens,
            max_output_tokens=worst.max_output_tokens,
        )
        if isinstance(outcome, Refusal):
            self._refuse(ex, route, outcome)
        if key.models and worst.model is None and ex.body:
            await outcome.settle()  # a model-restricted key: the model must be readable
            refusal = Refusal(
                RefusalKind.MODEL_NOT_ALLOWED,
                "this key may only use named models, and this request names none",
                key_id=key.id,
            )
            self._refuse(ex, route, refusal)
        ex.client_key = ClientKeyOutcome(key.id)
        ex.set_slot(_ADMITTED, _Admitted(outcome, worst.model))
        return None

    def _refuse(self, ex: Exchange, route: str, refusal: Refusal) -> NoReturn:
        ex.client_key = ClientKeyOutcome(refusal.key_id, refusal.kind.value)
        if self._count_refusal is not None:
            self._count_refusal(route, refusal.kind)
        raise refusal_error(refusal)

    async def _worst_case(self, ex: Exchange) -> WorstCase:
        """The model asked for and the worst case, from the body as the upstream will read it."""
        body = ex.body
        if not body:
            return WorstCase(None, 0, 0)
        encoding = ex.request.headers.get("Content-Encoding", "identity")
        if encoding.strip().lower() not in ("", "identity"):
            try:
                body = await asyncio.to_thread(decode_body, body, encoding, self._max_body)
            except BodyUnreadable as exc:
                raise BadRequest(f"request body: {exc}") from None
            data = await self._parse(lambda: parse_object(body), len(body))
        else:
            data = await self._parse(ex.json, len(body))
        return worst_case(body, data if isinstance(data, dict) else None, ex.tail)

    @staticmethod
    async def _parse(parse: Callable[[], object], size: int) -> object:
        return await asyncio.to_thread(parse) if size > OFF_LOOP_BYTES else parse()

    async def on_report(self, ex: Exchange) -> None:
        admitted = ex.slot(_ADMITTED)
        if admitted is None:
            return
        admission = admitted.admission
        outcome = ex.usage
        try:
            for row in ledger_rows(ex, admission.key_id, admitted.model):
                self._ledger.submit(row)
        finally:
            if outcome is None:
                await admission.settle()
            else:
                await admission.settle(outcome.usage, outcome.cost_usd)


def ledger_rows(ex: Exchange, key_id: str | None, model_requested: str | None) -> list[LedgerRow]:
    """One row per attempt that reached a provider. The attempt whose answer the client got
    carries the request's usage and cost (reported, or estimated for a cut stream); the others
    were refused or failed (429, 5xx, a stream that broke before content) and carry their status
    and zero tokens."""
    assert ex.route is not None
    now, mono = time.time(), time.monotonic()
    reached = [
        i for i, a in enumerate(ex.attempts) if a.sent and a.reason is not AttemptReason.UNREACHABLE
    ]
    answered = reached[-1] if ex.upstream is not None and reached else None
    if answered is not None and answered != len(ex.attempts) - 1:
        answered = None  # the answer came from somewhere else (answered locally)
    rows = []
    for i in reached:
        attempt = ex.attempts[i]
        usage, served, status = _NO_USAGE, None, attempt.status
        cost: float | None = 0.0
        latency_s = attempt.duration_s
        if i == answered:
            status = ex.status if status is None else status
            if ex.usage is not None and ex.usage.usage.source != "none":
                usage, cost = ex.usage.usage, ex.usage.cost_usd
            served = ex.usage.model if ex.usage is not None else None
            started = attempt.started if attempt.started is not None else ex.t_start
            latency_s = mono - started
        rows.append(
            LedgerRow.from_usage(
                usage,
                cost_usd=cost,
                request_id=ex.request_id,
                attempt=i,
                key_id=key_id,
                route=ex.route.name,
                upstream=attempt.upstream,
                model_requested=model_requested,
                model_served=served,
                status=status,
                latency_ms=round(latency_s * 1000, 3),
                ts=now,
            )
        )
    return rows
