-- Where each `keel data download` stands (issue 21), written in the same
-- transaction as each batch of its bars, so a run after a kill or a failure
-- goes on from the last batch committed and never stores a bar twice or
-- half a batch. Every bar of the series opening from `from_ms` up to (not
-- including) `next_ms` is stored, or had no trades (a gap); `last_bar_ms`
-- is the last one stored, for the gap before the next batch.
CREATE TABLE download_cursors (
    venue       TEXT    NOT NULL,
    pair        TEXT    NOT NULL,
    timeframe   TEXT    NOT NULL,
    symbol      TEXT    NOT NULL,
    from_ms     INTEGER NOT NULL,
    next_ms     INTEGER NOT NULL CHECK (next_ms >= from_ms),
    last_bar_ms INTEGER,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (venue, pair, timeframe, symbol)
) WITHOUT ROWID;
