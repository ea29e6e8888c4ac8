-- A receiver answers with any bytes. A `text` column refuses NUL and invalid UTF-8, and one refused row used to
-- fail a whole batch of attempts, so the answer is kept exactly, as bytes, and shown as text only when it is text.
-- `response_truncated` says the receiver sent more than the 4 KiB kept.
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_response_body_check;
ALTER TABLE delivery_attempts
    ALTER COLUMN response_body TYPE bytea USING convert_to(response_body, 'UTF8'),
    ADD COLUMN response_truncated boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT delivery_attempts_response_body_check CHECK (octet_length(response_body) <= 4096);
