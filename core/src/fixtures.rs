//! Synthetic patients for demos, tests and benchmarks. Every NHS number here
//! is in the never-issued test range (999 000 0000 to 999 999 9999) and
//! passes the Modulus 11 check; names and addresses are invented.

use crate::NhsNumber;
use crate::record::{
    CarePlanKind, Code, EntryContent, MedicationCourse, PreferenceKind, Provenance, Severity,
};

/// The `n`th valid test-range NHS number, counting only nine-digit prefixes
/// that have a valid check digit (about 1 in 11 has none), so distinct `n`
/// give distinct numbers.
pub fn test_nhs_number(n: u32) -> NhsNumber {
    let mut remaining = n;
    let mut prefix = 0u32;
    loop {
        let nine = format!("999{:06}", prefix % 1_000_000);
        if let Some(nhs) =
            (0..10).find_map(|check| NhsNumber::parse(&format!("{nine}{check}")).ok())
        {
            if remaining == 0 {
                return nhs;
            }
            remaining -= 1;
        }
        prefix += 1;
    }
}

pub fn provenance(author_id: &str, role: &str, organisation: &str, device: &str) -> Provenance {
    Provenance {
        author_id: author_id.to_owned(),
        role: role.to_owned(),
        organisation: organisation.to_owned(),
        device: device.to_owned(),
        recorded_at_ms: now_ms(),
    }
}

/// A GP at a test-range surgery, the usual author of core entries.
pub fn gp() -> Provenance {
    provenance("555000000001", "R0260", "A99001", "gp-desktop")
}

pub use crate::clock::now_ms;

pub fn demographics(nhs: NhsNumber) -> EntryContent {
    EntryContent::Demographics {
        name: "Ada Testpatient".into(),
        date_of_birth: "1948-03-12".into(),
        address: "1 Example Row, Testtown, TE1 1ST".into(),
        nhs_number: nhs,
    }
}

/// A varied, realistic entry for index `i` (cycles through the kinds).
pub fn sample_entry(i: usize) -> EntryContent {
    match i % 10 {
        0 => EntryContent::Allergy {
            substance: Code::snomed("764146007", "Penicillin"),
            reaction: Some("Urticaria".into()),
            severity: Some(Severity::Moderate),
        },
        1 => EntryContent::Medication {
            medicine: Code::dmd("39113611000001102", "Metformin 500mg tablets"),
            dose: format!("{} tablet(s) twice daily", 1 + i % 2),
            route: "oral".into(),
            course: MedicationCourse::Repeat,
            last_issued: Some("2026-10-02".into()),
        },
        2 => EntryContent::AdverseReaction {
            substance: Code::dmd("42206511000001102", "Codeine 30mg tablets"),
            reaction: "Severe nausea".into(),
            severity: Some(Severity::Mild),
        },
        3 => EntryContent::Problem {
            condition: Code::snomed("44054006", "Type 2 diabetes mellitus"),
            onset: Some("2011".into()),
            active: true,
        },
        4 => EntryContent::Procedure {
            procedure: Code::snomed("80146002", "Appendicectomy"),
            performed: Some("1979-06".into()),
        },
        5 => EntryContent::Immunisation {
            vaccine: Code::snomed("1119349007", "COVID-19 mRNA vaccine"),
            given: "2025-10-14".into(),
        },
        6 => EntryContent::CarePlan {
            plan: CarePlanKind::Anticipatory,
            note: "Prefers to be cared for at home; family aware.".into(),
        },
        7 => EntryContent::EncounterSummary {
            setting: "community nursing".into(),
            occurred_at: "2026-11-20T10:30:00Z".into(),
            note: format!("Visit {i}: leg ulcer dressing changed, healing well."),
        },
        8 => EntryContent::TestResult {
            test: Code::snomed("1107481000000106", "HbA1c"),
            value: format!("{}", 48 + i % 7),
            unit: Some("mmol/mol".into()),
            taken_at: "2026-09-01".into(),
        },
        _ => EntryContent::Preference {
            preference: PreferenceKind::AccessNeeds,
            detail: "Uses a wheelchair; needs step-free access.".into(),
        },
    }
}
