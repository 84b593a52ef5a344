"""The context bench's cache target on a smaller run: stepped trimming keeps the prompt cache
warm. (No needless trim on the corpus: tests/unit/test_correction.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_context


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_stepped_trimming_hits_the_cache_on_90_percent_after_the_first_trim(provider: str) -> None:
    turnwise = bench_context.simulate(provider, 160, 12_288, 0.7, False, 200)
    stepped = bench_context.simulate(provider, 160, 12_288, 0.7, True, 200)
    assert stepped.after_first_trim == turnwise.after_first_trim > 100
    assert stepped.hits >= 0.9 * stepped.after_first_trim
    assert turnwise.hits < 0.3 * turnwise.after_first_trim
    assert stepped.cost_usd < 0.7 * turnwise.cost_usd


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_stepped_trimming_on_the_byte_grid_keeps_the_cache_warm(provider: str) -> None:
    """The proxy's grid (message bytes, issue 17): the fake's tokens are words of ~6 bytes, so
    its steps are ~2/3 of the token grid's and the cut moves a little more often."""
    turnwise = bench_context.simulate(provider, 160, 12_288, 0.7, False, 200)
    stepped = bench_context.simulate(provider, 160, 12_288, 0.7, True, 200, byte_grid=True)
    assert stepped.after_first_trim == turnwise.after_first_trim > 100
    assert stepped.hits >= 0.85 * stepped.after_first_trim
    assert stepped.cost_usd < 0.7 * turnwise.cost_usd
