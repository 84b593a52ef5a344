"""Context budget building blocks, pure and offline (no aiohttp, no network, no IO at import).

- ``tokens``: token counting for OpenAI chat / Anthropic messages bodies.
- ``bpe``: the bundled o200k_base / cl100k_base encodings, loaded lazily and offline.
- ``windows``: built-in context windows and model-name matching.
- ``trim``: evict whole turns, oldest first, to fit a budget.
- ``images``: image/document token estimates used by ``tokens``.
"""
