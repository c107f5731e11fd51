//! Incident roles: who holds which role of an incident. The rules, decided from the incident
//! as it stands: role and person are names (`a-z 0-9 . _ -`, 1-64 bytes); `commander` has one
//! holder, so assigning it to another person hands it off; the other roles (the guide's
//! responder, it-operator, manager, analyst, and extra ones such as scribe) may have several;
//! an incident has at most [`MAX_HOLDERS`]; a closed incident's roles are frozen.

use firebreak_domain::access::parse_name;
use firebreak_domain::{IncidentState, Micros, ReviewRole};
use firebreak_storage::{IncidentRecord, RoleHolder, TimelineRecord};
use serde_json::json;

use super::{Change, Work};
use crate::Error;

/// The role with one holder: assigning it to someone else hands it off.
pub(crate) const COMMANDER: &str = "commander";
/// The permission role's name for it, accepted as the incident role and stored as
/// [`COMMANDER`], so one incident never has both.
const COMMANDER_ALIAS: &str = "incident-commander";
/// The most role holders one incident has: the list travels with every read of the incident.
pub(crate) const MAX_HOLDERS: usize = 50;

/// Whether a role is given or taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoleChange {
    Assign,
    Unassign,
}

/// An incident role's name as stored: a name by the directory's rule, with
/// `incident-commander` read as `commander`.
pub(crate) fn role_name(given: &str) -> Result<String, firebreak_domain::Error> {
    let name = parse_name("role", given)?;
    Ok(if name == COMMANDER_ALIAS {
        COMMANDER.to_owned()
    } else {
        name
    })
}

/// The person a role is given to or taken from: a user's name by the directory's rule.
pub(crate) fn person_name(given: &str) -> Result<String, firebreak_domain::Error> {
    parse_name("person", given)
}

/// What a role change did to the holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleOutcome {
    /// Nothing: the person held the role already.
    Unchanged,
    /// The person holds the role now; `previous` is the commander they took it over from.
    Assigned { previous: Option<String> },
    /// The person no longer holds the role.
    Removed,
}

/// Applies a change of `role` for `person` (both as [`role_name`] and [`person_name`] return
/// them) to `holders`: the rules without the incident around them.
pub(crate) fn change_holders(
    holders: &mut Vec<RoleHolder>,
    change: RoleChange,
    role: &str,
    person: &str,
    at: Micros,
    by: &str,
) -> Result<RoleOutcome, Error> {
    let held = holders
        .iter()
        .position(|h| h.role == role && h.person == person);
    match (change, held) {
        (RoleChange::Assign, Some(_)) => Ok(RoleOutcome::Unchanged),
        (RoleChange::Assign, None) => {
            // A hand-off replaces the commander: it never needs room.
            let handed_off = match role {
                COMMANDER => holders.iter().position(|h| h.role == COMMANDER),
                _ => None,
            };
            if handed_off.is_none() && holders.len() >= MAX_HOLDERS {
                return Err(firebreak_domain::Error::Invalid {
                    field: "roles",
                    reason: format!("an incident has at most {MAX_HOLDERS} role holders"),
                }
                .into());
            }
            let previous = handed_off.map(|at| holders.remove(at).person);
            holders.push(RoleHolder {
                role: role.to_owned(),
                person: person.to_owned(),
                assigned_at: at,
                assigned_by: by.to_owned(),
            });
            Ok(RoleOutcome::Assigned { previous })
        }
        (RoleChange::Unassign, Some(at)) => {
            holders.remove(at);
            Ok(RoleOutcome::Removed)
        }
        (RoleChange::Unassign, None) => Err(Error::RoleNotHeld {
            role: role.to_owned(),
            person: person.to_owned(),
        }),
    }
}

/// Who held which role of `inc` and when, for the review: read from the timeline's
/// `role_assigned` and `role_removed` entries (a hand-off ends the previous commander's
/// time), then any holder of the stored roles the timeline did not show.
pub(crate) fn review_roles(inc: &IncidentRecord, timeline: &[TimelineRecord]) -> Vec<ReviewRole> {
    let mut out: Vec<ReviewRole> = Vec::new();
    let holding = |out: &[ReviewRole], role: &str, person: &str| {
        out.iter()
            .position(|r| r.until.is_none() && r.role == role && r.person == person)
    };
    for t in timeline {
        let (Some(role), Some(person)) = (t.data["role"].as_str(), t.data["person"].as_str())
        else {
            continue;
        };
        let at = t.at.timestamp();
        match t.kind.as_str() {
            "role_assigned" => {
                if let Some(previous) = t.data["previous"].as_str()
                    && let Some(n) = holding(&out, role, previous)
                {
                    out[n].until = Some(at);
                }
                if holding(&out, role, person).is_none() {
                    out.push(ReviewRole {
                        role: role.to_owned(),
                        person: person.to_owned(),
                        from: at,
                        until: None,
                    });
                }
            }
            "role_removed" => {
                if let Some(n) = holding(&out, role, person) {
                    out[n].until = Some(at);
                }
            }
            _ => {}
        }
    }
    for h in &inc.roles {
        if holding(&out, &h.role, &h.person).is_none() {
            out.push(ReviewRole {
                role: h.role.clone(),
                person: h.person.clone(),
                from: h.assigned_at.timestamp(),
                until: None,
            });
        }
    }
    out
}

impl Work<'_> {
    /// A role given or taken by `actor` (a person's call, or a runbook's command); returns
    /// the incident as it then stands, changed or not. The change is on the timeline
    /// (`role_assigned` naming the commander handed off from as `previous`, `role_removed`)
    /// and announced as `roles_changed` with all the roles; a repeated assignment does
    /// neither.
    pub(super) fn change_role(
        &mut self,
        id: &str,
        change: RoleChange,
        role: &str,
        person: &str,
        actor: &str,
        now: Micros,
    ) -> Result<firebreak_storage::IncidentRecord, Error> {
        firebreak_domain::IncidentId::parse(id)?;
        let role = role_name(role)?;
        let person = person_name(person)?;
        let mut inc = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if inc.state == IncidentState::Closed {
            return Err(firebreak_domain::Error::Transition {
                action: "change the roles of",
                state: inc.state.as_str(),
            }
            .into());
        }
        let (kind, data) = match change_holders(&mut inc.roles, change, &role, &person, now, actor)?
        {
            RoleOutcome::Unchanged => return Ok(inc),
            RoleOutcome::Assigned { previous } => (
                "role_assigned",
                json!({ "role": role, "person": person, "previous": previous }),
            ),
            RoleOutcome::Removed => ("role_removed", json!({ "role": role, "person": person })),
        };
        self.entry(id, kind, actor, data, now);
        inc.updated_at = now;
        self.put(inc.clone());
        self.announce(Change::RolesChanged, inc.clone(), actor, None);
        Ok(inc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(role: &str, person: &str) -> RoleHolder {
        RoleHolder {
            role: role.into(),
            person: person.into(),
            assigned_at: Micros::from_unix_micros(1),
            assigned_by: "user:admin".into(),
        }
    }

    #[test]
    fn names_follow_the_directory_rule_and_the_alias_is_the_commander() {
        assert_eq!(role_name("incident-commander").unwrap(), "commander");
        for ok in [
            "commander",
            "scribe",
            "it-operator",
            "comms.lead_2",
            &"r".repeat(64),
        ] {
            assert_eq!(role_name(ok).unwrap(), ok);
        }
        let long = "r".repeat(65);
        for bad in ["", &long, "Commander", "on call", "a\0b", "-lead", "ü"] {
            let err = role_name(bad).unwrap_err().to_string();
            assert!(err.contains("role"), "{bad:?}: {err}");
            let err = person_name(bad).unwrap_err().to_string();
            assert!(err.contains("person"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_commander_has_one_holder_and_other_roles_several() {
        let at = Micros::from_unix_micros(7);
        let mut h = vec![holder("commander", "alice"), holder("responder", "bob")];
        let assign = |h: &mut Vec<RoleHolder>, role, person| {
            change_holders(h, RoleChange::Assign, role, person, at, "user:carol").unwrap()
        };
        assert_eq!(
            assign(&mut h, "commander", "dave"),
            RoleOutcome::Assigned {
                previous: Some("alice".into())
            }
        );
        assert_eq!(
            assign(&mut h, "responder", "erin"),
            RoleOutcome::Assigned { previous: None }
        );
        assert_eq!(assign(&mut h, "responder", "bob"), RoleOutcome::Unchanged);
        let held: Vec<(&str, &str)> = h
            .iter()
            .map(|h| (h.role.as_str(), h.person.as_str()))
            .collect();
        assert_eq!(
            held,
            [
                ("responder", "bob"),
                ("commander", "dave"),
                ("responder", "erin")
            ]
        );
        assert_eq!(
            (h[1].assigned_at, h[1].assigned_by.as_str()),
            (at, "user:carol")
        );
    }

    #[test]
    fn at_most_fifty_holders_but_a_hand_off_at_fifty_is_fine() {
        let mut h: Vec<RoleHolder> = (0..49)
            .map(|n| holder("responder", &format!("p{n}")))
            .collect();
        h.push(holder("commander", "alice"));
        let at = Micros::from_unix_micros(2);
        let err = change_holders(&mut h, RoleChange::Assign, "scribe", "zed", at, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles") && err.contains("50"), "{err}");
        assert_eq!(h.len(), 50);
        let handed = change_holders(&mut h, RoleChange::Assign, "commander", "bob", at, "x");
        assert!(
            matches!(handed, Ok(RoleOutcome::Assigned { .. })),
            "{handed:?}"
        );
        assert_eq!(h.len(), 50);
    }
}
