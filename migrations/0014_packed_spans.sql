-- Spans kept packed (issue 21). `packed` 1: `columns` holds the span's bars
-- as `keel_model::candles::packed` writes them (whole numbers, step by
-- step, in as few bytes as the steps need: a third to a sixth of the plain
-- columns' bytes). 0: `columns` holds the plain columns, as every span
-- written before this migration does; they are read as they are. Either
-- way `digest` is the BLAKE3 of the plain columns, and a read checks the
-- bars against it, so a series has the same digest however it is kept.
ALTER TABLE candle_spans ADD COLUMN packed INTEGER NOT NULL DEFAULT 0;
