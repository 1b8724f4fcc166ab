//! The access decision's tests, with the principals, choices and actions
//! they share: the decision as a table ([`table`]), and every combination
//! checked against invariants ([`invariants`]).

mod choices;
mod invariants;
mod table;

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

const SEEN_CORE: &[Compartment] = &[Core, PatientEntered, Governance, Permissions];
const SEEN_ADD: &[Compartment] = &[
    Core,
    Additional,
    CareEvents,
    PatientEntered,
    Governance,
    Permissions,
];
const SEEN_ADD_SENS: &[Compartment] = &[
    Core,
    Additional,
    CareEvents,
    PatientEntered,
    Governance,
    Permissions,
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
