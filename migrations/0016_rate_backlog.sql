-- A rate-limited webhook's backlog waits in line, not in the claim: when a delivery finds its webhook's window
-- full, it and every other pending delivery of that webhook due before the next window are given slots of their
-- own, one window's capacity after another, from the end of the line onwards. `until` is where the line ends, so
-- the next delivery that finds the window full queues behind it. A webhook without a backlog has no row here, or
-- a row whose `until` has passed.
CREATE TABLE webhook_rate_backlog (
    webhook_id  text PRIMARY KEY,
    until       timestamptz NOT NULL
);
