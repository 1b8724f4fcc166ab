//! What one encounter is, wherever one is counted (*pure*). The alerts an
//! access obliges (emergency access, a legal override, a self-claimed
//! relationship) are raised once per encounter, not once per screen.
//!
//! An encounter is either
//! - **opened online**: the server opened it for a patient outside the
//!   user's relationships (and raised its alerts then); it lasts until it
//!   is closed (its grant no longer names it); or
//! - **a record opened in the app**: from its first view until the app
//!   closes it, another user logs in, or [`ENCOUNTER_MS`] (or the window
//!   the app configures) passes without a view of that patient.

use crate::access::Alert;

/// How long a record opened in the app stays one encounter without a view.
pub const ENCOUNTER_MS: i64 = 30 * 60 * 1000;

/// One encounter with one patient on this device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encounter {
    /// The alerts already raised in it: by the server when it opened it,
    /// or by an earlier view.
    pub raised: Vec<Alert>,
    /// The server's id for it, when it was opened online.
    pub online_id: Option<String>,
    /// Monotonic time of its last view.
    pub last_used_mono: i64,
    /// Wall-clock time of its last view (a device asleep stops the
    /// monotonic clock: the window is counted on both).
    pub last_used_wall: i64,
}

impl Encounter {
    /// An encounter the server opened, having raised `raised`.
    pub fn opened_online(id: &str, raised: Vec<Alert>, (mono, wall): (i64, i64)) -> Self {
        Self {
            raised,
            online_id: Some(id.to_owned()),
            last_used_mono: mono,
            last_used_wall: wall,
        }
    }

    /// Whether it is still the same encounter at `(mono, wall)`: one
    /// opened online while the grant still names it (`granted` is the
    /// encounter id the grant names for the patient, if any), one opened in
    /// the app until `window_ms` passes without a view, on either clock.
    pub fn goes_on(&self, (mono, wall): (i64, i64), window_ms: i64, granted: Option<&str>) -> bool {
        match &self.online_id {
            Some(id) => granted == Some(id.as_str()),
            None => {
                mono.saturating_sub(self.last_used_mono) < window_ms
                    && wall.saturating_sub(self.last_used_wall) < window_ms
            }
        }
    }

    /// Of the alerts an access obliges, those this encounter has not
    /// raised yet (in order, each once).
    pub fn still_owed(&self, obliged: &[Alert]) -> Vec<Alert> {
        let mut owed: Vec<Alert> = Vec::new();
        for a in obliged {
            if !self.raised.contains(a) && !owed.contains(a) {
                owed.push(*a);
            }
        }
        owed
    }

    /// Notes a view at `(mono, wall)` that raised `alerts`.
    pub fn viewed(&mut self, alerts: &[Alert], (mono, wall): (i64, i64)) {
        for a in alerts {
            if !self.raised.contains(a) {
                self.raised.push(*a);
            }
        }
        (self.last_used_mono, self.last_used_wall) = (mono, wall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AlertReason, AlertType};

    fn emergency() -> Alert {
        Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap()
    }

    fn self_claimed() -> Alert {
        Alert::new(
            AlertType::SelfClaimedRelationship,
            AlertReason::SelfClaimEmergency,
        )
        .unwrap()
    }

    #[test]
    fn each_alert_is_raised_once_in_an_encounter() {
        let mut e = Encounter::default();
        assert_eq!(e.still_owed(&[emergency(), emergency()]), [emergency()]);
        e.viewed(&[emergency()], (0, 0));
        assert!(e.still_owed(&[emergency()]).is_empty());
        assert_eq!(
            e.still_owed(&[emergency(), self_claimed()]),
            [self_claimed()],
            "another alert is still owed"
        );
    }

    #[test]
    fn an_encounter_opened_in_the_app_ends_when_its_window_passes_without_a_view() {
        let mut e = Encounter::default();
        let at = |t: i64| (t, t + 7);
        e.viewed(&[emergency()], at(1_000));
        assert!(e.goes_on(at(1_000 + ENCOUNTER_MS - 1), ENCOUNTER_MS, None));
        assert!(!e.goes_on(at(1_000 + ENCOUNTER_MS), ENCOUNTER_MS, None));
        // A view within the window keeps it going.
        e.viewed(&[], at(1_000 + ENCOUNTER_MS - 1));
        assert!(e.goes_on(at(1_000 + 2 * ENCOUNTER_MS - 2), ENCOUNTER_MS, None));
        // Asleep for hours: the monotonic clock stood still, the wall did not.
        let asleep = (1_000 + ENCOUNTER_MS, 1_000 + 10 * ENCOUNTER_MS);
        assert!(!e.goes_on(asleep, ENCOUNTER_MS, None));
    }

    #[test]
    fn an_encounter_opened_online_lasts_while_the_grant_names_it() {
        let e = Encounter::opened_online("enc-1", vec![emergency()], (0, 0));
        let later = (10 * ENCOUNTER_MS, 10 * ENCOUNTER_MS);
        assert!(e.goes_on(later, ENCOUNTER_MS, Some("enc-1")));
        assert!(!e.goes_on((1, 1), ENCOUNTER_MS, None), "closed");
        assert!(!e.goes_on((1, 1), ENCOUNTER_MS, Some("enc-2")));
        assert!(e.still_owed(&[emergency()]).is_empty());
    }
}
