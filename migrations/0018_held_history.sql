-- Retention by row reaches the DEFAULT partition of `events` (migration 0015), which no day's drop takes: a drop
-- moves there the few events that live deliveries still need (`courier_scheduler::history`), and an event lands
-- there when its day had no partition yet. Retention looks for its expired rows by `received_at` every minute; the
-- table's indexes all lead with the tenant, so without this it would read the whole partition each time. Only
-- this partition gets the index: day partitions are dropped whole and never searched by time alone, and the
-- DEFAULT partition is small (a few held rows), so building and keeping it costs next to nothing.
CREATE INDEX events_default_received_at ON events_default (received_at);
