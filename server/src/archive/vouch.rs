//! Whether what the server issued vouches for an uploaded audit event
//! (*pure*). A device writes its own trail, so a modified app could write
//! anything into it: an event names a user, role, organisation and
//! patient, and the server takes none of them on the device's word.
//!
//! An event is vouched for when
//! - its actor (user, role, organisation) is that of a grant the server
//!   issued to this device and valid at the event's time (within
//!   [`CLOCK_SKEW_MS`]), or it is the device's own housekeeping (user
//!   `device`, no role or organisation: unlocks refused, forgetting,
//!   records received);
//! - the patient it names, if any, is one the server let this device hold:
//!   a patient's phone its own patient only; staff a patient a grant issued
//!   to this device by then named (a caseload, an incident, an encounter
//!   the server opened). A refused attempt may name any patient: a refusal
//!   of a patient the device does not hold is what an honest app records;
//! - a revoked device dated it before its revocation, unless it is the
//!   forgetting that the remote wipe itself records.
//!
//! Anything else is stored flagged ([`Doubt`]), raises no alert and is
//! never shown in a patient's access log as fact.

use scr_core::audit::{AuditEvent, Outcome};
use scr_core::grant::{CLOCK_SKEW_MS, RoleProfileGrant};

/// The user a device's own housekeeping events name.
pub const DEVICE_USER: &str = "device";

/// What the server issued to the uploading device, as the archive judges
/// its events against it.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    /// Every grant the server issued to the device around the events,
    /// oldest first (a grant retired at logout ends then).
    pub grants: Vec<RoleProfileGrant>,
    /// When the device was revoked.
    pub revoked_at_ms: Option<i64>,
    /// When each user of those grants who was revoked was.
    pub users_revoked_at: std::collections::HashMap<String, i64>,
}

/// Why an event is not vouched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doubt {
    /// No grant issued to this device was held by the user, role and
    /// organisation it names at its time, or it names a patient the
    /// device was never let hold.
    Unvouched,
    /// Dated after the device was revoked, and not the remote wipe's own
    /// forgetting.
    AfterRevocation,
}

/// Longest an honest event's user, role, organisation, action or basis
/// is (codes and ids); a longer one is not believed.
pub const MAX_FIELD: usize = 128;

/// Judges one event from the device `issued` describes.
pub fn vouch(event: &AuditEvent, issued: &Issued) -> Result<(), Doubt> {
    let at = event.wall_time_ms;
    let after = |revoked: i64| at > revoked.saturating_add(CLOCK_SKEW_MS);
    let wipe = event.user == DEVICE_USER && event.action == "forget";
    if issued.revoked_at_ms.is_some_and(after) && !wipe {
        return Err(Doubt::AfterRevocation);
    }
    if issued
        .users_revoked_at
        .get(&event.user)
        .is_some_and(|r| after(*r))
    {
        return Err(Doubt::AfterRevocation);
    }
    let fields = [&event.user, &event.role, &event.organisation, &event.action];
    if fields.iter().any(|f| f.len() > MAX_FIELD)
        || event.basis.as_ref().is_some_and(|b| b.len() > MAX_FIELD)
    {
        return Err(Doubt::Unvouched);
    }
    let refused = matches!(event.outcome, Outcome::Deny { .. });
    // An honest refusal raises nothing.
    if refused && !event.alerts.is_empty() {
        return Err(Doubt::Unvouched);
    }
    let housekeeping =
        event.user == DEVICE_USER && event.role.is_empty() && event.organisation.is_empty();
    if !housekeeping {
        let actor = (
            event.user.as_str(),
            event.role.as_str(),
            event.organisation.as_str(),
        );
        let held = issued
            .grants
            .iter()
            .enumerate()
            .any(|(i, g)| g.actor_ref() == actor && held_at(&issued.grants, i, at));
        if !held {
            return Err(Doubt::Unvouched);
        }
    }
    let Some(patient) = &event.patient else {
        return Ok(());
    };
    let refused_attempt = refused && !housekeeping;
    let covered = issued
        .grants
        .iter()
        .filter(|g| g.issued_at_ms <= at.saturating_add(CLOCK_SKEW_MS))
        .any(|g| g.is_patient(patient) || g.relationship_with(patient).is_some());
    // A patient's phone speaks for its own patient only, refusals too.
    let on_patients_phone = issued
        .grants
        .iter()
        .any(|g| matches!(g.principal(), scr_core::access::Principal::Patient));
    if covered || (refused_attempt && !on_patients_phone) {
        Ok(())
    } else {
        Err(Doubt::Unvouched)
    }
}

/// Whether `grants[i]` was the device's grant at `at`: from its issue to
/// its expiry (or retirement), unless another user's grant was issued to
/// the device meanwhile (a shared tablet: the next user cannot act as the
/// last).
fn held_at(grants: &[RoleProfileGrant], i: usize, at: i64) -> bool {
    let g = &grants[i];
    let superseded = grants[i + 1..]
        .iter()
        .find(|n| n.actor_ref() != g.actor_ref())
        .map(|n| n.issued_at_ms);
    let end = superseded.map_or(g.expires_at_ms, |s| s.min(g.expires_at_ms));
    g.issued_at_ms.saturating_sub(CLOCK_SKEW_MS) <= at && at <= end.saturating_add(CLOCK_SKEW_MS)
}

#[cfg(test)]
pub(crate) mod tests {
    use scr_core::access::DenyReason;
    use scr_core::audit::{AuditDraft, GENESIS_HASH};
    use scr_core::fixtures::test_nhs_number;
    use scr_core::grant::{GrantPrincipal, GrantRelationship, RelationshipKind};

    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const HOUR: i64 = 60 * 60 * 1000;

    /// Jo's grant at RX1, issued at `issued_at_ms` for 12 hours.
    pub(crate) fn nurse_grant(issued_at_ms: i64, patients: &[u32]) -> RoleProfileGrant {
        RoleProfileGrant {
            grant_id: "g".into(),
            principal: GrantPrincipal::Staff {
                user_id: "555000000102".into(),
                display_name: "Jo Nurse".into(),
                job_role: "R0050".into(),
                job_role_name: "Community Nurse".into(),
                organisation: "RX1".into(),
                activities: vec!["B0264".into()],
                privacy_officer: false,
            },
            device_id: "d".into(),
            issued_at_ms,
            expires_at_ms: issued_at_ms + 12 * HOUR,
            relationships: patients
                .iter()
                .map(|n| GrantRelationship {
                    nhs_number: test_nhs_number(*n),
                    kind: RelationshipKind::Caseload,
                })
                .collect(),
        }
    }

    /// A view by `user` in `role` at `org`, permitted.
    pub(crate) fn event(
        user: &str,
        role: &str,
        org: &str,
        patient: Option<u32>,
        at: i64,
    ) -> AuditEvent {
        let draft = AuditDraft {
            user: user.into(),
            role: role.into(),
            organisation: org.into(),
            patient: patient.map(test_nhs_number),
            action: "view".into(),
            compartments: Vec::new(),
            entries: Vec::new(),
            outcome: Outcome::Permit,
            basis: Some("permission".into()),
            alerts: Vec::new(),
            detail: None,
        };
        AuditEvent::from_draft(draft, "d", 1, GENESIS_HASH.into(), at)
    }

    fn nurse_view(patient: u32, at: i64) -> AuditEvent {
        event("555000000102", "R0050", "RX1", Some(patient), at)
    }

    fn issued(grants: Vec<RoleProfileGrant>) -> Issued {
        Issued {
            grants,
            ..Issued::default()
        }
    }

    #[test]
    fn a_view_by_the_user_a_grant_named_of_a_patient_it_covered_is_vouched_for() {
        let i = issued(vec![nurse_grant(T0, &[1, 2])]);
        assert_eq!(vouch(&nurse_view(1, T0 + HOUR), &i), Ok(()));
        // Offline the next morning: yesterday's patient, under yesterday's
        // grant, while it lasted.
        let i = issued(vec![
            nurse_grant(T0, &[1]),
            nurse_grant(T0 + 24 * HOUR, &[2]),
        ]);
        assert_eq!(vouch(&nurse_view(1, T0 + 25 * HOUR), &i), Ok(()));
    }

    #[test]
    fn another_user_role_or_organisation_than_the_grant_named_is_not() {
        let i = issued(vec![nurse_grant(T0, &[1])]);
        for (user, role, org) in [
            ("555000000999", "R0050", "RX1"),
            ("555000000102", "R8000", "RX1"),
            ("555000000102", "R0050", "A81002"),
            ("patient", "patient", ""),
        ] {
            assert_eq!(
                vouch(&event(user, role, org, Some(1), T0 + HOUR), &i),
                Err(Doubt::Unvouched),
                "{user} {role} {org}"
            );
        }
        assert_eq!(
            vouch(&nurse_view(1, T0 + HOUR), &issued(Vec::new())),
            Err(Doubt::Unvouched),
            "a device that never logged in"
        );
    }

    #[test]
    fn outside_every_grant_s_time_is_not() {
        let i = issued(vec![nurse_grant(T0, &[1])]);
        assert_eq!(vouch(&nurse_view(1, T0 - HOUR), &i), Err(Doubt::Unvouched));
        assert_eq!(
            vouch(&nurse_view(1, T0 + 13 * HOUR), &i),
            Err(Doubt::Unvouched)
        );
        // A drifting clock is forgiven a few minutes.
        assert_eq!(vouch(&nurse_view(1, T0 - 60_000), &i), Ok(()));
    }

    #[test]
    fn a_permitted_view_of_a_patient_no_grant_covered_is_not_but_a_refusal_is() {
        let i = issued(vec![nurse_grant(T0, &[1])]);
        assert_eq!(vouch(&nurse_view(7, T0 + HOUR), &i), Err(Doubt::Unvouched));
        let mut refused = nurse_view(7, T0 + HOUR);
        refused.outcome = Outcome::Deny {
            reason: DenyReason::RecordUnavailable,
        };
        assert_eq!(vouch(&refused, &i), Ok(()));
        // A patient covered only by a grant issued later was not held then.
        let i = issued(vec![
            nurse_grant(T0, &[1]),
            nurse_grant(T0 + 2 * HOUR, &[7]),
        ]);
        assert_eq!(vouch(&nurse_view(7, T0 + HOUR), &i), Err(Doubt::Unvouched));
    }

    #[test]
    fn a_patients_phone_speaks_for_its_own_patient_only() {
        let mut own = nurse_grant(T0, &[]);
        own.principal = GrantPrincipal::Patient {
            nhs_number: test_nhs_number(3),
        };
        let i = issued(vec![own]);
        let mine = event("patient", "patient", "", Some(3), T0 + HOUR);
        assert_eq!(vouch(&mine, &i), Ok(()));
        let mut other = event("patient", "patient", "", Some(4), T0 + HOUR);
        assert_eq!(vouch(&other, &i), Err(Doubt::Unvouched));
        other.outcome = Outcome::Deny {
            reason: DenyReason::NotAllowed,
        };
        assert_eq!(vouch(&other, &i), Err(Doubt::Unvouched));
    }

    #[test]
    fn housekeeping_names_only_patients_the_device_was_let_hold() {
        let i = issued(vec![nurse_grant(T0, &[1])]);
        let mut forget = event(DEVICE_USER, "", "", Some(1), T0 + 40 * HOUR);
        forget.action = "forget".into();
        forget.outcome = Outcome::Recorded;
        assert_eq!(vouch(&forget, &i), Ok(()), "forgotten the day after");
        forget.patient = Some(test_nhs_number(9));
        assert_eq!(vouch(&forget, &i), Err(Doubt::Unvouched));
        let unlock = event(DEVICE_USER, "", "", None, T0 - 99 * HOUR);
        assert_eq!(vouch(&unlock, &i), Ok(()));
        // A "device" event claiming a role is no housekeeping.
        let posing = event(DEVICE_USER, "R0050", "RX1", Some(1), T0 + HOUR);
        assert_eq!(vouch(&posing, &i), Err(Doubt::Unvouched));
    }

    #[test]
    fn a_revoked_device_is_believed_until_its_revocation_and_about_its_wipe() {
        let i = Issued {
            grants: vec![nurse_grant(T0, &[1])],
            revoked_at_ms: Some(T0 + 2 * HOUR),
            ..Issued::default()
        };
        assert_eq!(vouch(&nurse_view(1, T0 + HOUR), &i), Ok(()));
        assert_eq!(
            vouch(&nurse_view(1, T0 + 3 * HOUR), &i),
            Err(Doubt::AfterRevocation)
        );
        let mut wipe = event(DEVICE_USER, "", "", Some(1), T0 + 3 * HOUR);
        wipe.action = "forget".into();
        assert_eq!(vouch(&wipe, &i), Ok(()));
    }

    #[test]
    fn on_a_shared_tablet_the_next_user_cannot_act_as_the_last() {
        let mut other = nurse_grant(T0 + HOUR, &[1]);
        other.principal = GrantPrincipal::Staff {
            user_id: "555000000999".into(),
            display_name: "Kim Nurse".into(),
            job_role: "R0050".into(),
            job_role_name: "Community Nurse".into(),
            organisation: "RX1".into(),
            activities: vec!["B0264".into()],
            privacy_officer: false,
        };
        let i = issued(vec![nurse_grant(T0, &[1]), other]);
        assert_eq!(vouch(&nurse_view(1, T0 + HOUR / 2), &i), Ok(()));
        assert_eq!(
            vouch(&nurse_view(1, T0 + 3 * HOUR), &i),
            Err(Doubt::Unvouched),
            "Jo's grant ended when Kim logged in"
        );
        // A revoked user is believed until their revocation.
        let mut i = issued(vec![nurse_grant(T0, &[1])]);
        i.users_revoked_at.insert("555000000102".into(), T0 + HOUR);
        assert_eq!(vouch(&nurse_view(1, T0 + HOUR / 2), &i), Ok(()));
        assert_eq!(
            vouch(&nurse_view(1, T0 + 2 * HOUR), &i),
            Err(Doubt::AfterRevocation)
        );
    }

    #[test]
    fn oversized_fields_and_refusals_with_alerts_are_not_believed() {
        let i = issued(vec![nurse_grant(T0, &[1])]);
        let mut long = nurse_view(1, T0 + HOUR);
        long.basis = Some("x".repeat(MAX_FIELD + 1));
        assert_eq!(vouch(&long, &i), Err(Doubt::Unvouched));
        let mut alerting = nurse_view(7, T0 + HOUR);
        alerting.outcome = Outcome::Deny {
            reason: DenyReason::NoRelationship,
        };
        alerting.alerts = vec![
            scr_core::access::Alert::new(
                scr_core::access::AlertType::AccessAlert,
                scr_core::access::AlertReason::Emergency,
            )
            .unwrap(),
        ];
        assert_eq!(vouch(&alerting, &i), Err(Doubt::Unvouched));
    }
}
