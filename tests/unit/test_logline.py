"""One log-line shape for every request, even one aiohttp could not parse."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from proxy.exchange import Exchange
from proxy.logline import LINE_KEYS, log_fields, unparsed_request_fields


def test_a_request_line_has_every_key_in_order() -> None:
    ex = Exchange(make_mocked_request("GET", "/nowhere"))
    assert LINE_KEYS == tuple(log_fields(ex))


def test_an_unparsed_request_gets_the_same_keys_with_what_is_known() -> None:
    line = unparsed_request_fields(request_id="r1", status=400, error="malformed request: x")
    assert LINE_KEYS == tuple(line)
    assert ("r1", 400, None, [], 0) == (
        line["request_id"],
        line["status"],
        line["route"],
        line["attempts"],
        line["bytes_in"],
    )
