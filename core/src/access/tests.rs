//! The decision as a table: each row names the request and writes out the
//! expected decision and alerts. Then every combination of role,
//! relationship, basis, choice and action is checked against invariants.

use super::*;
use crate::record::Compartment::{self, *};
use crate::record::SharingChoice;

fn staff(job_role: &str, activities: &[&str], privacy_officer: bool) -> Principal {
    Principal::Staff(StaffRole {
        user_id: "555000000001".into(),
        job_role: job_role.into(),
        organisation: "RX1".into(),
        activities: activities.iter().map(|a| (*a).to_owned()).collect(),
        privacy_officer,
    })
}

fn gp() -> Principal {
    staff(
        "R0260",
        &["B0264", "B0360", "B0370", "B0380", "B8029", "B1611"],
        false,
    )
}
fn paramedic() -> Principal {
    staff("R1290", &["B0264", "B0370", "B0168", "B0380"], false)
}
fn nurse() -> Principal {
    staff("R0050", &["B0264", "B0370", "B0380"], false)
}
fn clerk() -> Principal {
    staff("R8001", &["B0264"], false)
}
fn caldicott() -> Principal {
    staff("R8003", &["B0264", "B0370", "B0082"], false)
}
fn privacy_officer() -> Principal {
    staff("R8003", &["B0264"], true)
}

const CORE: PatientChoices = PatientChoices {
    sharing: SharingChoice::CoreOnly,
    include_sensitive: false,
    hidden: false,
};
const ADD: PatientChoices = PatientChoices {
    sharing: SharingChoice::CoreAndAdditional,
    include_sensitive: false,
    hidden: false,
};
const ADD_SENS: PatientChoices = PatientChoices {
    sharing: SharingChoice::CoreAndAdditional,
    include_sensitive: true,
    hidden: false,
};
const OPTOUT: PatientChoices = PatientChoices {
    sharing: SharingChoice::OptOut,
    include_sensitive: false,
    hidden: false,
};
const HIDDEN: PatientChoices = PatientChoices {
    sharing: SharingChoice::CoreAndAdditional,
    include_sensitive: false,
    hidden: true,
};

use AlertReason as R;
use Relationship as Rel;
use ViewBasis as B;

const SEEN_CORE: &[Compartment] = &[Core, PatientEntered, Governance];
const SEEN_ADD: &[Compartment] = &[Core, Additional, CareEvents, PatientEntered, Governance];
const SEEN_ADD_SENS: &[Compartment] = &[
    Core,
    Additional,
    CareEvents,
    PatientEntered,
    Governance,
    Sensitive,
];

enum Want {
    Permit(&'static [Compartment], &'static [(u8, u8)]),
    Deny(DenyReason),
}
use DenyReason as D;
use Want::{Deny, Permit};

fn eie(c: Compartment, org: &str) -> Action {
    Action::MarkEnteredInError {
        compartment: c,
        author_organisation: org.into(),
    }
}

fn sup(c: Compartment, org: &str) -> Action {
    Action::Supersede {
        compartment: c,
        author_organisation: org.into(),
    }
}

fn unhide(w: &str, i: &str) -> Action {
    Action::Unhide {
        written_request_ref: w.into(),
        investigation_ref: i.into(),
    }
}

#[test]
fn the_decision_table() {
    let rows: Vec<(
        &str,
        Principal,
        Action,
        Relationship,
        ViewBasis,
        PatientChoices,
        Want,
    )> = vec![
        // Viewing: role x relationship x permission x choice x sensitivity.
        (
            "nurse, caseload, permission, core only",
            nurse(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            CORE,
            Permit(SEEN_CORE, &[]),
        ),
        (
            "nurse, caseload, permission, core+additional",
            nurse(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD,
            Permit(SEEN_ADD, &[]),
        ),
        (
            "nurse without B1611 never sees sensitive",
            nurse(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD_SENS,
            Permit(SEEN_ADD, &[]),
        ),
        (
            "GP with B1611 sees sensitive when included",
            gp(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD_SENS,
            Permit(SEEN_ADD_SENS, &[]),
        ),
        (
            "GP with B1611, sensitive not included",
            gp(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD,
            Permit(SEEN_ADD, &[]),
        ),
        (
            "nurse must ask first",
            nurse(),
            Action::View,
            Rel::FromGrant,
            B::NotAsked,
            ADD,
            Deny(D::PermissionNeeded),
        ),
        (
            "patient said no",
            nurse(),
            Action::View,
            Rel::FromGrant,
            B::Refused,
            ADD,
            Deny(D::PermissionRefused),
        ),
        (
            "no relationship",
            nurse(),
            Action::View,
            Rel::None,
            B::PermissionRecorded,
            ADD,
            Deny(D::NoRelationship),
        ),
        (
            "self-claimed relationship raises alert 1",
            nurse(),
            Action::View,
            Rel::SelfClaimed(R::Other),
            B::PermissionRecorded,
            CORE,
            Permit(SEEN_CORE, &[(1, 6)]),
        ),
        (
            "self-claim with emergency reason 4",
            paramedic(),
            Action::View,
            Rel::SelfClaimed(R::SelfClaimEmergency),
            B::PermissionRecorded,
            CORE,
            Permit(SEEN_CORE, &[(1, 4)]),
        ),
        (
            "self-claim cannot use reason 5",
            paramedic(),
            Action::View,
            Rel::SelfClaimed(R::Emergency),
            B::PermissionRecorded,
            CORE,
            Deny(D::ReasonNotAllowed),
        ),
        (
            "paramedic emergency access raises alert 2/5",
            paramedic(),
            Action::View,
            Rel::FromGrant,
            B::Emergency,
            ADD,
            Permit(SEEN_ADD, &[(2, 5)]),
        ),
        (
            "emergency and self-claim raise both alerts",
            paramedic(),
            Action::View,
            Rel::SelfClaimed(R::SelfClaimEmergency),
            B::Emergency,
            CORE,
            Permit(SEEN_CORE, &[(1, 4), (2, 5)]),
        ),
        (
            "emergency needs B0168",
            nurse(),
            Action::View,
            Rel::FromGrant,
            B::Emergency,
            ADD,
            Deny(D::MissingActivity),
        ),
        (
            "legal override, court order",
            caldicott(),
            Action::View,
            Rel::FromGrant,
            B::LegalOverride(R::CourtOrder),
            CORE,
            Permit(SEEN_CORE, &[(2, 3)]),
        ),
        (
            "legal override, statute",
            caldicott(),
            Action::View,
            Rel::FromGrant,
            B::LegalOverride(R::Statute),
            CORE,
            Permit(SEEN_CORE, &[(2, 2)]),
        ),
        (
            "legal override cannot claim emergency",
            caldicott(),
            Action::View,
            Rel::FromGrant,
            B::LegalOverride(R::Emergency),
            CORE,
            Deny(D::ReasonNotAllowed),
        ),
        (
            "legal override cannot use reason 6",
            caldicott(),
            Action::View,
            Rel::FromGrant,
            B::LegalOverride(R::Other),
            CORE,
            Deny(D::ReasonNotAllowed),
        ),
        (
            "legal override needs B0082",
            paramedic(),
            Action::View,
            Rel::FromGrant,
            B::LegalOverride(R::CourtOrder),
            CORE,
            Deny(D::MissingActivity),
        ),
        (
            "clerk cannot view",
            clerk(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD,
            Deny(D::MissingActivity),
        ),
        (
            "opted out: unavailable even in emergency",
            paramedic(),
            Action::View,
            Rel::FromGrant,
            B::Emergency,
            OPTOUT,
            Deny(D::RecordUnavailable),
        ),
        (
            "hidden: unavailable",
            gp(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            HIDDEN,
            Deny(D::RecordUnavailable),
        ),
        (
            "export follows view",
            nurse(),
            Action::Export,
            Rel::FromGrant,
            B::PermissionRecorded,
            CORE,
            Permit(SEEN_CORE, &[]),
        ),
        (
            "privacy officer cannot view clinical data",
            privacy_officer(),
            Action::View,
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD,
            Deny(D::MissingActivity),
        ),
        // Permission to view.
        (
            "nurse records permission",
            nurse(),
            Action::RecordPermissionToView,
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Permit(&[Governance], &[]),
        ),
        (
            "no permission recorded on a hidden record",
            nurse(),
            Action::RecordPermissionToView,
            Rel::FromGrant,
            B::NotAsked,
            HIDDEN,
            Deny(D::RecordUnavailable),
        ),
        // Writing.
        (
            "nurse adds a visit summary",
            nurse(),
            Action::AddEntry(CareEvents),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Permit(&[CareEvents], &[]),
        ),
        (
            "paramedic adds an encounter under self-claim",
            paramedic(),
            Action::AddEntry(CareEvents),
            Rel::SelfClaimed(R::SelfClaimEmergency),
            B::Emergency,
            CORE,
            Permit(&[CareEvents], &[(1, 4)]),
        ),
        (
            "nurse cannot write core",
            nurse(),
            Action::AddEntry(Core),
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD,
            Deny(D::NotTheGp),
        ),
        (
            "nurse cannot supersede additional",
            nurse(),
            sup(Additional, "RX1"),
            Rel::FromGrant,
            B::PermissionRecorded,
            ADD,
            Deny(D::NotTheGp),
        ),
        (
            "GP writes core",
            gp(),
            Action::AddEntry(Core),
            Rel::Registered,
            B::NotAsked,
            CORE,
            Permit(&[Core], &[]),
        ),
        (
            "GP supersedes additional",
            gp(),
            sup(Additional, "RX1"),
            Rel::Registered,
            B::NotAsked,
            CORE,
            Permit(&[Additional], &[]),
        ),
        (
            "GP writes sensitive with B1611",
            gp(),
            Action::AddEntry(Sensitive),
            Rel::Registered,
            B::NotAsked,
            CORE,
            Permit(&[Sensitive], &[]),
        ),
        (
            "GP without B1611 cannot write sensitive",
            staff("R0260", &["B0264", "B0370", "B0380"], false),
            Action::AddEntry(Sensitive),
            Rel::Registered,
            B::NotAsked,
            CORE,
            Deny(D::MissingActivity),
        ),
        (
            "clerk cannot write",
            clerk(),
            Action::AddEntry(CareEvents),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::MissingActivity),
        ),
        (
            "staff cannot write patient-entered items",
            gp(),
            Action::AddEntry(PatientEntered),
            Rel::Registered,
            B::NotAsked,
            CORE,
            Deny(D::NotAllowed),
        ),
        (
            "no writes without a relationship",
            gp(),
            Action::AddEntry(Core),
            Rel::None,
            B::NotAsked,
            CORE,
            Deny(D::NoRelationship),
        ),
        (
            "no writes to an opted-out record",
            nurse(),
            Action::AddEntry(CareEvents),
            Rel::FromGrant,
            B::NotAsked,
            OPTOUT,
            Deny(D::RecordUnavailable),
        ),
        (
            "author's organisation marks in error",
            nurse(),
            eie(CareEvents, "RX1"),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Permit(&[CareEvents], &[]),
        ),
        (
            "another organisation cannot mark in error",
            nurse(),
            eie(CareEvents, "RYA"),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::NotTheAuthor),
        ),
        (
            "the GP marks another organisation's entry in error",
            gp(),
            eie(CareEvents, "RYA"),
            Rel::Registered,
            B::NotAsked,
            CORE,
            Permit(&[CareEvents], &[]),
        ),
        // Choices, hiding, unhiding, the audit trail.
        (
            "GP records a choice for the patient",
            gp(),
            Action::ChangePatientChoice,
            Rel::Registered,
            B::NotAsked,
            CORE,
            Permit(&[Governance], &[]),
        ),
        (
            "GP hides after an opt-out",
            gp(),
            Action::Hide,
            Rel::Registered,
            B::NotAsked,
            OPTOUT,
            Permit(&[Governance], &[]),
        ),
        (
            "a GP at another practice cannot write core",
            gp(),
            Action::AddEntry(Core),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::NotTheGp),
        ),
        (
            "a GP who self-claims cannot write core",
            gp(),
            Action::AddEntry(Core),
            Rel::SelfClaimed(R::Other),
            B::NotAsked,
            CORE,
            Deny(D::NotTheGp),
        ),
        (
            "a GP at another practice cannot retract another organisation's note",
            gp(),
            eie(CareEvents, "RYA"),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::NotTheAuthor),
        ),
        (
            "nurse corrects her organisation's note",
            nurse(),
            sup(CareEvents, "RX1"),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Permit(&[CareEvents], &[]),
        ),
        (
            "nurse cannot rewrite another organisation's note",
            nurse(),
            sup(CareEvents, "RYA"),
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::NotTheAuthor),
        ),
        (
            "nurse cannot change a choice",
            nurse(),
            Action::ChangePatientChoice,
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::NotTheGp),
        ),
        (
            "privacy officer unhides with references",
            privacy_officer(),
            unhide("WR-2026-114", "INV-88"),
            Rel::None,
            B::NotAsked,
            HIDDEN,
            Permit(&[Governance], &[]),
        ),
        (
            "unhide needs both references",
            privacy_officer(),
            unhide("WR-2026-114", " "),
            Rel::None,
            B::NotAsked,
            HIDDEN,
            Deny(D::MissingReferences),
        ),
        (
            "GP cannot unhide",
            gp(),
            unhide("WR-1", "INV-1"),
            Rel::FromGrant,
            B::NotAsked,
            HIDDEN,
            Deny(D::NotPrivacyOfficer),
        ),
        (
            "privacy officer reads the audit trail",
            privacy_officer(),
            Action::ReadAuditTrail,
            Rel::None,
            B::NotAsked,
            CORE,
            Permit(&[], &[]),
        ),
        (
            "clinician cannot read the audit trail",
            gp(),
            Action::ReadAuditTrail,
            Rel::FromGrant,
            B::NotAsked,
            CORE,
            Deny(D::NotAllowed),
        ),
        // The patient.
        (
            "patient sees everything, sensitive included",
            Principal::Patient,
            Action::View,
            Rel::None,
            B::NotAsked,
            CORE,
            Permit(&Compartment::ALL, &[]),
        ),
        (
            "patient sees their record even when hidden",
            Principal::Patient,
            Action::View,
            Rel::None,
            B::NotAsked,
            HIDDEN,
            Permit(&Compartment::ALL, &[]),
        ),
        (
            "patient reads who looked",
            Principal::Patient,
            Action::ReadAuditTrail,
            Rel::None,
            B::NotAsked,
            CORE,
            Permit(&[], &[]),
        ),
        (
            "patient adds a preference",
            Principal::Patient,
            Action::AddEntry(PatientEntered),
            Rel::None,
            B::NotAsked,
            CORE,
            Permit(&[PatientEntered], &[]),
        ),
        (
            "patient changes their mind",
            Principal::Patient,
            Action::ChangePatientChoice,
            Rel::None,
            B::NotAsked,
            OPTOUT,
            Permit(&[Governance], &[]),
        ),
        (
            "patient cannot write core",
            Principal::Patient,
            Action::AddEntry(Core),
            Rel::None,
            B::NotAsked,
            CORE,
            Deny(D::NotAllowed),
        ),
        (
            "patient cannot unhide for staff",
            Principal::Patient,
            unhide("a", "b"),
            Rel::None,
            B::NotAsked,
            HIDDEN,
            Deny(D::NotPrivacyOfficer),
        ),
    ];
    for (label, principal, action, relationship, basis, choices, want) in rows {
        let got = decide(&Request {
            principal,
            action,
            relationship,
            basis,
            choices,
        });
        match want {
            Permit(compartments, alerts) => {
                let got_alerts: Vec<(u8, u8)> = got
                    .alerts()
                    .iter()
                    .map(|a| (a.alert_type().code(), a.reason().code()))
                    .collect();
                assert!(got.is_permit(), "{label}: expected permit, got {got:?}");
                assert_eq!(got.compartments(), compartments, "{label}");
                assert_eq!(got_alerts, alerts, "{label}");
            }
            Deny(reason) => assert_eq!(got, Decision::Deny(reason), "{label}"),
        }
    }
}

fn all_principals() -> Vec<Principal> {
    vec![
        gp(),
        paramedic(),
        nurse(),
        clerk(),
        caldicott(),
        privacy_officer(),
        Principal::Patient,
    ]
}

fn all_actions() -> Vec<Action> {
    let mut out = vec![
        Action::View,
        Action::Export,
        Action::RecordPermissionToView,
        Action::ChangePatientChoice,
        Action::Hide,
        unhide("w", "i"),
        Action::ReadAuditTrail,
    ];
    for c in Compartment::ALL {
        out.extend([
            Action::AddEntry(c),
            sup(c, "RX1"),
            sup(c, "RYA"),
            eie(c, "RX1"),
            eie(c, "RYA"),
        ]);
    }
    out
}

fn all_relationships() -> Vec<Relationship> {
    let mut out = vec![Rel::Registered, Rel::FromGrant, Rel::None];
    out.extend(AlertReason::ALL.map(Rel::SelfClaimed));
    out
}

fn all_bases() -> Vec<ViewBasis> {
    let mut out = vec![B::PermissionRecorded, B::Emergency, B::NotAsked, B::Refused];
    out.extend(AlertReason::ALL.map(B::LegalOverride));
    out
}

fn all_choices() -> Vec<PatientChoices> {
    let mut out = Vec::new();
    for sharing in [
        SharingChoice::CoreOnly,
        SharingChoice::CoreAndAdditional,
        SharingChoice::OptOut,
    ] {
        for include_sensitive in [false, true] {
            for hidden in [false, true] {
                out.push(PatientChoices {
                    sharing,
                    include_sensitive,
                    hidden,
                });
            }
        }
    }
    out
}

#[test]
fn invariants_hold_for_every_combination() {
    let mut checked = 0;
    for principal in all_principals() {
        for action in all_actions() {
            for relationship in all_relationships() {
                for basis in all_bases() {
                    for choices in all_choices() {
                        let req = Request {
                            principal: principal.clone(),
                            action: action.clone(),
                            relationship,
                            basis,
                            choices,
                        };
                        check_invariants(&req, &decide(&req));
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 50_000, "{checked}");
}

fn check_invariants(req: &Request, d: &Decision) {
    let Principal::Staff(role) = &req.principal else {
        return;
    };
    let ctx = format!("{req:?} -> {d:?}");
    let compartments = d.compartments();
    if d.is_permit() && matches!(req.action, Action::View | Action::Export) {
        // All three tests, and the record available.
        assert!(
            role.has("B0264") && (role.has("B0370") || role.has("B0360")),
            "{ctx}"
        );
        assert_ne!(req.relationship, Rel::None, "{ctx}");
        assert!(!matches!(req.basis, B::NotAsked | B::Refused), "{ctx}");
        assert!(
            !req.choices.hidden && req.choices.sharing != SharingChoice::OptOut,
            "{ctx}"
        );
        // Alerts for exactly the exceptional routes.
        let expected = usize::from(matches!(req.relationship, Rel::SelfClaimed(_)))
            + usize::from(matches!(req.basis, B::Emergency | B::LegalOverride(_)));
        assert_eq!(d.alerts().len(), expected, "{ctx}");
    }
    if compartments.contains(&Sensitive) && matches!(req.action, Action::View | Action::Export) {
        assert!(req.choices.include_sensitive && role.has("B1611"), "{ctx}");
    }
    if compartments.contains(&Additional) && matches!(req.action, Action::View | Action::Export) {
        assert_eq!(
            req.choices.sharing,
            SharingChoice::CoreAndAdditional,
            "{ctx}"
        );
    }
    if d.is_permit() && (req.choices.hidden || req.choices.sharing == SharingChoice::OptOut) {
        // Only governance actions touch a record staff cannot see.
        assert!(
            matches!(
                req.action,
                Action::Unhide { .. }
                    | Action::Hide
                    | Action::ChangePatientChoice
                    | Action::ReadAuditTrail
            ),
            "{ctx}"
        );
    }
    if d.is_permit() && matches!(req.action, Action::Unhide { .. }) {
        assert!(role.privacy_officer, "{ctx}");
    }
}
