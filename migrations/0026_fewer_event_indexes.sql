-- Two index entries fewer for every event stored (issue: the queue rebuilt, PostgreSQL's work per delivery).
--
-- * `events` kept a primary key (tenant_id, environment, id, received_at) beside `events_received` (tenant_id,
--   environment, received_at DESC, id DESC): the same four columns, in another order. Every lookup of an event
--   names all four (its day comes from `event_keys`), so `events_received` serves it as well, and uniqueness is
--   `event_keys`' job since migration 0015. Dropping the key drops it from every partition at once; nothing
--   references it.
-- * `event_keys_tenant_received_at` served retention by tenant and erasure (a tenant's keys by age). Both now walk
--   the tenant's events by `events_received`, in the day partitions older than the cut only, and lock each event's
--   key by its primary key: the same rows, one index fewer to write per event.
ALTER TABLE events DROP CONSTRAINT events_pkey;
DROP INDEX event_keys_tenant_received_at;
