-- Every event's key row checked its tenant through a foreign key: one `SELECT … FROM tenants … FOR KEY SHARE` per
-- event, all of a busy tenant's ingests locking the same row (a multixact as soon as two overlap). Tenants are never
-- deleted by Courier (an emitter's key proves its tenant exists before any event is stored), so the key guarded
-- nothing the code does not; `courier purge` erases a tenant's keys with its history.
ALTER TABLE event_keys DROP CONSTRAINT event_keys_tenant_id_fkey;
