-- Event ids are unique per tenant *and environment*. With the key on (tenant_id, id), a test-mode event could take
-- an id before the live event that needed it (the live post then answered 409), and a 409 told a test key that a
-- live event with that id existed. Test and live now have separate id spaces, as they have separate everything.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_tenant_id_event_id_fkey;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (tenant_id, environment, id);
ALTER TABLE deliveries ADD CONSTRAINT deliveries_event_fkey
    FOREIGN KEY (tenant_id, environment, event_id) REFERENCES events (tenant_id, environment, id) ON DELETE CASCADE;
DROP INDEX deliveries_event;
CREATE INDEX deliveries_event ON deliveries (tenant_id, environment, event_id);
