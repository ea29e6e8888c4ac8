-- The claim takes turns across tenants: besides the oldest due rows it looks at the heads of a few tenants' queues
-- (from a random tenant on), so one tenant's backlog cannot hold another tenant's fresh deliveries behind it.
-- Each step of that walk is one probe of this index: the next tenant with live rows, then its oldest due rows.
CREATE INDEX deliveries_tenant_due ON deliveries_live (tenant_id, due_at) WHERE due_at IS NOT NULL;
