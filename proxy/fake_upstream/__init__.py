"""A deterministic fake of the OpenAI and Anthropic HTTP APIs, with scriptable faults.

In-process::

    fake = FakeUpstream()
    server = TestServer(fake.make_app())
    fake.enqueue(Fault(status=429, headers={"retry-after": "1"}))
    fake = FakeUpstream(limits=Limits(rpm=60, tpm=40_000))  # real token buckets

Standalone: ``python -m proxy.fake_upstream --port 0`` (prints ``listening on URL``).
It imports nothing else from ``proxy``.
"""

from .app import FakeUpstream
from .billing import Billing, PriceRow, Tokens
from .caching import CacheUse, PromptCache
from .content import fake_text, prompt_sequence, prompt_tokens
from .faults import Fault, RecordedRequest
from .limits import Counts, Limits, Rates

__all__ = [
    "Billing",
    "CacheUse",
    "Counts",
    "FakeUpstream",
    "Fault",
    "Limits",
    "PriceRow",
    "PromptCache",
    "Rates",
    "RecordedRequest",
    "Tokens",
    "fake_text",
    "prompt_sequence",
    "prompt_tokens",
]
