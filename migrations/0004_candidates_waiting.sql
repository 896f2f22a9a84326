-- A running paper engine looks for candidates waiting for a shadow slot
-- after every bar: an index over just those keeps that look-up tiny however
-- many candidates the nightly evolution has submitted over the years.
CREATE INDEX candidates_waiting ON candidates (id) WHERE state = 'gated';
