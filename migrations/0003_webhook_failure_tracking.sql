-- Auto-disable: since when every delivery of a webhook that finished has failed for good, and how many have.
-- Any success clears both; a webhook failing past COURIER_DISABLE_AFTER with enough exhausted deliveries is
-- disabled with reason `failing`. The state lives here, not in a process, so restarts and scale-out agree.
ALTER TABLE webhooks
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN exhausted_since_failing integer NOT NULL DEFAULT 0;
