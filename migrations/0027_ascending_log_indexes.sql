-- The log's indexes ascend (issue: the queue rebuilt, PostgreSQL's work per delivery).
--
-- `deliveries_tenant` (tenant_id, environment, id DESC), `deliveries_webhook` (webhook_id, id DESC) and
-- `events_received` (tenant_id, environment, received_at DESC, id DESC) were built descending for "newest first".
-- But ids and `received_at` grow, so in a descending index every new entry goes in front of its tenant's (or
-- webhook's) range: pages split in the middle, half of each page went to the WAL at every split, and the pages left
-- behind stay half empty. Ascending, every new entry goes after its range, where PostgreSQL splits a page at its
-- end and logs almost nothing (`pg_waldump` of a 20,000-event burst: these five index partitions wrote 1,700
-- left-half splits of about 4 KB each, 350 bytes of WAL per delivery; the primary key, ascending on the same ids,
-- 160 splits of under 1 KB). A B-tree is read backwards as cheaply, so every "newest first" query keeps its plan.
--
-- Rebuilding them locks `deliveries` and `events` against writes while it runs, for a time in proportion to the
-- history kept (about 4.3 s per million events and deliveries on the 2-core bench machine; README, "Operating
-- Courier").
DROP INDEX deliveries_tenant;
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, environment, id);
DROP INDEX deliveries_webhook;
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);
DROP INDEX events_received;
CREATE INDEX events_received ON events (tenant_id, environment, received_at, id);
