//! Members in sled: devices by endpoint, the index that keeps names unique, each
//! member's device count (its last device leaving frees the name), the indexes of devices
//! (see `indexes`), device codes, bans and removals; a change that spans trees is one
//! transaction.

use std::{collections::HashSet, net::IpAddr};

use async_trait::async_trait;
use serde::Deserialize;
use sled::Transactional;

use super::{
    abort, count_of, decode,
    indexes::{address_prefix, member_prefix, Indexes},
    SledStore,
};
use crate::{
    model::{
        member::{Device, DeviceCode, Removal, Removed},
        subscription::Subscription,
    },
    store::{code_key, endpoint_key, name_key, MemberStore, StoreError},
};

#[async_trait]
impl MemberStore for SledStore {
    async fn device(&self, endpoint: &str) -> Result<Option<Device>, StoreError> {
        self.devices
            .get(endpoint)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.all_devices()
    }

    async fn devices_of(&self, name: &str) -> Result<Vec<Device>, StoreError> {
        let Some(member_id) = self.names.get(name_key(name))? else {
            return Ok(Vec::new());
        };
        let prefix = member_prefix(&member_id);
        let mut devices = Vec::new();
        for key in self.by_member.scan_prefix(&prefix).keys() {
            // One that leaves meanwhile is not there any more: skipped.
            if let Some(record) = self.devices.get(&key?[prefix.len()..])? {
                devices.push(decode(&record)?);
            }
        }
        Ok(devices)
    }

    async fn endpoints(&self, unmuted_at: Option<u64>) -> Result<Vec<String>, StoreError> {
        /// What a fan-out reads of a device record (the key is its endpoint).
        #[derive(Deserialize)]
        struct Mute {
            #[serde(default)]
            muted_until: Option<u64>,
        }
        let mut endpoints = Vec::new();
        for entry in self.devices.iter() {
            let (endpoint, record) = entry?;
            if let Some(now) = unmuted_at {
                let mute: Mute = decode(&record)?;
                if mute.muted_until.is_some_and(|until| until > now) {
                    continue;
                }
            }
            endpoints.push(String::from_utf8_lossy(&endpoint).into_owned());
        }
        Ok(endpoints)
    }

    async fn subscriptions(&self, endpoints: &[String]) -> Result<Vec<Subscription>, StoreError> {
        self.subscriptions_at(endpoints)
    }

    async fn devices_from(&self, address: IpAddr) -> Result<usize, StoreError> {
        let mut count = 0;
        for key in self.by_address.scan_prefix(address_prefix(address)).keys() {
            key?;
            count += 1;
        }
        Ok(count)
    }

    async fn member_names(&self) -> Result<Vec<String>, StoreError> {
        self.member_names
            .iter()
            .values()
            .map(|name| Ok(String::from_utf8_lossy(&name?).into_owned()))
            .collect()
    }

    async fn member_count(&self) -> Result<usize, StoreError> {
        Ok(self.names.len())
    }

    async fn has_members(&self) -> Result<bool, StoreError> {
        Ok(self.devices.first()?.is_some())
    }

    async fn put_device(&self, device: &Device) -> Result<(), StoreError> {
        self.commit(|| self.insert_device(device)).await
    }

    async fn replace_subscription(
        &self,
        old_endpoint: &str,
        new: &Subscription,
    ) -> Result<bool, StoreError> {
        self.commit(|| {
            let endpoint = new.endpoint.as_bytes();
            let moved = (
                &self.devices,
                &self.by_member,
                &self.by_address,
                &self.member_names,
            )
                .transaction(|(devices, by_member, by_address, names)| {
                    if endpoint != old_endpoint.as_bytes() && devices.get(endpoint)?.is_some() {
                        return abort(StoreError::EndpointTaken);
                    }
                    // Gone meanwhile (its push service said so, say): nothing to move.
                    let Some(old) = devices.remove(old_endpoint.as_bytes())? else {
                        return Ok(false);
                    };
                    let mut device: Device = decode(&old).or_else(abort)?;
                    let indexes = Indexes {
                        by_member,
                        by_address,
                        names,
                    };
                    indexes.remove(&device, false)?;
                    device.subscription = new.clone();
                    indexes.add(&device)?;
                    let record = serde_json::to_vec(&device)
                        .map_err(StoreError::from)
                        .or_else(abort)?;
                    devices.insert(endpoint, record)?;
                    Ok(true)
                })?;
            Ok(moved)
        })
        .await
    }

    async fn set_muted_until(&self, endpoint: &str, until: u64) -> Result<bool, StoreError> {
        self.update_device(endpoint, |device| {
            device.muted_until = Some(until);
            true
        })
        .await
    }

    async fn mark_seen(&self, endpoint: &str, now: u64) -> Result<bool, StoreError> {
        self.update_device(endpoint, |device| {
            device.last_seen = now;
            device.stale_warned = None;
            true
        })
        .await
    }

    async fn mark_warned(
        &self,
        endpoint: &str,
        seen_before: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.update_device(endpoint, |device| {
            let due = device.stale_warned.is_none() && device.last_seen < seen_before;
            if due {
                device.stale_warned = Some(now);
            }
            due
        })
        .await
    }

    async fn remove_devices(
        &self,
        subscriptions: &[Subscription],
        removal: Option<&Removal>,
    ) -> Result<Vec<Removed>, StoreError> {
        self.commit(|| {
            let removal = removal.map(serde_json::to_vec).transpose()?;
            let removed = (
                &self.devices,
                &self.names,
                &self.device_counts,
                &self.removals,
                &self.by_member,
                &self.by_address,
                &self.member_names,
            )
                .transaction(
                    |(devices, names, counts, removals, by_member, by_address, member_names)| {
                        let indexes = Indexes {
                            by_member,
                            by_address,
                            names: member_names,
                        };
                        let mut removed = Vec::new();
                        for subscription in subscriptions {
                            let endpoint = subscription.endpoint.as_bytes();
                            let Some(record) = devices.get(endpoint)? else {
                                continue;
                            };
                            let device: Device = decode(&record).or_else(abort)?;
                            if !device.subscription.auth_matches(&subscription.auth) {
                                continue;
                            }
                            devices.remove(endpoint)?;
                            if let Some(removal) = &removal {
                                removals.insert(
                                    &endpoint_key(&subscription.endpoint),
                                    removal.as_slice(),
                                )?;
                            }
                            let member_id = device.member_id.as_bytes();
                            let left =
                                count_of(counts.get(member_id)?.as_deref()).saturating_sub(1);
                            if left > 0 {
                                counts.insert(member_id, &left.to_be_bytes())?;
                            } else {
                                counts.remove(member_id)?;
                                let key = name_key(&device.name);
                                if names.get(&key)?.is_some_and(|holder| holder == member_id) {
                                    names.remove(key.as_bytes())?;
                                }
                            }
                            indexes.remove(&device, left == 0)?;
                            removed.push(Removed {
                                device,
                                member_left: left == 0,
                            });
                        }
                        Ok(removed)
                    },
                )?;
            let gone: HashSet<&str> = removed
                .iter()
                .filter(|removed| removed.member_left)
                .map(|removed| removed.device.member_id.as_str())
                .collect();
            if !gone.is_empty() {
                for entry in self.device_codes.iter() {
                    let (key, value) = entry?;
                    if decode::<DeviceCode>(&value)
                        .is_ok_and(|code| gone.contains(code.member_id.as_str()))
                    {
                        self.device_codes.remove(key)?;
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn removal(&self, endpoint: &str, now: u64) -> Result<Option<Removal>, StoreError> {
        let Some(bytes) = self.removals.get(endpoint_key(endpoint))? else {
            return Ok(None);
        };
        Ok(Some(decode::<Removal>(&bytes)?).filter(|removal| removal.kept_at(now)))
    }

    async fn put_device_code(
        &self,
        code: &str,
        grant: &DeviceCode,
        now: u64,
    ) -> Result<(), StoreError> {
        self.commit(|| {
            for entry in self.device_codes.iter() {
                let (key, value) = entry?;
                if decode::<DeviceCode>(&value).map_or(true, |old| old.expires <= now) {
                    self.device_codes.remove(key)?;
                }
            }
            self.device_codes
                .insert(code_key(code), serde_json::to_vec(grant)?)?;
            Ok(())
        })
        .await
    }

    async fn take_device_code(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Option<DeviceCode>, StoreError> {
        self.commit(|| {
            let Some(value) = self.device_codes.remove(code_key(code))? else {
                return Ok(None);
            };
            Ok(decode::<DeviceCode>(&value)?.unexpired(now))
        })
        .await
    }

    async fn ban(&self, name: &str) -> Result<(), StoreError> {
        self.commit(|| {
            self.banned.insert(name_key(name), name.as_bytes())?;
            Ok(())
        })
        .await
    }

    async fn unban(&self, name: &str) -> Result<bool, StoreError> {
        self.commit(|| Ok(self.banned.remove(name_key(name))?.is_some()))
            .await
    }

    async fn is_banned(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.banned.contains_key(name_key(name))?)
    }
}

impl SledStore {
    /// Changes the device at `endpoint` with `change` in one transaction, and stores it if
    /// `change` says it changed; returns whether it did (false when no device is there).
    async fn update_device(
        &self,
        endpoint: &str,
        change: impl Fn(&mut Device) -> bool + Send + Sync,
    ) -> Result<bool, StoreError> {
        self.commit(|| {
            let changed = self.devices.transaction(|devices| {
                let Some(record) = devices.get(endpoint)? else {
                    return Ok(false);
                };
                let mut device: Device = decode(&record).or_else(abort)?;
                if !change(&mut device) {
                    return Ok(false);
                }
                let record = serde_json::to_vec(&device)
                    .map_err(StoreError::from)
                    .or_else(abort)?;
                devices.insert(endpoint.as_bytes(), record)?;
                Ok(true)
            })?;
            Ok(changed)
        })
        .await
    }

    /// The subscriptions of the devices at `endpoints` that are still there, in their
    /// order; the rest of each record is skipped, not kept.
    pub(super) fn subscriptions_at(
        &self,
        endpoints: &[String],
    ) -> Result<Vec<Subscription>, StoreError> {
        #[derive(Deserialize)]
        struct Reachable {
            subscription: Subscription,
        }
        let mut subscriptions = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if let Some(record) = self.devices.get(endpoint)? {
                subscriptions.push(decode::<Reachable>(&record)?.subscription);
            }
        }
        Ok(subscriptions)
    }

    /// Stores `device` (see [`MemberStore::put_device`]) in one transaction.
    pub(super) fn insert_device(&self, device: &Device) -> Result<(), StoreError> {
        let endpoint = device.subscription.endpoint.as_bytes();
        let key = name_key(&device.name);
        let member_id = device.member_id.as_bytes();
        let record = serde_json::to_vec(device)?;
        (
            &self.devices,
            &self.names,
            &self.device_counts,
            &self.by_member,
            &self.by_address,
            &self.member_names,
        )
            .transaction(
                |(devices, names, counts, by_member, by_address, member_names)| {
                    if names.get(&key)?.is_some_and(|holder| holder != member_id) {
                        return abort(StoreError::NameTaken(device.name.clone()));
                    }
                    let indexes = Indexes {
                        by_member,
                        by_address,
                        names: member_names,
                    };
                    match devices.get(endpoint)? {
                        Some(old) => {
                            let old: Device = decode(&old).or_else(abort)?;
                            if old.member_id != device.member_id {
                                return abort(StoreError::EndpointTaken);
                            }
                            // The same device again, perhaps from another address.
                            indexes.remove(&old, false)?;
                        }
                        None => {
                            let count = count_of(counts.get(member_id)?.as_deref());
                            counts.insert(member_id, &(count + 1).to_be_bytes())?;
                        }
                    }
                    indexes.add(device)?;
                    devices.insert(endpoint, record.as_slice())?;
                    names.insert(key.as_bytes(), member_id)?;
                    Ok(())
                },
            )?;
        Ok(())
    }
}
