//! A per-session bound on the documents a device may ask about.
//!
//! A tablet asks about each document it holds about once per session (a
//! 150-patient caseload is about 750 documents). Each ask costs samod a
//! storage lookup and a policy decision, so a device asking about thousands
//! more, whether made-up ids or other patients' documents, is probing or
//! flooding. Past the bound, messages about further documents, and further
//! requests, are dropped before samod sees them, and counted: the flooder
//! learns nothing more, and everyone else keeps being served.

use std::collections::HashSet;

/// Distinct documents one session may name.
pub const MAX_DOCUMENTS: usize = 2048;
/// `request` messages one session may send (samod sends one per document it
/// lacks; twice the document bound leaves room for retries).
pub const MAX_REQUESTS: usize = 2 * MAX_DOCUMENTS;

#[derive(Debug, Default)]
pub struct FloodGuard {
    seen: HashSet<String>,
    requests: usize,
}

impl FloodGuard {
    /// Whether a message of `kind` about `document` goes on to samod.
    pub fn admit(&mut self, kind: &str, document: Option<&str>) -> bool {
        if kind == "request" {
            self.requests += 1;
            if self.requests > MAX_REQUESTS {
                return false;
            }
        }
        let Some(doc) = document else {
            return true;
        };
        if self.seen.contains(doc) {
            return true;
        }
        if self.seen.len() >= MAX_DOCUMENTS {
            return false;
        }
        self.seen.insert(doc.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_may_name_so_many_documents_and_send_so_many_requests() {
        let mut g = FloodGuard::default();
        for i in 0..MAX_DOCUMENTS {
            assert!(g.admit("sync", Some(&format!("doc{i}"))));
        }
        assert!(
            !g.admit("sync", Some("one-too-many")),
            "a new document past the bound"
        );
        assert!(
            g.admit("sync", Some("doc7")),
            "a known document still passes"
        );
        assert!(g.admit("join", None), "messages about no document pass");

        let mut g = FloodGuard::default();
        for _ in 0..MAX_REQUESTS {
            assert!(g.admit("request", Some("doc")));
        }
        assert!(!g.admit("request", Some("doc")), "requests past the bound");
        assert!(
            g.admit("sync", Some("doc")),
            "sync on a known document goes on"
        );
    }
}
