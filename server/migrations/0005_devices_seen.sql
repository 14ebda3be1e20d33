-- Each device's last sign of life (store format 6; see server/src/store/format.rs).

-- When the browser last showed a sign of life, in milliseconds since the Unix epoch. The
-- default is taken once, when this migration runs, for every device already there: they
-- count as seen at the upgrade, so it prunes nobody at once. (A release before format 6
-- still running beside it gets the time of each insert the same way.)
ALTER TABLE devices
    ADD COLUMN last_seen bigint NOT NULL
        DEFAULT (extract(epoch FROM now()) * 1000)::bigint,
    -- When the browser was warned that its silence will remove it; a sign of life clears it.
    ADD COLUMN stale_warned bigint;
