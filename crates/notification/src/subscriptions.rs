//! Status updates to stakeholders: who is subscribed to an incident's updates (per incident,
//! stored; and by rule, from configuration), and the deliveries an update makes: one per
//! (update, subscriber), however many ways the subscriber is subscribed. A channel gets the
//! update as a broadcast; a person gets it through the first of their contact methods a
//! channel reaches. Both go through the delivery machinery (durable, retried, keyed by the
//! event's id and the channel, so a redelivered event sends nothing twice).

use std::collections::BTreeSet;

use firebreak_domain::Micros;
use firebreak_domain::access::parse_name;
use firebreak_proto::v1;
use firebreak_storage::{DeliveryRecord, SubscriptionRecord};
use serde::Deserialize;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::routing::RouteMatch;
use crate::{Error, Notification};

/// The delivery kind of a status update (the wire change `status_updated`).
pub(crate) const STATUS_UPDATE: &str = "incident.status_updated";
/// The most rules, and people plus channels of one rule.
const MAX_RULES: usize = 1_000;
const MAX_SUBSCRIBERS: usize = 1_000;
/// The most people and channels subscribed to one incident by hand (rules add theirs at
/// send time): what bounds the table per incident and each update's fan-out read.
const MAX_PER_INCIDENT: usize = 200;

/// Whether `subscriber` may join an incident subscribed to by `existing`: one already there
/// always may (subscribing twice changes nothing), a new one only below the cap.
fn room_for(existing: &[SubscriptionRecord], subscriber: &str) -> Result<(), Error> {
    if existing.len() >= MAX_PER_INCIDENT && existing.iter().all(|e| e.subscriber != subscriber) {
        return Err(Error::Invalid(format!(
            "subscriber: an incident has at most {MAX_PER_INCIDENT} subscribers (unsubscribe one first)"
        )));
    }
    Ok(())
}

/// A configured subscription (`subscriptions:`): the people and channels that receive the
/// status updates of every incident the match takes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRule {
    /// Every condition given must hold (as a route's `match`); none given: every incident.
    #[serde(default, rename = "match")]
    pub when: RouteMatch,
    /// One of these services (the incident's `service` label, else its source).
    #[serde(default)]
    pub services: Vec<String>,
    /// Users of the directory.
    #[serde(default)]
    pub people: Vec<String>,
    /// Configured channels.
    #[serde(default)]
    pub channels: Vec<String>,
}

impl SubscriptionRule {
    fn matches(&self, incident: &v1::Incident) -> bool {
        let service = incident.labels.get("service").unwrap_or(&incident.source);
        self.when.matches(incident) && (self.services.is_empty() || self.services.contains(service))
    }
}

/// Who receives a status update: a person or a channel, written `person:NAME`,
/// `channel:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Subscriber {
    Person(String),
    Channel(String),
}

impl Subscriber {
    /// Parses `person:NAME` or `channel:NAME` (names by the directory's rule), naming the
    /// field `subscriber`.
    pub(crate) fn parse(given: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Invalid(format!(
                "subscriber: {:?} is not person:NAME or channel:NAME",
                crate::clip(given, 80)
            ))
        };
        let (kind, name) = given.trim().split_once(':').ok_or_else(bad)?;
        let name = parse_name("subscriber", name)?;
        match kind {
            "person" => Ok(Self::Person(name)),
            "channel" => Ok(Self::Channel(name)),
            _ => Err(bad()),
        }
    }

    /// A subscriber as a request names it: a kind (required; unspecified or unknown is
    /// refused naming `subscriber_kind`) and a name (naming `subscriber_name`).
    pub(crate) fn from_wire(kind: i32, name: &str) -> Result<Self, Error> {
        let name = parse_name("subscriber_name", name.trim())?;
        match firebreak_proto::enum_field::<v1::SubscriberKind>("subscriber_kind", kind)
            .map_err(|e| Error::Invalid(e.to_string()))?
        {
            Some(v1::SubscriberKind::Person) => Ok(Self::Person(name)),
            Some(v1::SubscriberKind::Channel) => Ok(Self::Channel(name)),
            None | Some(v1::SubscriberKind::Unspecified) => Err(Error::Invalid(
                "subscriber_kind: person or channel is required".into(),
            )),
        }
    }

    /// The subscriber's kind and name on the wire.
    pub(crate) fn wire(&self) -> (v1::SubscriberKind, &str) {
        match self {
            Self::Person(p) => (v1::SubscriberKind::Person, p),
            Self::Channel(c) => (v1::SubscriberKind::Channel, c),
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Self::Person(p) => format!("person:{p}"),
            Self::Channel(c) => format!("channel:{c}"),
        }
    }
}

/// Checks rules against the configured channels: names parse, channels exist, and the
/// counts are bounded. People are checked against the directory when an update is sent (a
/// person deleted since is skipped, with a warning).
pub(crate) fn validate(rules: &[SubscriptionRule], channels: &[String]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!("subscriptions: at most {MAX_RULES} rules"));
    }
    for (n, rule) in rules.iter().enumerate() {
        if rule.people.len() + rule.channels.len() > MAX_SUBSCRIBERS {
            return Err(format!(
                "subscriptions[{n}]: at most {MAX_SUBSCRIBERS} people and channels"
            ));
        }
        if rule.people.is_empty() && rule.channels.is_empty() {
            return Err(format!(
                "subscriptions[{n}]: names no people and no channels"
            ));
        }
        for p in &rule.people {
            parse_name("person", p).map_err(|e| format!("subscriptions[{n}].people: {e}"))?;
        }
        for c in &rule.channels {
            if !channels.contains(c) {
                return Err(format!(
                    "subscriptions[{n}].channels: no channel named {c:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Everyone a status update of `incident` goes to: its own subscribers and those of every
/// rule that matches it, each once, in order (channels, then people, by name).
pub(crate) fn recipients(
    rules: &[SubscriptionRule],
    subscribed: &[SubscriptionRecord],
    incident: &v1::Incident,
) -> Vec<Subscriber> {
    let mut out = BTreeSet::new();
    for s in subscribed {
        // Stored by `Subscribe`, which parsed it; one that no longer parses is skipped.
        if let Ok(s) = Subscriber::parse(&s.subscriber) {
            out.insert(s);
        }
    }
    for rule in rules.iter().filter(|r| r.matches(incident)) {
        out.extend(rule.people.iter().cloned().map(Subscriber::Person));
        out.extend(rule.channels.iter().cloned().map(Subscriber::Channel));
    }
    let (channels, people): (Vec<_>, Vec<_>) = out
        .into_iter()
        .partition(|s| matches!(s, Subscriber::Channel(_)));
    channels.into_iter().chain(people).collect()
}

impl Notification {
    /// The deliveries a status update (`event`, announcing `change`) makes: one per
    /// recipient, keyed by the event's id and the recipient's channel (`NAME`, or
    /// `user:NAME/METHOD` for a person).
    pub(crate) async fn status_update_deliveries(
        &self,
        event: &v1::Event,
        change: &v1::IncidentChanged,
    ) -> Result<Vec<DeliveryRecord>, Error> {
        let Some(inc) = &change.incident else {
            return Ok(Vec::new());
        };
        let subscribed = self.store.subscriptions(&inc.id).await?;
        let now = self.clock.now();
        let payload = json!({
            "event_id": event.id,
            "kind": STATUS_UPDATE,
            "actor": change.actor,
            "incident": crate::incident_json(inc),
        });
        let mut out = Vec::new();
        for to in recipients(&self.subscription_rules, &subscribed, inc) {
            match to {
                Subscriber::Channel(c) => {
                    out.push(delivery(event, &c, &inc.id, payload.clone(), "", now));
                }
                Subscriber::Person(p) => {
                    let Some(directory) = &self.directory else {
                        continue;
                    };
                    let Some(user) = directory.store.user(&p).await? else {
                        tracing::warn!(person = %p, incident = %inc.id, "a subscriber is not in the directory; skipped");
                        continue;
                    };
                    let Some(method) = user
                        .contact_methods
                        .iter()
                        .find(|m| crate::channels::channel_for(&self.channels, m.kind).is_some())
                    else {
                        tracing::warn!(person = %p, incident = %inc.id, "no channel reaches a subscriber; skipped");
                        continue;
                    };
                    let mut payload = payload.clone();
                    payload["recipient"] = json!({ "user": p, "method": method });
                    out.push(delivery(
                        event,
                        &format!("user:{p}/{}", method.name),
                        &inc.id,
                        payload,
                        &crate::delivery::destination(method),
                        now,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Checks a subscriber: a person must be in the directory, a channel configured.
    async fn known_subscriber(&self, s: &Subscriber) -> Result<(), Error> {
        match s {
            Subscriber::Channel(c) => {
                if !self.channels.iter().any(|ch| &ch.name == c) {
                    return Err(Error::Invalid(format!(
                        "subscriber_name: no channel named {c:?}"
                    )));
                }
            }
            Subscriber::Person(p) => {
                let known = match &self.directory {
                    Some(d) => d.store.user(p).await?.is_some(),
                    None => false,
                };
                if !known {
                    return Err(Error::Invalid(format!(
                        "subscriber_name: no person named {p:?} in the directory"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn subscribe_call(
        &self,
        req: Request<v1::SubscribeRequest>,
    ) -> Result<Response<v1::SubscribeResponse>, Status> {
        let by = crate::caller(&req);
        let r = req.into_inner();
        let incident_id = incident_arg(&r.incident_id)?;
        let s = Subscriber::from_wire(r.subscriber_kind, &r.subscriber_name)?;
        self.known_subscriber(&s).await?;
        // Checked before the write, so two replicas racing may pass the cap by one each.
        let existing = self
            .store
            .subscriptions(&incident_id)
            .await
            .map_err(Error::from)?;
        room_for(&existing, &s.text())?;
        let created = self
            .store
            .subscribe(&SubscriptionRecord {
                incident_id,
                subscriber: s.text(),
                created_at: self.clock.now(),
                created_by: by,
            })
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::SubscribeResponse { created }))
    }

    pub(crate) async fn unsubscribe_call(
        &self,
        req: Request<v1::UnsubscribeRequest>,
    ) -> Result<Response<v1::UnsubscribeResponse>, Status> {
        let r = req.into_inner();
        let incident_id = incident_arg(&r.incident_id)?;
        let s = Subscriber::from_wire(r.subscriber_kind, &r.subscriber_name)?;
        if !self
            .store
            .unsubscribe(&incident_id, &s.text())
            .await
            .map_err(Error::from)?
        {
            return Err(
                Error::NotFound(format!("subscription of {} to {incident_id}", s.text())).into(),
            );
        }
        Ok(Response::new(v1::UnsubscribeResponse {}))
    }

    pub(crate) async fn list_subscribers_call(
        &self,
        req: Request<v1::ListSubscribersRequest>,
    ) -> Result<Response<v1::ListSubscribersResponse>, Status> {
        let r = req.into_inner();
        let incident_id = incident_arg(&r.incident_id)?;
        let limit = firebreak_proto::page::list_size(r.page_size);
        let after = firebreak_proto::page::cursor(SUBSCRIBERS, &r.page_token)
            .and_then(|c| {
                c.map(|c| firebreak_proto::page::pair(&c, |a| a.parse::<i64>().ok()))
                    .transpose()
            })
            .map_err(|_| Error::InvalidPageToken)?
            .map(|(at, s)| (Micros::from_unix_micros(at), s));
        // One more than asked: whether another page follows.
        let mut rows = self
            .store
            .subscriptions_page(
                &incident_id,
                after.as_ref().map(|(at, s)| (*at, s.as_str())),
                limit + 1,
            )
            .await
            .map_err(Error::from)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = firebreak_proto::page::next(
            SUBSCRIBERS,
            rows.last()
                .map(|s| format!("{}.{}", s.created_at.unix_micros(), s.subscriber)),
            more,
        );
        let mut subscriptions = Vec::with_capacity(rows.len());
        for s in rows {
            // Stored by this service as `person:NAME` or `channel:NAME`: anything else is a
            // fault of the store, never shown as some default kind.
            let subscriber = Subscriber::parse(&s.subscriber).map_err(|_| {
                Error::Internal(format!(
                    "stored subscriber {:?} does not read",
                    s.subscriber
                ))
            })?;
            let (kind, name) = subscriber.wire();
            subscriptions.push(v1::Subscription {
                subscriber_kind: kind as i32,
                subscriber_name: name.to_owned(),
                created_at: Some(firebreak_proto::timestamp(s.created_at)),
                created_by: s.created_by,
            });
        }
        Ok(Response::new(v1::ListSubscribersResponse {
            subscriptions,
            next_page_token,
        }))
    }
}

/// The page tokens' list name (`firebreak_proto::page`).
const SUBSCRIBERS: &str = "subscribers";

/// An incident id from a request, naming the field `incident_id` when it is not one.
fn incident_arg(given: &str) -> Result<String, Error> {
    firebreak_domain::IncidentId::parse(given)
        .map(|id| id.to_string())
        .map_err(|_| {
            Error::Invalid(format!(
                "incident_id: {:?} is not an incident id",
                crate::clip(given, 80)
            ))
        })
}

fn delivery(
    event: &v1::Event,
    channel: &str,
    incident_id: &str,
    payload: serde_json::Value,
    destination: &str,
    now: Micros,
) -> DeliveryRecord {
    DeliveryRecord {
        event_id: event.id.clone(),
        channel: channel.to_owned(),
        incident_id: incident_id.to_owned(),
        kind: STATUS_UPDATE.to_owned(),
        payload,
        destination: destination.to_owned(),
        ..crate::planned(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(category: &str, severity: i32, service: &str) -> v1::Incident {
        v1::Incident {
            id: "inc-1".into(),
            category: category.into(),
            severity,
            labels: [("service".to_owned(), service.to_owned())].into(),
            source: "prometheus".into(),
            ..Default::default()
        }
    }

    fn sub(s: &str) -> SubscriptionRecord {
        SubscriptionRecord {
            incident_id: "inc-1".into(),
            subscriber: s.into(),
            created_at: Micros::from_unix_micros(1),
            created_by: "user:amy".into(),
        }
    }

    #[test]
    fn an_incident_takes_at_most_its_cap_of_subscribers_but_a_repeat_always() {
        let record = |n: usize| SubscriptionRecord {
            incident_id: "i".into(),
            subscriber: format!("person:p{n}"),
            created_at: firebreak_domain::Micros::from_unix_micros(0),
            created_by: "user:admin".into(),
        };
        let almost: Vec<_> = (0..MAX_PER_INCIDENT - 1).map(record).collect();
        assert!(room_for(&almost, "person:new").is_ok());
        let full: Vec<_> = (0..MAX_PER_INCIDENT).map(record).collect();
        let err = room_for(&full, "person:new").unwrap_err();
        assert!(err.to_string().starts_with("subscriber:"), "{err}");
        assert!(
            room_for(&full, "person:p7").is_ok(),
            "a repeat changes nothing"
        );
    }

    #[test]
    fn subscribers_parse_strictly_naming_the_field() {
        assert_eq!(
            Subscriber::parse("person:amy").unwrap(),
            Subscriber::Person("amy".into())
        );
        assert_eq!(
            Subscriber::parse("channel:status-page").unwrap(),
            Subscriber::Channel("status-page".into())
        );
        let long = format!("person:{}", "a".repeat(65));
        for bad in [
            "amy",
            "team:sre",
            "person:",
            "person:Amy",
            "channel:a b",
            &long,
            "person:a\0",
        ] {
            let err = Subscriber::parse(bad).unwrap_err().to_string();
            assert!(err.contains("subscriber"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn recipients_join_the_incidents_own_and_the_matching_rules_each_once() {
        let rules: Vec<SubscriptionRule> = serde_yaml::from_str(
            "
- { match: { max_severity: 2 }, people: [amy, bob], channels: [execs] }
- { services: [checkout], people: [amy], channels: [status] }
- { match: { categories: [data-breach] }, people: [legal] }
",
        )
        .unwrap();
        let subscribed = [sub("person:amy"), sub("channel:status"), sub("person:carl")];
        let got = |inc: &v1::Incident| -> Vec<String> {
            recipients(&rules, &subscribed, inc)
                .iter()
                .map(Subscriber::text)
                .collect()
        };
        assert_eq!(
            got(&incident("service-outage", 1, "checkout")),
            [
                "channel:execs",
                "channel:status",
                "person:amy",
                "person:bob",
                "person:carl"
            ]
        );
        assert_eq!(
            got(&incident("service-outage", 3, "search")),
            ["channel:status", "person:amy", "person:carl"]
        );
        assert_eq!(
            got(&incident("data-breach", 4, "search")),
            [
                "channel:status",
                "person:amy",
                "person:carl",
                "person:legal"
            ]
        );
        // The service is the source when no label names one.
        let mut by_source = incident("service-outage", 4, "x");
        by_source.labels.clear();
        by_source.source = "checkout".into();
        assert!(got(&by_source).contains(&"channel:status".to_owned()));
    }

    #[test]
    fn rules_name_known_channels_and_someone() {
        let channels = ["status".to_owned()];
        let rule = |yaml: &str| -> Vec<SubscriptionRule> { serde_yaml::from_str(yaml).unwrap() };
        assert!(validate(&rule("[{ people: [amy], channels: [status] }]"), &channels).is_ok());
        for (yaml, names) in [
            ("[{ channels: [nope] }]", "subscriptions[0].channels"),
            ("[{ people: [Amy] }]", "subscriptions[0].people"),
            ("[{ services: [checkout] }]", "no people and no channels"),
        ] {
            let err = validate(&rule(yaml), &channels).unwrap_err();
            assert!(err.contains(names), "{yaml}: {err}");
        }
        assert!(
            serde_yaml::from_str::<Vec<SubscriptionRule>>("[{ persons: [amy] }]").is_err(),
            "unknown keys are refused"
        );
    }
}
