//! Every request and reply between a device and the server, beside the
//! samod sync messages: the login, the catalogue before sync, the holdings list and its notice
//! document, the audit upload, the access log, encounters and the server's
//! word on pushes it refused; and `wire`, reading samod's own messages just
//! far enough to guard either end. Pure formats
//! (serde, versioned), imported by both sides: the device's `sync` speaks
//! them, the server answers them, and neither imports the other.

mod access_log;
mod audit_upload;
mod catalogue;
mod encounter;
mod fetch;
mod holdings;
mod login;
mod refusal;
pub mod wire;

pub use access_log::{ACCESS_LOG_FORMAT, AccessLogEntry, AccessLogReply, AccessLogRequest};
pub use audit_upload::{
    AUDIT_UPLOAD_FORMAT, AuditAck, AuditReply, AuditUpload, Backlog, MAX_AUDIT_BATCH,
};
pub use catalogue::{
    CATALOGUE_FORMAT, CatalogueError, CatalogueReply, CatalogueRequest, DocHeads,
    MAX_CATALOGUE_RECORDS, MAX_CATALOGUE_REQUEST, RecordDigest, heads_from_hex, heads_to_hex,
    list_digest, record_digest,
};
pub use encounter::{
    ENCOUNTER_FORMAT, EncounterBasis, EncounterReply, EncounterRequest, MAX_ENCOUNTER_REQUEST,
};
pub use fetch::{Ask, FETCH_ANSWER_BUDGET, FetchAnswer, FetchRequest, Fetched, MAX_FETCH_DOCS};
pub use holdings::{
    HeldPatient, HoldingsList, HoldingsReply, NOTICE_FORMAT, NoticeError, bump_notice, read_notice,
};
pub use login::{LoginRequest, LoginResponse};
pub use refusal::{KEPT_REFUSALS, PushRefusal};
