-- Queued batches by push-service origin (store format 3; see server/src/store/format.rs).

-- The push-service origin (scheme, host and port) of a batch's recipients, so that a
-- taker passes over the batches of an origin it holds back. NULL in a batch queued
-- before (or by an older release still running): read as its first recipient's origin.
ALTER TABLE fan_outs ADD COLUMN origin text;
