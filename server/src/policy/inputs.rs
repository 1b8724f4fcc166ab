//! What share decisions read, read once per share epoch: a device's record,
//! its grant and its user's relationships once per (device, epoch); a
//! patient's choices once per (patient, epoch). Before, each of the
//! hundreds of documents a tablet fetches re-read, decrypted and parsed all
//! of them.
//!
//! An epoch moves whenever an input may have changed (`Epoch`: a login or
//! an encounter moves the device's; another process's commit, a patient's
//! new choice synced in, or a minute passing moves everyone's), and every
//! open decision is taken again then, so a cached input lives no longer
//! than a decision made from it would. A relationship this process edits
//! (an encounter opened or closed on one of a user's devices) drops every
//! device's cached inputs, since her other devices' decisions read it too.
//! What changes with the clock alone (a grant's expiry, an encounter's
//! end) is checked at each use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use scr_core::access::{PatientChoices, choices_from};
use scr_core::grant::{GrantRelationship, RoleProfileGrant};
use scr_core::record::Compartment;
use scr_core::{NhsNumber, Store};

use crate::directory::Directory;

/// One device's inputs, as read at one epoch.
pub(super) struct DeviceInputs {
    /// Enrolled and not revoked.
    pub active: bool,
    /// The grant last issued to it, expired or not (checked at use).
    pub grant: Option<RoleProfileGrant>,
    /// The grant's user has been revoked.
    pub user_revoked: bool,
    /// The user's relationships as stored (`None`: unreadable, so none
    /// holds); whether each still holds is checked at use.
    pub relationships: Option<Vec<GrantRelationship>>,
}

/// The epoch a cached input was read at: everyone's, the device's own, and
/// how many relationship edits this process had made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub all: u64,
    pub device: u64,
    pub relationships: u64,
}

/// A map kept for one value of everyone's epoch, emptied when it moves
/// (so it holds only what was asked since: bounded by the devices and
/// patients decided in the last minute at most).
struct ForEpoch<K, V> {
    all: u64,
    map: HashMap<K, V>,
}

impl<K: std::hash::Hash + Eq, V> ForEpoch<K, V> {
    fn at(&mut self, all: u64) -> &mut HashMap<K, V> {
        if self.all != all {
            self.all = all;
            self.map.clear();
        }
        &mut self.map
    }
}

impl<K, V> Default for ForEpoch<K, V> {
    fn default() -> Self {
        Self {
            all: u64::MAX,
            map: HashMap::new(),
        }
    }
}

/// A device's inputs with the stamp they were read at.
type DeviceEntry = (Stamp, Arc<DeviceInputs>);

#[derive(Default)]
pub(super) struct InputsCache {
    devices: Mutex<ForEpoch<[u8; 32], DeviceEntry>>,
    patients: Mutex<ForEpoch<NhsNumber, Option<PatientChoices>>>,
}

impl InputsCache {
    /// The device's inputs at `stamp` (the epoch read *before* this call,
    /// so a change made while reading moves it and the next use re-reads).
    pub fn device(
        &self,
        stamp: Stamp,
        key: &[u8; 32],
        read: impl FnOnce() -> DeviceInputs,
    ) -> Arc<DeviceInputs> {
        if let Ok(mut cache) = self.devices.lock()
            && let Some((read_at, inputs)) = cache.at(stamp.all).get(key)
            && *read_at == stamp
        {
            return inputs.clone();
        }
        let inputs = Arc::new(read());
        if let Ok(mut cache) = self.devices.lock() {
            cache.at(stamp.all).insert(*key, (stamp, inputs.clone()));
        }
        inputs
    }

    /// The patient's choices at everyone's epoch `all`; `None` when the
    /// governance document is missing or unreadable (share nothing). A
    /// failed read is not kept.
    pub fn choices(&self, all: u64, store: &Store, nhs: &NhsNumber) -> Option<PatientChoices> {
        if let Ok(mut cache) = self.patients.lock()
            && let Some(choices) = cache.at(all).get(nhs)
        {
            return *choices;
        }
        let choices = match store.view_of_compartment(nhs, Compartment::Governance) {
            Ok(Some(governance)) => Some(choices_from(Some(&governance))),
            Ok(None) => None,
            Err(_) => return None,
        };
        if let Ok(mut cache) = self.patients.lock() {
            cache.at(all).insert(*nhs, choices);
        }
        choices
    }
}

/// Reads a device's inputs from the directory and the store.
pub(super) fn read_device(store: &Store, directory: &Directory, key: &[u8; 32]) -> DeviceInputs {
    let active = matches!(directory.device(key), Ok(Some(d)) if !d.revoked);
    let grant = if active {
        crate::grants::issued(store, key)
    } else {
        None
    };
    let user_revoked = grant
        .as_ref()
        .is_some_and(|g| super::user_revoked(directory, g));
    let relationships = match grant.as_ref().map(|g| &g.principal) {
        Some(scr_core::grant::GrantPrincipal::Staff { user_id, .. }) => {
            crate::grants::relationships(store, user_id).ok()
        }
        _ => Some(Vec::new()),
    };
    DeviceInputs {
        active,
        grant,
        user_revoked,
        relationships,
    }
}
