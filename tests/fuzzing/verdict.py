"""What counts as a violation for one result, and the per-category report of a run.

A result passes when the client aborted (the test checks the proxy survived), when the proxy
closed without an answer to an incomplete request (``Ending.HALF_CLOSE``), or when it answered
with one complete HTTP/1.x response that carries a short, printable ``x-proxy-request-id``,
does not echo the client's credential, and whose body is either an upstream success (JSON, or
SSE) or a JSON error in a provider's shape: the route's provider for the proxy's own errors
where the route is known (``Shape.ROUTE``), either provider's for the upstream's own errors
passed through and for requests refused before any routing.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .cases import Category
from .client import Outcome, Response, Result
from .wire import SECRET, Ending, Shape

MAX_REQUEST_ID = 128
"""A proxy request id longer than this (or with non-printable characters) was reflected from
an untrusted client header instead of being made anew."""


class Violation(StrEnum):
    TIMED_OUT = "neither answered nor closed within the timeout"
    CLOSED = "closed without answering a complete (or plainly invalid) request"
    MALFORMED = "response is not one complete HTTP/1.x message"
    NO_REQUEST_ID = "no x-proxy-request-id header"
    BAD_REQUEST_ID = "x-proxy-request-id is not short and printable"
    NOT_JSON = "body is not JSON (text/plain, HTML, empty...)"
    RELAYED_NOT_JSON = "the upstream's own answer, relayed, is not JSON (the fake's defect)"
    NOT_ERROR_SHAPE = "JSON error body in neither provider's error shape"
    WRONG_PROVIDER = "the proxy's own error is in the other provider's shape"
    SECRET_ECHOED = "the client's credential is in the response"
    INTERNAL_ERROR = "the proxy's own 500: a bug its catch-all turned into an answer"


def error_shape(body: Any) -> str | None:
    """``"openai"``, ``"anthropic"`` or None: which provider's error JSON this is."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    texts = isinstance(error.get("message"), str) and isinstance(error.get("type"), str)
    if body.get("type") == "error" and texts:
        return "anthropic"
    if texts and "param" in error and "code" in error:
        return "openai"
    return None


def relayed(response: Response) -> bool:
    """The upstream's own answer passed through: the attempt loop names the upstream on what
    it relays. Only attribution (which side to fix), never an excuse for a violation."""
    return response.header("x-proxy-upstream") is not None


def check(result: Result) -> list[Violation]:
    """Every violation in one result; an empty list is a pass."""
    case, reply = result.case, result.reply
    if reply.outcome is Outcome.ABORTED:
        return []
    if reply.outcome is Outcome.TIMED_OUT:
        return [Violation.TIMED_OUT]
    if reply.outcome is Outcome.CLOSED:
        return [Violation.CLOSED] if case.ending is Ending.WAIT else []
    found = [Violation.SECRET_ECHOED] if SECRET in reply.raw else []
    if reply.outcome is Outcome.MALFORMED or reply.response is None:
        return [*found, Violation.MALFORMED]
    response = reply.response
    request_id = response.header("x-proxy-request-id")
    if request_id is None:
        found.append(Violation.NO_REQUEST_ID)
    elif len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        found.append(Violation.BAD_REQUEST_ID)
    body_violation = _check_body(result, response)
    return found + ([body_violation] if body_violation else [])


def _check_body(result: Result, response: Response) -> Violation | None:
    ctype = (response.header("content-type") or "").lower()
    if response.status < 400 and ctype.startswith("text/event-stream"):
        return None
    not_json = Violation.RELAYED_NOT_JSON if relayed(response) else Violation.NOT_JSON
    if "json" not in ctype:
        return not_json
    try:
        body = json.loads(response.body)
    except ValueError:
        return not_json
    if response.status < 400:
        return None
    shape = error_shape(body)
    if shape is None:
        return Violation.NOT_ERROR_SHAPE
    own_error = not relayed(response)
    if own_error and result.case.shape is Shape.ROUTE and shape != result.case.target.provider:
        return Violation.WRONG_PROVIDER
    if own_error and response.status == 500:
        return Violation.INTERNAL_ERROR
    return None


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    closed: int = 0
    aborted: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    violations: int = 0


def signature(result: Result) -> str:
    """What came back, in a few words: groups violations by their likely cause."""
    response = result.reply.response
    if response is None:
        return result.reply.outcome.value
    ctype = (response.header("content-type") or "no content-type").split(";")[0]
    via = ", relayed" if relayed(response) else ""
    return f"{response.status} {ctype}{via}"


@dataclass
class Report:
    """Counts per category, and per violation the answers that broke it with an example each."""

    tallies: dict[Category, Tally] = field(default_factory=lambda: defaultdict(Tally))
    kinds: Counter[Violation] = field(default_factory=Counter)
    causes: Counter[tuple[Violation, str]] = field(default_factory=Counter)
    examples: dict[tuple[Violation, str], Result] = field(default_factory=dict)
    cases: Counter[tuple[Violation, str]] = field(default_factory=Counter)

    def add(self, result: Result, violations: Iterable[Violation]) -> None:
        tally = self.tallies[result.case.category]
        tally.sent += 1
        reply = result.reply
        tally.answered += reply.outcome is Outcome.ANSWERED
        tally.closed += reply.outcome is Outcome.CLOSED
        tally.aborted += reply.outcome is Outcome.ABORTED
        if reply.response is not None:
            tally.status_4xx += 400 <= reply.response.status < 500
            tally.status_5xx += reply.response.status >= 500
        found = list(violations)
        tally.violations += bool(found)
        for violation in found:
            cause = (violation, signature(result))
            self.kinds[violation] += 1
            self.causes[cause] += 1
            self.examples.setdefault(cause, result)
            self.cases[(violation, f"{result.case.category.value}/{result.case.kind}")] += 1

    @property
    def failed(self) -> int:
        return sum(t.violations for t in self.tallies.values())

    def render(self) -> str:
        columns = ("sent", "answered", "closed", "aborted", "4xx", "5xx", "violating")
        lines = [f"{'category':<20}" + "".join(f"{c:>10}" for c in columns)]
        for category in Category:
            t = self.tallies.get(category)
            if t is None:
                continue
            row = (t.sent, t.answered, t.closed, t.aborted, t.status_4xx, t.status_5xx)
            lines.append(
                f"{category.value:<20}" + "".join(f"{n:>10}" for n in (*row, t.violations))
            )
        for violation, count in self.kinds.most_common():
            lines += ["", f"{count} x {violation.value}"]
            kinds = [(k, n) for (v, k), n in self.cases.most_common() if v is violation]
            lines.append("  cases: " + ", ".join(f"{k} {n}" for k, n in kinds[:15]))
            for (v, cause), n in self.causes.most_common():
                if v is violation:
                    lines += [f"  {n} x answered {cause}", *_example(self.examples[(v, cause)])]
        return "\n".join(lines)


def _example(result: Result) -> list[str]:
    """One reproducer: the case, the start of its bytes and of what came back."""
    case = result.case
    reply = result.reply
    got = reply.response.body if reply.response is not None else reply.raw
    return [
        f"    e.g. {case.describe()}: python -m tests.fuzzing {case.seed} {case.index}",
        f"    sent: {case.data[:240]!r}",
        f"    got: {reply.detail} {got[:240]!r}".replace(":  ", ": ", 1),
    ]
