//! Every combination of role, relationship, basis, choice and action,
//! checked against the decision's invariants.

use super::*;

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
