-- The highest nonce a venue key may have used: a restart, or a clock that
-- stepped back, starts above it, so no nonce is ever used twice. Keys are
-- named by a fingerprint (SHA-256 of the public key, first 16 hex digits),
-- never stored themselves.
CREATE TABLE venue_nonces (
    venue        TEXT    NOT NULL,
    key_print    TEXT    NOT NULL,
    high_water   INTEGER NOT NULL,
    PRIMARY KEY (venue, key_print)
);
