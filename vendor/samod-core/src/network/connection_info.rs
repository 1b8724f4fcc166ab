use std::collections::HashMap;
use std::sync::Arc;

use crate::{ConnectionId, DocumentId, PeerId, UnixTimestamp};

/// Information about each live connection
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: ConnectionId,
    pub last_received: Option<UnixTimestamp>,
    pub last_sent: Option<UnixTimestamp>,
    /// The state of each document we are synchronizing with this peer
    pub docs: DocStates,
    /// Whether we are handshaking or connected with this peer
    pub state: ConnectionState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// We're still exchanging peer IDs
    Handshaking,
    /// We have exchanged peer IDs and we're now synchronizing documents
    Connected { their_peer_id: PeerId },
}

/// The state of synchronization for one (peer, document) pair
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd)]
pub struct PeerDocState {
    /// Our sharing decision; `None` while the policy check is pending.
    pub share_config: Option<crate::ShareConfig>,
    /// Whether the peer has advertised that it ignores our incoming changes.
    /// `false` does not imply that the peer has granted us write access.
    pub peer_read_only: bool,
    /// When we last received a message from this peer
    pub last_received: Option<UnixTimestamp>,
    /// When we last sent a message to this peer
    pub last_sent: Option<UnixTimestamp>,
    /// The heads of the document when we last sent a message
    pub last_sent_heads: Option<Vec<automerge::ChangeHash>>,
    /// The last heads of the document that the peer said they had
    pub last_acked_heads: Option<Vec<automerge::ChangeHash>>,
    /// The minimum heads which we share with the other end
    pub shared_heads: Option<Vec<automerge::ChangeHash>>,
    /// The last heads they said they had
    pub their_heads: Option<Vec<automerge::ChangeHash>>,
}

impl PeerDocState {
    pub(crate) fn empty() -> Self {
        Self {
            share_config: None,
            peer_read_only: false,
            last_received: None,
            last_sent: None,
            last_sent_heads: None,
            last_acked_heads: None,
            shared_heads: None,
            their_heads: None,
        }
    }
}

/// SCR Sync patch: the state of each document a connection syncs, shared
/// copy-on-write between the connection and the infos it reports, so that
/// reporting a connection's info after every event costs a reference count
/// rather than a copy of every document's state (quadratic in the number of
/// documents a connection syncs). Reads go through `Deref` to the map;
/// iterating by value yields owned entries as the plain map did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocStates(Arc<HashMap<DocumentId, PeerDocState>>);

impl DocStates {
    /// The map to change: copied first only if an info still shares it.
    pub(crate) fn make_mut(&mut self) -> &mut HashMap<DocumentId, PeerDocState> {
        Arc::make_mut(&mut self.0)
    }
}

impl std::ops::Deref for DocStates {
    type Target = HashMap<DocumentId, PeerDocState>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<HashMap<DocumentId, PeerDocState>> for DocStates {
    fn from(map: HashMap<DocumentId, PeerDocState>) -> Self {
        Self(Arc::new(map))
    }
}

impl IntoIterator for DocStates {
    type Item = (DocumentId, PeerDocState);
    type IntoIter = std::collections::hash_map::IntoIter<DocumentId, PeerDocState>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

impl<'a> IntoIterator for &'a DocStates {
    type Item = (&'a DocumentId, &'a PeerDocState);
    type IntoIter = std::collections::hash_map::Iter<'a, DocumentId, PeerDocState>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
