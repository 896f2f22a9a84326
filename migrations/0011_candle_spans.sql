-- The candle store by columns (issue 21). A series is cut into spans of
-- 65,536 minutes on the clock (`keel_model::candles::columns`); each span is
-- one row whose `columns` holds its bars column by column (times, opens,
-- highs, lows, closes, volumes; little-endian), read in bulk. The rows of
-- `candles` are moved here by the host when this migration runs, and that
-- table is dropped.
CREATE TABLE candle_spans (
    id        INTEGER PRIMARY KEY,
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    -- open time div 65,536 minutes
    span      INTEGER NOT NULL,
    bars      INTEGER NOT NULL CHECK (bars > 0),
    first_ms  INTEGER NOT NULL,
    last_ms   INTEGER NOT NULL,
    -- gaps inside the span (not across its edges), and the bars they miss
    gaps      INTEGER NOT NULL,
    missing   INTEGER NOT NULL,
    -- BLAKE3 of `columns`
    digest    BLOB    NOT NULL,
    columns   BLOB    NOT NULL,
    UNIQUE (symbol, timeframe, span)
);

-- The catalogue: one row per series, remade from its spans by every import.
CREATE TABLE candle_series (
    symbol     TEXT    NOT NULL,
    timeframe  TEXT    NOT NULL,
    bars       INTEGER NOT NULL,
    first_ms   INTEGER NOT NULL,
    last_ms    INTEGER NOT NULL,
    gaps       INTEGER NOT NULL,
    missing    INTEGER NOT NULL,
    -- `blake3:<hex>` of the bars (see `columns::digest`)
    digest     TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe)
) WITHOUT ROWID;

-- An import's file is named by its digest with the algorithm: earlier
-- imports were SHA-256, later ones BLAKE3.
ALTER TABLE candle_imports RENAME COLUMN sha256 TO file_digest;
UPDATE candle_imports SET file_digest = 'sha256:' || file_digest;
