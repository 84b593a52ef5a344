"""Client keys, per-key limits and budgets, and the spend ledger (``auth: {mode: keys}``).

keys.py (secrets, hashes, KeyRecord) · store.py (protocol, portable SQL, migrations) with
sqlite_store.py and postgres_store.py · cache.py (hot-path key lookups) · limits.py and
limits_redis.py (rpm/tpm/concurrency/budget counters) · gate.py (the facade a plugin calls) ·
ledger.py (LedgerRow, LedgerWriter) · manage.py (key administration) · admin.py (/admin/ API) ·
cli.py (``llm-proxy keys|spend``) · runtime.py (all of it built from the config).
Nothing here is imported by the proxy core; importing this package loads nothing else.
"""
