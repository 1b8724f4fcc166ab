//! A client that speaks the sync protocol directly with a nurse tablet's
//! valid grant: a server with one patient on the nurse's caseload, and a
//! raw sync session (samod messages over the real Noise channel) that
//! pushes whatever changes the test makes to a compartment document.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use automerge::{Automerge, ROOT, ReadDoc};
use scr_core::NhsNumber;
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, EntryContent, Provenance, SharingChoice};
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::serve::RunningServer;
use scr_server::users::assign;

pub struct Pusher {
    pub srv: RunningServer,
    pub store: scr_core::Store,
    pub nhs: NhsNumber,
    pub keys: Arc<StaticKeypair>,
    docs: Vec<(Compartment, String)>,
    ch: channel::PlainSession<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
}

impl Pusher {
    /// A server, the patient (core, additional, care events and
    /// governance, core only), the nurse enrolled, logged in and joined.
    pub async fn new(dir: &std::path::Path, patient: u32, entries: Vec<EntryContent>) -> Self {
        Self::with_config(dir, patient, entries, |_| {}).await
    }

    /// [`Pusher::new`], the server started with `config` changed.
    pub async fn with_config(
        dir: &std::path::Path,
        patient: u32,
        entries: Vec<EntryContent>,
        config: impl FnOnce(&mut scr_server::serve::ServeConfig),
    ) -> Self {
        let mut c = scr_server::serve::ServeConfig::on_loopback(dir);
        config(&mut c);
        let srv = scr_server::serve::start(c).await.unwrap();
        let store = super::server_store(dir);
        let nhs = test_nhs_number(patient);
        let entries = entries
            .into_iter()
            .chain([sample_entry(0)])
            .map(|content| FileEntry {
                sensitive: false,
                content,
            })
            .collect();
        let docs = load(
            &store,
            &RecordFile {
                nhs_number: nhs,
                sharing: SharingChoice::CoreAndAdditional,
                include_sensitive: false,
                entries,
            },
            "test",
        )
        .unwrap();
        srv.directory
            .add_user(&super::nurse(), super::NURSE_PASSCODE)
            .unwrap();
        assign(
            &store,
            &srv.directory,
            super::NURSE_ID,
            nhs,
            RelationshipKind::Caseload,
        )
        .unwrap();
        let keys = Arc::new(StaticKeypair::generate().unwrap());
        let token = srv
            .directory
            .create_enrollment_token(
                "RX1",
                scr_core::retention::DeviceClass::NurseTablet,
                scr_core::clock::now_ms() + 60_000,
            )
            .unwrap();
        super::enroll(&srv, &keys, &token).await;
        scr_core::sync::login(
            super::ws(srv.sync_addr).await,
            &keys,
            &srv.server_key,
            &super::nurse_login(),
        )
        .await
        .unwrap();
        let hello = Hello::new(Purpose::Sync, None).encode();
        let mut ch = channel::PlainSession::open(
            channel::connect(
                super::ws(srv.sync_addr).await,
                &keys,
                &srv.server_key,
                &hello,
            )
            .await
            .unwrap(),
        )
        .await
        .unwrap();
        let me = hex_key(&keys.public());
        ch.send(&super::wire("join", &[("senderId", &me)], None))
            .await
            .unwrap();
        let peer = ch.recv().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&peer).contains("peer"));
        Self {
            srv,
            store,
            nhs,
            keys,
            docs,
            ch,
        }
    }

    pub fn doc_id(&self, c: Compartment) -> String {
        self.docs.iter().find(|(k, _)| *k == c).unwrap().1.clone()
    }

    /// The document as the server's samod holds it now.
    pub async fn server_doc(&self, c: Compartment) -> Automerge {
        let handle = self
            .srv
            .repo()
            .find(self.doc_id(c).parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        handle.with_document(|d| d.clone())
    }

    /// The nurse's provenance, as her tablet writes it.
    pub fn nurse_wrote(&self, at_ms: i64) -> Provenance {
        let n = super::nurse();
        Provenance {
            author_id: n.user_id,
            role: n.job_role,
            organisation: n.organisation,
            device: hex_key(&self.keys.public()),
            recorded_at_ms: at_ms,
        }
    }

    /// Applies `edit` to a copy of the server's document and pushes the
    /// changes it made, as one sync message. Returns them, to offer again.
    pub async fn push(
        &mut self,
        c: Compartment,
        edit: impl FnOnce(&mut Automerge, automerge::ObjId),
    ) -> Vec<Vec<u8>> {
        let before = self.server_doc(c).await;
        let mut after = before.fork();
        let versions = after.get(ROOT, "versions").unwrap().unwrap().1;
        edit(&mut after, versions);
        let changes: Vec<Vec<u8>> = after
            .get_changes(&before.get_heads())
            .into_iter()
            .map(|ch| ch.raw_bytes().to_vec())
            .collect();
        self.push_changes(c, &changes, after.get_heads()).await;
        changes
    }

    /// Pushes `changes` as one sync message claiming `heads`.
    pub async fn push_changes(
        &mut self,
        c: Compartment,
        changes: &[Vec<u8>],
        heads: Vec<automerge::ChangeHash>,
    ) {
        let message = automerge::sync::Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: changes.to_vec().into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
        .encode();
        let (me, server) = (hex_key(&self.keys.public()), hex_key(&self.srv.server_key));
        let msg = super::wire(
            "sync",
            &[
                ("documentId", &self.doc_id(c)),
                ("senderId", &me),
                ("targetId", &server),
            ],
            Some(&message),
        );
        self.ch.send(&msg).await.unwrap();
    }

    /// Waits until `done` holds of the server's document (or 10 s pass).
    pub async fn until(&self, c: Compartment, done: impl Fn(&Automerge) -> bool) -> bool {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done(&self.server_doc(c).await) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    }

    /// The server's audit events for refused pushes.
    pub fn refusals(&self) -> Vec<scr_core::audit::AuditEvent> {
        self.store
            .queued_audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "push-refused")
            .collect()
    }
}
