//! When a sync session that cannot move on is ended (the rule behind
//! `Driver::unstick`). Automerge's sync leaves out every change it believes
//! it already sent on a connection, so a message lost without the
//! connection ending (a gate on either side dropping it) is never sent
//! again on it, and the document stays out of step for as long as the
//! session lives (a resumed session keeps it). When one document's wait
//! runs out in two passes in a row on one session, the session is ended:
//! the next pass runs on a fresh one, whose sync states start afresh and
//! offer what the other side lacks. At once the first time; then a minute
//! at least before the next, doubling to half an hour, so a link too slow
//! for the wait (or a document a server keeps refusing) does not end
//! session after session.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The first wait between two sessions ended as stuck, doubled each time
/// up to the last.
pub(super) const BACKOFF: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(30 * 60));

/// The documents whose sync waited out in the last pass, on which session
/// (held weakly: no later session can take its address); and when a
/// session was last ended for it, and how long to wait before ending
/// another.
pub(super) struct Stuck<S> {
    last: Option<(Weak<S>, HashSet<String>)>,
    ended: Option<(Instant, Duration)>,
}

impl<S> Default for Stuck<S> {
    fn default() -> Self {
        Self {
            last: None,
            ended: None,
        }
    }
}

impl<S> Stuck<S> {
    /// After a pass on `session` in which these documents' waits ran out:
    /// whether to end the session now.
    pub(super) fn end_session(
        &mut self,
        session: &Arc<S>,
        waited_out: HashSet<String>,
        now: Instant,
    ) -> bool {
        if waited_out.is_empty() {
            self.last = None;
            return false;
        }
        let again = self.last.as_ref().is_some_and(|(s, docs)| {
            s.upgrade().is_some_and(|s| Arc::ptr_eq(&s, session))
                && docs.intersection(&waited_out).next().is_some()
        });
        let since = |at: Instant| now.saturating_duration_since(at);
        let waited_enough = self.ended.is_none_or(|(at, wait)| since(at) >= wait);
        if again && waited_enough {
            // Doubled after a recent one; afresh after a quiet half hour
            // (half an hour more than the wait: at the cap, a session
            // ended each time the wait is over is not quiet).
            let wait = match self.ended {
                Some((at, w)) if since(at) < w + BACKOFF.1 => (w * 2).min(BACKOFF.1),
                _ => BACKOFF.0,
            };
            self.last = None;
            self.ended = Some((now, wait));
            true
        } else {
            self.last = Some((Arc::downgrade(session), waited_out));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Two passes in a row with one document waited out on `session`, at
    /// `at` and a second later: whether the second ended it.
    fn twice(stuck: &mut Stuck<()>, session: &Arc<()>, at: Instant) -> bool {
        assert!(!stuck.end_session(session, docs(&["d"]), at));
        stuck.end_session(session, docs(&["d"]), at + Duration::from_secs(1))
    }

    #[test]
    fn one_document_waited_out_twice_on_one_session_ends_it_at_once() {
        let (mut stuck, session, t0) = (Stuck::default(), Arc::new(()), Instant::now());
        assert!(!stuck.end_session(&session, docs(&["a", "b"]), t0));
        assert!(stuck.end_session(&session, docs(&["b"]), t0 + Duration::from_secs(5)));
    }

    #[test]
    fn a_different_document_another_session_or_a_pass_in_step_ends_nothing() {
        let (mut stuck, t0) = (Stuck::default(), Instant::now());
        let (one, two) = (Arc::new(()), Arc::new(()));
        assert!(!stuck.end_session(&one, docs(&["a"]), t0));
        assert!(
            !stuck.end_session(&one, docs(&["b"]), t0),
            "another document"
        );
        assert!(
            !stuck.end_session(&two, docs(&["b"]), t0),
            "another session"
        );
        assert!(!stuck.end_session(&two, docs(&[]), t0), "all in step");
        assert!(!stuck.end_session(&two, docs(&["b"]), t0), "not in a row");
    }

    #[test]
    fn sessions_ended_again_wait_a_minute_doubling_to_half_an_hour() {
        let (mut stuck, t0) = (Stuck::default(), Instant::now());
        let mut at = t0;
        assert!(
            twice(&mut stuck, &Arc::new(()), at),
            "at once the first time"
        );
        let mut wait = BACKOFF.0;
        for _ in 0..8 {
            // Stuck again on the fresh session, too soon: kept.
            let s = Arc::new(());
            let soon = at + Duration::from_secs(1) + wait - Duration::from_secs(5);
            assert!(!twice(&mut stuck, &s, soon), "within {wait:?}");
            // Once the wait is over, ended, and the next wait doubles.
            let later = at + Duration::from_secs(1) + wait;
            assert!(stuck.end_session(&s, docs(&["d"]), later), "after {wait:?}");
            at = later - Duration::from_secs(1);
            wait = (wait * 2).min(BACKOFF.1);
        }
        assert_eq!(wait, BACKOFF.1, "capped at half an hour");
        // Ended each time the half hour is over, it stays half an hour.
        let s = Arc::new(());
        let next = at + Duration::from_secs(1) + BACKOFF.1;
        assert!(!twice(&mut stuck, &s, next - Duration::from_secs(10)));
        assert!(stuck.end_session(&s, docs(&["d"]), next));
        let s = Arc::new(());
        assert!(!twice(
            &mut stuck,
            &s,
            next + BACKOFF.1 - Duration::from_secs(10)
        ));
        assert!(stuck.end_session(&s, docs(&["d"]), next + BACKOFF.1));
        // After a quiet half hour beyond the wait, a minute again.
        let quiet = next + BACKOFF.1 * 3;
        let s = Arc::new(());
        assert!(twice(&mut stuck, &s, quiet));
        assert!(!twice(
            &mut stuck,
            &Arc::new(()),
            quiet + Duration::from_secs(59)
        ));
        assert!(twice(
            &mut stuck,
            &Arc::new(()),
            quiet + Duration::from_secs(61)
        ));
    }
}
