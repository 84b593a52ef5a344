"""Against a real llama.cpp server, when one is available: the anthropic SDK through the proxy
to an OpenAI-compatible model (translation), and the context-length error-driven retry.

Runs when ``LLM_PROXY_LLAMA_URL`` names a running ``llama-server`` (e.g. started with
``llama-server -m model.gguf -c 2048 --port 8081``); no model can be downloaded here, so it
skips with that reason otherwise.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic
import pytest

from tests.conftest import LogCapture

LLAMA_URL = os.environ.get("LLM_PROXY_LLAMA_URL")

pytestmark = pytest.mark.skipif(
    not LLAMA_URL,
    reason="no llama.cpp server: set LLM_PROXY_LLAMA_URL to a running llama-server's URL",
)


def llama_config(url: str) -> dict[str, Any]:
    upstream = {"name": "llama", "base_url": url, "api": "openai_chat"}
    return {
        "listen": {"host": "127.0.0.1", "port": 8080},
        "routes": [
            {"prefix": "/anthropic", "provider": "anthropic", "upstreams": [upstream]},
            {"prefix": "/openai", "provider": "openai", "upstreams": [{**upstream, "api": None}]},
        ],
    }


async def test_the_anthropic_sdk_talks_to_llama_cpp_through_the_proxy(
    start_proxy: Any, logs: LogCapture
) -> None:
    assert LLAMA_URL is not None
    url = await start_proxy(llama_config(LLAMA_URL))
    client = anthropic.AsyncAnthropic(base_url=url + "/anthropic", api_key="unused")
    message = await client.messages.create(
        model="local", max_tokens=16, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert message.content and message.usage.output_tokens > 0
    async with client.messages.stream(
        model="local", max_tokens=16, messages=[{"role": "user", "content": "Count to 3."}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert "openai_chat" == (await logs.last())["translation"]["upstream"]


async def test_an_over_long_chat_is_fixed_by_the_error_driven_retry(
    start_proxy: Any, logs: LogCapture
) -> None:
    assert LLAMA_URL is not None
    url = await start_proxy(llama_config(LLAMA_URL))
    filler = "The quick brown fox jumps over the lazy dog. " * 40
    messages = []
    for i in range(30):
        messages += [
            {"role": "user", "content": f"{i} {filler}"},
            {"role": "assistant", "content": "ok"},
        ]
    messages.append({"role": "user", "content": "Say hi."})
    client = anthropic.AsyncAnthropic(base_url=url + "/anthropic", api_key="unused")
    message = await client.messages.create(model="local", max_tokens=8, messages=messages)
    assert message.content
    line = await logs.last()
    assert line["trimmed_messages"] > 0
