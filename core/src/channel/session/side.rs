//! What a session keeps for asks beside samod's stream (`asks`): who
//! waits for which answer, who answers, and the frames waiting for the
//! attached connection.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

/// Answers one ask's bytes (the server's catalogue).
pub type Answerer = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// A frame waiting for the attached connection: kind, number, payload.
pub(super) type SideFrame = (u8, u64, Vec<u8>);

#[derive(Default)]
pub(super) struct Asks {
    pub(super) next: u64,
    pub(super) pending: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    pub(super) answerer: Option<Answerer>,
    pub(super) answering: bool,
}

/// The session's side queue: what `ask` and answers put, the attached
/// connection sends.
pub(super) fn side_queue() -> (
    mpsc::UnboundedSender<SideFrame>,
    mpsc::UnboundedReceiver<SideFrame>,
) {
    mpsc::unbounded_channel()
}
