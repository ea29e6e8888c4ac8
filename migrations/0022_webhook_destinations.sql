-- A webhook may publish to a broker (Redis stream, NATS JetStream subject, RabbitMQ exchange) or hand its deliveries to a
-- `courier listen` (relay) instead of POSTing to a URL.
-- `destination` is what the API shows (credentials masked); `destination_ciphertext` is the broker as the worker
-- uses it, sealed with the master key like the signing secret (its URL may carry a password). Both are NULL for an
-- HTTP webhook, whose `url` is its destination; for a broker, `url` holds the broker's URL with credentials masked,
-- so every place that shows a webhook's URL (logs, the portal) shows where it delivers without a secret.
ALTER TABLE webhooks
    ADD COLUMN destination jsonb CHECK (destination IS NULL OR destination->>'type' IN ('redis', 'nats', 'rabbitmq', 'relay')),
    ADD COLUMN destination_ciphertext bytea,
    ADD CONSTRAINT webhooks_destination_sealed CHECK ((destination IS NULL) = (destination_ciphertext IS NULL));
