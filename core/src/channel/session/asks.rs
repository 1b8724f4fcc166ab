//! Asks beside samod's stream: one side asks (the device, for the
//! catalogue), the other answers with whatever its [`Answerer`] returns.
//! Asks are numbered by the asker and never replayed: one lost with a
//! connection is asked again. A side answers one ask at a time, and takes
//! the next only once its answer has gone to the writer (which takes it
//! only while little waits to be written); a peer that asks again before
//! that breaks the protocol and the session ends.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::frame::{ANSWER, ASK};
use super::side::{Answerer, Asks};
use super::state::Session;
use crate::channel::ChannelError;

/// Gives up the asker's place when its wait ends, answered or not.
struct Pending<'a> {
    asks: &'a Mutex<Asks>,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.asks.lock() {
            a.pending.remove(&self.id);
        }
    }
}

impl Session {
    /// Answers the peer's asks with `answerer` (the server side).
    pub fn answer_with(&self, answerer: Answerer) {
        if let Ok(mut a) = self.asks.lock() {
            a.answerer = Some(answerer);
        }
    }

    /// Asks the peer and waits for its answer: on the connection attached
    /// now, or the next one. Put a deadline on it: an ask lost with a
    /// connection is never answered.
    pub async fn ask(&self, question: Vec<u8>) -> Result<Vec<u8>, ChannelError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut a = self.asks.lock().map_err(|_| ChannelError::Closed)?;
            a.next += 1;
            let id = a.next;
            a.pending.insert(id, tx);
            id
        };
        let _pending = Pending {
            asks: &self.asks,
            id,
        };
        self.side_tx
            .send((ASK, id, question))
            .map_err(|_| ChannelError::Closed)?;
        let mut ended = self.ended.subscribe();
        tokio::select! {
            answer = rx => answer.map_err(|_| ChannelError::Closed),
            _ = ended.wait_for(|e| *e) => Err(ChannelError::Closed),
        }
    }

    /// An ask or an answer from the peer. An error ends the session.
    pub(super) fn take_side(&self, kind: u8, id: u64, payload: &[u8]) -> Result<(), ChannelError> {
        self.traffic
            .received
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let mut a = self.asks.lock().map_err(|_| ChannelError::Closed)?;
        if kind == ANSWER {
            // An answer nobody waits for any more (its asker gave up) is
            // dropped.
            if let Some(tx) = a.pending.remove(&id) {
                let _ = tx.send(payload.to_vec());
            }
            return Ok(());
        }
        let Some(answerer) = a.answerer.clone() else {
            return Err(ChannelError::Malformed("an ask this side does not answer"));
        };
        if a.answering {
            return Err(ChannelError::Malformed(
                "a second ask before the first was answered",
            ));
        }
        a.answering = true;
        drop(a);
        let side = self.side_tx.clone();
        let question = payload.to_vec();
        // The answer is queued for the connection; the peer may ask again
        // once it is handed to the writer (`answered`), not before.
        tokio::spawn(async move {
            let answer = answerer(question).await;
            let _ = side.send((ANSWER, id, answer));
        });
        Ok(())
    }

    /// Whether the ask numbered `id` still has someone waiting for it.
    pub(super) fn still_asking(&self, id: u64) -> bool {
        self.asks
            .lock()
            .map(|a| a.pending.contains_key(&id))
            .unwrap_or(false)
    }

    /// An answer went to the writer: the peer may ask again.
    pub(super) fn answered(&self) {
        if let Ok(mut a) = self.asks.lock() {
            a.answering = false;
        }
    }
}
