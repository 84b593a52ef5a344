-- Keys and the spend ledger. Times are epoch seconds (UTC); costs are integer pico-USD
-- (1e-12 USD), exact for prices given to 6 decimals per million tokens, so sums never drift.
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    secret_hint TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    revoked REAL,
    rotated REAL,
    rpm INTEGER,
    tpm INTEGER,
    max_concurrent INTEGER,
    budget_usd REAL,
    budget_period TEXT,
    routes TEXT NOT NULL DEFAULT '[]',
    models TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    row_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    key_id TEXT,
    route TEXT NOT NULL,
    upstream TEXT NOT NULL,
    model_requested TEXT,
    model_served TEXT,
    input_tokens INTEGER,
    cached_read_tokens INTEGER,
    cache_write_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_picousd INTEGER,
    usage_source TEXT NOT NULL,
    status INTEGER,
    latency_ms REAL NOT NULL
);

CREATE UNIQUE INDEX ledger_row ON ledger (row_id);
CREATE INDEX ledger_request ON ledger (request_id);
CREATE INDEX ledger_key_ts ON ledger (key_id, ts);
CREATE INDEX ledger_ts ON ledger (ts);
