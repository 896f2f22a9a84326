-- Bars a candle file marked partial (its column `partial`, as `keel data
-- export --timeframe` writes it: fewer candles than a whole bar where it
-- was made), kept beside the bars so that a backtest of the stored series
-- and its export say them as the file did (issue 21). One row per span of
-- `candle_spans` that has any: `times` holds their open times, ascending,
-- as little-endian 64-bit integers. A mark is a note on a bar, not one of
-- its values: it is not in the bars' digest. An import sets the marks of
-- the bars it brings (a bar it stores unchanged keeps a mark it had,
-- unless the import replaces); a mark without a stored bar at its time is
-- never read.
CREATE TABLE candle_marks (
    id        INTEGER PRIMARY KEY,
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    -- as `candle_spans.span`
    span      INTEGER NOT NULL,
    times     BLOB    NOT NULL,
    UNIQUE (symbol, timeframe, span)
);
