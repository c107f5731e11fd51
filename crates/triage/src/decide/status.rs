//! Status updates to stakeholders, decided from the incident as it stands: a known status,
//! a message of 1 to 4096 bytes, an incident that is not closed. The update goes on the
//! timeline (`status_update`, data `{"status", "message"}`, the review reads it), becomes
//! the incident's `last_status_update`, and is announced as `status_updated`, in one
//! transaction. It never moves the life cycle: a `resolved` update is what stakeholders are
//! told, and resolving the incident stays a separate act (docs/status-updates.md).

use firebreak_domain::status_update::{takes_updates, update_message};
use firebreak_domain::{Micros, StatusUpdate, UpdateStatus};
use firebreak_storage::IncidentRecord;
use serde_json::json;

use super::{Change, Work};
use crate::Error;

/// The timeline entry a status update writes.
pub(crate) const STATUS_UPDATE_ENTRY: &str = "status_update";

impl Work<'_> {
    /// Posts a status update by `actor`; returns the incident as it then stands.
    pub(super) fn status_update(
        &mut self,
        id: &str,
        status: UpdateStatus,
        message: &str,
        actor: &str,
        now: Micros,
    ) -> Result<IncidentRecord, Error> {
        firebreak_domain::IncidentId::parse(id)?;
        let message = update_message(message)?;
        let mut inc = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if !takes_updates(inc.state) {
            return Err(firebreak_domain::Error::Transition {
                action: "post a status update to",
                state: inc.state.as_str(),
            }
            .into());
        }
        self.entry(
            id,
            STATUS_UPDATE_ENTRY,
            actor,
            json!({ "status": status.as_str(), "message": message }),
            now,
        );
        inc.last_status_update = Some(StatusUpdate {
            status,
            message: message.to_owned(),
            at: now,
            by: actor.to_owned(),
        });
        inc.updated_at = now;
        self.put(inc.clone());
        self.announce(Change::StatusUpdated, inc.clone(), actor, None);
        Ok(inc)
    }
}
