//! What a privacy officer does: review the alerts raised for their own
//! organisation (emergency access, legal override, self-claimed
//! relationships), close each with an outcome, and unhide a hidden record
//! after a written request and an investigation. Every action is audited
//! in the server's trail before it takes effect or is shown.

use scr_core::audit::Outcome;
use scr_core::{NhsNumber, Store};

use crate::archive::{AlertOutcome, AlertRecord, Archive, ArchiveError};
use crate::directory::Directory;

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("{0} is not a privacy officer")]
    NotAnOfficer(String),
    #[error("no open alert {0} for this organisation")]
    NoSuchAlert(i64),
    #[error("the action could not be audited, so it was not taken")]
    NotAudited,
    #[error("audit archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error("record: {0}")]
    Record(#[from] crate::records::LoadError),
}

/// A privacy officer, as the directory knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Officer {
    pub user_id: String,
    pub organisation: String,
}

impl Officer {
    /// `user_id` if the directory marks them a privacy officer.
    pub fn find(directory: &Directory, user_id: &str) -> Result<Self, PrivacyError> {
        match directory.user(user_id) {
            Ok(Some((user, _))) if user.privacy_officer => Ok(Self {
                user_id: user.user_id,
                organisation: user.organisation,
            }),
            _ => Err(PrivacyError::NotAnOfficer(user_id.to_owned())),
        }
    }

    fn audit(
        &self,
        store: &Store,
        action: &str,
        patient: Option<NhsNumber>,
        detail: String,
    ) -> Result<(), PrivacyError> {
        crate::audit::record(
            store,
            &self.user_id,
            action,
            patient,
            Outcome::Recorded,
            Some(format!("{} {detail}", self.organisation)),
        )
        .map_err(|_| PrivacyError::NotAudited)
    }

    /// The alerts routed to this officer's organisation (each one opened
    /// is audited against its patient).
    pub fn alerts(
        &self,
        archive: &Archive,
        store: &Store,
        include_closed: bool,
    ) -> Result<Vec<AlertRecord>, PrivacyError> {
        let alerts = archive.alerts(&self.organisation, include_closed)?;
        for a in &alerts {
            self.audit(
                store,
                "open-alert",
                a.event.patient,
                format!("alert {}", a.id),
            )?;
        }
        Ok(alerts)
    }

    /// Closes an open alert of this officer's organisation.
    pub fn close(
        &self,
        archive: &Archive,
        store: &Store,
        id: i64,
        outcome: AlertOutcome,
    ) -> Result<(), PrivacyError> {
        let alert = archive
            .alerts(&self.organisation, false)?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(PrivacyError::NoSuchAlert(id))?;
        self.audit(
            store,
            "close-alert",
            alert.event.patient,
            format!("alert {id} {}", outcome.as_str()),
        )?;
        let now = scr_core::clock::now_ms();
        if !archive.close_alert(id, &self.organisation, outcome, &self.user_id, now)? {
            return Err(PrivacyError::NoSuchAlert(id));
        }
        Ok(())
    }

    /// Unhides a hidden record (see [`crate::records::unhide`]).
    pub fn unhide(
        &self,
        store: &Store,
        nhs: &NhsNumber,
        request_ref: &str,
        investigation_ref: &str,
    ) -> Result<scr_core::access::PatientChoices, PrivacyError> {
        let by = crate::records::ChoiceAuthor {
            user: &self.user_id,
            role: "privacy-officer",
            organisation: &self.organisation,
        };
        Ok(crate::records::unhide(
            store,
            nhs,
            &by,
            request_ref,
            investigation_ref,
        )?)
    }
}
