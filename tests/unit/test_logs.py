"""Log sinks and redaction: secrets never written, stdout never blocks the loop."""

from __future__ import annotations

import io
import json
import threading

from aiohttp.http_exceptions import BadHttpMessage

from proxy.config import Logging
from proxy.logs import QueuedLineWriter, ServerLog, make_logger, redact_secrets


def test_credential_keys_and_values_are_masked() -> None:
    event = {
        "api_key": "sk-live-abcdef123456",
        "password": 1234,
        "error": "upstream said: Bearer sk-proj-abcdef123456 is invalid",
        "attempts": [{"Authorization": "Bearer xyz", "reason": "ok"}],
        "status": 200,
    }
    out = redact_secrets(None, "info", event)
    text = json.dumps(out)
    assert "abcdef123456" not in text and "xyz" not in text and "1234" not in text
    assert 200 == out["status"]
    assert "ok" == out["attempts"][0]["reason"]


def test_plain_strings_pass_unchanged() -> None:
    event = {"path": "/openai/v1/chat/completions", "model": "gpt-4o"}
    assert {"path": "/openai/v1/chat/completions", "model": "gpt-4o"} == redact_secrets(
        None, "info", dict(event)
    )


class SlowStream(io.StringIO):
    """A stdout whose writes block until released, like a stalled pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, s: str) -> int:
        self.gate.wait(5)
        return super().write(s)


def test_queued_writer_never_blocks_and_bounds_memory() -> None:
    out = SlowStream()
    writer = QueuedLineWriter(out, max_lines=10)
    for i in range(100):  # returns at once although the stream is stuck
        writer.msg(f"line {i}")
    out.gate.set()
    writer.close()
    lines = out.getvalue().splitlines()
    assert lines[-2] == "line 99"  # the newest lines survive ...
    assert json.loads(lines[-1])["event"] == "log lines dropped"  # ... and drops are reported
    assert len(lines) < 30  # far fewer than the 100 sent: the buffer is bounded


def test_queued_writer_writes_everything_when_keeping_up() -> None:
    out = io.StringIO()
    writer = QueuedLineWriter(out)
    for i in range(1000):
        writer.msg(f"{i}")
    writer.close()
    assert [str(i) for i in range(1000)] == out.getvalue().splitlines()


def test_aiohttp_server_records_become_one_line_without_a_clients_bytes() -> None:
    out = io.StringIO()
    server_log = ServerLog(make_logger(Logging(format="json"), out))
    try:
        raise BadHttpMessage("Invalid header value char:\n\n  b'x-api-key: sk-ant-secret\\x00'")
    except BadHttpMessage:
        server_log.exception("Error handling request from %s", "127.0.0.1")
    try:
        raise RuntimeError("a bug")
    except RuntimeError as bug:
        server_log.exception("Unhandled exception", exc_info=bug)
    quiet, loud = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {
        "event": "Error handling request from 127.0.0.1",
        "error_type": "BadHttpMessage",
        "source": "aiohttp.server",
        "level": "error",
    } == {k: v for k, v in quiet.items() if k != "timestamp"}
    assert ("a bug", "RuntimeError: a bug") == (loud["error"], loud["traceback"].splitlines()[-1])
