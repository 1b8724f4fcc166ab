use std::collections::{HashMap, HashSet};

use crate::{
    DialerId, DocSearchPhase, DocumentActorId,
    actors::hub::{
        dialer::{DialerState, DialerStatus},
        state::ActorInfo,
    },
};

pub(super) struct Searches {
    pub(super) phases: HashMap<DocumentActorId, DocSearchPhase>,
    pub(super) last_dialers: HashMap<DialerId, DialerStatus>,
    /// SCR Sync patch (vendor/README.md): actors whose search phase may
    /// have changed since the last `pop_state_updates`. Upstream compares
    /// (and re-inserts) every actor's phase after every hub event, which
    /// with thousands of documents in memory took most of a server's CPU.
    pub(super) touched: HashSet<DocumentActorId>,
}

impl Searches {
    pub(super) fn new() -> Self {
        Self {
            phases: HashMap::new(),
            last_dialers: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    pub(super) fn add_search(&mut self, actor: DocumentActorId, phase: DocSearchPhase) {
        self.phases.insert(actor, phase);
        self.touched.insert(actor);
    }

    /// Marks an actor whose phase was set, so the next pop compares it.
    pub(super) fn touch(&mut self, actor: DocumentActorId) {
        self.touched.insert(actor);
    }

    pub(super) fn pop_state_updates(
        &mut self,
        actors: &HashMap<DocumentActorId, ActorInfo>,
        dialers: &HashMap<DialerId, DialerState>,
    ) -> HashMap<DocumentActorId, DocSearchPhase> {
        let new_dialer_state = dialers
            .iter()
            .map(|(dialer_id, state)| (*dialer_id, state.status.clone()))
            .collect::<HashMap<DialerId, DialerStatus>>();
        let dialers_changed = self.last_dialers != new_dialer_state;
        self.last_dialers = new_dialer_state;

        // A change of dialers is news for every actor; otherwise only an
        // actor whose phase was set can differ from what was last emitted.
        let candidates: Vec<DocumentActorId> = if dialers_changed {
            self.touched.clear();
            actors.keys().copied().collect()
        } else {
            self.touched.drain().collect()
        };
        let mut result = HashMap::new();
        for actor_id in candidates {
            let Some(actor) = actors.get(&actor_id) else {
                continue;
            };
            let last_phase = self.phases.get(&actor_id);
            if last_phase != Some(&actor.search_phase) || dialers_changed {
                result.insert(actor_id, actor.search_phase.clone());
            }
            self.phases.insert(actor_id, actor.search_phase.clone());
        }
        result
    }
}
