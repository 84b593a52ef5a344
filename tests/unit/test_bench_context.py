"""The context bench's cache target on a smaller run: stepped trimming keeps the prompt cache
warm. (No needless trim on the corpus: tests/unit/test_correction.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_context

from proxy.context.stepped import grid_weights, token_grid_bound


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_stepped_trimming_hits_the_cache_on_90_percent_after_the_first_trim(provider: str) -> None:
    """The proxy's grid on a conversation under the token grid's bound: the token grid, hits
    and bill exactly as the token grid's."""
    assert sum(grid_weights(bench_context.long_conversation(160))) <= token_grid_bound(11_008)
    turnwise = bench_context.simulate(provider, 160, 12_288, 0.7, False, 200)
    stepped = bench_context.simulate(provider, 160, 12_288, 0.7, True, 200, grid="proxy")
    tokens = bench_context.simulate(provider, 160, 12_288, 0.7, True, 200, grid="tokens")
    assert stepped.after_first_trim == turnwise.after_first_trim > 100
    assert stepped.hits >= 0.9 * stepped.after_first_trim
    assert turnwise.hits < 0.3 * turnwise.after_first_trim
    assert stepped.cost_usd < 0.7 * turnwise.cost_usd
    assert stepped.byte_grid_from is None
    assert (stepped.hit_log, stepped.cost_usd) == (tokens.hit_log, tokens.cost_usd)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_stepped_trimming_on_the_byte_grid_keeps_the_cache_warm(provider: str) -> None:
    """The grid of message bytes (issue 17): the fake's tokens are words of ~6 bytes, so its
    steps are ~2/3 of the token grid's and the cut moves a little more often."""
    turnwise = bench_context.simulate(provider, 160, 12_288, 0.7, False, 200)
    stepped = bench_context.simulate(provider, 160, 12_288, 0.7, True, 200, grid="bytes")
    assert stepped.after_first_trim == turnwise.after_first_trim > 100
    assert stepped.hits >= 0.85 * stepped.after_first_trim
    assert stepped.cost_usd < 0.7 * turnwise.cost_usd


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_history_that_passes_the_bound_switches_grids_once(provider: str) -> None:
    """A smaller window: the history passes the token grid's bound half way. Before, every
    request hits or misses as on the token grid; the first on the byte grid misses (the cut
    moves to a byte grid point); after it, every request as on the byte grid."""
    runs = {
        grid: bench_context.simulate(provider, 160, 6144, 0.7, True, 200, grid=grid)
        for grid in bench_context.GRIDS
    }
    switch = runs["proxy"].byte_grid_from
    assert switch is not None and 20 < switch < runs["proxy"].after_first_trim - 20
    proxy = runs["proxy"].hit_log
    assert proxy[:switch] == runs["tokens"].hit_log[:switch]
    assert proxy[switch] is False
    assert proxy[switch + 1 :] == runs["bytes"].hit_log[switch + 1 :]
    assert runs["bytes"].hits < runs["proxy"].hits < runs["tokens"].hits
