-- Membership the operator can rely on (store format 2; see server/src/store/format.rs).

-- Browsers of members the operator removed, by the SHA-256 of their endpoint: a page
-- that comes back with one is told it was removed (or banned), never re-added.
CREATE TABLE removals (
    endpoint_hash bytea PRIMARY KEY,
    name          text NOT NULL,
    banned        boolean NOT NULL,
    at            bigint NOT NULL
);

-- Rate limits every instance counts together: the generic cell rate algorithm's next
-- allowed time (milliseconds since the Unix epoch) per quota and key.
CREATE TABLE allowances (
    key text PRIMARY KEY,
    tat bigint NOT NULL
);

CREATE INDEX device_codes_by_member ON device_codes (member_id);
