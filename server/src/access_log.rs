//! "Who has looked at my record", on the server: one request on an
//! authenticated channel answered from the archive of device audit events
//! and the server's own trail (admin actions such as a choice recorded by
//! the GP practice), for the patient themself (every access) or a privacy
//! officer (accesses by staff of their own organisation) only, by the
//! grant the server issued to that device while it lasts. The read is
//! audited. Uploaded events the server does not believe are left out.

use std::collections::HashMap;
use std::sync::Arc;

use scr_core::access::{Principal, StaffRole};
use scr_core::audit::Outcome;
use scr_core::channel::{NoiseChannel, WebSocket};
use scr_core::protocol::{ACCESS_LOG_FORMAT, AccessLogEntry, AccessLogReply, AccessLogRequest};
use scr_core::{NhsNumber, Store};

use crate::archive::{Archive, Flag};
use crate::directory::Directory;
use crate::policy::AccessPolicy;

const READ_ACCESS_LOG: &str = "read-access-log";
/// Entries one reply holds at most: the newest (each well under a
/// kilobyte: believed events' fields are short codes and ids).
pub const MAX_ENTRIES: usize = 10_000;

/// What the request handler needs.
#[derive(Clone)]
pub struct AccessLogSources {
    pub policy: AccessPolicy,
    pub archive: Arc<Archive>,
    pub store: Store,
    pub directory: Arc<Directory>,
    /// The server's static key: where its own trail's chain stands in the
    /// archive.
    pub server_key: [u8; 32],
}

/// Answers one request; `layout`: the record layout the app reads (its
/// hello says).
pub async fn serve_access_log<S: WebSocket>(
    mut channel: NoiseChannel<S>,
    sources: AccessLogSources,
    layout: u8,
) -> Result<(), String> {
    let request = crate::request::one_request(&mut channel, "access log request").await?;
    let device = channel.remote_static();
    let reply = match serde_json::from_slice::<AccessLogRequest>(&request) {
        Ok(r) if r.format == ACCESS_LOG_FORMAT => {
            tokio::task::spawn_blocking(move || answer(&sources, &device, &r.nhs_number))
                .await
                .unwrap_or_else(|_| refused("the access log could not be read"))
        }
        _ => refused("the access log request is malformed"),
    };
    let reply = if layout == 1 {
        reply.in_layout_1()
    } else {
        reply
    };
    let body = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())
}

fn refused(reason: &str) -> AccessLogReply {
    AccessLogReply::Refused {
        reason: reason.to_owned(),
    }
}

/// Whose accesses a reader may see in a patient's log.
enum Reader {
    /// The patient: every access.
    Patient,
    /// A privacy officer: accesses by staff of their own organisation.
    Officer { organisation: String },
}

impl Reader {
    fn sees(&self, organisation: &str) -> bool {
        match self {
            Reader::Patient => true,
            Reader::Officer { organisation: own } => own == organisation,
        }
    }
}

fn answer(sources: &AccessLogSources, device: &[u8; 32], nhs: &NhsNumber) -> AccessLogReply {
    // The device's grant while it lasts (an expired or revoked one reads
    // nothing).
    let grant = sources.policy.current_grant(device);
    let reader = grant.as_ref().and_then(|g| match g.principal() {
        Principal::Patient => g.is_patient(nhs).then_some(Reader::Patient),
        Principal::Staff(StaffRole {
            privacy_officer: true,
            organisation,
            ..
        }) => Some(Reader::Officer { organisation }),
        Principal::Staff(_) => None,
    });
    let who = grant
        .as_ref()
        .map(|g| g.actor().0)
        .unwrap_or_else(|| "unknown".to_owned());
    let outcome = if reader.is_some() {
        Outcome::Permit
    } else {
        Outcome::Deny {
            reason: scr_core::access::DenyReason::NotAllowed,
        }
    };
    // No answer the trail does not show.
    if crate::audit::record(
        &sources.store,
        &who,
        READ_ACCESS_LOG,
        Some(*nhs),
        outcome,
        None,
    )
    .is_err()
    {
        return refused("the read could not be audited");
    }
    let Some(reader) = reader else {
        return refused(
            "only the patient, or a privacy officer while logged in, may read this log",
        );
    };
    match entries(sources, nhs, &reader) {
        Ok(entries) => AccessLogReply::Log { entries },
        Err(_) => refused("the access log could not be read"),
    }
}

/// The log as `reader` may read it: events the server does not believe
/// (it issued nothing that vouches for them) are never shown as fact.
fn entries(
    sources: &AccessLogSources,
    nhs: &NhsNumber,
    reader: &Reader,
) -> Result<Vec<AccessLogEntry>, String> {
    let mut names: HashMap<String, Option<String>> = HashMap::new();
    let mut name_of = |user: &str| {
        names
            .entry(user.to_owned())
            .or_insert_with(|| crate::users::display_name(&sources.directory, user))
            .clone()
    };
    let mut out: Vec<AccessLogEntry> = sources
        .archive
        .events_about(nhs)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|a| {
            a.event.action != READ_ACCESS_LOG
                && Flag::believed(a.flag.as_deref())
                && reader.sees(&a.event.organisation)
        })
        .map(|a| {
            let name = name_of(&a.event.user);
            AccessLogEntry::from_event(&a.event, name)
        })
        .collect();
    // The server's own trail (choices an operator or GP recorded,
    // encounters opened online) is archived each second; only the events
    // the archive does not have yet are read from the trail itself.
    let (archived_through, _) = sources
        .archive
        .chain(&sources.server_key)
        .map_err(|e| e.to_string())?;
    for e in sources
        .store
        .audit_events_after(archived_through, None)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| {
            e.patient.as_ref() == Some(nhs)
                && e.action != READ_ACCESS_LOG
                && reader.sees(&e.organisation)
        })
    {
        if !out.iter().any(|x| x.id == e.id) {
            let name = name_of(&e.user);
            out.push(AccessLogEntry::from_event(&e, name));
        }
    }
    out.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
    // The newest, as many as one reply holds.
    let excess = out.len().saturating_sub(MAX_ENTRIES);
    out.drain(..excess);
    Ok(out)
}
