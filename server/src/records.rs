//! Loading a patient's record onto the server from a JSON file (what a GP
//! system's feed or an operator provides), with the patient's choices.

use scr_core::access::PatientChoices;
use scr_core::audit::{AuditDraft, Outcome};
use scr_core::clock::now_ms;
use scr_core::record::{Compartment, EntryContent, Provenance, SharingChoice};
use scr_core::replica::AuditSpec;
use scr_core::{NhsNumber, Store};
use serde::Deserialize;

/// The load file: the NHS number, the choices, and the entries.
#[derive(Debug, Deserialize)]
pub struct RecordFile {
    pub nhs_number: NhsNumber,
    #[serde(default = "default_sharing")]
    pub sharing: SharingChoice,
    #[serde(default)]
    pub include_sensitive: bool,
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
pub struct FileEntry {
    #[serde(default)]
    pub sensitive: bool,
    pub content: EntryContent,
}

fn default_sharing() -> SharingChoice {
    SharingChoice::CoreOnly
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the file is not a valid record: {0}")]
    Parse(String),
    #[error("store: {0}")]
    Store(#[from] scr_core::StoreError),
}

/// Parses a load file. An error names the field that is wrong (its path,
/// as `entries[2].content.kind`) and where, never the value found there:
/// serde's own messages quote values ("invalid value: string ..."), so
/// only a missing field's name is taken from them.
pub fn parse(json: &str) -> Result<RecordFile, LoadError> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A path is field names and indices; anything else (a map key from
        // the file) could be data, so it is not repeated.
        let path = Some(e.path().to_string())
            .filter(|p| p.len() <= 120)
            .filter(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
            })
            .unwrap_or_else(|| "a field".to_owned());
        let inner = e.inner();
        let what = match inner.classify() {
            serde_json::error::Category::Syntax => "not JSON".to_owned(),
            serde_json::error::Category::Eof => "the file ends early".to_owned(),
            serde_json::error::Category::Io => "unreadable".to_owned(),
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                match message.split('`').nth(1) {
                    Some(field) if message.starts_with("missing field `") => {
                        format!("missing field {field}")
                    }
                    _ => "a missing, invalid or mistyped value".to_owned(),
                }
            }
        };
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        LoadError::Parse(format!(
            "{at}{what} (line {} column {})",
            inner.line(),
            inner.column()
        ))
    })
}

/// Creates the record on the server with every compartment, its entries
/// and the patient's choices. Returns each compartment's document id.
pub fn load(
    store: &Store,
    file: &RecordFile,
    loaded_by: &str,
) -> Result<Vec<(Compartment, String)>, LoadError> {
    let provenance = || Provenance {
        author_id: loaded_by.to_owned(),
        role: "loader".into(),
        organisation: "server".into(),
        device: "scr-server".into(),
        recorded_at_ms: now_ms(),
    };
    let mut record = store.create_record(&file.nhs_number, &Compartment::ALL)?;
    for entry in &file.entries {
        record.add_entry(entry.content.clone(), entry.sensitive, provenance(), None)?;
    }
    record.add_entry(
        EntryContent::Sharing {
            choice: file.sharing,
            include_sensitive: file.include_sensitive,
            hidden: file.sharing == SharingChoice::OptOut,
        },
        false,
        provenance(),
        None,
    )?;
    Ok(record
        .export()
        .into_iter()
        .map(|e| (e.compartment, e.doc_id))
        .collect())
}

/// A patient's choice as an operator records it (the GP, on the patient's
/// written request): what they chose, and whether lifting a hiding is the
/// patient's own new choice.
#[derive(Clone, Copy, Debug)]
pub struct ChoiceInstruction {
    pub choice: SharingChoice,
    pub include_sensitive: Option<bool>,
    pub hidden: Option<bool>,
    /// The patient themself asked (so a hiding may be lifted).
    pub patients_own: bool,
}

/// The patient's choices as an operator records them on the patient's
/// behalf: a new version of the sharing entry, so earlier choices stay in
/// the record's history, written in one transaction with its audit event
/// (naming the operator who took the instruction). A flag not given keeps
/// its current value; opting out always hides. A hiding is lifted only by
/// the patient's own new choice (`--hidden no`, or sharing again after
/// opting out); for anyone else it is a privacy officer's [`unhide`].
/// Returns the choices now in force.
pub fn set_choice(
    store: &Store,
    nhs: &NhsNumber,
    instruction: ChoiceInstruction,
    recorded_by: &str,
) -> Result<PatientChoices, LoadError> {
    let ChoiceInstruction {
        choice,
        include_sensitive,
        hidden,
        patients_own,
    } = instruction;
    if hidden == Some(false) && !patients_own {
        return Err(LoadError::Parse(
            "--hidden no lifts a hiding: only as the patient's own choice (--patients-own-choice yes); otherwise a privacy officer's `admin unhide` with its references".into(),
        ));
    }
    let by = ChoiceAuthor {
        user: recorded_by,
        role: "operator",
        organisation: "server",
    };
    let detail = if patients_own {
        format!("the patient's own choice, taken by {recorded_by}")
    } else {
        format!("on the patient's behalf, taken by {recorded_by}")
    };
    write_choices(
        store,
        nhs,
        &by,
        ("admin-set-choice", Outcome::Recorded),
        Some(detail),
        |current| {
            let opting_back_in = current.sharing == SharingChoice::OptOut && patients_own;
            PatientChoices {
                sharing: choice,
                include_sensitive: include_sensitive.unwrap_or(current.include_sensitive),
                hidden: choice == SharingChoice::OptOut
                    || hidden.unwrap_or(current.hidden && !opting_back_in),
            }
        },
    )
}

/// A privacy officer unhides a hidden record after a written request and an
/// investigation, both cited in the audit event; its choices otherwise stay,
/// and it is shared again by the normal rules.
pub fn unhide(
    store: &Store,
    nhs: &NhsNumber,
    officer: &ChoiceAuthor<'_>,
    request_ref: &str,
    investigation_ref: &str,
) -> Result<PatientChoices, LoadError> {
    let refs_ok = |r: &str| {
        (1..=64).contains(&r.len())
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/.".contains(c))
    };
    if !refs_ok(request_ref) || !refs_ok(investigation_ref) {
        return Err(LoadError::Parse(
            "references are 1 to 64 letters, digits and - _ / .".into(),
        ));
    }
    let detail = format!("request {request_ref} investigation {investigation_ref}");
    // A decision the privacy officer took, and permitted.
    write_choices(
        store,
        nhs,
        officer,
        ("unhide", Outcome::Permit),
        Some(detail),
        |current| PatientChoices {
            hidden: false,
            ..current
        },
    )
}

/// Who records a change of choices.
pub struct ChoiceAuthor<'a> {
    pub user: &'a str,
    pub role: &'a str,
    pub organisation: &'a str,
}

/// Writes the choices `next` makes of the current ones as a new version of
/// the sharing entry, in one transaction with its audit event.
fn write_choices(
    store: &Store,
    nhs: &NhsNumber,
    by: &ChoiceAuthor<'_>,
    (action, outcome): (&str, Outcome),
    detail: Option<String>,
    next: impl FnOnce(PatientChoices) -> PatientChoices,
) -> Result<PatientChoices, LoadError> {
    let mut record = store.open_record(nhs)?;
    let governance = record.view_compartment(Compartment::Governance)?;
    let next = next(scr_core::access::choices_from(Some(&governance)));
    let content = EntryContent::Sharing {
        choice: next.sharing,
        include_sensitive: next.include_sensitive,
        hidden: next.hidden,
    };
    let now = now_ms();
    let provenance = Provenance {
        author_id: by.user.to_owned(),
        role: by.role.to_owned(),
        organisation: by.organisation.to_owned(),
        device: "scr-server".into(),
        recorded_at_ms: now,
    };
    let choices = format!(
        "{:?} include-sensitive={} hidden={}",
        next.sharing, next.include_sensitive, next.hidden
    );
    let audit = AuditSpec {
        draft: AuditDraft {
            user: by.user.to_owned(),
            role: by.role.to_owned(),
            organisation: by.organisation.to_owned(),
            patient: Some(*nhs),
            action: action.to_owned(),
            compartments: vec![Compartment::Governance],
            entries: Vec::new(),
            outcome,
            basis: None,
            alerts: Vec::new(),
            detail: Some(match detail {
                Some(d) => format!("{d}; {choices}"),
                None => choices,
            }),
        },
        device: "scr-server".into(),
        now_ms: now,
    };
    match scr_core::access::sharing_entry(&governance) {
        Some((entry, heads)) => {
            record.supersede(
                Compartment::Governance,
                entry,
                &heads,
                content,
                provenance,
                Some(&audit),
            )?;
        }
        None => {
            record.add_entry(content, false, provenance, Some(&audit))?;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use scr_core::crypto::{SecretKey, StaticKeyProvider};
    use scr_core::fixtures::test_nhs_number;

    #[test]
    fn omitted_flags_keep_their_values_and_each_choice_is_audited_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("s.db"),
            &StaticKeyProvider::new(SecretKey::from_bytes([2; 32])),
        )
        .unwrap();
        let nhs = test_nhs_number(5);
        let file = RecordFile {
            nhs_number: nhs,
            sharing: SharingChoice::OptOut,
            include_sensitive: false,
            entries: Vec::new(),
        };
        load(&store, &file, "test").unwrap();
        let instruction = |choice, include_sensitive, hidden, patients_own| ChoiceInstruction {
            choice,
            include_sensitive,
            hidden,
            patients_own,
        };
        let set = |choice, sensitive, hidden| {
            set_choice(
                &store,
                &nhs,
                instruction(choice, sensitive, hidden, true),
                "test",
            )
            .unwrap()
        };
        // Only the patient's own choice lifts a hiding: sharing again on
        // their behalf leaves the opted-out record hidden, and `--hidden
        // no` on their behalf is refused.
        let on_behalf = instruction(SharingChoice::CoreOnly, None, None, false);
        assert!(set_choice(&store, &nhs, on_behalf, "test").unwrap().hidden);
        let lifted = instruction(SharingChoice::CoreOnly, None, Some(false), false);
        assert!(set_choice(&store, &nhs, lifted, "test").is_err());
        // The patient opting back in after opting out unhides; hiding
        // explicitly hides.
        set(SharingChoice::OptOut, None, None);
        assert!(!set(SharingChoice::CoreOnly, None, None).hidden);
        assert!(set(SharingChoice::CoreOnly, None, Some(true)).hidden);
        // Adjusting another flag leaves a hidden record hidden.
        let now = set(SharingChoice::CoreAndAdditional, Some(true), None);
        assert!(now.hidden && now.include_sensitive);
        // Opting out always hides.
        assert!(set(SharingChoice::OptOut, None, Some(false)).hidden);
        let details: Vec<String> = store
            .queued_audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "admin-set-choice" && e.patient == Some(nhs))
            .filter_map(|e| e.detail)
            .collect();
        assert_eq!(details.len(), 6);
        assert_eq!(
            details[4],
            "the patient's own choice, taken by test; CoreAndAdditional include-sensitive=true hidden=true"
        );
    }

    #[test]
    fn a_bad_load_file_names_the_field_never_the_value() {
        let nhs = test_nhs_number(5).digits();
        let err = |json: String| parse(&json).err().unwrap().to_string();
        let wrong_number = err(r#"{"nhs_number": "9434765918", "entries": []}"#.to_owned());
        assert!(wrong_number.contains("nhs_number: "), "{wrong_number}");
        assert!(!wrong_number.contains("9434765918"), "{wrong_number}");
        let secret = "Allergic to penicillin";
        let bad_entry = err(format!(
            r#"{{"nhs_number": "{nhs}", "entries": [{{"content": {{"kind": "{secret}"}}}}]}}"#
        ));
        assert!(bad_entry.contains("entries[0].content"), "{bad_entry}");
        assert!(
            !bad_entry.contains(secret) && !bad_entry.contains(&nhs),
            "{bad_entry}"
        );
        let missing = err(format!(r#"{{"nhs_number": "{nhs}"}}"#));
        assert!(missing.contains("missing field entries"), "{missing}");
        assert!(err("{".into()).contains("line 1"));
    }
}
