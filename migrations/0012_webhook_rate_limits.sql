-- Per-webhook rate limits: `rate_limit_per_second` caps deliveries to a webhook, summed over every worker process.
-- The state is here, not in a process: each slot is a row count in a short window (`webhook_rate_windows`), taken
-- right before the request is sent; a delivery that finds no slot goes back to pending for the next window
-- without spending an attempt. Windows are `capacity * 1000 / per_second` ms long with `capacity` slots (at least
-- 50 ms), so any one second sees at most per_second + capacity requests.
ALTER TABLE webhooks ADD COLUMN rate_limit_per_second integer
    CHECK (rate_limit_per_second BETWEEN 1 AND 10000);

CREATE TABLE webhook_rate_windows (
    webhook_id  text NOT NULL,
    window_id   bigint NOT NULL,
    used        integer NOT NULL,
    PRIMARY KEY (webhook_id, window_id)
);
