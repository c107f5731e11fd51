//! Delivery you can trust: what a provider reports back about a `sent` delivery, failover of
//! a page to its person's next contact method, throttles applied per destination, and the
//! provider id an incident's later change updates.

use std::time::Duration;

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::DeliveryState;
use firebreak_domain::people::{ContactKind, ContactMethod};
use firebreak_proto::WireState;
use firebreak_proto::v1::{self, event::Payload};
use firebreak_storage::{DeliveryRecord, OutboxEvent};
use serde_json::json;

use crate::channels::ChannelKind;
use crate::error::Error;
use crate::{Notification, paging, throttle};

/// The longest provider id stored or looked up (Slack `CHANNEL:TS`, a Twilio SID and an
/// email's `Message-ID` are far shorter).
pub(crate) const MAX_PROVIDER_ID: usize = 512;
/// The longest reason a provider's failure report may give.
pub(crate) const MAX_REPORT_REASON: usize = 1024;
/// What a failover page's event id adds to the failed page's: each hop adds one, so a
/// page and its failovers are keyed apart, and a failover is inserted once however often
/// its page fails.
const FAILOVER: &str = "+failover";

/// What a provider says became of something it accepted (a Twilio status callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderReport {
    /// It reached the person.
    Delivered,
    /// It did not (undelivered, busy, no answer), and why.
    Failed(String),
}

impl Notification {
    /// Moves the `sent` delivery whose provider id is `provider_id` to delivered or failed,
    /// with its `DeliveryChanged` event; a failed page fails over to its person's next
    /// contact method. Returns whether anything changed: `false` for a report seen before, a
    /// delivery no longer `sent`, or an id no delivery has (a report that arrives before its
    /// send was recorded is among these: it finds nothing).
    pub(crate) async fn provider_report(
        &self,
        provider_id: &str,
        report: ProviderReport,
    ) -> Result<bool, Error> {
        if provider_id.is_empty() {
            return Err(Error::Invalid("provider_id: required".into()));
        }
        if provider_id.len() > MAX_PROVIDER_ID {
            return Err(Error::Invalid(format!(
                "provider_id: at most {MAX_PROVIDER_ID} bytes"
            )));
        }
        if provider_id.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "provider_id: must not hold control characters".into(),
            ));
        }
        if let ProviderReport::Failed(reason) = &report
            && reason.len() > MAX_REPORT_REASON
        {
            return Err(Error::Invalid(format!(
                "reason: at most {MAX_REPORT_REASON} bytes"
            )));
        }
        let Some(mut d) = self
            .store
            .delivery_by_provider_id(provider_id, DeliveryState::Sent)
            .await?
        else {
            return Ok(false);
        };
        match report {
            ProviderReport::Delivered => {
                d.status = DeliveryState::Delivered;
                d.delivered_at = Some(self.clock.now());
            }
            ProviderReport::Failed(reason) => {
                d.status = DeliveryState::Failed;
                d.last_error = reason;
                // Before the state moves: should this process die in between, the report
                // repeated (or the delivery found still sent) inserts the same failover,
                // which its key admits once. A `delivered` report racing this one may win
                // the move below after the failover was inserted: the person is then paged
                // once more, never less.
                if paging::person_of(&d).is_some() {
                    self.fail_over(&d).await?;
                }
            }
        }
        let moved = self
            .store
            .transition_delivery(&d, DeliveryState::Sent, Some(&changed_event(&d)))
            .await?;
        if moved {
            self.relay.wake();
            self.wake.notify_one();
        }
        Ok(moved)
    }

    /// Inserts a page of `failed`'s person through their next contact method (see
    /// [`next_method`]), read from the directory now; nothing when none is left. Keyed by
    /// the failed page's event id and the method, so retries, replicas and restarts insert
    /// it once.
    pub(crate) async fn fail_over(&self, failed: &DeliveryRecord) -> Result<u32, Error> {
        let Some(directory) = &self.directory else {
            return Ok(0);
        };
        let Some(method) = paging::person_of(failed) else {
            return Ok(0);
        };
        // Someone acknowledged since this page was made: nobody needs paging any more.
        if failed.acknowledged_at.is_some() {
            return Ok(0);
        }
        let Some(user) = failed
            .payload
            .get("recipient")
            .and_then(|r| r.get("user"))
            .and_then(serde_json::Value::as_str)
        else {
            return Ok(0);
        };
        if failed.event_id.matches(FAILOVER).count()
            >= firebreak_domain::people::MAX_CONTACT_METHODS
        {
            return Ok(0);
        }
        let Some(person) = directory.store.user(user).await? else {
            return Ok(0);
        };
        let reachable =
            |kind: ContactKind| crate::channels::channel_for(&self.channels, kind).is_some();
        let Some(next) = next_method(&person.contact_methods, &method.name, reachable) else {
            tracing::warn!(delivery = %failed.id, user, "a page failed and the person has no further contact method");
            return Ok(0);
        };
        let page = failover_page(failed, user, next, self.clock.now());
        tracing::info!(delivery = %failed.id, user, from = %method.name, to = %next.name, "a page failed; failing over to the next contact method");
        Ok(self.store.insert_deliveries(&[page]).await?)
    }

    /// Whether a page to `method` must wait for its destination's throttle; if so, `d` is
    /// deferred to when it may go (its attempt not counted) and recorded.
    pub(crate) async fn throttled(&self, d: &mut DeliveryRecord, method: &ContactMethod) -> bool {
        if d.destination.is_empty() {
            return false;
        }
        let limits = self.throttles.of(method.kind);
        let now = self.clock.now();
        let Some((since, most)) = throttle::lookback(limits, now) else {
            return false;
        };
        let sent = match self.store.sent_to(&d.destination, since, most).await {
            Ok(sent) => sent,
            Err(e) => {
                // Throttles protect people and the bill: no send without knowing.
                tracing::warn!(delivery = %d.id, error = %e, "reading a destination's sends failed; the page waits");
                d.attempts -= 1;
                d.next_attempt_at = now + Duration::from_secs(1);
                self.record_deferred(d).await;
                return true;
            }
        };
        let Some(at) = throttle::decide(limits, &sent, now) else {
            return false;
        };
        d.attempts -= 1;
        d.next_attempt_at = at;
        let when = jiff::Timestamp::from_microsecond(at.unix_micros())
            .map_or_else(|_| at.unix_micros().to_string(), |t| t.to_string());
        d.last_error = format!(
            "throttled: this {} destination had its most pages for now; next at {when}",
            method.kind
        );
        firebreak_telemetry::Metrics::count(
            &firebreak_telemetry::metrics().deliveries,
            "throttled",
        );
        self.record_deferred(d).await;
        true
    }

    async fn record_deferred(&self, d: &DeliveryRecord) {
        if let Err(e) = self.store.update_delivery(d, None).await {
            tracing::warn!(delivery = %d.id, error = %e, "recording a throttled delivery failed");
        }
    }

    /// The provider id a delivery updates or threads under: the first sent or delivered
    /// delivery of its incident on its channel (for a page: to the same person and contact
    /// method). Only where updating is what people want: an incident's changes update its
    /// Slack or Mattermost message and thread its emails; a page threads under an earlier
    /// page's email but is never an edit of an earlier chat message, which would page
    /// nobody (an edit raises no notification); a runbook's message is always its own.
    pub(crate) async fn previous_id(
        &self,
        d: &DeliveryRecord,
        kind: ChannelKind,
    ) -> Option<String> {
        let prefix = if d.kind == paging::PAGE {
            (kind == ChannelKind::Email).then_some(paging::PAGE)?
        } else if d.kind.starts_with("incident.") {
            matches!(
                kind,
                ChannelKind::Slack | ChannelKind::Mattermost | ChannelKind::Email
            )
            .then_some("incident.")?
        } else {
            return None;
        };
        match self
            .store
            .first_provider_id(&d.incident_id, &d.channel, prefix)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                // A new message instead of an update: worse, not wrong.
                tracing::warn!(delivery = %d.id, error = %e, "reading the earlier message's id failed; posting anew");
                None
            }
        }
    }
}

/// The `DeliveryChanged` event of a delivery that reached a state other than pending.
pub(crate) fn changed_event(d: &DeliveryRecord) -> OutboxEvent {
    outbox_event(
        streams::NOTIFICATIONS,
        format!("notifications.{}", d.status),
        Payload::DeliveryChanged(v1::DeliveryChanged {
            delivery_id: d.id.clone(),
            incident_id: d.incident_id.clone(),
            channel: d.channel.clone(),
            status: d.status.wire(),
            attempts: d.attempts,
            error: d.last_error.clone(),
            // Every kind this service stores has its value (a test holds it).
            delivery_kind: v1::DeliveryKind::from_name(&d.kind) as i32,
            user: crate::paging::user_of(d).unwrap_or_default(),
        }),
    )
}

/// The contact method a page fails over to after `failed` (a method's name): the next in
/// the person's order that a configured channel reaches; `None` when none is left (or
/// `failed` is no longer theirs: the order it stood in is unknown).
pub(crate) fn next_method<'a>(
    methods: &'a [ContactMethod],
    failed: &str,
    reachable: impl Fn(ContactKind) -> bool,
) -> Option<&'a ContactMethod> {
    let at = methods.iter().position(|m| m.name == failed)?;
    methods[at + 1..].iter().find(|m| reachable(m.kind))
}

/// Who a page to `method` reaches, as throttles count it.
pub(crate) fn destination(method: &ContactMethod) -> String {
    format!("{}:{}", method.kind, method.address)
}

/// The page of `user` through `next` that replaces `failed`.
fn failover_page(
    failed: &DeliveryRecord,
    user: &str,
    next: &ContactMethod,
    now: firebreak_domain::Micros,
) -> DeliveryRecord {
    let event_id = format!("{}{FAILOVER}", failed.event_id);
    let mut payload = failed.payload.clone();
    if let Some(map) = payload.as_object_mut() {
        map.insert("event_id".into(), json!(event_id));
        map.insert("recipient".into(), json!({ "user": user, "method": next }));
        map.insert("failover_of".into(), json!(failed.id));
    }
    DeliveryRecord {
        event_id,
        channel: format!("user:{user}/{}", next.name),
        incident_id: failed.incident_id.clone(),
        // A page stays a page; a status update to a person stays one.
        kind: failed.kind.clone(),
        payload,
        escalation_step: failed.escalation_step,
        destination: destination(next),
        ..crate::planned(now)
    }
}

/// A number drawn uniformly from `[0, 1)` (jitter), from the system's randomness; a half
/// when none can be had.
pub(crate) fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests;
