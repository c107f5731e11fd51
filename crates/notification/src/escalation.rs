//! Escalation policies, and who is paged when: ordered steps, each paging its targets
//! (users, the people on call in a schedule, a team's members or one of them in turn,
//! channels) unless the incident has been acknowledged by then, repeated a set number of
//! times, with a fallback when nobody at all can be reached. [`plan`] is the whole answer as
//! a pure function of the policy, the start and a [`Roster`]; paging and `firebreak
//! escalation test` both use it.

use std::time::Duration;

use firebreak_domain::Micros;
use firebreak_domain::people::{ContactMethod, NotificationRule, rules_in_force};
use serde::Deserialize;

use crate::channels::Channel;

/// A named policy; routes choose it when an incident opens, and runbooks page it with
/// `notify::send("POLICY", message)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    pub name: String,
    /// In order; the first step's `after_seconds` must be 0.
    pub steps: Vec<EscalationStep>,
    /// How many times the steps run again when nobody acknowledges (0-9).
    #[serde(default)]
    pub repeat: u32,
    /// Seconds after the last step before a repeat begins (at least 60; default 300).
    #[serde(default = "default_repeat_after")]
    pub repeat_after_seconds: u64,
    /// Paged once, at once, when no step of the whole policy reaches anybody.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub fallback: Option<Target>,
}

fn default_repeat_after() -> u64 {
    300
}

/// One step: who is paged, and when.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Seconds after the first step (0 for the first; each later one at least 60 after the
    /// one before). A step runs only if nobody acknowledged by then; a step that reaches
    /// nobody is skipped at once, and the steps after it move earlier by the time it would
    /// have waited.
    #[serde(default)]
    pub after_seconds: u64,
    /// Channels paged at this step (the same as `targets: [{channel: NAME}]`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// `- user: NAME`, `- schedule: NAME`, `- team: NAME`, `- team_round_robin: NAME`,
    /// `- channel: NAME`.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub targets: Vec<Target>,
}

/// Who a step pages.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A user of the directory, through their contact methods and rules.
    User(String),
    /// Whoever is on call in the schedule when the step runs.
    Schedule(String),
    /// Every member of the team.
    Team(String),
    /// One member of the team: a different one for each incident and each repeat.
    TeamRoundRobin(String),
    /// A channel (a Slack channel, a webhook).
    Channel(String),
}

/// The most steps of a policy, targets of a step, and repeats.
const MAX_STEPS: usize = 20;
const MAX_TARGETS: usize = 50;
const MAX_REPEAT: u32 = 9;
/// The least time between steps, and before a repeat.
const MIN_GAP: u64 = 60;

/// Checks policies against each other and the channels.
pub(crate) fn validate(policies: &[EscalationPolicy], channels: &[Channel]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for p in policies {
        let name = &p.name;
        if name.trim().is_empty() {
            return Err("an escalation policy needs a name".into());
        }
        if !names.insert(name.as_str()) || channels.iter().any(|c| &c.name == name) {
            return Err(format!(
                "escalation policy {name:?}: the name is already a channel or another policy"
            ));
        }
        if p.steps.is_empty() {
            return Err(format!("escalation policy {name:?} has no steps"));
        }
        if p.steps.len() > MAX_STEPS {
            return Err(format!(
                "escalation policy {name:?}: at most {MAX_STEPS} steps"
            ));
        }
        if p.repeat > MAX_REPEAT {
            return Err(format!(
                "escalation policy {name:?}: repeat is 0 to {MAX_REPEAT}"
            ));
        }
        if p.repeat_after_seconds < MIN_GAP {
            return Err(format!(
                "escalation policy {name:?}: repeat_after_seconds is at least {MIN_GAP}"
            ));
        }
        if p.steps[0].after_seconds != 0 {
            return Err(format!(
                "escalation policy {name:?}: the first step pages at once (after_seconds: 0)"
            ));
        }
        let check_target = |t: &Target, at: &str| -> Result<(), String> {
            match t {
                Target::Channel(c) if !channels.iter().any(|ch| &ch.name == c) => Err(format!(
                    "escalation policy {name:?}: {at} names the unknown channel {c:?}"
                )),
                Target::User(n)
                | Target::Schedule(n)
                | Target::Team(n)
                | Target::TeamRoundRobin(n)
                    if firebreak_domain::access::parse_name("target", n).is_err() =>
                {
                    Err(format!(
                        "escalation policy {name:?}: {at} names {n:?}, which is not a name"
                    ))
                }
                _ => Ok(()),
            }
        };
        let mut last = 0;
        for (i, step) in p.steps.iter().enumerate() {
            let at = format!("step {}", i + 1);
            if i > 0 && step.after_seconds < last + MIN_GAP {
                return Err(format!(
                    "escalation policy {name:?}: {at} must come at least {MIN_GAP} seconds after the one before it"
                ));
            }
            last = step.after_seconds;
            if step.channels.is_empty() && step.targets.is_empty() {
                return Err(format!("escalation policy {name:?}: {at} pages nobody"));
            }
            if step.channels.len() + step.targets.len() > MAX_TARGETS {
                return Err(format!(
                    "escalation policy {name:?}: {at} has more than {MAX_TARGETS} targets"
                ));
            }
            for t in step.all_targets() {
                check_target(&t, &at)?;
            }
        }
        if let Some(f) = &p.fallback {
            check_target(f, "fallback")?;
        }
    }
    Ok(())
}

impl EscalationStep {
    /// The step's targets, its channels among them.
    pub fn all_targets(&self) -> Vec<Target> {
        self.channels
            .iter()
            .cloned()
            .map(Target::Channel)
            .chain(self.targets.iter().cloned())
            .collect()
    }
}

/// A person as paging needs them: how, and when.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reachable {
    pub contact_methods: Vec<ContactMethod>,
    pub notification_rules: Vec<NotificationRule>,
}

/// What paging asks about people: the directory's users and teams, and schedules.
pub trait Roster {
    /// Who is on call in `schedule` at `at`; `None` when there is no such schedule.
    fn on_call(&self, schedule: &str, at: Micros) -> Option<Vec<String>>;
    /// A team's members, sorted; `None` when there is no such team.
    fn members(&self, team: &str) -> Option<Vec<String>>;
    /// How a user is reached; `None` when there is no such user.
    fn person(&self, user: &str) -> Option<Reachable>;
}

/// One page: a person through one contact method, or a channel, at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 1-based; 0 for the fallback.
    pub step: u32,
    pub repeat: u32,
    pub at: Micros,
    pub to: Recipient,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Person { name: String, method: ContactMethod },
    Channel(String),
}

impl Page {
    /// The key that makes a page happen once: incident, step, repeat, person and contact
    /// method (or channel), whatever retries, replicas or restarts do.
    pub fn key(&self, incident_id: &str) -> String {
        match &self.to {
            Recipient::Person { name, method } => format!(
                "page:{incident_id}:{}:{}:user:{name}:{}",
                self.step, self.repeat, method.name
            ),
            Recipient::Channel(c) => {
                format!(
                    "page:{incident_id}:{}:{}:channel:{c}",
                    self.step, self.repeat
                )
            }
        }
    }
}

/// The pages step `step` (0-based) of repeat `repeat` makes when it runs at `at`: each
/// person its targets resolve to (once, however many targets name them) through each of
/// their rules, and each channel. Targets naming nobody known resolve to nobody.
pub fn step_pages(
    policy: &EscalationPolicy,
    incident_id: &str,
    step: usize,
    repeat: u32,
    at: Micros,
    roster: &dyn Roster,
) -> Vec<Page> {
    let Some(s) = policy.steps.get(step) else {
        return Vec::new();
    };
    pages_for(
        &s.all_targets(),
        incident_id,
        step as u32 + 1,
        repeat,
        at,
        roster,
    )
}

pub(crate) fn pages_for(
    targets: &[Target],
    incident_id: &str,
    step: u32,
    repeat: u32,
    at: Micros,
    roster: &dyn Roster,
) -> Vec<Page> {
    let mut people: Vec<String> = Vec::new();
    let mut channels: Vec<String> = Vec::new();
    for t in targets {
        match t {
            Target::User(u) => people.push(u.clone()),
            Target::Schedule(s) => people.extend(roster.on_call(s, at).unwrap_or_default()),
            Target::Team(t) => people.extend(roster.members(t).unwrap_or_default()),
            Target::TeamRoundRobin(t) => {
                let members = roster.members(t).unwrap_or_default();
                if !members.is_empty() {
                    let turn =
                        (stable_hash(incident_id) + u64::from(repeat)) % members.len() as u64;
                    people.push(members[turn as usize].clone());
                }
            }
            Target::Channel(c) => channels.push(c.clone()),
        }
    }
    let mut seen = std::collections::HashSet::new();
    people.retain(|p| seen.insert(p.clone()));
    channels.dedup();
    let mut out = Vec::new();
    for name in people {
        let Some(r) = roster.person(&name) else {
            continue;
        };
        for rule in rules_in_force(&r.contact_methods, &r.notification_rules) {
            let Some(method) = r.contact_methods.iter().find(|m| m.name == rule.method) else {
                continue;
            };
            out.push(Page {
                step,
                repeat,
                at: at + Duration::from_secs(u64::from(rule.after_minutes) * 60),
                to: Recipient::Person {
                    name: name.clone(),
                    method: method.clone(),
                },
            });
        }
    }
    for c in channels {
        out.push(Page {
            step,
            repeat,
            at,
            to: Recipient::Channel(c),
        });
    }
    out
}

/// FNV-1a: the same on every replica and every release, so a round robin turn is too.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// When the step after (`step`, `repeat`), run at `at`, runs: the next step after its gap,
/// at once when this step reached nobody, the first step of the next repeat after
/// `repeat_after_seconds`; `None` after the last step of the last repeat.
pub fn next_step(
    policy: &EscalationPolicy,
    step: usize,
    repeat: u32,
    at: Micros,
    reached_anyone: bool,
) -> Option<(usize, u32, Micros)> {
    if step + 1 < policy.steps.len() {
        let gap = policy.steps[step + 1]
            .after_seconds
            .saturating_sub(policy.steps[step].after_seconds);
        let at = if reached_anyone {
            at + Duration::from_secs(gap)
        } else {
            at
        };
        return Some((step + 1, repeat, at));
    }
    (repeat < policy.repeat).then(|| {
        (
            0,
            repeat + 1,
            at + Duration::from_secs(policy.repeat_after_seconds),
        )
    })
}

/// Every page the policy makes for an incident opened at `start`, if nobody ever
/// acknowledges: each step at its time (resolved then), the repeats, and the fallback at
/// `start` when no step reaches anybody. What `firebreak escalation test` prints.
pub fn plan(
    policy: &EscalationPolicy,
    incident_id: &str,
    start: Micros,
    roster: &dyn Roster,
) -> Vec<Page> {
    let mut out = Vec::new();
    let mut cursor = Some((0, 0, start));
    while let Some((step, repeat, at)) = cursor {
        let pages = step_pages(policy, incident_id, step, repeat, at, roster);
        let reached = !pages.is_empty();
        out.extend(pages);
        cursor = next_step(policy, step, repeat, at, reached);
    }
    if out.is_empty()
        && let Some(f) = &policy.fallback
    {
        out = pages_for(std::slice::from_ref(f), incident_id, 0, 0, start, roster);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use firebreak_domain::people::ContactKind;

    use super::*;

    /// A roster from tables: schedules hand over at fixed times.
    #[derive(Default)]
    struct Fixed {
        /// schedule → (from, people) in time order.
        schedules: HashMap<&'static str, Vec<(i64, Vec<&'static str>)>>,
        teams: HashMap<&'static str, Vec<&'static str>>,
        people: HashMap<&'static str, Reachable>,
    }

    impl Roster for Fixed {
        fn on_call(&self, schedule: &str, at: Micros) -> Option<Vec<String>> {
            let shifts = self.schedules.get(schedule)?;
            Some(
                shifts
                    .iter()
                    .rev()
                    .find(|(from, _)| *from <= at.unix_micros())
                    .map(|(_, p)| p.iter().map(|s| (*s).to_owned()).collect())
                    .unwrap_or_default(),
            )
        }
        fn members(&self, team: &str) -> Option<Vec<String>> {
            self.teams
                .get(team)
                .map(|m| m.iter().map(|s| (*s).to_owned()).collect())
        }
        fn person(&self, user: &str) -> Option<Reachable> {
            self.people.get(user).cloned()
        }
    }

    fn email(name: &str) -> Reachable {
        Reachable {
            contact_methods: vec![ContactMethod {
                name: "work".into(),
                kind: ContactKind::Email,
                address: format!("{name}@example.com"),
            }],
            notification_rules: Vec::new(),
        }
    }

    const MIN: i64 = 60_000_000;

    fn at(minutes: i64) -> Micros {
        Micros::from_unix_micros(minutes * MIN)
    }

    /// (step, repeat, minute, who) of each page.
    fn summary(pages: &[Page]) -> Vec<(u32, u32, i64, String)> {
        pages
            .iter()
            .map(|p| {
                let who = match &p.to {
                    Recipient::Person { name, method } => format!("{name}/{}", method.name),
                    Recipient::Channel(c) => format!("#{c}"),
                };
                (p.step, p.repeat, p.at.unix_micros() / MIN, who)
            })
            .collect()
    }

    fn roster() -> Fixed {
        let mut r = Fixed::default();
        r.schedules
            .insert("primary", vec![(0, vec!["alice"]), (12 * MIN, vec!["bob"])]);
        r.schedules.insert("empty", vec![]);
        r.teams.insert("dba", vec!["carol", "dave", "erin"]);
        for p in ["alice", "bob", "carol", "dave", "erin"] {
            r.people.insert(p, email(p));
        }
        let mut phone = email("bob");
        phone.contact_methods.push(ContactMethod {
            name: "phone".into(),
            kind: ContactKind::Sms,
            address: "+14155550100".into(),
        });
        phone.notification_rules = vec![
            NotificationRule {
                after_minutes: 0,
                method: "work".into(),
            },
            NotificationRule {
                after_minutes: 3,
                method: "phone".into(),
            },
        ];
        r.people.insert("bob", phone);
        r
    }

    fn plan_of(yaml: &str) -> Vec<(u32, u32, i64, String)> {
        let p: EscalationPolicy = serde_yaml::from_str(yaml).unwrap();
        validate(std::slice::from_ref(&p), &[Channel::log()]).unwrap();
        summary(&plan(&p, "inc-1", at(0), &roster()))
    }

    fn row(step: u32, repeat: u32, minute: i64, who: &str) -> (u32, u32, i64, String) {
        (step, repeat, minute, who.to_owned())
    }

    #[test]
    fn each_step_pages_whoever_its_targets_are_when_it_runs_through_their_rules() {
        // The schedule hands over from alice to bob at minute 12: step 2 (minute 10) pages
        // alice, the repeat's step 2 (minute 10 + 10 + 5) pages bob, by email and 3
        // minutes later by SMS.
        assert_eq!(
            plan_of(
                "name: p
repeat: 1
repeat_after_seconds: 300
steps:
  - { channels: [log] }
  - { after_seconds: 600, targets: [{ schedule: primary }] }
"
            ),
            [
                row(1, 0, 0, "#log"),
                row(2, 0, 10, "alice/work"),
                row(1, 1, 15, "#log"),
                row(2, 1, 25, "bob/work"),
                row(2, 1, 28, "bob/phone"),
            ]
        );
    }

    #[test]
    fn a_step_reaching_nobody_is_skipped_at_once_and_later_steps_move_earlier() {
        // Step 1's schedule is empty and step 2 names someone unknown: both are skipped at
        // once, so step 3 runs at minute 0, not 20.
        assert_eq!(
            plan_of(
                "name: p
steps:
  - { targets: [{ schedule: empty }] }
  - { after_seconds: 600, targets: [{ user: nobody }, { team: no-such-team }] }
  - { after_seconds: 1200, targets: [{ team: dba }] }
  - { after_seconds: 1500, targets: [{ user: alice }] }
"
            ),
            [
                row(3, 0, 0, "carol/work"),
                row(3, 0, 0, "dave/work"),
                row(3, 0, 0, "erin/work"),
                row(4, 0, 5, "alice/work"),
            ]
        );
    }

    #[test]
    fn the_fallback_is_paged_at_once_only_when_nobody_at_all_is_reached() {
        assert_eq!(
            plan_of(
                "name: p
repeat: 2
fallback: { user: alice }
steps:
  - { targets: [{ schedule: empty }] }
"
            ),
            [row(0, 0, 0, "alice/work")]
        );
        assert_eq!(
            plan_of(
                "name: p
fallback: { user: bob }
steps:
  - { targets: [{ user: alice }] }
"
            ),
            [row(1, 0, 0, "alice/work")]
        );
    }

    #[test]
    fn a_person_named_twice_in_a_step_is_paged_once_and_round_robin_turns_per_repeat() {
        let pages = plan_of(
            "name: p
repeat: 2
steps:
  - { targets: [{ user: alice }, { schedule: primary }, { team_round_robin: dba }] }
",
        );
        let alice = pages
            .iter()
            .filter(|p| p.3 == "alice/work" && p.1 == 0)
            .count();
        assert_eq!(alice, 1, "{pages:?}");
        let turns: Vec<&str> = pages
            .iter()
            .filter(|p| ["carol/work", "dave/work", "erin/work"].contains(&p.3.as_str()))
            .map(|p| p.3.as_str())
            .collect();
        assert_eq!(turns.len(), 3, "{pages:?}");
        let distinct: std::collections::HashSet<_> = turns.iter().collect();
        assert_eq!(
            distinct.len(),
            3,
            "each repeat pages the next member: {turns:?}"
        );
        // The same incident always starts with the same member (every replica agrees).
        let p: EscalationPolicy = serde_yaml::from_str(
            "name: p
steps:
  - { targets: [{ team_round_robin: dba }] }
",
        )
        .unwrap();
        let first = |incident: &str| summary(&plan(&p, incident, at(0), &roster()))[0].3.clone();
        assert_eq!(first("inc-1"), first("inc-1"));
    }

    #[test]
    fn page_keys_are_one_per_incident_step_repeat_person_and_method() {
        let p: EscalationPolicy = serde_yaml::from_str(
            "name: p
repeat: 1
steps:
  - { targets: [{ user: bob }, { user: bob }], channels: [log] }
",
        )
        .unwrap();
        let pages = plan(&p, "inc-1", at(0), &roster());
        let keys: Vec<String> = pages.iter().map(|p| p.key("inc-1")).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert!(
            keys.contains(&"page:inc-1:1:1:user:bob:phone".to_owned()),
            "{keys:?}"
        );
    }

    fn policy(yaml: &str) -> Vec<EscalationPolicy> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn mistakes_in_policies_are_refused_with_the_reason() {
        let channels = [Channel::log()];
        let check = |yaml: &str| validate(&policy(yaml), &channels);
        assert_eq!(
            check(
                "- { name: p, steps: [{ channels: [log] }, { after_seconds: 60, channels: [log] }] }"
            ),
            Ok(())
        );
        assert_eq!(
            check("- { name: p, steps: [{ channels: [pager] }] }").unwrap_err(),
            "escalation policy \"p\": step 1 names the unknown channel \"pager\""
        );
        assert_eq!(
            check("- { name: log, steps: [{ channels: [log] }] }").unwrap_err(),
            "escalation policy \"log\": the name is already a channel or another policy"
        );
        assert_eq!(
            check("- { name: p, steps: [{ after_seconds: 5, channels: [log] }] }").unwrap_err(),
            "escalation policy \"p\": the first step pages at once (after_seconds: 0)"
        );
        assert_eq!(
            check(
                "- { name: p, steps: [{ channels: [log] }, { after_seconds: 0, channels: [log] }] }"
            )
            .unwrap_err(),
            "escalation policy \"p\": step 2 must come at least 60 seconds after the one before it"
        );
        for (yaml, why) in [
            (
                "- { name: p, repeat: 10, steps: [{ channels: [log] }] }",
                "repeat is 0 to 9",
            ),
            (
                "- { name: p, repeat_after_seconds: 5, steps: [{ channels: [log] }] }",
                "repeat_after_seconds is at least 60",
            ),
            (
                "- { name: p, steps: [{ targets: [] }] }",
                "step 1 pages nobody",
            ),
            (
                "- { name: p, steps: [{ targets: [{ user: Bob Smith }] }] }",
                "step 1 names \"Bob Smith\", which is not a name",
            ),
            (
                "- { name: p, steps: [{ targets: [{ channel: pager }] }] }",
                "step 1 names the unknown channel \"pager\"",
            ),
            (
                "- { name: p, fallback: { channel: pager }, steps: [{ channels: [log] }] }",
                "fallback names the unknown channel \"pager\"",
            ),
            (
                "- { name: p, steps: [{ channels: [log] }, { after_seconds: 30, channels: [log] }] }",
                "step 2 must come at least 60 seconds",
            ),
        ] {
            let e = check(yaml).unwrap_err();
            assert!(e.contains(why), "{yaml}: {e}");
        }
        assert!(
            serde_yaml::from_str::<Vec<EscalationPolicy>>(
                "- { name: p, steps: [{ targets: [{ pager: x }] }] }"
            )
            .is_err()
        );
        assert!(check("- { name: p, steps: [] }").is_err());
        assert!(
            serde_yaml::from_str::<Vec<EscalationPolicy>>("- { name: p, steps: [], extra: 1 }")
                .is_err()
        );
    }
}
