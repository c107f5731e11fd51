//! The paging engine: an incident that opens (or becomes SEV1) starts its routed escalation
//! policy; each step is a durable delivery of kind `escalation.step`, due at its time. When
//! one comes due, the step is resolved then (who is on call, a team's members), its pages are
//! inserted as deliveries keyed per incident, step, repeat and recipient (so a step run twice,
//! by a retry, another replica or a restart, pages nobody twice), and the next step is
//! inserted due at its time. Acknowledging, resolving or closing cancels what is pending.
//! A step due while the process was down runs when it is back, once.

use std::collections::HashMap;
use std::sync::Arc;

use firebreak_domain::Micros;
use firebreak_storage::DeliveryRecord;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Notification;
use crate::escalation::{EscalationPolicy, Reachable, Recipient, Roster, next_step, step_pages};

/// The kind of a step's delivery, and of the pages it makes.
pub(crate) const STEP: &str = "escalation.step";
pub(crate) const PAGE: &str = "escalation.page";

/// Who is on call in a schedule at an instant (schedules are configuration, resolved by one
/// pure function elsewhere); `None` for an unknown schedule.
pub trait OnCall: Send + Sync {
    fn on_call(&self, schedule: &str, at: Micros) -> Option<Vec<String>>;
}

/// A step waiting to run: what its delivery's payload holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Step {
    pub policy: String,
    /// 0-based.
    pub step: usize,
    pub repeat: u32,
    /// The event that started the escalation: every step and page of it is keyed by it.
    pub root: String,
    /// Whether an earlier step reached anybody (the fallback pages only when none did).
    pub reached: bool,
    /// The incident as pages describe it.
    pub incident: serde_json::Value,
    /// When the step is due (microseconds since the epoch): the time it resolves targets
    /// at and counts the next step's delay from, however late or often it is tried.
    #[serde(default)]
    pub at: i64,
}

/// The contact method a page delivery reaches its person through (`None` for a page to a
/// channel, or any other delivery).
pub(crate) fn person_of(d: &DeliveryRecord) -> Option<firebreak_domain::people::ContactMethod> {
    if ![
        PAGE,
        crate::subscriptions::STATUS_UPDATE,
        crate::reminders::REMINDER_MESSAGE,
    ]
    .contains(&d.kind.as_str())
    {
        return None;
    }
    serde_json::from_value(d.payload.get("recipient")?.get("method")?.clone()).ok()
}

/// The person a page delivery is for (`None` for any other delivery).
pub(crate) fn user_of(d: &DeliveryRecord) -> Option<String> {
    if d.kind != PAGE {
        return None;
    }
    Some(
        d.payload
            .get("recipient")?
            .get("user")?
            .as_str()?
            .to_owned(),
    )
}

/// The directory and schedules as one step sees them, read once per step.
struct Snapshot {
    people: HashMap<String, Reachable>,
    teams: HashMap<String, Vec<String>>,
    schedules: Arc<crate::schedules::Schedules>,
}

impl Roster for Snapshot {
    fn on_call(&self, schedule: &str, at: Micros) -> Option<Vec<String>> {
        self.schedules.on_call(schedule, at)
    }
    fn members(&self, team: &str) -> Option<Vec<String>> {
        self.teams.get(team).cloned()
    }
    fn person(&self, user: &str) -> Option<Reachable> {
        self.people.get(user).cloned()
    }
}

/// Why a step could not run now (it is tried again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error("reading the directory failed: {0}")]
    Directory(String),
    #[error("storing the step's pages failed: {0}")]
    Store(#[from] firebreak_storage::Error),
    /// The payload is not a step, or names a policy the configuration no longer has.
    #[error("{0}")]
    Invalid(String),
}

impl StepError {
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, Self::Invalid(_))
    }
}

impl Notification {
    /// The first step of `policy` for `incident_id`, started by event `root`, due now.
    pub(crate) fn first_step(
        &self,
        policy: &str,
        root: &str,
        incident_id: &str,
        incident: serde_json::Value,
        now: Micros,
    ) -> DeliveryRecord {
        let step = Step {
            policy: policy.to_owned(),
            step: 0,
            repeat: 0,
            root: root.to_owned(),
            reached: false,
            incident,
            at: now.unix_micros(),
        };
        self.step_delivery(&step, incident_id, now, now)
    }

    pub(crate) fn step_delivery(
        &self,
        step: &Step,
        incident_id: &str,
        due: Micros,
        now: Micros,
    ) -> DeliveryRecord {
        DeliveryRecord {
            event_id: format!("{}#{}.{}", step.root, step.repeat, step.step + 1),
            channel: format!("policy:{}", step.policy),
            incident_id: incident_id.to_owned(),
            kind: STEP.to_owned(),
            payload: serde_json::to_value(Step {
                at: due.unix_micros(),
                ..step.clone()
            })
            .unwrap_or_default(),
            next_attempt_at: due,
            escalation_step: step.step as u32 + 1,
            ..crate::planned(now)
        }
    }

    /// Runs a due step: decides its pages and the next step from a snapshot of the
    /// directory, then stores them (inserting nothing already there).
    pub(crate) async fn run_step(&self, d: &DeliveryRecord) -> Result<u32, StepError> {
        let step: Step = serde_json::from_value(d.payload.clone())
            .map_err(|e| StepError::Invalid(format!("not an escalation step: {e}")))?;
        let policy = self
            .policies
            .iter()
            .find(|p| p.name == step.policy)
            .ok_or_else(|| StepError::Invalid(format!("no escalation policy {:?}", step.policy)))?;
        let roster = self.snapshot().await?;
        let now = self.clock.now();
        let due = Micros::from_unix_micros(step.at);
        let deliveries = decide_step(policy, &step, &d.incident_id, due, &roster)
            .into_iter()
            .map(|planned| match planned {
                Planned::Page {
                    key,
                    to,
                    at,
                    step: n,
                    repeat,
                } => self.page_delivery(&step, &d.incident_id, key, to, at, n, repeat, now),
                Planned::Next(next) => self.step_delivery(&next.0, &d.incident_id, next.1, now),
            })
            .collect::<Vec<_>>();
        Ok(self.store.insert_deliveries(&deliveries).await?)
    }

    #[allow(clippy::too_many_arguments)]
    fn page_delivery(
        &self,
        step: &Step,
        incident_id: &str,
        key: String,
        to: Recipient,
        at: Micros,
        n: u32,
        repeat: u32,
        now: Micros,
    ) -> DeliveryRecord {
        let (channel, recipient, destination) = match &to {
            Recipient::Channel(c) => (c.clone(), json!(null), String::new()),
            Recipient::Person { name, method } => (
                format!("user:{name}/{}", method.name),
                json!({ "user": name, "method": method }),
                crate::delivery::destination(method),
            ),
        };
        let event_id = format!("{}:{key}", step.root);
        DeliveryRecord {
            payload: json!({
                "event_id": event_id, "kind": PAGE, "actor": format!("escalation:{}", step.policy),
                "policy": step.policy, "step": n, "repeat": repeat,
                "recipient": recipient, "incident": step.incident,
            }),
            event_id,
            channel,
            incident_id: incident_id.to_owned(),
            kind: PAGE.to_owned(),
            next_attempt_at: at,
            escalation_step: n.max(1),
            destination,
            ..crate::planned(now)
        }
    }

    /// The directory and schedules as they stand now, for planning.
    pub(crate) async fn roster(&self) -> Result<impl Roster + use<>, StepError> {
        self.snapshot().await
    }

    /// The directory's people and teams, read now.
    async fn snapshot(&self) -> Result<Snapshot, StepError> {
        let Some(directory) = &self.directory else {
            return Ok(Snapshot {
                people: HashMap::new(),
                teams: HashMap::new(),
                schedules: self.schedules.now().await,
            });
        };
        let store = &directory.store;
        let users = store
            .users()
            .await
            .map_err(|e| StepError::Directory(e.to_string()))?;
        let teams = store
            .teams()
            .await
            .map_err(|e| StepError::Directory(e.to_string()))?;
        Ok(Snapshot {
            people: users
                .into_iter()
                .map(|u| {
                    (
                        u.name,
                        Reachable {
                            contact_methods: u.contact_methods,
                            notification_rules: u.notification_rules,
                        },
                    )
                })
                .collect(),
            teams: teams.into_iter().map(|t| (t.name, t.members)).collect(),
            schedules: self.schedules.now().await,
        })
    }
}

/// What running a step makes: pages, and the step after it.
#[derive(Debug, Clone, PartialEq)]
enum Planned {
    Page {
        key: String,
        to: Recipient,
        at: Micros,
        step: u32,
        repeat: u32,
    },
    Next((Step, Micros)),
}

/// The pages of `step` run at `at` and the step after it: the pure decision [`run_step`]
/// applies. After the last step of the last repeat, when no step reached anybody, the
/// fallback is paged.
fn decide_step(
    policy: &EscalationPolicy,
    step: &Step,
    incident_id: &str,
    at: Micros,
    roster: &dyn Roster,
) -> Vec<Planned> {
    let mut pages = step_pages(policy, incident_id, step.step, step.repeat, at, roster);
    let reached = step.reached || !pages.is_empty();
    let next = next_step(policy, step.step, step.repeat, at, !pages.is_empty());
    if next.is_none()
        && !reached
        && let Some(f) = &policy.fallback
    {
        pages =
            crate::escalation::pages_for(std::slice::from_ref(f), incident_id, 0, 0, at, roster);
    }
    let mut out: Vec<Planned> = pages
        .into_iter()
        .map(|p| Planned::Page {
            key: p.key(incident_id),
            to: p.to,
            at: p.at,
            step: p.step,
            repeat: p.repeat,
        })
        .collect();
    if let Some((n, repeat, due)) = next {
        out.push(Planned::Next((
            Step {
                step: n,
                repeat,
                reached,
                ..step.clone()
            },
            due,
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_domain::people::{ContactKind, ContactMethod};

    struct People;
    impl Roster for People {
        fn on_call(&self, _: &str, _: Micros) -> Option<Vec<String>> {
            Some(Vec::new())
        }
        fn members(&self, _: &str) -> Option<Vec<String>> {
            None
        }
        fn person(&self, user: &str) -> Option<Reachable> {
            Some(Reachable {
                contact_methods: vec![ContactMethod {
                    name: "work".into(),
                    kind: ContactKind::Email,
                    address: format!("{user}@example.com"),
                }],
                notification_rules: Vec::new(),
            })
        }
    }

    fn step(n: usize, repeat: u32, reached: bool) -> Step {
        Step {
            policy: "p".into(),
            step: n,
            repeat,
            root: "ev1".into(),
            reached,
            incident: json!({}),
            at: 0,
        }
    }

    #[test]
    fn a_step_pages_then_schedules_the_next_and_the_last_one_pages_the_fallback_if_nobody_was_reached()
     {
        let policy: EscalationPolicy = serde_yaml::from_str(
            "name: p\nfallback: { user: boss }\nsteps:\n  - { targets: [{ schedule: empty }] }\n  - { after_seconds: 300, targets: [{ user: amy }] }\n",
        )
        .unwrap();
        let at = Micros::from_unix_micros(1_000_000);
        // Step 1 reaches nobody: no page, and step 2 at once.
        let first = decide_step(&policy, &step(0, 0, false), "i1", at, &People);
        assert_eq!(first, [Planned::Next((step(1, 0, false), at))]);
        // Step 2 pages amy; no step follows, and amy was reached: no fallback.
        let second = decide_step(&policy, &step(1, 0, false), "i1", at, &People);
        assert_eq!(second.len(), 1);
        assert!(
            matches!(&second[0], Planned::Page { key, step: 2, .. } if key == "page:i1:2:0:user:amy:work")
        );
        // Had amy been nobody either, the fallback is paged (step 0).
        let nobody: EscalationPolicy = serde_yaml::from_str(
            "name: p\nfallback: { user: boss }\nsteps:\n  - { targets: [{ schedule: empty }] }\n",
        )
        .unwrap();
        let last = decide_step(&nobody, &step(0, 0, false), "i1", at, &People);
        assert!(
            matches!(&last[..], [Planned::Page { key, step: 0, .. }] if key == "page:i1:0:0:user:boss:work"),
            "{last:?}"
        );
        // Not when an earlier step reached someone.
        assert_eq!(
            decide_step(&nobody, &step(0, 0, true), "i1", at, &People),
            []
        );
    }
}
