-- Candle store: one row per closed bar, keyed by symbol, timeframe and open time.
CREATE TABLE candles (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    time_ms   INTEGER NOT NULL,
    open      REAL    NOT NULL,
    high      REAL    NOT NULL,
    low       REAL    NOT NULL,
    close     REAL    NOT NULL,
    volume    REAL    NOT NULL,
    PRIMARY KEY (symbol, timeframe, time_ms)
) WITHOUT ROWID;

-- Where each series came from: one row per import, with the file's SHA-256.
CREATE TABLE candle_imports (
    id          INTEGER PRIMARY KEY,
    symbol      TEXT    NOT NULL,
    timeframe   TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    bars        INTEGER NOT NULL,
    inserted    INTEGER NOT NULL,
    gaps        INTEGER NOT NULL,
    imported_ms INTEGER NOT NULL
);
