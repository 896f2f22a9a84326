-- Bars a candle file marked partial (its column `partial`, as `keel data
-- export --timeframe` writes it: fewer candles than a whole bar where it
-- was made), kept beside the bars so that a backtest of the stored series
-- and its export say them as the file did (issue 21). A mark is a note on
-- a bar, not one of its values: it is not in the bars' digest. An import
-- sets the marks of the bars it brings (a bar it stores unchanged keeps a
-- mark it had); a mark without a stored bar at its time is never read.
CREATE TABLE candle_marks (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    time_ms   INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe, time_ms)
) WITHOUT ROWID;
