//! A site as an operator sets one up and as apps meet it: `scr-server
//! serve` on its embedded SQLite store on loopback, the admin commands'
//! own functions run against its data directory, and devices opened the
//! way the Kotlin and Swift apps open them (`scr_core::device::Device`),
//! each on its own store in its own directory. The demo tells its story on
//! a site; the journey tests in `tests/` run their users through one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::clock::{SystemClock, now_ms};
use scr_core::crypto::{KeyProvider, KeyProviderError, SecretKey};
use scr_core::device::{Device, DeviceError, DeviceSettings};
use scr_core::engine::{Engine, SessionInfo};
use scr_core::fixtures::{demographics, sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, EntryContent, SharingChoice};
use scr_core::replica::RecordView;
use scr_core::retention::DeviceClass;
use scr_core::sync::PassSummary;
use scr_core::{NhsNumber, Store};

use crate::archive::{AlertOutcome, AlertRecord};
use crate::privacy::{Officer, PrivacyError};
use crate::records::{FileEntry, LoadError, RecordFile, load};
use crate::serve::{RunningServer, ServeConfig, ServeError, start};
use crate::users::{NewUser, UserError, assign, unassign};

/// Everything a staff tablet holds of a patient who shares core and
/// additional information (sensitive items stay with the patient).
pub const SHARED: [Compartment; 6] = [
    Compartment::Core,
    Compartment::Additional,
    Compartment::CareEvents,
    Compartment::PatientEntered,
    Compartment::Governance,
    Compartment::Permissions,
];

/// What a staff tablet may still hold once the patient chooses core only.
pub const CORE_ONLY: [Compartment; 4] = [
    Compartment::Core,
    Compartment::PatientEntered,
    Compartment::Governance,
    Compartment::Permissions,
];

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("server: {0}")]
    Serve(#[from] ServeError),
    #[error("server store: {0}")]
    Store(#[from] scr_core::StoreError),
    #[error("directory: {0}")]
    Directory(#[from] crate::directory::DirectoryError),
    #[error("users: {0}")]
    User(#[from] UserError),
    #[error("record: {0}")]
    Load(#[from] LoadError),
    #[error("privacy: {0}")]
    Privacy(#[from] PrivacyError),
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    #[error("the system random number generator failed")]
    Random,
}

/// A member of staff and the passcode they log in with.
#[derive(Clone, Debug)]
pub struct Staff {
    pub user: NewUser,
    pub passcode: &'static str,
}

impl Staff {
    pub fn id(&self) -> &str {
        &self.user.user_id
    }
}

fn staff(
    (user_id, name, organisation): (&str, &str, &str),
    (job_role, job_role_name): (&str, &str),
    activities: &[&str],
    privacy_officer: bool,
    passcode: &'static str,
) -> Staff {
    Staff {
        user: NewUser {
            user_id: user_id.into(),
            display_name: name.into(),
            organisation: organisation.into(),
            job_role: job_role.into(),
            job_role_name: job_role_name.into(),
            activities: activities.iter().map(|a| (*a).to_owned()).collect(),
            privacy_officer,
            card_serial: format!("CARD-{}", &user_id[user_id.len() - 4..]),
        },
        passcode,
    }
}

/// Jo, a community nurse at RX1: views with permission, writes visits.
pub fn nurse() -> Staff {
    staff(
        ("555000000102", "Jo Nurse", "RX1"),
        ("R0050", "Community Nurse"),
        &["B0264", "B0370", "B0380"],
        false,
        "jo-2468",
    )
}

/// Kim, a second community nurse at RX1 (the same caseload, another tablet).
pub fn second_nurse() -> Staff {
    staff(
        ("555000000104", "Kim Nurse", "RX1"),
        ("R0050", "Community Nurse"),
        &["B0264", "B0370", "B0380"],
        false,
        "kim-8642",
    )
}

/// Sam, a paramedic at the ambulance trust RYA: may use emergency access.
pub fn paramedic() -> Staff {
    staff(
        ("555000000203", "Sam Paramedic", "RYA"),
        ("R1290", "Paramedic"),
        &["B0264", "B0370", "B0168", "B0380"],
        false,
        "sam-1357",
    )
}

/// Pat, RYA's privacy officer: reviews the trust's alerts.
pub fn ambulance_privacy_officer() -> Staff {
    staff(
        ("555000000301", "Pat Officer", "RYA"),
        ("R8003", "Privacy Officer"),
        &["B0264"],
        true,
        "pat-9753",
    )
}

/// Lee, RX1's privacy officer.
pub fn community_privacy_officer() -> Staff {
    staff(
        ("555000000302", "Lee Officer", "RX1"),
        ("R8003", "Privacy Officer"),
        &["B0264"],
        true,
        "lee-7531",
    )
}

/// The app's keystore: one random 32-byte key per device, in memory (the
/// Android Keystore or iOS Keychain holds it in an app).
#[derive(Clone)]
pub struct Keystore(Arc<SecretKey>);

impl Keystore {
    pub fn random() -> Result<Self, SiteError> {
        SecretKey::random()
            .map(|k| Self(Arc::new(k)))
            .map_err(|_| SiteError::Random)
    }
}

impl KeyProvider for Keystore {
    fn key_encryption_key(&self) -> Result<SecretKey, KeyProviderError> {
        Ok(self.0.duplicate())
    }
}

/// A device as an app holds it, with the key its keystore gives it.
pub struct App {
    pub device: Device,
    pub keystore: Keystore,
    pub class: DeviceClass,
}

/// How long one pass may take before it counts as failed.
const PASS_TIMEOUT: Duration = Duration::from_secs(20);

impl App {
    /// Reopens the device from its directory, as after an app restart.
    pub fn reopen(self) -> Result<Self, SiteError> {
        let dir = self.device.dir().to_owned();
        drop(self.device);
        let device = open_device(&dir, &self.keystore, self.class)?;
        Ok(Self { device, ..self })
    }

    pub fn engine(&self) -> Result<Arc<Engine>, SiteError> {
        Ok(self.device.engine()?)
    }

    /// One full sync pass, started now.
    pub async fn sync_once(&self) -> Result<PassSummary, SiteError> {
        Ok(self
            .device
            .with_sync(async |s| s.sync_once(PASS_TIMEOUT).await)
            .await?
            .map_err(DeviceError::from)?)
    }

    /// Passes until `done` holds (a server re-deciding shares, or another
    /// device's upload, can take a pass or two to arrive); false if it
    /// never did. `done` should not view: see [`App::settle`].
    pub async fn sync_until(&self, mut done: impl FnMut(&App) -> bool) -> Result<bool, SiteError> {
        for _ in 0..20 {
            self.sync_once().await?;
            if done(self) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Ok(false)
    }

    /// Passes until one brings every held document in step both ways
    /// (without viewing anything: a view is audited, and an emergency one
    /// raises an alert). False if none did.
    pub async fn settle(&self) -> Result<bool, SiteError> {
        for _ in 0..10 {
            let pass = self.sync_once().await?;
            if pass.documents > 0 && pass.in_step == pass.documents && !pass.audit_failed {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The compartments of `nhs` this device holds, in order.
    pub fn held(&self, nhs: &NhsNumber) -> Vec<Compartment> {
        let mut held: Vec<_> = self
            .engine()
            .and_then(|e| Ok(e.held_documents().map_err(DeviceError::from)?))
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _)| n == nhs)
            .map(|(_, d)| d.compartment)
            .collect();
        held.sort();
        held.dedup();
        held
    }

    /// The visit and handover notes this device shows for `nhs` (each
    /// entry's current versions; a conflict shows every candidate), or
    /// none if the view is refused.
    pub fn notes(&self, nhs: &NhsNumber, access: AccessRequest) -> Vec<String> {
        match self.engine().map(|e| e.view(nhs, access)) {
            Ok(Ok(released)) => notes_in(&released.view),
            _ => Vec::new(),
        }
    }
}

/// The visit and handover notes in a record view (every current version;
/// both candidates of a conflict), sorted.
pub fn notes_in(view: &RecordView) -> Vec<String> {
    let mut notes: Vec<String> = view
        .compartment(Compartment::CareEvents)
        .map(|c| {
            c.entries
                .iter()
                .flat_map(|e| e.heads())
                .filter_map(|v| match &v.content {
                    EntryContent::EncounterSummary { note, .. } => Some(note.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    notes.sort();
    notes
}

/// A visit or handover note, as a clinician writes it.
pub fn visit_note(setting: &str, note: &str) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: setting.into(),
        occurred_at: "2026-11-27T09:00:00Z".into(),
        note: note.into(),
    }
}

fn open_device(dir: &Path, keys: &Keystore, class: DeviceClass) -> Result<Device, SiteError> {
    Ok(Device::open(
        dir,
        keys,
        DeviceSettings::new(class),
        Arc::new(SystemClock),
    )?)
}

pub struct Site {
    pub server: RunningServer,
    /// A second handle on the server's store, as the admin commands open it.
    pub store: Store,
    pub dir: PathBuf,
}

impl Site {
    /// Starts the server in `dir/server` and adds the staff above.
    pub async fn start(dir: &Path) -> Result<Self, SiteError> {
        let server_dir = dir.join("server");
        let server = start(ServeConfig::on_loopback(&server_dir)).await?;
        let store = Store::open(
            server_dir.join("server.db"),
            &crate::serve::identity::key_provider(&server_dir)?,
        )?;
        for s in [
            nurse(),
            second_nurse(),
            paramedic(),
            ambulance_privacy_officer(),
            community_privacy_officer(),
        ] {
            server.directory.add_user(&s.user, s.passcode)?;
        }
        Ok(Self {
            server,
            store,
            dir: dir.to_owned(),
        })
    }

    /// What a device is given with its enrollment token.
    pub fn url(&self) -> String {
        format!("ws://{}/sync", self.server.sync_addr)
    }

    pub fn server_key_hex(&self) -> String {
        scr_core::channel::hex_key(&self.server.server_key)
    }

    /// Loads synthetic patient `n` (a test-range NHS number): demographics,
    /// an allergy, medication, a problem and more, one item sensitive.
    pub fn load_patient(&self, n: u32, sharing: SharingChoice) -> Result<NhsNumber, SiteError> {
        let nhs = test_nhs_number(n);
        let mut entries = vec![FileEntry {
            sensitive: false,
            content: demographics(nhs),
        }];
        entries.extend((0..9).map(|i| FileEntry {
            // A past problem the patient keeps sensitive.
            sensitive: i == 3,
            content: sample_entry(i),
        }));
        let file = RecordFile {
            nhs_number: nhs,
            sharing,
            include_sensitive: false,
            entries,
        };
        load(&self.store, &file, "site-admin")?;
        Ok(nhs)
    }

    /// The notes in the server's own copy of the record (an operator's
    /// read of the store: not a device's view, so nothing is audited).
    pub fn server_notes(&self, nhs: &NhsNumber) -> Result<Vec<String>, SiteError> {
        Ok(notes_in(&self.store.open_record(nhs)?.view()))
    }

    /// `scr-server admin assign`.
    pub fn assign(
        &self,
        user: &Staff,
        nhs: NhsNumber,
        kind: RelationshipKind,
    ) -> Result<(), SiteError> {
        Ok(assign(
            &self.store,
            &self.server.directory,
            user.id(),
            nhs,
            kind,
        )?)
    }

    /// `scr-server admin unassign`.
    pub fn unassign(&self, user: &Staff, nhs: NhsNumber) -> Result<bool, SiteError> {
        Ok(unassign(&self.store, user.id(), nhs)?)
    }

    /// A new staff tablet (`name` is its directory under `dir/devices`),
    /// enrolled with a one-time token for `organisation`.
    pub async fn tablet(
        &self,
        name: &str,
        class: DeviceClass,
        organisation: &str,
    ) -> Result<App, SiteError> {
        let token = self.server.directory.create_enrollment_token(
            organisation,
            class,
            now_ms() + 10 * 60_000,
        )?;
        self.enrolled(name, class, &token).await
    }

    /// The patient's own phone, enrolled with a token bound to them and the
    /// passcode they chose (`scr-server admin patient-token`).
    pub async fn patient_phone(
        &self,
        name: &str,
        nhs: NhsNumber,
        passcode: &str,
    ) -> Result<App, SiteError> {
        let token = self.server.directory.create_enrollment_token(
            "Y12345",
            scr_core::retention::DeviceClass::PatientPhone,
            now_ms() + 10 * 60_000,
        )?;
        crate::patients::bind_token(&self.store, &token, nhs, passcode)?;
        self.enrolled(name, DeviceClass::PatientPhone, &token).await
    }

    async fn enrolled(
        &self,
        name: &str,
        class: DeviceClass,
        token: &str,
    ) -> Result<App, SiteError> {
        let dir = self.dir.join("devices").join(name);
        let keystore = Keystore::random()?;
        let device = open_device(&dir, &keystore, class)?;
        device
            .enroll(&self.url(), &self.server_key_hex(), token)
            .await?;
        Ok(App {
            device,
            keystore,
            class,
        })
    }

    /// A privacy officer's open alerts (`scr-server admin alerts`).
    pub fn alerts(&self, officer: &Staff) -> Result<Vec<AlertRecord>, SiteError> {
        let officer = Officer::find(&self.server.directory, officer.id())?;
        Ok(officer.alerts(&self.server.archive, &self.store, false)?)
    }

    /// `scr-server admin close-alert`.
    pub fn close_alert(
        &self,
        officer: &Staff,
        id: i64,
        outcome: AlertOutcome,
    ) -> Result<(), SiteError> {
        let officer = Officer::find(&self.server.directory, officer.id())?;
        Ok(officer.close(&self.server.archive, &self.store, id, outcome)?)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Logs a member of staff in on a tablet.
pub async fn log_in(app: &App, who: &Staff) -> Result<SessionInfo, SiteError> {
    Ok(app
        .device
        .login(who.id(), &who.user.card_serial, who.passcode)
        .await?)
}
