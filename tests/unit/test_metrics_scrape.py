"""A scrape that lands while a sibling worker creates or removes its metrics file reads a torn
file (prometheus-client raises struct.error on a file not yet sized): the worker reads again a
moment later instead of answering aiohttp's 500."""

from __future__ import annotations

import struct
from typing import Any

from proxy.metrics import SCRAPE_RETRIES_S, make_metrics_app


class TornFiles:
    """Metrics whose files read torn ``torn`` times, then whole."""

    def __init__(self, torn: int) -> None:
        self.torn = torn
        self.reads = 0

    def exposition(self) -> bytes:
        self.reads += 1
        if self.reads <= self.torn:
            struct.unpack_from("i", b"", 0)  # what MmapedDict hits on an empty file
        return b"llm_proxy_requests_total 20.0\n"


async def test_a_torn_read_is_read_again(aiohttp_client: Any) -> None:
    files = TornFiles(torn=2)
    client = await aiohttp_client(make_metrics_app(files))  # type: ignore[arg-type]
    resp = await client.get("/metrics")
    assert (200, b"llm_proxy_requests_total 20.0\n") == (resp.status, await resp.read())
    assert 3 == files.reads


async def test_files_that_stay_torn_get_a_503_to_scrape_again(aiohttp_client: Any) -> None:
    files = TornFiles(torn=100)
    client = await aiohttp_client(make_metrics_app(files))  # type: ignore[arg-type]
    resp = await client.get("/metrics")
    assert (503, "1") == (resp.status, resp.headers["Retry-After"])
    assert "Traceback" not in await resp.text()
    assert len(SCRAPE_RETRIES_S) + 1 == files.reads
