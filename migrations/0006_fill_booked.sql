-- The close of the step at which a fill was booked, before the strategies
-- were shown that close (a kill's or a shadow's flattening, booked after
-- the last close was shown, gets that close + 1 ms). A strategy replayed
-- through the run's history is told each fill exactly where the running
-- one was, whatever the bar lengths of the run's symbols. Rows from before
-- this column were booked before the first close after their time.
ALTER TABLE fills ADD COLUMN booked_ms INTEGER;
