-- Every bar a run booked, written in the bar's own transaction (so exactly
-- the booked ones). A strategy that starts mid-run — after a restart, a hot
-- swap, or as a shadow — is replayed through all of them, each with the
-- portfolio its book held then (rebuilt from the book's fills), so it
-- reaches the state it would have had running from the start. Prices are
-- the feed's floats as they were (REAL holds an f64 exactly).
CREATE TABLE run_bars (
    run_id   INTEGER NOT NULL REFERENCES runs (id),
    close_ms INTEGER NOT NULL,
    symbol   TEXT    NOT NULL,
    time_ms  INTEGER NOT NULL,
    open     REAL    NOT NULL,
    high     REAL    NOT NULL,
    low      REAL    NOT NULL,
    close    REAL    NOT NULL,
    volume   REAL    NOT NULL,
    PRIMARY KEY (run_id, close_ms, symbol)
) WITHOUT ROWID;

-- The replay reads one book's fills in the order they were booked.
CREATE INDEX fills_by_book ON fills (book_id);
