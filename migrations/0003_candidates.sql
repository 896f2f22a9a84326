-- Candidates: strategy artifacts on their way to trading, content-addressed.

-- Every artifact's bytes, stored once by SHA-256.
CREATE TABLE artifact_blobs (
    hash      TEXT    PRIMARY KEY,
    bytes     BLOB    NOT NULL,
    size      INTEGER NOT NULL,
    stored_ms INTEGER NOT NULL
);

-- state: submitted -> gated (validate and backtest passed) -> passed (paper
-- passed too) -> promoted; or failed (a gate said no), rejected (by an
-- operator), retired (replaced after being promoted).
CREATE TABLE candidates (
    id           INTEGER PRIMARY KEY,
    hash         TEXT    NOT NULL UNIQUE REFERENCES artifact_blobs (hash),
    name         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    parent       TEXT,
    submitted_by TEXT    NOT NULL,
    note         TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL
);

-- Each gate's verdict with its figures (JSON).
CREATE TABLE gate_results (
    id           INTEGER PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates (id),
    gate         TEXT    NOT NULL CHECK (gate IN ('validate', 'backtest', 'paper')),
    verdict      TEXT    NOT NULL CHECK (verdict IN ('pass', 'fail')),
    figures      TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    time_ms      INTEGER NOT NULL
);

-- The active strategy's history: each promotion or rollback, newest last.
CREATE TABLE deployments (
    id            INTEGER PRIMARY KEY,
    hash          TEXT    NOT NULL REFERENCES artifact_blobs (hash),
    candidate_id  INTEGER REFERENCES candidates (id),
    action        TEXT    NOT NULL CHECK (action IN ('initial', 'promote', 'rollback')),
    actor         TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    forced        INTEGER NOT NULL DEFAULT 0,
    time_ms       INTEGER NOT NULL
);
