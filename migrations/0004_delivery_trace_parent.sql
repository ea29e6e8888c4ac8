-- The W3C traceparent of the request that created a delivery (ingest or replay), when tracing is on, so the
-- delivery attempts can link to it. NULL when the request was not traced: a null costs a bit in the row header.
ALTER TABLE deliveries ADD COLUMN trace_parent text;
