//! The indexes sled keeps beside the devices, so that no request reads every device: each
//! member's devices (by member id), the devices that joined from each address, and each
//! member's name (by member id). Every change to a device updates them in its own
//! transaction, through [`Indexes`]; the upgrade to format 3 builds them for an older
//! store from each device's [`Entries`]. Keys start with a prefix that no other prefix starts with, so a prefix scan
//! reads one member's or one address's entries and nothing else.

use std::net::IpAddr;

use sled::{
    transaction::{TransactionalTree, UnabortableTransactionError},
    Tree,
};

use crate::{model::member::Device, store::endpoint_key};

/// An index entry's value: its key says everything.
const PRESENT: &[u8] = &[];

/// The indexes, as one transaction writes them.
pub(super) struct Indexes<'a> {
    /// [`member_prefix`] and the endpoint, for each device.
    pub by_member: &'a TransactionalTree,
    /// [`address_prefix`] and the SHA-256 of the endpoint, for each device that joined
    /// from a known address.
    pub by_address: &'a TransactionalTree,
    /// The member's name, by member id.
    pub names: &'a TransactionalTree,
}

impl Indexes<'_> {
    /// Indexes `device` (again, if it was).
    pub fn add(&self, device: &Device) -> Result<(), UnabortableTransactionError> {
        let entries = Entries::of(device);
        self.by_member.insert(entries.by_member, PRESENT)?;
        if let Some(key) = entries.by_address {
            self.by_address.insert(key, PRESENT)?;
        }
        self.names.insert(entries.member_id, entries.name)?;
        Ok(())
    }

    /// Forgets `device`; with `member_left` (it was its member's last), the member's name.
    pub fn remove(
        &self,
        device: &Device,
        member_left: bool,
    ) -> Result<(), UnabortableTransactionError> {
        let entries = Entries::of(device);
        self.by_member.remove(entries.by_member)?;
        if let Some(key) = entries.by_address {
            self.by_address.remove(key)?;
        }
        if member_left {
            self.names.remove(entries.member_id)?;
        }
        Ok(())
    }
}

/// The entries that index one device.
pub(super) struct Entries<'a> {
    by_member: Vec<u8>,
    by_address: Option<Vec<u8>>,
    member_id: &'a [u8],
    name: &'a [u8],
}

impl<'a> Entries<'a> {
    pub fn of(device: &'a Device) -> Self {
        let endpoint = &device.subscription.endpoint;
        let member_id = device.member_id.as_bytes();
        Entries {
            by_member: member_device_key(member_id, endpoint),
            by_address: device
                .joined_from
                .map(|address| address_device_key(address, endpoint)),
            member_id,
            name: device.name.as_bytes(),
        }
    }

    /// Writes them outside a transaction (into `by_member`, `by_address` and `names`, as
    /// in [`Indexes`]): for building the indexes of a store that had none.
    pub fn insert_into(
        self,
        by_member: &Tree,
        by_address: &Tree,
        names: &Tree,
    ) -> Result<(), sled::Error> {
        by_member.insert(self.by_member, PRESENT)?;
        if let Some(key) = self.by_address {
            by_address.insert(key, PRESENT)?;
        }
        names.insert(self.member_id, self.name)?;
        Ok(())
    }
}

/// The start of the keys of `member_id`'s devices: the id's length, then the id.
pub(super) fn member_prefix(member_id: &[u8]) -> Vec<u8> {
    let length = u32::try_from(member_id.len()).unwrap_or(u32::MAX);
    [&length.to_be_bytes()[..], member_id].concat()
}

fn member_device_key(member_id: &[u8], endpoint: &str) -> Vec<u8> {
    [member_prefix(member_id).as_slice(), endpoint.as_bytes()].concat()
}

/// The start of the keys of the devices that joined from `address`: its family (4 or 6),
/// then its bytes.
pub(super) fn address_prefix(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => [&[4][..], &v4.octets()].concat(),
        IpAddr::V6(v6) => [&[6][..], &v6.octets()].concat(),
    }
}

fn address_device_key(address: IpAddr, endpoint: &str) -> Vec<u8> {
    [address_prefix(address), endpoint_key(endpoint).to_vec()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_no_members_or_addresses_keys_start_with_anothers() {
        let ann = member_device_key(b"ann", "https://p.example/1");
        assert!(ann.starts_with(&member_prefix(b"ann")));
        assert!(!ann.starts_with(&member_prefix(b"an")));
        assert!(!member_device_key(b"anna", "x").starts_with(&member_prefix(b"ann")));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "a00:1::".parse().unwrap();
        assert!(!address_device_key(v6, "x").starts_with(&address_prefix(v4)));
        assert!(address_device_key(v4, "x").starts_with(&address_prefix(v4)));
    }
}
