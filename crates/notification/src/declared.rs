//! Users and teams declared in configuration (GitOps): checked when the configuration loads,
//! written into the directory at start-up, and marked `declared` there so that run-time calls
//! can neither delete nor change them. An entry no longer declared becomes a run-time one.

use std::collections::HashSet;

use firebreak_domain::access::{SubjectKind, parse_name};
use firebreak_domain::people::{ContactMethod, NotificationRule, check_contacts};
use firebreak_storage::{TeamRecord, UserRecord};
use serde::Deserialize;

use crate::Directory;
use crate::error::Error;

/// A person (or service account) as the configuration's `users:` declares them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredUser {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub time_zone: String,
    /// A non-person account (a monitoring tool, a CI job) instead of a person.
    #[serde(default)]
    pub service_account: bool,
    #[serde(default)]
    pub contact_methods: Vec<ContactMethod>,
    #[serde(default)]
    pub notification_rules: Vec<NotificationRule>,
}

/// A team as the configuration's `teams:` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredTeam {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    /// Users of the directory (declared here or made at run time).
    #[serde(default)]
    pub members: Vec<String>,
}

/// The most users and teams a configuration declares, and members a team lists.
const MAX_DECLARED: usize = 10_000;
const MAX_MEMBERS: usize = 1_000;
const MAX_TEXT: usize = 254;

/// Checks declared users and teams, naming the entry and field of the first problem
/// (`users[2].contact_methods: [0].address: …`).
pub fn validate(users: &[DeclaredUser], teams: &[DeclaredTeam]) -> Result<(), String> {
    if users.len() > MAX_DECLARED || teams.len() > MAX_DECLARED {
        return Err(format!("users, teams: at most {MAX_DECLARED} each"));
    }
    let mut names = HashSet::new();
    for (i, u) in users.iter().enumerate() {
        let at = |why: String| format!("users[{i}] ({:?}): {why}", u.name);
        parse_name("name", &u.name).map_err(|e| at(e.to_string()))?;
        if !names.insert(u.name.as_str()) {
            return Err(at("declared twice".into()));
        }
        for (field, text) in [
            ("display_name", &u.display_name),
            ("email", &u.email),
            ("time_zone", &u.time_zone),
        ] {
            if text.len() > MAX_TEXT || text.contains('\0') {
                return Err(at(format!("{field}: at most {MAX_TEXT} bytes, no NUL")));
            }
        }
        check_contacts(&u.contact_methods, &u.notification_rules).map_err(|e| at(e.to_string()))?;
    }
    let mut team_names = HashSet::new();
    for (i, t) in teams.iter().enumerate() {
        let at = |why: String| format!("teams[{i}] ({:?}): {why}", t.name);
        parse_name("name", &t.name).map_err(|e| at(e.to_string()))?;
        if !team_names.insert(t.name.as_str()) {
            return Err(at("declared twice".into()));
        }
        if t.display_name.len() > MAX_TEXT || t.display_name.contains('\0') {
            return Err(at(format!(
                "display_name: at most {MAX_TEXT} bytes, no NUL"
            )));
        }
        if t.members.len() > MAX_MEMBERS {
            return Err(at(format!("members: at most {MAX_MEMBERS}")));
        }
        for (j, m) in t.members.iter().enumerate() {
            parse_name("members", m).map_err(|e| at(format!("members[{j}]: {e}")))?;
        }
    }
    Ok(())
}

impl Directory {
    /// Checks that every (schedule, user) names a user of the directory: a schedule paging
    /// nobody by a typo is refused when the service starts, naming both.
    pub async fn check_schedule_members(&self, members: &[(String, String)]) -> Result<(), Error> {
        let users: HashSet<String> = self
            .store
            .users()
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect();
        match members.iter().find(|(_, user)| !users.contains(user)) {
            Some((schedule, user)) => Err(Error::Invalid(format!(
                "schedule {schedule:?} names {user:?}, who is not a user of the directory"
            ))),
            None => Ok(()),
        }
    }

    /// Makes the directory hold `users` and `teams` as declared: each added or changed to
    /// match (declared, so run-time calls leave it alone), each team's members added, and
    /// entries declared before but no longer marked as run-time ones. Run at start-up, by
    /// every replica alike (the result is the same whichever runs last). A member who is
    /// nobody in the directory is an error naming the team.
    pub async fn declare(
        &self,
        users: &[DeclaredUser],
        teams: &[DeclaredTeam],
    ) -> Result<(), Error> {
        validate(users, teams).map_err(Error::Invalid)?;
        let now = self.clock.now();
        for u in users {
            let record = UserRecord {
                name: u.name.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
                time_zone: u.time_zone.clone(),
                kind: if u.service_account {
                    SubjectKind::ServiceAccount
                } else {
                    SubjectKind::User
                },
                declared: true,
                created_at: now,
                contact_methods: u.contact_methods.clone(),
                notification_rules: u.notification_rules.clone(),
            };
            if !self.store.update_user(&record).await? {
                match self.store.insert_user(&record).await {
                    // Another replica inserted it meanwhile: make it match.
                    Err(firebreak_storage::Error::Conflict(_)) => {
                        self.store.update_user(&record).await?;
                    }
                    other => other?,
                }
            }
        }
        let declared: HashSet<&str> = users.iter().map(|u| u.name.as_str()).collect();
        for stale in self.store.users().await? {
            if stale.declared && !declared.contains(stale.name.as_str()) {
                self.store
                    .update_user(&UserRecord {
                        declared: false,
                        ..stale
                    })
                    .await?;
            }
        }
        for t in teams {
            let record = TeamRecord {
                name: t.name.clone(),
                display_name: t.display_name.clone(),
                declared: true,
                created_at: now,
                members: Vec::new(),
            };
            if !self.store.update_team(&record).await? {
                match self.store.insert_team(&record).await {
                    Err(firebreak_storage::Error::Conflict(_)) => {
                        self.store.update_team(&record).await?;
                    }
                    other => other?,
                }
            }
            for m in &t.members {
                self.store
                    .set_member(&t.name, m, true)
                    .await
                    .map_err(|e| match e {
                        firebreak_storage::Error::NotFound(what) => Error::Invalid(format!(
                            "teams ({:?}): member {m:?}: {what} is not in the directory",
                            t.name
                        )),
                        other => other.into(),
                    })?;
            }
        }
        let declared: HashSet<&str> = teams.iter().map(|t| t.name.as_str()).collect();
        for stale in self.store.teams().await? {
            if stale.declared && !declared.contains(stale.name.as_str()) {
                self.store
                    .update_team(&TeamRecord {
                        declared: false,
                        ..stale
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use firebreak_proto::v1;
    use firebreak_proto::v1::access_service_server::AccessService;
    use tonic::Request;

    use super::*;
    use crate::directory::tests::directory;

    fn user(name: &str, email: &str) -> DeclaredUser {
        serde_yaml::from_str(&format!(
            "name: {name}\nemail: {email}\ncontact_methods: [{{name: work, kind: email, address: {email}}}]\n"
        ))
        .unwrap()
    }

    fn team(name: &str, members: &[&str]) -> DeclaredTeam {
        DeclaredTeam {
            name: name.into(),
            display_name: String::new(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    async fn delete(d: &Directory, name: &str) -> tonic::Code {
        match AccessService::delete_user(
            d,
            Request::new(v1::DeleteUserRequest { name: name.into() }),
        )
        .await
        {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        }
    }

    #[tokio::test]
    async fn declared_people_and_teams_are_written_kept_and_released_when_no_longer_declared() {
        let (d, _, _dir) = directory().await;
        let (alice, bob) = (
            user("alice", "alice@example.com"),
            user("bob", "bob@example.com"),
        );
        d.declare(
            &[alice.clone(), bob.clone()],
            &[team("payments", &["alice", "bob"])],
        )
        .await
        .unwrap();
        let stored = d.store.user("alice").await.unwrap().unwrap();
        assert!(stored.declared);
        assert_eq!(stored.contact_methods, alice.contact_methods);
        let teams = d.store.teams().await.unwrap();
        assert_eq!(teams[0].members, ["alice", "bob"]);
        assert!(teams[0].declared);
        // Run-time calls leave declared entries alone.
        assert_eq!(delete(&d, "bob").await, tonic::Code::FailedPrecondition);

        // Declared again with a change, and without bob: alice changes, bob is released.
        let alice2 = user("alice", "alice@new.example.com");
        d.declare(std::slice::from_ref(&alice2), &[]).await.unwrap();
        let stored = d.store.user("alice").await.unwrap().unwrap();
        assert_eq!(stored.email, "alice@new.example.com");
        assert!(stored.declared);
        assert!(!d.store.user("bob").await.unwrap().unwrap().declared);
        assert!(!d.store.teams().await.unwrap()[0].declared);
        assert_eq!(delete(&d, "bob").await, tonic::Code::Ok);

        // Schedules name directory users; a stranger is refused naming schedule and user.
        let pair = |s: &str, u: &str| (s.to_owned(), u.to_owned());
        d.check_schedule_members(&[pair("primary", "alice")])
            .await
            .unwrap();
        let e = d
            .check_schedule_members(&[pair("primary", "alice"), pair("primary", "mallory")])
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("primary") && e.to_string().contains("mallory"),
            "{e}"
        );
        // A member who is nobody is an error naming the team and member.
        let e = d
            .declare(&[alice2], &[team("search", &["carol"])])
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("search") && e.to_string().contains("carol"),
            "{e}"
        );
    }

    #[test]
    fn bad_declarations_are_refused_naming_the_entry_and_field() {
        let twice = [
            user("alice", "a@example.com"),
            user("alice", "b@example.com"),
        ];
        let cases: Vec<(Vec<DeclaredUser>, Vec<DeclaredTeam>, &str)> = vec![
            (
                twice.to_vec(),
                vec![],
                "users[1] (\"alice\"): declared twice",
            ),
            (vec![user("Alice", "a@example.com")], vec![], "users[0]"),
            (
                vec![user("alice", "not-an-email")],
                vec![],
                "contact_methods: [0].address",
            ),
            (vec![], vec![team("-x", &[])], "teams[0]"),
            (vec![], vec![team("ops", &["Bob Smith"])], "members[0]"),
            (
                vec![],
                vec![team("ops", &[]), team("ops", &[])],
                "teams[1] (\"ops\"): declared twice",
            ),
        ];
        for (users, teams, want) in cases {
            let e = validate(&users, &teams).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let unknown = serde_yaml::from_str::<DeclaredUser>("name: a\npager: 1\n").unwrap_err();
        assert!(unknown.to_string().contains("pager"), "{unknown}");
    }
}
