//! A device in a socket test: enrolled, logged in online, its engine open,
//! and its background sync started and stopped at will.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use scr_core::NhsNumber;
use scr_core::access::AccessRequest;
use scr_core::channel::{StaticKeypair, from_hex, hex_key};
use scr_core::clock::SystemClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::record::{Compartment, EntryContent, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::sync::{DeviceSync, SyncConfig};
use scr_server::records::{FileEntry, RecordFile};
use scr_server::serve::RunningServer;
use scr_server::users::NewUser;

pub const PARAMEDIC_ID: &str = "555000000203";

pub fn paramedic() -> NewUser {
    NewUser {
        user_id: PARAMEDIC_ID.into(),
        display_name: "Sam Paramedic".into(),
        organisation: "RYA".into(),
        job_role: "R1290".into(),
        job_role_name: "Paramedic".into(),
        activities: vec![
            "B0264".into(),
            "B0370".into(),
            "B0168".into(),
            "B0380".into(),
        ],
        privacy_officer: false,
        card_serial: "CARD-0203".into(),
    }
}

pub fn record(n: u32, sharing: SharingChoice) -> RecordFile {
    RecordFile {
        nhs_number: test_nhs_number(n),
        sharing,
        include_sensitive: false,
        entries: [0, 1, 3, 7]
            .into_iter()
            .map(|i| FileEntry {
                sensitive: false,
                content: sample_entry(i),
            })
            .collect(),
    }
}

pub struct Device {
    pub engine: Arc<Engine>,
    pub keys: Arc<StaticKeypair>,
    pub url: String,
    pub server_key: [u8; 32],
    pub sync: Option<DeviceSync>,
    /// What reopening the engine from its files takes (an app restart).
    reopen: Reopen,
}

struct Reopen {
    path: std::path::PathBuf,
    key: u8,
    config: EngineConfig,
    clock: Arc<dyn scr_core::clock::Clock>,
}

impl Device {
    /// Enrolls a device, logs its user in online, and opens its engine.
    pub async fn enroll(
        srv: &RunningServer,
        dir: &std::path::Path,
        name: &str,
        (organisation, device_class): (&str, DeviceClass),
        login: LoginRequest,
    ) -> Self {
        let token = srv
            .directory
            .create_enrollment_token(
                organisation,
                device_class,
                scr_core::clock::now_ms() + 60_000,
            )
            .unwrap();
        Self::enroll_with(
            srv,
            dir,
            name,
            device_class,
            &token,
            login,
            Arc::new(SystemClock),
        )
        .await
    }

    /// [`Device::enroll`] with the device's own clock (one that runs fast,
    /// say).
    pub async fn enroll_with_clock(
        srv: &RunningServer,
        dir: &std::path::Path,
        name: &str,
        (organisation, device_class): (&str, DeviceClass),
        login: LoginRequest,
        clock: Arc<dyn scr_core::clock::Clock>,
    ) -> Self {
        let token = srv
            .directory
            .create_enrollment_token(
                organisation,
                device_class,
                scr_core::clock::now_ms() + 60_000,
            )
            .unwrap();
        Self::enroll_with(srv, dir, name, device_class, &token, login, clock).await
    }

    /// A patient's own phone, enrolled with a token bound to them and the
    /// passcode they chose.
    pub async fn patient(
        srv: &RunningServer,
        store: &scr_core::Store,
        dir: &std::path::Path,
        nhs: NhsNumber,
        passcode: &str,
    ) -> Self {
        let token = srv
            .directory
            .create_enrollment_token(
                "Y12345",
                scr_core::retention::DeviceClass::PatientPhone,
                scr_core::clock::now_ms() + 60_000,
            )
            .unwrap();
        scr_server::patients::bind_token(store, &token, nhs, passcode).unwrap();
        let login = LoginRequest {
            user_id: "patient".into(),
            card_serial: String::new(),
            passcode: passcode.into(),
        };
        Self::enroll_with(
            srv,
            dir,
            "patient",
            DeviceClass::PatientPhone,
            &token,
            login,
            Arc::new(SystemClock),
        )
        .await
    }

    async fn enroll_with(
        srv: &RunningServer,
        dir: &std::path::Path,
        name: &str,
        device_class: DeviceClass,
        token: &str,
        login: LoginRequest,
        clock: Arc<dyn scr_core::clock::Clock>,
    ) -> Self {
        let keys = Arc::new(StaticKeypair::generate().unwrap());
        super::enroll(srv, &keys, token).await;
        let response = scr_core::sync::login(
            super::ws(srv.sync_addr).await,
            &keys,
            &srv.server_key,
            &login,
        )
        .await
        .unwrap();
        let LoginResponse::Granted {
            grant_hex,
            grant_key_hex,
            holdings_doc,
        } = response
        else {
            panic!("login refused: {response:?}");
        };
        let grant_key: [u8; 32] = from_hex(&grant_key_hex).unwrap().try_into().unwrap();
        let reopen = Reopen {
            path: dir.join(format!("{name}.db")),
            key: name.len() as u8,
            config: EngineConfig::new(&hex_key(&keys.public()), device_class, grant_key),
            clock,
        };
        let engine = reopen.open();
        engine
            .login_online(&from_hex(&grant_hex).unwrap(), "tablet-1357")
            .unwrap();
        engine
            .set_holdings_document(&holdings_doc.expect("a holdings document"))
            .unwrap();
        Self {
            engine: Arc::new(engine),
            keys,
            url: format!("ws://{}/sync", srv.sync_addr),
            server_key: srv.server_key,
            sync: None,
            reopen,
        }
    }

    /// The app restarts: sync stops, the engine is dropped and opened again
    /// from its files, and the user unlocks it (sync is left stopped).
    pub async fn restart(&mut self) {
        self.offline().await;
        // Sync's tasks let go of the engine as they end.
        for _ in 0..100 {
            if Arc::strong_count(&self.engine) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.engine = Arc::new(self.reopen.open());
        self.engine.unlock("tablet-1357").unwrap();
    }

    /// The nurse's tablet (the user must exist on the server).
    pub async fn nurse(srv: &RunningServer, dir: &std::path::Path) -> Self {
        Self::enroll(
            srv,
            dir,
            "nurse",
            ("RX1", DeviceClass::NurseTablet),
            super::nurse_login(),
        )
        .await
    }

    /// The paramedic's ambulance tablet (user: [`paramedic`], passcode
    /// `sam-1357`).
    pub async fn paramedic(srv: &RunningServer, dir: &std::path::Path) -> Self {
        Self::enroll(
            srv,
            dir,
            "paramedic",
            ("RYA", DeviceClass::AmbulanceTablet),
            LoginRequest {
                user_id: PARAMEDIC_ID.into(),
                card_serial: "CARD-0203".into(),
                passcode: "sam-1357".into(),
            },
        )
        .await
    }

    pub async fn online(&mut self) {
        let mut config = SyncConfig::new(&self.url, self.server_key, self.keys.clone());
        config.pass_wait = Duration::from_secs(5);
        // A missed holdings notice (see `SyncConfig::holdings_max_age`)
        // costs a test seconds, not a minute.
        config.holdings_max_age = Duration::from_secs(3);
        self.sync = Some(
            DeviceSync::start(self.engine.clone(), config)
                .await
                .unwrap(),
        );
    }

    pub async fn offline(&mut self) {
        if let Some(s) = self.sync.take() {
            s.stop().await;
        }
    }

    /// This device's audit events about `nhs`: those the server's archive
    /// holds and those still queued here, once each, oldest first.
    pub fn trail(&self, srv: &RunningServer, nhs: &NhsNumber) -> Vec<scr_core::audit::AuditEvent> {
        let me = hex_key(&self.keys.public());
        let mut events: Vec<_> = srv
            .archive
            .events_about(nhs)
            .unwrap()
            .into_iter()
            .map(|a| a.event)
            .filter(|e| e.device == me)
            .collect();
        for e in self.engine.audit_queue().unwrap() {
            if e.patient.as_ref() == Some(nhs) && !events.iter().any(|a| a.id == e.id) {
                events.push(e);
            }
        }
        events.sort_by_key(|e| e.seq);
        events
    }

    /// Passes until one brings every held document in step (a loaded
    /// machine can need more than one).
    pub async fn settle(&self) -> scr_core::sync::PassSummary {
        let mut last = self.sync().await;
        for _ in 0..5 {
            if last.documents > 0 && last.in_step == last.documents {
                break;
            }
            last = self.sync().await;
        }
        last
    }

    /// One full pass, started now.
    pub async fn sync(&self) -> scr_core::sync::PassSummary {
        self.sync
            .as_ref()
            .unwrap()
            .sync_once(Duration::from_secs(20))
            .await
            .unwrap()
    }

    /// The highest audit counter this device has released (the server
    /// acknowledged everything up to it), while something is still queued.
    pub fn audit_released_up_to(&self) -> Option<u64> {
        let queued = self.engine.audit_queue().unwrap();
        queued.first().map(|oldest| oldest.seq - 1)
    }

    pub fn compartments(&self, nhs: &NhsNumber) -> Vec<Compartment> {
        let mut c: Vec<_> = self
            .engine
            .held_documents()
            .unwrap()
            .into_iter()
            .filter(|(n, _)| n == nhs)
            .map(|(_, d)| d.compartment)
            .collect();
        c.sort();
        c
    }

    pub fn notes(&self, nhs: &NhsNumber, access: AccessRequest) -> Vec<String> {
        let released = self.engine.view(nhs, access).unwrap();
        scr_server::demo::site::notes_in(&released.view)
    }
}

impl Reopen {
    fn open(&self) -> Engine {
        Engine::open(
            &self.path,
            &StaticKeyProvider::new(SecretKey::from_bytes([self.key; 32])),
            self.config.clone(),
            self.clock.clone(),
        )
        .unwrap()
    }
}

pub fn visit(note: &str) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: "home".into(),
        occurred_at: "2026-11-27T09:00:00Z".into(),
        note: note.into(),
    }
}
