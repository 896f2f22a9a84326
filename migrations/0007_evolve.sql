-- The nightly evolution's record. A night, each of its steps with what went
-- in and came out (tokens, cost, time), the candidates it made and how far
-- each got through the gates, every backtest trial ever run on a data set
-- (so a Sharpe ratio is deflated by all of them, rejected ones included),
-- each use of a locked holdout, the predictions it made and their grades,
-- and the strategy document, one row per version.

CREATE TABLE evolve_nights (
    id          INTEGER PRIMARY KEY,
    started_ms  INTEGER NOT NULL,
    ended_ms    INTEGER,
    status      TEXT    NOT NULL
                CHECK (status IN ('running', 'finished', 'stopped', 'failed', 'abandoned')),
    -- The provider of each role, e.g. `offline` or `anthropic:claude-…`.
    providers   TEXT    NOT NULL,
    decision    TEXT    CHECK (decision IN ('nothing', 'create', 'promote', 'reject')),
    -- Why it stopped, failed or was abandoned; the decision's reason.
    note        TEXT    NOT NULL DEFAULT '',
    usd         REAL    NOT NULL DEFAULT 0,
    tokens      INTEGER NOT NULL DEFAULT 0,
    -- The settings it ran with (no secrets), JSON.
    settings    TEXT    NOT NULL
);

CREATE TABLE evolve_steps (
    id            INTEGER PRIMARY KEY,
    night_id      INTEGER NOT NULL REFERENCES evolve_nights (id),
    seq           INTEGER NOT NULL,
    -- benchmarks, reflect, decide, generate, review, build, validate,
    -- lookahead, diversity, backtest, stress, deflated-sharpe, pbo,
    -- holdout, submit.
    kind          TEXT    NOT NULL,
    -- analyst, author, reviewer, or code.
    actor         TEXT    NOT NULL,
    ok            INTEGER NOT NULL,
    input         TEXT    NOT NULL,
    output        TEXT    NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    usd           REAL    NOT NULL DEFAULT 0,
    started_ms    INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    attempt_id    INTEGER,
    UNIQUE (night_id, seq)
);

-- A strategy the night wrote: where its crate is, its source, and the
-- furthest gate it reached.
CREATE TABLE evolve_attempts (
    id            INTEGER PRIMARY KEY,
    night_id      INTEGER NOT NULL REFERENCES evolve_nights (id),
    slug          TEXT    NOT NULL,
    dir           TEXT    NOT NULL,
    parent        TEXT,
    brief         TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    hash          TEXT,
    -- The gate it stopped at, or `submitted`.
    reached       TEXT    NOT NULL,
    passed        INTEGER NOT NULL DEFAULT 0,
    figures       TEXT    NOT NULL DEFAULT '{}',
    candidate_id  INTEGER REFERENCES candidates (id),
    created_ms    INTEGER NOT NULL
);

CREATE TABLE evolve_trials (
    id        INTEGER PRIMARY KEY,
    night_id  INTEGER REFERENCES evolve_nights (id),
    -- The digest of the data the trial ran on (the in-sample window).
    dataset   TEXT    NOT NULL,
    strategy  TEXT    NOT NULL,
    params    TEXT    NOT NULL,
    -- Per-bar Sharpe ratio of the trial's equity returns, and their moments.
    sharpe    REAL    NOT NULL,
    n_obs     INTEGER NOT NULL,
    skew      REAL    NOT NULL,
    kurtosis  REAL    NOT NULL,
    trades    INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL
);
CREATE INDEX evolve_trials_dataset ON evolve_trials (dataset);

CREATE TABLE evolve_holdout_uses (
    id          INTEGER PRIMARY KEY,
    night_id    INTEGER NOT NULL REFERENCES evolve_nights (id),
    attempt_id  INTEGER REFERENCES evolve_attempts (id),
    dataset     TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL
);

CREATE TABLE evolve_predictions (
    id           INTEGER PRIMARY KEY,
    night_id     INTEGER NOT NULL REFERENCES evolve_nights (id),
    claim        TEXT    NOT NULL,
    metric       TEXT    NOT NULL,
    comparator   TEXT    NOT NULL CHECK (comparator IN ('>=', '<=')),
    threshold    REAL    NOT NULL,
    probability  REAL    NOT NULL,
    made_ms      INTEGER NOT NULL,
    due_ms       INTEGER NOT NULL,
    graded_ms    INTEGER,
    -- The metric's value at the horizon; NULL: not measurable (void).
    outcome      REAL,
    hit          INTEGER,
    brier        REAL
);

CREATE TABLE evolve_documents (
    version   INTEGER PRIMARY KEY,
    night_id  INTEGER REFERENCES evolve_nights (id),
    text      TEXT    NOT NULL,
    time_ms   INTEGER NOT NULL
);
