-- The ledger of paper (and later live) trading. Money and quantities are
-- exact decimals stored as TEXT; times are ms since the Unix epoch, UTC.

-- Strategy artifacts ever run, by content hash.
CREATE TABLE artifacts (
    hash          TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    contract      TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL
);

-- One `keel run`: its feed and settings, and how far it got. `cursor_ms` is
-- the close time of the last bar fully booked (fills, stops, marks);
-- `signalled_ms` the last bar whose signals were all turned into orders.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    mode         TEXT    NOT NULL,
    feed         TEXT    NOT NULL,
    settings     TEXT    NOT NULL,
    started_ms   INTEGER NOT NULL,
    cursor_ms    INTEGER,
    signalled_ms INTEGER,
    ended_ms     INTEGER,
    status       TEXT    NOT NULL
);

-- One strategy's book in a run: its own cash and totals.
CREATE TABLE books (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs (id),
    slot             TEXT    NOT NULL,
    artifact_hash    TEXT    NOT NULL REFERENCES artifacts (hash),
    params           TEXT    NOT NULL,
    start_cash       TEXT    NOT NULL,
    cash             TEXT    NOT NULL,
    realized         TEXT    NOT NULL,
    fees             TEXT    NOT NULL,
    peak_equity      TEXT    NOT NULL,
    day_ms           INTEGER NOT NULL,
    day_start_equity TEXT    NOT NULL,
    UNIQUE (run_id, slot)
);

-- Every signal a strategy gave, with the decision taken.
CREATE TABLE signals (
    book_id       INTEGER NOT NULL REFERENCES books (id),
    time_ms       INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    artifact_hash TEXT    NOT NULL,
    symbol        TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    size          TEXT    NOT NULL,
    tag           TEXT    NOT NULL,
    stop_loss     REAL,
    take_profit   REAL,
    reason        TEXT    NOT NULL,
    confidence    REAL    NOT NULL,
    decision      TEXT    NOT NULL CHECK (decision IN ('accepted', 'rejected')),
    reject_reason TEXT,
    PRIMARY KEY (book_id, time_ms, seq)
);

-- Orders, written before they are sent. state: new (intent committed, not
-- yet acknowledged by the exchange) -> open -> filled | rejected | cancelled.
CREATE TABLE orders (
    client_order_id TEXT    PRIMARY KEY,
    book_id         INTEGER NOT NULL REFERENCES books (id),
    signal_time_ms  INTEGER NOT NULL,
    signal_seq      INTEGER NOT NULL,
    symbol          TEXT    NOT NULL,
    tag             TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    size            TEXT    NOT NULL,
    equity          REAL    NOT NULL,
    max_quantity    TEXT,
    reference_price REAL    NOT NULL,
    max_deviation   REAL    NOT NULL,
    stop_loss       REAL,
    take_profit     REAL,
    state           TEXT    NOT NULL,
    reason          TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);

-- Executions, booked once each (by the exchange's fill id).
CREATE TABLE fills (
    fill_id         TEXT    PRIMARY KEY,
    client_order_id TEXT,
    book_id         INTEGER NOT NULL REFERENCES books (id),
    symbol          TEXT    NOT NULL,
    tag             TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    price           TEXT    NOT NULL,
    quantity        TEXT    NOT NULL,
    fee             TEXT    NOT NULL,
    time_ms         INTEGER NOT NULL,
    source          TEXT    NOT NULL
);

-- Open positions, as the ledger holds them.
CREATE TABLE positions (
    book_id     INTEGER NOT NULL REFERENCES books (id),
    symbol      TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    side        TEXT    NOT NULL,
    quantity    TEXT    NOT NULL,
    cost        TEXT    NOT NULL,
    fees        TEXT    NOT NULL,
    opened_ms   INTEGER NOT NULL,
    mark        TEXT    NOT NULL,
    mae         TEXT    NOT NULL,
    stop_loss   REAL,
    take_profit REAL,
    PRIMARY KEY (book_id, symbol, tag)
);

CREATE TABLE trades (
    id          INTEGER PRIMARY KEY,
    book_id     INTEGER NOT NULL REFERENCES books (id),
    fill_id     TEXT    NOT NULL UNIQUE,
    symbol      TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    side        TEXT    NOT NULL,
    quantity    TEXT    NOT NULL,
    price_entry TEXT    NOT NULL,
    price_exit  TEXT    NOT NULL,
    opened_ms   INTEGER NOT NULL,
    closed_ms   INTEGER NOT NULL,
    pnl_gross   TEXT    NOT NULL,
    fees        TEXT    NOT NULL,
    mae         TEXT    NOT NULL,
    exit_reason TEXT    NOT NULL
);

CREATE TABLE equity_snapshots (
    book_id INTEGER NOT NULL REFERENCES books (id),
    time_ms INTEGER NOT NULL,
    cash    TEXT    NOT NULL,
    equity  TEXT    NOT NULL,
    PRIMARY KEY (book_id, time_ms)
) WITHOUT ROWID;

-- Halts, refusals the exchange side made, kill switches, with figures.
CREATE TABLE risk_events (
    id         INTEGER PRIMARY KEY,
    time_ms    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    book_id    INTEGER,
    detail     TEXT    NOT NULL,
    latency_us INTEGER
);

-- The account's trading state; one row, kept across restarts.
CREATE TABLE trading_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    state      TEXT    NOT NULL CHECK (state IN ('ACTIVE', 'REDUCE_ONLY', 'HALTED')),
    reason     TEXT    NOT NULL,
    changed_ms INTEGER NOT NULL
);
INSERT INTO trading_state VALUES (1, 'ACTIVE', 'new database', 0);

-- Who changed what and why. Append-only.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);
CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- The paper exchange's own book: what it was sent and what it filled. It
-- answers by client order id, so a resent order is never placed twice.
CREATE TABLE paper_orders (
    client_order_id TEXT    PRIMARY KEY,
    symbol          TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    side            TEXT    NOT NULL CHECK (side IN ('buy', 'sell')),
    size            TEXT    NOT NULL,
    equity          REAL    NOT NULL,
    max_quantity    TEXT,
    reference_price REAL    NOT NULL,
    max_deviation   REAL    NOT NULL,
    state           TEXT    NOT NULL,
    reason          TEXT,
    placed_ms       INTEGER NOT NULL
);
CREATE TABLE paper_fills (
    fill_id         TEXT    PRIMARY KEY,
    client_order_id TEXT    NOT NULL UNIQUE REFERENCES paper_orders (client_order_id),
    price           TEXT    NOT NULL,
    quantity        TEXT    NOT NULL,
    fee             TEXT    NOT NULL,
    time_ms         INTEGER NOT NULL
);
