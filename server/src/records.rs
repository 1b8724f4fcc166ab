//! Loading a patient's record onto the server from a JSON file (what a GP
//! system's feed or an operator provides), with the patient's choices.

use scr_core::fixtures::now_ms;
use scr_core::record::{Compartment, EntryContent, Provenance, SharingChoice};
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

/// Parses a load file. Errors name the problem (serde's message gives the
/// line and column) and never echo patient data back.
pub fn parse(json: &str) -> Result<RecordFile, LoadError> {
    serde_json::from_str(json).map_err(|e| {
        LoadError::Parse(format!(
            "line {} column {}: {:?}",
            e.line(),
            e.column(),
            e.classify()
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
        record.add_entry(entry.content.clone(), entry.sensitive, provenance())?;
    }
    record.add_entry(
        EntryContent::Sharing {
            choice: file.sharing,
            include_sensitive: file.include_sensitive,
            hidden: file.sharing == SharingChoice::OptOut,
        },
        false,
        provenance(),
    )?;
    Ok(record
        .export()
        .into_iter()
        .map(|e| (e.compartment, e.doc_id))
        .collect())
}

/// The patient's choices as an operator records them on the patient's
/// behalf (the GP, on the patient's written request): a new version of
/// the sharing entry, so earlier choices stay in the record's history.
/// Opting out hides the record; `hidden` hides it without opting out.
pub fn set_choice(
    store: &Store,
    nhs: &NhsNumber,
    choice: SharingChoice,
    include_sensitive: bool,
    hidden: bool,
    recorded_by: &str,
) -> Result<(), LoadError> {
    let mut record = store.open_record(nhs)?;
    let governance = record.view_compartment(Compartment::Governance)?;
    let content = EntryContent::Sharing {
        choice,
        include_sensitive,
        hidden: hidden || choice == SharingChoice::OptOut,
    };
    let provenance = Provenance {
        author_id: recorded_by.to_owned(),
        role: "operator".into(),
        organisation: "server".into(),
        device: "scr-server".into(),
        recorded_at_ms: now_ms(),
    };
    match scr_core::engine::sharing_entry(&governance) {
        Some((entry, heads)) => {
            record.supersede(Compartment::Governance, entry, &heads, content, provenance)?;
        }
        None => {
            record.add_entry(content, false, provenance)?;
        }
    }
    Ok(())
}
