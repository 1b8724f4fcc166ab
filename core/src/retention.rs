//! When a device must forget a patient, every case in one place. Pure:
//! from what the device holds, its current grant, the server's holdings
//! list and its state, to what to forget and why. The engine does the
//! forgetting (crypto-shred, audited); nothing else decides it.
//!
//! - [`due_for_forgetting`]: by device class and relationship (an incident
//!   closed past its window, an encounter ended, a caseload left, a
//!   lock-out);
//! - [`after_holdings_list`]: by the server's list (no longer shared, or
//!   withdrawn by the patient);
//! - [`ForgetReason::RemoteWipe`]: everything, when the server says the
//!   device or its user was revoked;
//! - [`ForgetReason::waits_for_unsent`]: which of these wait for changes
//!   the server has not yet confirmed.

use crate::NhsNumber;
use crate::grant::RoleProfileGrant;
use crate::protocol::HoldingsList;
use crate::store::{HoldReason, Holding};

/// What kind of device this is; each keeps records for its own reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum DeviceClass {
    PatientPhone,
    AmbulanceTablet,
    NurseTablet,
    /// A GP system or the server: holds records it originates.
    GpSystem,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 4] = [
        DeviceClass::PatientPhone,
        DeviceClass::AmbulanceTablet,
        DeviceClass::NurseTablet,
        DeviceClass::GpSystem,
    ];

    /// The name in enrollment tokens, the server's directory and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::PatientPhone => "patient-phone",
            DeviceClass::AmbulanceTablet => "ambulance-tablet",
            DeviceClass::NurseTablet => "nurse-tablet",
            DeviceClass::GpSystem => "gp-system",
        }
    }
}

/// Not one of the four device classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a device class is patient-phone, ambulance-tablet, nurse-tablet or gp-system")]
pub struct UnknownDeviceClass;

impl std::str::FromStr for DeviceClass {
    type Err = UnknownDeviceClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(UnknownDeviceClass)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// An ambulance tablet forgets a patient this long after the incident closes.
    pub after_incident_close_ms: i64,
    /// Forget every patient (but a patient's own record) on lock-out.
    pub forget_on_lockout: bool,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            after_incident_close_ms: 4 * 60 * 60 * 1000,
            forget_on_lockout: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgetReason {
    IncidentClosed,
    LeftCaseload,
    EncounterEnded,
    LockedOut,
    /// The server's holdings list no longer names the patient.
    NoLongerShared,
    /// The patient hid the record or opted out; whether changes the
    /// server never received went with it.
    WithdrawnByPatient {
        unsent_discarded: bool,
    },
    /// The device, or the user whose grant it holds, was revoked.
    RemoteWipe,
}

impl ForgetReason {
    /// The reason as the audit event records it.
    pub fn code(self) -> &'static str {
        match self {
            ForgetReason::IncidentClosed => "incident-closed",
            ForgetReason::LeftCaseload => "left-caseload",
            ForgetReason::EncounterEnded => "encounter-ended",
            ForgetReason::LockedOut => "locked-out",
            ForgetReason::NoLongerShared => "no-longer-shared",
            ForgetReason::WithdrawnByPatient {
                unsent_discarded: false,
            } => "withdrawn-by-patient",
            ForgetReason::WithdrawnByPatient {
                unsent_discarded: true,
            } => "withdrawn-by-patient; unsent changes discarded",
            ForgetReason::RemoteWipe => "remote-wipe",
        }
    }

    /// Whether a record with changes the server has not confirmed is kept
    /// until it has them. A device in the wrong hands (locked out, wiped)
    /// does not wait, and a record the patient withdrew can no longer be
    /// delivered (the audit trail keeps what was done).
    pub fn waits_for_unsent(self) -> bool {
        !matches!(
            self,
            ForgetReason::LockedOut
                | ForgetReason::RemoteWipe
                | ForgetReason::WithdrawnByPatient { .. }
        )
    }
}

/// What the server's holdings list means for one record the device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterList {
    Keep,
    /// No longer listed, but kept until the server has its unsent changes.
    KeepUnsent,
    Forget(ForgetReason),
}

/// The holdings list's verdict on `holding`. A record this device
/// originated is never forgotten for the list.
pub fn after_holdings_list(holding: &Holding, list: &HoldingsList, unsent: bool) -> AfterList {
    let nhs = &holding.nhs_number;
    if holding.reason == HoldReason::Origin || list.patients.iter().any(|p| p.nhs_number == *nhs) {
        return AfterList::Keep;
    }
    let reason = if list.withdrawn.contains(nhs) {
        ForgetReason::WithdrawnByPatient {
            unsent_discarded: unsent,
        }
    } else {
        ForgetReason::NoLongerShared
    };
    if unsent && reason.waits_for_unsent() {
        AfterList::KeepUnsent
    } else {
        AfterList::Forget(reason)
    }
}

/// Whether a listed patient's compartments that the list no longer names
/// are forgotten now: not while they may hold unsent edits.
pub fn drops_unlisted_compartments(unsent: bool) -> bool {
    !unsent
}

pub fn due_for_forgetting(
    class: DeviceClass,
    policy: &RetentionPolicy,
    holdings: &[Holding],
    grant: Option<&RoleProfileGrant>,
    locked_out: bool,
    now_ms: i64,
) -> Vec<(NhsNumber, ForgetReason)> {
    let mut out = Vec::new();
    for h in holdings {
        if matches!(h.reason, HoldReason::OwnRecord | HoldReason::Origin)
            || class == DeviceClass::GpSystem
            || class == DeviceClass::PatientPhone
        {
            continue;
        }
        if locked_out && policy.forget_on_lockout {
            out.push((h.nhs_number, ForgetReason::LockedOut));
            continue;
        }
        let in_grant = grant.is_some_and(|g| g.relationship_with(&h.nhs_number).is_some());
        match &h.reason {
            HoldReason::Incident {
                closed_at_ms: Some(closed),
                ..
            } if now_ms >= closed + policy.after_incident_close_ms => {
                out.push((h.nhs_number, ForgetReason::IncidentClosed));
            }
            HoldReason::Incident { .. } => {}
            // An encounter ends when closed (the new grant no longer names
            // it) or at the end of the shift, even on a locked device.
            HoldReason::Encounter { ends_at_ms, .. }
                if now_ms >= *ends_at_ms
                    || grant.is_some_and(|g| {
                        !g.relationship_with(&h.nhs_number)
                            .is_some_and(|r| r.holds_at(now_ms))
                    }) =>
            {
                out.push((h.nhs_number, ForgetReason::EncounterEnded));
            }
            // A new grant is the current caseload: a patient no longer on it
            // has left the caseload. Without a grant (locked) nothing changes.
            HoldReason::Caseload | HoldReason::Unspecified if grant.is_some() && !in_grant => {
                out.push((h.nhs_number, ForgetReason::LeftCaseload));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::test_nhs_number;
    use crate::grant::{GrantPrincipal, GrantRelationship, RelationshipKind};

    const HOUR: i64 = 3_600_000;

    /// (label, device, holding, grant, locked out, now, expected).
    type Case<'a> = (
        &'a str,
        DeviceClass,
        Holding,
        Option<&'a RoleProfileGrant>,
        bool,
        i64,
        Option<ForgetReason>,
    );

    fn holding(n: u32, reason: HoldReason) -> Holding {
        Holding {
            nhs_number: test_nhs_number(n),
            reason,
            held_since_ms: 0,
        }
    }

    fn grant_with(patients: &[u32]) -> RoleProfileGrant {
        RoleProfileGrant {
            grant_id: "g".into(),
            principal: GrantPrincipal::Staff {
                user_id: "u".into(),
                display_name: "n".into(),
                job_role: "R0050".into(),
                job_role_name: "Nurse".into(),
                organisation: "RX1".into(),
                activities: vec![],
                privacy_officer: false,
            },
            device_id: "d".into(),
            issued_at_ms: 0,
            expires_at_ms: HOUR,
            relationships: patients
                .iter()
                .map(|n| GrantRelationship {
                    nhs_number: test_nhs_number(*n),
                    kind: RelationshipKind::Caseload,
                })
                .collect(),
        }
    }

    fn incident(closed: Option<i64>) -> HoldReason {
        HoldReason::Incident {
            incident_id: "INC".into(),
            closed_at_ms: closed,
        }
    }

    fn encounter() -> HoldReason {
        HoldReason::Encounter {
            encounter_id: "E1".into(),
            ends_at_ms: 8 * HOUR,
        }
    }

    /// A grant naming patient 5 for encounter E1 until 8 h.
    fn grant_with_encounter() -> RoleProfileGrant {
        let mut g = grant_with(&[1]);
        g.relationships.push(GrantRelationship {
            nhs_number: test_nhs_number(5),
            kind: RelationshipKind::Encounter {
                encounter_id: "E1".into(),
                ends_at_ms: 8 * HOUR,
            },
        });
        g
    }

    #[test]
    fn the_retention_table() {
        let p = RetentionPolicy::default();
        let g = grant_with(&[1]);
        let ge = grant_with_encounter();
        let nurse = DeviceClass::NurseTablet;
        let amb = DeviceClass::AmbulanceTablet;
        let cases: Vec<Case<'_>> = vec![
            (
                "still on the caseload",
                nurse,
                holding(1, HoldReason::Caseload),
                Some(&g),
                false,
                0,
                None,
            ),
            (
                "left the caseload",
                nurse,
                holding(2, HoldReason::Caseload),
                Some(&g),
                false,
                0,
                Some(ForgetReason::LeftCaseload),
            ),
            (
                "locked: no grant, no change",
                nurse,
                holding(2, HoldReason::Caseload),
                None,
                false,
                0,
                None,
            ),
            (
                "encounter open",
                amb,
                holding(5, encounter()),
                Some(&ge),
                false,
                HOUR,
                None,
            ),
            (
                "encounter open, session locked",
                amb,
                holding(5, encounter()),
                None,
                false,
                HOUR,
                None,
            ),
            (
                "encounter closed: the new grant does not name it",
                amb,
                holding(5, encounter()),
                Some(&g),
                false,
                HOUR,
                Some(ForgetReason::EncounterEnded),
            ),
            (
                "encounter past the end of the shift, even locked",
                amb,
                holding(5, encounter()),
                None,
                false,
                8 * HOUR,
                Some(ForgetReason::EncounterEnded),
            ),
            (
                "incident open",
                amb,
                holding(3, incident(None)),
                Some(&g),
                false,
                10 * HOUR,
                None,
            ),
            (
                "incident closed, inside the window",
                amb,
                holding(3, incident(Some(0))),
                Some(&g),
                false,
                3 * HOUR,
                None,
            ),
            (
                "incident closed, window passed",
                amb,
                holding(3, incident(Some(0))),
                Some(&g),
                false,
                4 * HOUR,
                Some(ForgetReason::IncidentClosed),
            ),
            (
                "lock-out forgets",
                amb,
                holding(3, incident(None)),
                None,
                true,
                0,
                Some(ForgetReason::LockedOut),
            ),
            (
                "lock-out keeps the patient's own record",
                DeviceClass::PatientPhone,
                holding(4, HoldReason::OwnRecord),
                None,
                true,
                0,
                None,
            ),
            (
                "a GP system keeps what it originates",
                DeviceClass::GpSystem,
                holding(5, HoldReason::Origin),
                Some(&g),
                true,
                0,
                None,
            ),
        ];
        for (label, class, h, grant, locked_out, now, want) in cases {
            let got =
                due_for_forgetting(class, &p, std::slice::from_ref(&h), grant, locked_out, now);
            assert_eq!(got.first().map(|(_, r)| *r), want, "{label}");
        }
        let keep = RetentionPolicy {
            forget_on_lockout: false,
            ..p
        };
        assert!(
            due_for_forgetting(amb, &keep, &[holding(3, incident(None))], None, true, 0).is_empty()
        );
    }

    #[test]
    fn the_holdings_list_table() {
        use crate::protocol::HeldPatient;
        let list = HoldingsList {
            grant_id: "g".into(),
            patients: vec![HeldPatient {
                nhs_number: test_nhs_number(1),
                reason: HoldReason::Caseload,
                documents: vec![],
            }],
            withdrawn: vec![test_nhs_number(3)],
        };
        let f = ForgetReason::WithdrawnByPatient {
            unsent_discarded: true,
        };
        let cases = [
            (
                "listed",
                holding(1, HoldReason::Caseload),
                false,
                AfterList::Keep,
            ),
            (
                "originated here",
                holding(2, HoldReason::Origin),
                false,
                AfterList::Keep,
            ),
            (
                "no longer listed",
                holding(2, HoldReason::Caseload),
                false,
                AfterList::Forget(ForgetReason::NoLongerShared),
            ),
            (
                "no longer listed, unsent changes",
                holding(2, HoldReason::Caseload),
                true,
                AfterList::KeepUnsent,
            ),
            (
                "withdrawn",
                holding(3, HoldReason::Caseload),
                false,
                AfterList::Forget(ForgetReason::WithdrawnByPatient {
                    unsent_discarded: false,
                }),
            ),
            (
                "withdrawn, unsent changes discarded",
                holding(3, HoldReason::Caseload),
                true,
                AfterList::Forget(f),
            ),
        ];
        for (label, h, unsent, want) in cases {
            assert_eq!(after_holdings_list(&h, &list, unsent), want, "{label}");
        }
        assert_eq!(f.code(), "withdrawn-by-patient; unsent changes discarded");
        assert!(!ForgetReason::RemoteWipe.waits_for_unsent());
        assert!(!ForgetReason::LockedOut.waits_for_unsent());
        assert!(ForgetReason::LeftCaseload.waits_for_unsent());
        assert!(!drops_unlisted_compartments(true));
    }
}
