-- A webhook may produce to a Kafka topic: `destination.type` 'kafka' (its brokers, topic, key, and SASL credentials
-- masked; the sealed copy holds them).
ALTER TABLE webhooks DROP CONSTRAINT webhooks_destination_check;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_destination_check
    CHECK (destination IS NULL OR destination->>'type' IN ('redis', 'nats', 'rabbitmq', 'kafka', 'relay'));
