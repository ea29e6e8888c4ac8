-- Bulk replay jobs that cannot stop one another (issue 21, item 5). Before, a chunk over a sparse filter scanned
-- until it had found 500 matches, could outlast the statement timeout, rolled back without a trace and was picked
-- again forever, ahead of every other job.
--
-- * `after_id` is now the last delivery a chunk scanned, not the last it replayed: a chunk reads a bounded window
--   of the tenant's history after it, so a filter that matches nothing still moves on. A running job's old value
--   (its last replay) is a valid place to go on from. `scanned` counts what the windows read, for the job's page.
-- * A chunk that fails is rolled back and counted (`failures`, its reason in `error`, shown to the tenant); a
--   success counts from zero again. At the limit the job is `failed`, which ends it like `finished` does
--   (`finished_at` set), so one broken job costs a bounded number of turns.
-- * Turns go by tenant: the next job is the oldest of the tenant whose latest job moved least recently, over all of
--   its jobs (`replays_tenant_turns`), so a tenant gains no turns by starting several jobs, or by finishing one.
ALTER TABLE replays
    DROP CONSTRAINT replays_status_check,
    DROP CONSTRAINT replays_check,
    ADD COLUMN scanned bigint NOT NULL DEFAULT 0,
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN error text,
    ADD CONSTRAINT replays_status_check CHECK (status IN ('queued', 'running', 'finished', 'failed')),
    ADD CONSTRAINT replays_ended CHECK ((status IN ('finished', 'failed')) = (finished_at IS NOT NULL));

DROP INDEX replays_open;
CREATE INDEX replays_open ON replays (updated_at) WHERE status IN ('queued', 'running');
CREATE INDEX replays_tenant_turns ON replays (tenant_id, updated_at DESC);
