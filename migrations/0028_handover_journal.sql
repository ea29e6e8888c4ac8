-- Deliveries handed over in memory are written once (issue: the queue rebuilt, PostgreSQL's work per delivery).
--
-- Under `courier serve`, ingest hands most new deliveries to the worker of its own process in memory. Until now it
-- also inserted each one into `deliveries_live`, `delivering` with a lease, only for its first attempt to move it
-- into its day a few milliseconds later: a heap row, seven index entries and a delete per delivery (about 1,100
-- bytes of WAL and 2 of the 5.9 rows written per delivery of a burst, SCALING.md), for a row that protected
-- nothing but a crash.
--
-- Now the ingest transaction writes one journal row per fan-out instead, its deliveries as arrays, with the lease
-- they are handed over on. The first attempt writes each delivery once, in its final state (or `pending` for a
-- retry), and a crash loses nothing: once the lease has run out, any worker's sweep writes the deliveries the journal
-- holds that are not in `deliveries` as the claim would have left them (`delivering`, attempt 1, the lease run
-- out), so they are claimed again. Materialising takes the journal row `FOR KEY SHARE` and the sweep deletes it
-- before it looks for what is missing, so one delivery is never written twice. `queue::journal` owns the table.
CREATE TABLE delivery_handovers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL,
    environment text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL,
    delivery_ids text[] NOT NULL,
    event_ids text[] NOT NULL,
    webhook_ids text[] NOT NULL,
    event_types text[] NOT NULL,
    call_ids text[] NOT NULL,
    max_attempts int[] NOT NULL,
    trace_parents text[] NOT NULL,
    include_transcript bool[] NOT NULL,
    include_metrics bool[] NOT NULL
);
