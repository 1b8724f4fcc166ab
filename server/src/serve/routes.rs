//! Each purpose a device connects for, after the handshake: a sync
//! session (new or resumed), or one exchange (holdings list, audit upload,
//! access log, encounter, login) and close.

use std::net::SocketAddr;
use std::sync::Arc;

use scr_core::channel::{self, Hello, Purpose, from_hex, to_hex};
use scr_core::protocol::{LoginRequest, LoginResponse};

use super::{Channel, Shared};

/// Serves the connection for the purpose its hello named.
pub(super) async fn route(channel: Channel, hello: Hello, shared: &Arc<Shared>, peer: SocketAddr) {
    let outcome = match hello.purpose {
        Purpose::Sync => {
            match &hello.resume {
                None => open_sync_session(channel, shared, peer, hello.layout).await,
                Some(resume) => resume_sync_session(channel, shared, resume).await,
            }
            return;
        }
        Purpose::Holdings => serve_holdings(channel, shared, hello.layout)
            .await
            .map_err(|r| ("holdings request failed", r)),
        Purpose::Audit => serve_audit(channel, shared, peer)
            .await
            .map_err(|r| ("audit upload failed", r)),
        Purpose::AccessLog => serve_access_log(channel, shared, hello.layout)
            .await
            .map_err(|r| ("access log request failed", r)),
        Purpose::Encounter => serve_encounter(channel, shared)
            .await
            .map_err(|r| ("encounter request failed", r)),
        Purpose::Login => serve_login(channel, shared)
            .await
            .map_err(|r| ("login exchange failed", r)),
        Purpose::Logout => serve_logout(channel, shared)
            .await
            .map_err(|r| ("logout exchange failed", r)),
    };
    if let Err((what, reason)) = outcome {
        tracing::info!(%peer, %reason, "{what}");
    }
}

/// A new sync session for the device: counted against its cap, told its
/// id, handed to samod, and carried over this connection and any it
/// resumes on.
async fn open_sync_session(
    mut channel: Channel,
    shared: &Arc<Shared>,
    peer: SocketAddr,
    layout: u8,
) {
    let device = channel.remote_static();
    if !shared.store_health.reachable() {
        // Nothing could be stored: the device tries again (elsewhere).
        tracing::info!(%peer, "the store does not answer; sync session refused");
        return;
    }
    shared.sessions.end_all_of(&device);
    shared.sessions.released(&device).await;
    let Some(guard) = shared.metrics.open_session(device) else {
        shared.metrics.sessions_refused.inc();
        tracing::info!(%peer, "too many sync sessions for one device; refused");
        return;
    };
    let admission = crate::guard::Admission::new(
        shared.policy.clone(),
        shared.store.clone(),
        device,
        crate::guard::Counted {
            refused: shared.metrics.pushes_refused.clone(),
            flood_dropped: shared.metrics.flood_dropped.clone(),
            oversized: shared.metrics.pushes_oversized.clone(),
            max_push_bytes: shared.gate.limits().max_push_bytes,
        },
    );
    let gate = crate::guard::changes::gate(
        admission,
        shared.waiting.clone(),
        shared.repo.clone(),
        shared.store.clone(),
        shared.policy.clone(),
        shared.holdings.clone(),
        device,
        shared.metrics.changes_refused.clone(),
    );
    // A document the device syncs through samod needs no catalogue notice
    // (once the gate has let its message through to samod).
    let catalogue = shared.catalogue.catalogue.clone();
    let health = shared.store_health.clone();
    let gate: channel::Gate = Arc::new(move |message: Vec<u8>| {
        let doc = match scr_core::protocol::wire::kind_and_document(&message) {
            Some((kind, doc)) if kind == "sync" || kind == "request" => doc,
            _ => None,
        };
        if doc.is_some() && !health.reachable() {
            // Merged in memory and answered, it could not be stored: not
            // let through while the store does not answer (the session is
            // being ended).
            return Box::pin(async { None });
        }
        let (catalogue, passing) = (catalogue.clone(), gate(message));
        Box::pin(async move {
            let passed = passing.await;
            if let (Some(_), Some(doc)) = (&passed, doc) {
                catalogue.joined(&device, &doc);
            }
            passed
        })
    });
    let (session, transport) = channel::Session::open_observed(
        device,
        shared.metrics.traffic.clone(),
        Box::new(guard),
        // Everything is read once, in the gate.
        (Box::new(|_| true), gate),
        shared.sent.observer(device),
    );
    let Some(id) = shared.sessions.insert(device, session.clone()) else {
        session.end();
        return;
    };
    let asking = crate::catalogue::Asking {
        device,
        session: shared.catalogue.catalogue.session_number(),
        layout,
    };
    session.answer_with(crate::catalogue::answerer(shared.catalogue.clone(), asking));
    let (ended, catalogue) = (session.clone(), shared.catalogue.catalogue.clone());
    tokio::spawn(async move {
        ended.ended().await;
        catalogue.session_ended(&device, asking.session);
    });
    let reply = channel::SessionReply::Opened {
        id: to_hex(&id),
        asks: true,
    };
    if channel.send(&reply.encode()).await.is_err() {
        session.end();
        return;
    }
    if shared.acceptor.accept(transport).is_err() {
        tracing::warn!("sync repo stopped; connection dropped");
        session.end();
        return;
    }
    super::sessions::carry(session, channel, 0).await;
}

/// A device back on a new connection: its session goes on if it is still
/// open and was opened by this device key; otherwise the device is told to
/// open a new one.
async fn resume_sync_session(mut channel: Channel, shared: &Arc<Shared>, resume: &channel::Resume) {
    let device = channel.remote_static();
    let found = from_hex(&resume.session).and_then(|id| shared.sessions.find(&id, &device));
    let Some(session) = found else {
        let _ = channel.send(&channel::SessionReply::Unknown.encode()).await;
        return;
    };
    let reply = channel::SessionReply::Resumed {
        received: session.received(),
    };
    if channel.send(&reply.encode()).await.is_err() {
        return;
    }
    shared.metrics.sessions_resumed.inc();
    super::sessions::carry(session, channel, resume.received).await;
}

/// One holdings request: the device's current list (what its grant lets it
/// hold now), computed from the same decisions as the share policy.
async fn serve_holdings(mut channel: Channel, shared: &Shared, layout: u8) -> Result<(), String> {
    let policy = shared.policy.clone();
    let device = channel.remote_static();
    // The version first: the list computed after it is at least that new.
    let notice_version = shared.holdings.notice_version(device).await;
    let store = shared.store.clone();
    let (list, refused) = tokio::task::spawn_blocking(move || {
        let refused = crate::refusals::of_device(&store, &device);
        (policy.holdings_for(&device), refused)
    })
    .await
    .map_err(|e| e.to_string())?;
    // An app of layout 1 reads six compartments and would refuse the list
    // naming a seventh: it goes on recording permissions in governance.
    let list = match (list, layout) {
        (Some(list), 1) => Some(list.in_layout_1()),
        (list, _) => list,
    };
    let reply = scr_core::protocol::HoldingsReply {
        list,
        notice_version,
        refused,
    };
    let body = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())
}

/// One batch of the device's audit queue, archived before it is
/// acknowledged, each event judged against the grants the server issued
/// to the device. Admitted for a revoked device too: its trail is owed.
async fn serve_audit(channel: Channel, shared: &Shared, peer: SocketAddr) -> Result<(), String> {
    let (directory, store) = (shared.directory.clone(), shared.store.clone());
    let archive = shared.archive.clone();
    let device = channel.remote_static();
    // A lost tablet, or a tablet whose last user (logged out or not) was
    // revoked: told to wipe itself once its trail is in. A directory that
    // cannot say answers nothing (the device sends its trail again later):
    // never a wipe on a read error.
    // The store's grant history, read once: for the last user here, and to
    // judge the events below.
    let read_dir = directory.clone();
    let (revoked_at_ms, wipe, kept) = tokio::task::spawn_blocking(move || {
        let device_revoked = read_dir.device_revoked_at(&device)?;
        let kept = crate::grants::issued_history(&store, &device);
        let last_user = kept.last().map(|g| g.actor_ref().0.to_owned());
        let last_user_revoked = match last_user {
            Some(u) => read_dir.users_revoked_at(&[u.as_str()])?.contains_key(&u),
            None => false,
        };
        let wipe = device_revoked.is_some() || last_user_revoked;
        Ok::<_, crate::directory::DirectoryError>((device_revoked, wipe, kept))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    // What the server issued to the device around the upload's events, and
    // when those grants' users were revoked.
    let judge = move |upload: &scr_core::protocol::AuditUpload| {
        let grants = crate::grants::judged_against(&archive, kept, &device, upload)?;
        let mut users: Vec<&str> = grants.iter().map(|g| g.actor_ref().0).collect();
        users.sort_unstable();
        users.dedup();
        let users_revoked_at = directory
            .users_revoked_at(&users)
            .map_err(|_| crate::archive::ArchiveError::Directory)?;
        Ok(crate::archive::Issued {
            grants,
            revoked_at_ms,
            users_revoked_at,
        })
    };
    let ack = crate::archive::serve_upload(
        channel,
        shared.archive.clone(),
        shared.audit_budget.clone(),
        Box::new(judge),
        wipe,
        shared.metrics.audit_uploads_refused.clone(),
    )
    .await?;
    shared.metrics.audit_archived.inc_by(u64::from(ack.stored));
    shared.metrics.audit_flagged.inc_by(u64::from(ack.flagged));
    if ack.flagged > 0 {
        tracing::warn!(%peer, flagged = ack.flagged, "uploaded audit events stored flagged for review");
    }
    Ok(())
}

/// The device's user logged out: the grant the server issued to it is
/// retired (audited), and its documents follow at once.
async fn serve_logout(mut channel: Channel, shared: &Shared) -> Result<(), String> {
    let device = channel.remote_static();
    let (store, archive) = (shared.store.clone(), shared.archive.clone());
    tokio::task::spawn_blocking(move || {
        let retired = crate::grants::retire(&store, &device).map_err(|e| e.to_string())?;
        if let Some(grant) = retired {
            // It held until now: nothing after is judged under it.
            archive
                .retire_grant(&device, &grant.grant_id, scr_core::clock::now_ms())
                .map_err(|e| e.to_string())?;
            let detail = format!("device {}", &scr_core::channel::hex_key(&device)[..16]);
            crate::audit::record(
                &store,
                grant.actor_ref().0,
                "logout",
                None,
                scr_core::audit::Outcome::Recorded,
                Some(detail),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    })
    .await
    .map_err(|e| e.to_string())??;
    shared.epoch.bump_device(&device);
    shared.holdings.refresh(device).await;
    channel.send(b"retired").await.map_err(|e| e.to_string())
}

/// "Who has looked at my record", for the patient's phone or a privacy officer.
async fn serve_access_log(channel: Channel, shared: &Shared, layout: u8) -> Result<(), String> {
    let sources = crate::access_log::AccessLogSources {
        policy: shared.policy.clone(),
        archive: shared.archive.clone(),
        store: shared.store.clone(),
        directory: shared.directory.clone(),
        server_key: shared.identity.noise.public(),
    };
    crate::access_log::serve_access_log(channel, sources, layout).await
}

/// Opens or closes an encounter; the new grant decides what the device holds.
async fn serve_encounter(mut channel: Channel, shared: &Shared) -> Result<(), String> {
    let device = channel.remote_static();
    let desk = crate::encounters::EncounterDesk {
        store: shared.store.clone(),
        policy: shared.policy.clone(),
        archive: shared.archive.clone(),
        signer_seed: shared.identity.signer_seed(),
        server_key: shared.identity.noise.public(),
    };
    if crate::encounters::serve_encounter(&mut channel, desk).await? {
        shared.epoch.bump_device(&device);
        shared.holdings.refresh(device).await;
    }
    Ok(())
}

/// One login exchange on an authenticated channel: the grant is bound to
/// the key the device proved in the handshake. One login per device at a
/// time: a device that asks again before its last one is answered is
/// refused at once, so the queue for Argon2 is shared fairly by devices.
async fn serve_login(mut channel: Channel, shared: &Shared) -> Result<(), String> {
    let request = crate::request::one_request(&mut channel, "login request").await?;
    if request.len() > 4096 {
        return Err("login request too large".into());
    }
    let parsed = serde_json::from_slice::<LoginRequest>(&request)
        .ok()
        .filter(|r| r.user_id.len() <= 64 && r.card_serial.len() <= 64 && r.passcode.len() <= 256);
    let device = channel.remote_static();
    let response = match parsed {
        Some(request) => match LoginInProgress::begin(shared, device) {
            Some(_in_progress) => check_login(shared, device, request).await?,
            None => {
                shared.metrics.logins_refused_busy.inc();
                LoginResponse::Refused {
                    reason: "a login from this device is already in progress".into(),
                }
            }
        },
        None => LoginResponse::Refused {
            reason: "the login request is malformed".into(),
        },
    };
    let mut response = response;
    if let LoginResponse::Granted { holdings_doc, .. } = &mut response {
        shared.metrics.logins.inc();
        // The device's documents follow its new grant at once, and its
        // holdings list names them.
        shared.epoch.bump_device(&device);
        match shared.holdings.ensure(device).await {
            Ok(id) => *holdings_doc = Some(id),
            Err(e) => tracing::warn!(error = %e, "no holdings list for a device"),
        }
    }
    let body = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())
}

/// Checks one login in its turn for Argon2.
async fn check_login(
    shared: &Shared,
    device: [u8; 32],
    request: LoginRequest,
) -> Result<LoginResponse, String> {
    let _slot = shared
        .login_slots
        .acquire()
        .await
        .map_err(|_| "the server is stopping".to_owned())?;
    // Argon2 and SQLite: off the async runtime.
    let (directory, store) = (shared.directory.clone(), shared.store.clone());
    let archive = shared.archive.clone();
    let signer_seed = shared.identity.signer_seed();
    let grant_lifetime_ms = shared.grant_lifetime_ms;
    tokio::task::spawn_blocking(move || {
        let signer = scr_core::grant::GrantSigner::from_seed(*signer_seed);
        let desk = crate::login::LoginDesk {
            directory: &directory,
            store: &store,
            archive: &archive,
            signer: &signer,
            grant_lifetime_ms,
        };
        match directory.device(&device) {
            Ok(Some(d)) if !d.revoked => desk.login(&d, &request, scr_core::clock::now_ms()),
            _ => LoginResponse::Refused {
                reason: "this device is not enrolled".into(),
            },
        }
    })
    .await
    .map_err(|e| e.to_string())
}

/// A device's place in the login queue, given up when dropped.
struct LoginInProgress<'a> {
    shared: &'a Shared,
    device: [u8; 32],
}

impl<'a> LoginInProgress<'a> {
    fn begin(shared: &'a Shared, device: [u8; 32]) -> Option<Self> {
        let newly = shared.logins_in_progress.lock().ok()?.insert(device);
        // (Built only when inserted: dropping one frees the place.)
        newly.then(|| Self { shared, device })
    }
}

impl Drop for LoginInProgress<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.shared.logins_in_progress.lock() {
            busy.remove(&self.device);
        }
    }
}
