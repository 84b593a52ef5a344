"""The request log line's format: JSON by default, readable key=value on a terminal or when
``logging.format: console`` asks for it; never JSON-escaped noise on a terminal."""

from __future__ import annotations

import io
import json

import pytest

from proxy.config import Logging
from proxy.logs import make_logger


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class File(io.StringIO):
    def isatty(self) -> bool:
        return False


FIELDS = {
    "request_id": "abc",
    "ttft_ms": 12.5,
    "cost_usd": 6e-05,
    "token_source": "upstream",
    "error": None,
}


@pytest.mark.parametrize(
    ("fmt", "stream", "is_json"),
    [
        ("auto", File(), True),
        ("auto", Terminal(), False),
        ("console", File(), False),
        ("json", Terminal(), True),
    ],
)
def test_format_follows_config_then_terminal(fmt: str, stream: io.StringIO, is_json: bool) -> None:
    make_logger(Logging(format=fmt), stream).info("request", **FIELDS)  # type: ignore[arg-type]
    line = stream.getvalue().strip()
    if is_json:
        parsed = json.loads(line)
        assert FIELDS == {k: parsed[k] for k in FIELDS}
        assert "request" == parsed["event"]
    else:
        assert " request " in line
        for key, value in FIELDS.items():
            assert f"{key}={value}" in line
