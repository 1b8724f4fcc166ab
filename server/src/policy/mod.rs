//! Who receives which documents: samod's share policy, from the same
//! `access::decide` the devices run. A device gets a compartment only if its
//! user's current grant may view it, and may push changes only where that
//! role may write; everything else is read-only or not shared at all.
//!
//! Each (document, device) pair is decided when samod first asks, and again
//! whenever the policy's inputs may have changed, so a change reaches live
//! connections without a reconnect. A change that concerns one device (its
//! login, its encounter) re-decides that device's pairs only
//! (`Epoch::bump_device`); one that may concern anyone (an admin command
//! committed by another process, a patient's new choice written by sync)
//! re-decides every open pair (`Epoch::bump`). Under load, a global bump per
//! login was what broke first: each of N logins re-decided every device's
//! pairs.

mod inputs;

use std::sync::Arc;

use samod::{DocumentId, PeerId, ShareConfig, SharePolicy};
use scr_core::access::{
    Action, Decision, PatientChoices, Principal, Relationship, Request, ViewBasis, decide,
};
use scr_core::channel::{from_hex, hex_key};
use scr_core::grant::{GrantPrincipal, RelationshipKind, RoleProfileGrant};
use scr_core::protocol::{HeldPatient, HoldingsList};
use scr_core::record::Compartment;
use scr_core::store::{DocumentInfo, HoldReason};
use scr_core::{NhsNumber, Store};

use crate::directory::Directory;
use inputs::{DeviceInputs, InputsCache, Stamp};

#[derive(Clone)]
pub struct AccessPolicy {
    store: Store,
    directory: Arc<Directory>,
    epoch: Epoch,
    /// What decisions read, kept for the epoch it was read at.
    inputs: Arc<InputsCache>,
    /// Until when apps of record layout 1 may push permissions to view
    /// into governance.
    legacy_permissions_until_ms: i64,
}

/// An opaque mark of the inputs a device's decisions were made from
/// ([`AccessPolicy::stamp_for`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PolicyStamp(Stamp);

/// Tells open share-policy streams to decide again: all of them, or one
/// device's.
#[derive(Clone, Default)]
pub struct Epoch {
    all: Arc<tokio::sync::watch::Sender<u64>>,
    /// One signal per device (peer id) that has had a decision asked for;
    /// bounded by the devices ever enrolled.
    devices:
        Arc<std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<u64>>>>,
}

impl Epoch {
    /// Every device's decisions.
    pub fn bump(&self) {
        self.all.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The decisions of the device with this key only.
    pub fn bump_device(&self, key: &[u8; 32]) {
        if let Ok(devices) = self.devices.lock()
            && let Some(tx) = devices.get(&hex_key(key))
        {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Where the epochs stand for the device with this key (its own signal
    /// made now if it had none, so a later `bump_device` moves it).
    fn stamp(&self, key: &[u8; 32]) -> Stamp {
        let device = self.signal(hex_key(key)).map_or(0, |s| *s.borrow());
        Stamp {
            all: *self.all.borrow(),
            device,
            relationships: crate::grants::relationships_edited(),
        }
    }

    /// The signals a stream deciding for `peer` waits on, subscribed once
    /// (a bump between two decisions is then never missed).
    fn watch(&self, peer: &PeerId) -> Signals {
        Signals {
            all: self.all.subscribe(),
            mine: self.signal(peer.as_str().to_owned()),
        }
    }

    /// The device's own signal (peer id in hex), made if it had none.
    fn signal(&self, peer: String) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.devices.lock().ok().map(|mut d| {
            d.entry(peer)
                .or_insert_with(|| tokio::sync::watch::channel(0).0)
                .subscribe()
        })
    }
}

struct Signals {
    all: tokio::sync::watch::Receiver<u64>,
    mine: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Signals {
    /// Resolves at the next bump that concerns this stream (`None`: the
    /// server is stopping).
    async fn changed(&mut self) -> Option<()> {
        match &mut self.mine {
            Some(mine) => tokio::select! {
                r = self.all.changed() => r.ok(),
                r = mine.changed() => r.ok(),
            },
            None => self.all.changed().await.ok(),
        }
    }
}

/// Why a device holds a patient, from the relationship that lets it.
/// Registration and referral hold like a caseload: for as long as the
/// relationship lasts.
fn hold_reason(kind: &RelationshipKind) -> HoldReason {
    match kind {
        RelationshipKind::Incident { incident_id } => HoldReason::Incident {
            incident_id: incident_id.clone(),
            closed_at_ms: None,
        },
        RelationshipKind::Encounter {
            encounter_id,
            ends_at_ms,
        } => HoldReason::Encounter {
            encounter_id: encounter_id.clone(),
            ends_at_ms: *ends_at_ms,
        },
        RelationshipKind::Caseload
        | RelationshipKind::Registration
        | RelationshipKind::Referral => HoldReason::Caseload,
    }
}

impl AccessPolicy {
    pub fn new(
        store: Store,
        directory: Arc<Directory>,
        legacy_permissions_until_ms: i64,
    ) -> (Self, Epoch) {
        let epoch = Epoch::default();
        (
            Self {
                store,
                directory,
                epoch: epoch.clone(),
                inputs: Arc::default(),
                legacy_permissions_until_ms,
            },
            epoch,
        )
    }

    /// The decision for one document and one device.
    pub fn decide(&self, doc_id: &DocumentId, peer: &PeerId) -> ShareConfig {
        let Some(key) = from_hex(peer.as_str()).and_then(|k| <[u8; 32]>::try_from(k).ok()) else {
            return ShareConfig::none();
        };
        let stamp = self.epoch.stamp(&key);
        let device = self.device_inputs(stamp, &key);
        if !device.active {
            return ShareConfig::none();
        }
        // A record's compartment first (most documents are), then a
        // device's holdings list: read-only to that device, to no other. A
        // document is never both (records are registered by the server; a
        // notice is made by it for one device).
        let owner = match self.store.owner_of_document(&doc_id.to_string()) {
            Ok(owner) => owner,
            Err(_) => return ShareConfig::none(),
        };
        let Some((nhs, compartment)) = owner else {
            return match crate::owners::owner_of(&self.store, &doc_id.to_string()) {
                Some(owner) if owner == key => ShareConfig::read_only(),
                // A document no record on the server owns is shared with
                // nobody: records are created on the server (`admin
                // load-record`), so an unknown id is either stale or a
                // probe.
                _ => ShareConfig::none(),
            };
        };
        let Some(grant) = current(&device) else {
            return ShareConfig::none();
        };
        self.for_patient(stamp, &device, grant, &nhs, compartment)
    }

    fn device_inputs(&self, stamp: Stamp, key: &[u8; 32]) -> Arc<DeviceInputs> {
        self.inputs.device(stamp, key, || {
            inputs::read_device(&self.store, &self.directory, key)
        })
    }

    /// Where the epochs a device's decisions depend on stand now: a list
    /// computed for the device under an equal stamp was computed from the
    /// same inputs (only the clock may have moved since).
    pub fn stamp_for(&self, key: &[u8; 32]) -> PolicyStamp {
        PolicyStamp(self.epoch.stamp(key))
    }

    /// What the device should hold under its current grant: each patient
    /// it may see, with the compartment documents it may receive. `None`
    /// when it has no current grant (the device keeps what it holds until
    /// its own retention rules say otherwise).
    pub fn holdings_for(&self, key: &[u8; 32]) -> Option<HoldingsList> {
        let stamp = self.epoch.stamp(key);
        let device = self.device_inputs(stamp, key);
        let grant = current(&device)?;
        // One entry per patient: a caseload outlasts an incident, so it wins.
        let mut candidates: std::collections::BTreeMap<NhsNumber, HoldReason> =
            std::collections::BTreeMap::new();
        match &grant.principal {
            GrantPrincipal::Patient { nhs_number } => {
                candidates.insert(*nhs_number, HoldReason::OwnRecord);
            }
            GrantPrincipal::Staff { .. } => {
                for r in &grant.relationships {
                    let reason = hold_reason(&r.kind);
                    let held = candidates.entry(r.nhs_number).or_insert(reason.clone());
                    if reason == HoldReason::Caseload {
                        *held = reason;
                    }
                }
            }
        }
        let mut patients = Vec::new();
        let mut withdrawn = Vec::new();
        for (nhs, reason) in candidates {
            // A record the server does not hold is not listed; any other
            // failure to read leaves the device's list as it was (a shorter
            // list would make the device forget).
            let docs = match self.store.documents_of_record(&nhs) {
                Ok(docs) => docs,
                Err(scr_core::StoreError::RecordNotFound) => continue,
                Err(_) => return None,
            };
            let documents: Vec<DocumentInfo> = docs
                .into_iter()
                .filter(|d| {
                    self.for_patient(stamp, &device, grant, &nhs, d.compartment)
                        != ShareConfig::none()
                })
                .collect();
            if documents.is_empty() {
                if self.withdrawn_by_patient(stamp, &nhs) {
                    withdrawn.push(nhs);
                }
                continue;
            }
            patients.push(HeldPatient {
                nhs_number: nhs,
                reason,
                documents,
            });
        }
        Some(HoldingsList {
            grant_id: grant.grant_id.clone(),
            patients,
            withdrawn,
        })
    }

    /// The patient hid the record or opted out.
    fn withdrawn_by_patient(&self, stamp: Stamp, nhs: &NhsNumber) -> bool {
        let Some(choices) = self.choices(stamp, nhs) else {
            return false;
        };
        choices.hidden || choices.sharing == scr_core::record::SharingChoice::OptOut
    }

    /// The grant the server last issued to this device (sealed at login),
    /// while it lasts and unless its user has since been revoked: the one
    /// copy that authorises anything now. (The server's record of every
    /// grant it issued, to judge what was done under it, is
    /// `grants::issued_history`.)
    pub(crate) fn current_grant(&self, key: &[u8; 32]) -> Option<RoleProfileGrant> {
        crate::grants::issued(&self.store, key)
            .filter(|g| in_force(g, user_revoked(&self.directory, g)))
    }

    fn choices(&self, stamp: Stamp, nhs: &NhsNumber) -> Option<PatientChoices> {
        self.inputs.choices(stamp.all, &self.store, nhs)
    }

    fn for_patient(
        &self,
        stamp: Stamp,
        device: &DeviceInputs,
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        compartment: Compartment,
    ) -> ShareConfig {
        let principal = grant.principal();
        if principal == Principal::Patient && !grant.is_patient(nhs) {
            return ShareConfig::none();
        }
        // Staff see a record only through a relationship in their grant:
        // without one, decide at once. samod asks about every (document,
        // device) pair, and almost all of them are this case; reading the
        // governance document and the relationships first made each cost
        // a decryption and an Automerge load (what the load bench hit).
        if principal != Principal::Patient && grant.relationship_with(nhs).is_none() {
            return ShareConfig::none();
        }
        // Without a readable governance document the patient's choices are
        // unknown: share nothing (fail closed).
        let Some(choices) = self.choices(stamp, nhs) else {
            return ShareConfig::none();
        };
        // The grant's relationships as they were at login, narrowed to those
        // that still hold now: an ended caseload stops sharing at once.
        let now = scr_core::clock::now_ms();
        let still_current = match &grant.principal {
            GrantPrincipal::Staff { .. } => device
                .relationships
                .as_ref()
                .is_some_and(|all| all.iter().any(|r| r.nhs_number == *nhs && r.holds_at(now))),
            GrantPrincipal::Patient { .. } => true,
        };
        let relationship = match grant.relationship_with(nhs).map(|r| &r.kind) {
            _ if !still_current => Relationship::None,
            Some(RelationshipKind::Registration) => Relationship::Registered,
            Some(_) => Relationship::FromGrant,
            None => Relationship::None,
        };
        let request = |action| Request {
            principal: principal.clone(),
            action,
            relationship,
            // Replication is not viewing: permission to view is asked on the
            // device, every time, before anything is shown.
            basis: ViewBasis::PermissionRecorded,
            choices,
        };
        let readable = matches!(decide(&request(Action::View)), Decision::Permit { ref compartments, .. } if compartments.contains(&compartment));
        if !readable {
            return ShareConfig::none();
        }
        let permits = |action| matches!(decide(&request(action)), Decision::Permit { .. });
        // Staff who ask permission to view record the answer in the
        // permissions document; the patient (or their GP practice) records
        // their choices in governance. Until the transition ends, staff
        // whose apps still record permission in governance (layout 1) may
        // push there too: the push rules take nothing else from them, and
        // the server moves what they write (`layout`).
        let legacy = scr_core::clock::now_ms() < self.legacy_permissions_until_ms;
        let writable = permits(Action::AddEntry(compartment))
            || (compartment == Compartment::Permissions && permits(Action::RecordPermissionToView))
            || (compartment == Compartment::Governance
                && (permits(Action::ChangePatientChoice)
                    || (legacy && permits(Action::RecordPermissionToView))));
        if writable {
            ShareConfig::read_write()
        } else {
            ShareConfig::read_only()
        }
    }
}

/// The device's grant, if it still authorises anything now: unexpired and
/// its user not revoked (as [`AccessPolicy::current_grant`], from inputs
/// read at the current epoch).
fn current(device: &DeviceInputs) -> Option<&RoleProfileGrant> {
    device
        .grant
        .as_ref()
        .filter(|g| in_force(g, device.user_revoked))
}

/// A grant authorises anything only until it expires, and not once its
/// user is revoked.
fn in_force(grant: &RoleProfileGrant, user_revoked: bool) -> bool {
    scr_core::clock::now_ms() < grant.expires_at_ms && !user_revoked
}

/// Whether the staff user a grant names has been revoked (a patient's
/// grant names no user).
fn user_revoked(directory: &Directory, grant: &RoleProfileGrant) -> bool {
    match &grant.principal {
        GrantPrincipal::Staff { user_id, .. } => directory.user_revoked(user_id),
        GrantPrincipal::Patient { .. } => false,
    }
}

impl AccessPolicy {
    /// The bounds of a push the server takes, at this server's transition.
    pub fn push_limits(&self) -> scr_core::push_rules::PushLimits {
        scr_core::push_rules::PushLimits {
            legacy_permissions_until_ms: self.legacy_permissions_until_ms,
            ..Default::default()
        }
    }

    /// [`AccessPolicy::decide`] on a blocking thread: it reads SQLite and
    /// decrypts, which must not stall the async runtime samod runs on.
    async fn decide_off_runtime(&self, doc_id: DocumentId, peer_id: PeerId) -> ShareConfig {
        let policy = self.clone();
        tokio::task::spawn_blocking(move || policy.decide(&doc_id, &peer_id))
            .await
            .unwrap_or_else(|_| ShareConfig::none())
    }
}

impl SharePolicy for AccessPolicy {
    fn share(
        &self,
        doc_id: DocumentId,
        peer_id: PeerId,
    ) -> impl futures::Stream<Item = ShareConfig> + Send + 'static {
        // The current decision first, then a fresh one after every bump.
        let signals = self.epoch.watch(&peer_id);
        futures::stream::unfold(
            (self.clone(), signals, doc_id, peer_id, true),
            |(policy, mut signals, doc_id, peer_id, first)| async move {
                if !first {
                    signals.changed().await?;
                }
                let config = policy
                    .decide_off_runtime(doc_id.clone(), peer_id.clone())
                    .await;
                Some((config, (policy, signals, doc_id, peer_id, false)))
            },
        )
    }
}
