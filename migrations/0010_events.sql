-- The activity log as one stream: every event the operator's surface shows
-- (a bar booked, a signal, an order's state, a fill, a risk event, a halt,
-- the trading state, a candidate's state, an evolution step, an audit
-- line), written in the same transaction as the fact it reports, so the
-- stream says nothing the ledger does not hold, and misses nothing it
-- does. `id` is never reused (AUTOINCREMENT): a reader resumes after the
-- last id it saw. `data` is a JSON object.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    data    TEXT    NOT NULL
);
