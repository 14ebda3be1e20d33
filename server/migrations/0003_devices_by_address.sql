-- Requests read no more devices than they concern (store format 3; see
-- server/src/store/format.rs): a join counts the devices that joined from its address.
CREATE INDEX devices_by_address ON devices (joined_from);
