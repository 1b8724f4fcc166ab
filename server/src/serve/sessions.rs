//! Sync sessions that outlive a connection (ADR 0005), on the server: the
//! open sessions by id, and how a connection carries one.
//!
//! A session belongs to the device key that opened it; only a handshake
//! proving that key (and a device still enrolled, checked at admission) may
//! resume it. A session nobody resumes within [`RESUME_WINDOW`] ends, and
//! samod forgets its sync states.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use scr_core::channel::{self, Detached, RESUME_WINDOW, Session, SessionId, WebSocket};

/// How long a new session waits for samod to let go of an old one.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

struct Open {
    device: [u8; 32],
    session: Arc<Session>,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<SessionId, Open>>,
    /// Woken whenever a session leaves `open`.
    removed: tokio::sync::Notify,
    /// The server is shutting down: no session opens any more. Set and
    /// read under `open`'s lock, so none slips in between.
    closing: std::sync::atomic::AtomicBool,
}

impl Sessions {
    /// Registers a new session of `device` under a fresh random id, removed
    /// again when the session ends.
    pub fn insert(self: &Arc<Self>, device: [u8; 32], session: Arc<Session>) -> Option<SessionId> {
        let mut id = SessionId::default();
        getrandom::fill(&mut id).ok()?;
        {
            let mut open = self.open.lock().ok()?;
            if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            open.insert(
                id,
                Open {
                    device,
                    session: session.clone(),
                },
            );
        }
        let sessions = self.clone();
        tokio::spawn(async move {
            session.ended().await;
            // Listed until samod has let go of it too (see `released`).
            let _ = tokio::time::timeout(RELEASE_WAIT, session.released()).await;
            if let Ok(mut open) = sessions.open.lock() {
                open.remove(&id);
            }
            sessions.removed.notify_waiters();
        });
        Some(id)
    }

    /// The session `id` if `device` opened it and it has not ended.
    pub fn find(&self, id: &[u8], device: &[u8; 32]) -> Option<Arc<Session>> {
        let id: SessionId = id.try_into().ok()?;
        let open = self.open.lock().ok()?;
        open.get(&id)
            .filter(|o| o.device == *device && !o.session.is_ended())
            .map(|o| o.session.clone())
    }

    /// Ends every session of `device`. A device runs one sync, and dials
    /// afresh only once its samod let the previous session go: any older
    /// session is a leftover (a connection not yet seen dead, or one
    /// waiting for a resume that will not come), and two samod connections
    /// to one peer would split its documents' sync between them.
    pub fn end_all_of(&self, device: &[u8; 32]) {
        if let Ok(open) = self.open.lock() {
            for o in open.values() {
                if o.device == *device {
                    o.session.end();
                }
            }
        }
    }

    /// Ends every open session with a goodbye (an END frame: its device
    /// opens a fresh session, wherever the address now leads), without
    /// closing the door: the store stopped answering.
    pub fn say_goodbye_to_all(&self) -> usize {
        let Ok(open) = self.open.lock() else {
            return 0;
        };
        let mut ended = 0;
        for o in open.values().filter(|o| !o.session.is_ended()) {
            o.session.end_saying_goodbye();
            ended += 1;
        }
        ended
    }

    /// The server is shutting down: every open session ends, telling its
    /// device, and no new one opens.
    pub fn close_all(&self) -> usize {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.say_goodbye_to_all()
    }

    /// Waits (a bounded while) until samod has let go of every session of
    /// `device`: samod must not see a new connection from a peer while it
    /// is still closing an old one, or it can lose track of which documents
    /// that peer may be sent.
    pub async fn released(&self, device: &[u8; 32]) {
        let _ = tokio::time::timeout(RELEASE_WAIT, async {
            loop {
                // Registered before looking, so a removal in between wakes it.
                let removed = self.removed.notified();
                tokio::pin!(removed);
                removed.as_mut().enable();
                let held = self
                    .open
                    .lock()
                    .map(|o| o.values().any(|s| s.device == *device))
                    .unwrap_or(false);
                if !held {
                    return;
                }
                removed.await;
            }
        })
        .await;
    }
}

/// Carries `session` over `channel` until the connection drops, then gives
/// the device [`RESUME_WINDOW`] to come back before the session ends.
pub async fn carry<S: WebSocket>(
    session: Arc<Session>,
    channel: channel::NoiseChannel<S>,
    peer_received: u64,
) {
    match session.attach(channel, peer_received).await {
        Detached::Ended => {}
        Detached::Lost { generation, cause } => {
            tracing::debug!(%cause, "a sync connection dropped; its session waits to resume");
            session
                .expire_unless_resumed(generation, RESUME_WINDOW)
                .await;
        }
    }
}
