-- Custom headers a webhook sends with every attempt (an API gateway's credential beside our signature).
-- Names are kept in clear, so a webhook can be shown with its values masked without opening anything; names and
-- values together are sealed under the master key like the signing secret (the webhook id and "/headers" are the
-- associated data).
ALTER TABLE webhooks
    ADD COLUMN header_names text[] NOT NULL DEFAULT '{}',
    ADD COLUMN headers_ciphertext bytea,
    ADD CONSTRAINT webhooks_headers_sealed CHECK ((headers_ciphertext IS NULL) = (cardinality(header_names) = 0));
