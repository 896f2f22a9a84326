-- What a live venue was sent, kept by the venue's client beside the
-- ledger: written before an order leaves ('sending'), so a crash or a
-- reply that never came leaves a row that is looked up at the venue by its
-- client order id before anything is sent again.
--   sending  written, the request not yet answered (or the process died)
--   unknown  sent, no usable answer: maybe placed
--   retry    refused for now (rate limit, nonce): nothing placed, send again
--   placed   the venue holds it (txid known)
--   refused  the venue refused it, or it never could be sent (reason)
--   ended    reported to the ledger as done
CREATE TABLE venue_orders (
    client_order_id TEXT    PRIMARY KEY,
    venue           TEXT    NOT NULL,
    venue_order_id  TEXT    NOT NULL,
    txid            TEXT,
    symbol          TEXT    NOT NULL,
    pair            TEXT    NOT NULL,
    side            TEXT    NOT NULL,
    volume          TEXT    NOT NULL,
    -- A stop order's trigger price (as sent); NULL: a market order.
    trigger_price   TEXT,
    state           TEXT    NOT NULL,
    reason          TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX venue_orders_state ON venue_orders (state);
CREATE INDEX venue_orders_venue_id ON venue_orders (venue_order_id);

-- What the account held at the venue when a live run first reconciled:
-- later balances must equal these plus the run's booked fills.
CREATE TABLE venue_baselines (
    run_id   INTEGER NOT NULL,
    asset    TEXT    NOT NULL,
    amount   TEXT    NOT NULL,
    PRIMARY KEY (run_id, asset)
);

-- A live book's protective stop is an order of the book like any other,
-- resting at the venue: the price that triggers it. NULL: a market order.
ALTER TABLE orders ADD COLUMN trigger_price REAL;
