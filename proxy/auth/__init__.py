"""Client keys, per-key limits and budgets, and the spend ledger (``auth: {mode: keys}``).

keys.py (secrets, hashes, KeyRecord) · store.py (protocol, portable SQL, migrations) with
sqlite_store.py and postgres_store.py · cache.py (hot-path key lookups) · limits.py and
limits_redis.py (rpm/tpm/concurrency/budget counters) · gate.py (the facade a plugin calls;
its docstring says when to call what) · errors.py (a refusal as a ProxyError) · wire.py (the
client key and max_tokens from a request) · ledger.py (LedgerRow, LedgerWriter) · manage.py
(key administration) · admin.py (/admin/ API) · cli.py (``llm-proxy keys|spend``) ·
timespec.py (``7d``, dates) · runtime.py (all of it built from the config, for the app).
Nothing here is imported by the proxy core; importing this package loads nothing else.
"""
