-- Every delivery row is written three times (fan-out, claim, record), each time through every index of the table,
-- so each index and constraint on `deliveries` is paid per delivery, thrice. Two were not worth it:
--
-- * The foreign key to `webhooks`: under concurrent ingest every fan-out row took a KEY SHARE lock on the same few
--   webhook rows, turning each into a multixact. Webhook rows are never deleted (deletion is `deleted_at`), and
--   fan-out and replay copy ids that exist, so the key guarded nothing the code does not.
-- * `deliveries_tenant_status`: `status` changes on every write. Listing by status walks `deliveries_tenant`
--   (newest first) and filters, which the page size bounds.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_webhook_id_fkey;
DROP INDEX deliveries_tenant_status;
