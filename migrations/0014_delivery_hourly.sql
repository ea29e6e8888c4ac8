-- Finished deliveries per webhook and hour of finishing, kept for two days. The portal's overview charts a
-- webhook's last 24 hours from here: reading the day's deliveries themselves costs a heap fetch per delivery.
-- Written in the transaction that finishes the deliveries (courier-scheduler), so it never disagrees with them.
CREATE TABLE delivery_hourly (
    webhook_id  text NOT NULL,
    hour        timestamptz NOT NULL,
    succeeded   integer NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed      integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    PRIMARY KEY (webhook_id, hour)
);

-- What already finished in the last two days, by the hour it last changed.
INSERT INTO delivery_hourly (webhook_id, hour, succeeded, failed)
SELECT webhook_id, date_trunc('hour', updated_at),
       count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed')
  FROM deliveries
 WHERE status IN ('succeeded', 'failed') AND created_at > now() - interval '2 days'
 GROUP BY 1, 2;
