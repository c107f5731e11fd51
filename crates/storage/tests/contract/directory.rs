//! The directory in notification's store: users, teams and memberships, and API tokens whose
//! every change takes the next version.

use std::slice;

use firebreak_domain::access::{Grant, Role, Scope, SubjectKind};
use firebreak_storage::{DirectoryStore, Error, TokenRecord};

use crate::fixtures::{Fixture, micros, team, token, user};

crate::contract!(directory:
    users_are_added_once_listed_by_name_and_deleted,
    teams_are_added_once_and_list_their_members_sorted,
    memberships_need_both_the_team_and_the_user,
    a_token_needs_its_subject_and_an_id_and_hash_of_its_own,
    tokens_are_listed_newest_first,
    revoking_twice_changes_nothing_the_second_time,
    tokens_since_lists_exactly_the_changes_after_a_version_in_order,
    deleting_a_user_revokes_exactly_their_live_tokens,
    mark_used_only_moves_forward_and_takes_no_version,
    grants_that_do_not_parse_read_as_an_error,
    incident_roles_change_only_what_differs_each_at_a_version_after_the_tokens,
    updating_a_person_replaces_how_they_are_reached_and_keeps_who_they_are,
    users_teams_and_tokens_page_by_keyset_each_once,
);

fn ids(tokens: &[TokenRecord]) -> Vec<&str> {
    tokens.iter().map(|t| t.id.as_str()).collect()
}

/// The highest version a store has given out, as its tokens show it.
async fn version(store: &dyn DirectoryStore) -> i64 {
    let all = store.tokens().await.unwrap();
    all.iter().map(|t| t.version).max().unwrap_or(0)
}

async fn users_are_added_once_listed_by_name_and_deleted(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    assert_eq!(store.users().await.unwrap(), []);
    let bob = user("bob");
    let grafana = firebreak_storage::UserRecord {
        kind: SubjectKind::ServiceAccount,
        declared: true,
        time_zone: String::new(),
        created_at: micros(7),
        ..user("grafana")
    };
    let alice = user("alice");
    for u in [&bob, &grafana, &alice] {
        store.insert_user(u).await.unwrap();
    }
    assert_eq!(
        store.users().await.unwrap(),
        [alice.clone(), bob.clone(), grafana.clone()]
    );
    assert_eq!(store.user("grafana").await.unwrap(), Some(grafana.clone()));
    assert_eq!(store.user("carol").await.unwrap(), None);

    // A name is taken once; the user holding it stays as they were.
    let again = firebreak_storage::UserRecord {
        email: "other@example.com".into(),
        ..bob.clone()
    };
    let taken = store.insert_user(&again).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    assert_eq!(store.user("bob").await.unwrap(), Some(bob.clone()));

    // Firebreak's own services are not users of the directory.
    let service = firebreak_storage::UserRecord {
        kind: SubjectKind::Service,
        ..user("intake")
    };
    let refused = store.insert_user(&service).await;
    assert!(matches!(refused, Err(Error::Corrupt(_))), "{refused:?}");
    assert_eq!(store.user("intake").await.unwrap(), None);

    assert!(store.delete_user("bob", micros(10)).await.unwrap());
    assert!(!store.delete_user("bob", micros(11)).await.unwrap());
    assert!(!store.delete_user("nobody", micros(11)).await.unwrap());
    assert_eq!(store.users().await.unwrap(), [alice, grafana]);
    // The name is free again.
    store.insert_user(&bob).await.unwrap();
    assert_eq!(store.user("bob").await.unwrap(), Some(bob));
}

async fn teams_are_added_once_and_list_their_members_sorted(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    assert_eq!(store.teams().await.unwrap(), []);
    for name in ["zed", "amy", "kim"] {
        store.insert_user(&user(name)).await.unwrap();
    }
    let payments = firebreak_storage::TeamRecord {
        declared: true,
        ..team("payments")
    };
    // Members given with a new team are not stored.
    let db = firebreak_storage::TeamRecord {
        members: vec!["zed".into()],
        ..team("db")
    };
    store.insert_team(&payments).await.unwrap();
    store.insert_team(&db).await.unwrap();
    let taken = store.insert_team(&team("db")).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    assert_eq!(store.teams().await.unwrap(), [team("db"), payments.clone()]);

    assert!(store.set_member("payments", "zed", true).await.unwrap());
    assert!(store.set_member("payments", "amy", true).await.unwrap());
    assert!(store.set_member("db", "kim", true).await.unwrap());
    // Already a member: nothing changes.
    assert!(!store.set_member("payments", "zed", true).await.unwrap());
    let members = |teams: Vec<firebreak_storage::TeamRecord>| {
        teams
            .into_iter()
            .map(|t| (t.name, t.members))
            .collect::<Vec<_>>()
    };
    let strings = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        members(store.teams().await.unwrap()),
        [
            ("db".to_string(), strings(&["kim"])),
            ("payments".to_string(), strings(&["amy", "zed"])),
        ]
    );
    assert!(store.teams().await.unwrap()[1].declared);

    assert!(store.set_member("payments", "zed", false).await.unwrap());
    assert!(!store.set_member("payments", "zed", false).await.unwrap());
    // Deleting a user ends their memberships.
    assert!(store.delete_user("kim", micros(5)).await.unwrap());
    assert_eq!(
        members(store.teams().await.unwrap()),
        [
            ("db".to_string(), vec![]),
            ("payments".to_string(), strings(&["amy"])),
        ]
    );

    // Deleting a team ends its memberships: a team of the same name starts empty.
    assert!(store.delete_team("payments").await.unwrap());
    assert!(!store.delete_team("payments").await.unwrap());
    assert_eq!(
        members(store.teams().await.unwrap()),
        [("db".into(), vec![])]
    );
    store.insert_team(&team("payments")).await.unwrap();
    assert_eq!(store.teams().await.unwrap()[1], team("payments"));
    // The user is still there, a member of nothing.
    assert!(store.user("amy").await.unwrap().is_some());
}

async fn memberships_need_both_the_team_and_the_user(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    store.insert_user(&user("amy")).await.unwrap();
    store.insert_team(&team("db")).await.unwrap();
    for member in [true, false] {
        let no_team = store.set_member("ghosts", "amy", member).await;
        assert!(
            matches!(&no_team, Err(Error::NotFound(what)) if what == "team ghosts"),
            "{no_team:?}"
        );
        let no_user = store.set_member("db", "casper", member).await;
        assert!(
            matches!(&no_user, Err(Error::NotFound(what)) if what == "user casper"),
            "{no_user:?}"
        );
        // Neither exists: the team is named.
        let neither = store.set_member("ghosts", "casper", member).await;
        assert!(
            matches!(&neither, Err(Error::NotFound(what)) if what == "team ghosts"),
            "{neither:?}"
        );
    }
    assert_eq!(store.teams().await.unwrap(), [team("db")]);
}

async fn a_token_needs_its_subject_and_an_id_and_hash_of_its_own(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    let orphan = store.insert_token(&token("t1", "ghost", 10)).await;
    assert!(
        matches!(&orphan, Err(Error::NotFound(what)) if what == "user ghost"),
        "{orphan:?}"
    );
    assert_eq!(store.tokens().await.unwrap(), []);

    store.insert_user(&user("amy")).await.unwrap();
    let asked = TokenRecord {
        version: 99,
        last_used_at: Some(micros(12)),
        grants: vec![
            Grant {
                role: Role::Admin,
                scope: Scope::Service("intake".into()),
            },
            Grant {
                role: Role::IncidentCommander,
                scope: Scope::Team("db-oncall".into()),
            },
        ],
        ..token("t1", "amy", 10)
    };
    let stored = store.insert_token(&asked).await.unwrap();
    // The store assigns the version, whatever the record held; the rest is kept as given.
    assert!(stored.version > 0, "{stored:?}");
    assert_ne!(stored.version, 99);
    assert_eq!(
        stored,
        TokenRecord {
            version: stored.version,
            ..asked.clone()
        }
    );
    assert_eq!(store.tokens().await.unwrap(), slice::from_ref(&stored));

    // The same id, or the same hash, is taken.
    let same_id = TokenRecord {
        hash: "another-hash".into(),
        ..token("t1", "amy", 20)
    };
    let same_hash = TokenRecord {
        hash: asked.hash.clone(),
        ..token("t2", "amy", 20)
    };
    for t in [same_id, same_hash] {
        let taken = store.insert_token(&t).await;
        assert!(
            matches!(taken, Err(Error::Conflict(_))),
            "{}: {taken:?}",
            t.id
        );
    }
    assert_eq!(store.tokens().await.unwrap(), slice::from_ref(&stored));
    // Refused inserts changed nothing, so no change follows the first.
    assert_eq!(store.tokens_since(stored.version).await.unwrap(), []);

    let next = store.insert_token(&token("t3", "amy", 30)).await.unwrap();
    assert!(next.version > stored.version, "{next:?} after {stored:?}");
}

async fn tokens_are_listed_newest_first(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    store.insert_user(&user("amy")).await.unwrap();
    for (id, at) in [("b", 30), ("d", 10), ("a", 30), ("c", 20)] {
        store.insert_token(&token(id, "amy", at)).await.unwrap();
    }
    // By creation time, then id, both descending; revoked ones are listed too.
    store.revoke_token("c", micros(40)).await.unwrap();
    assert_eq!(ids(&store.tokens().await.unwrap()), ["b", "a", "c", "d"]);
}

async fn revoking_twice_changes_nothing_the_second_time(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    store.insert_user(&user("amy")).await.unwrap();
    let live = store.insert_token(&token("t1", "amy", 10)).await.unwrap();
    let other = store.insert_token(&token("t2", "amy", 11)).await.unwrap();

    let revoked = store.revoke_token("t1", micros(50)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(micros(50)));
    assert!(revoked.version > other.version, "{revoked:?}");
    assert_eq!(
        revoked,
        TokenRecord {
            revoked_at: Some(micros(50)),
            version: revoked.version,
            ..live
        }
    );
    assert_eq!(
        store.tokens_since(other.version).await.unwrap(),
        slice::from_ref(&revoked)
    );

    // Again, later: the first revocation stands, with its version.
    let again = store.revoke_token("t1", micros(90)).await.unwrap();
    assert_eq!(again, Some(revoked.clone()));
    assert_eq!(store.tokens_since(revoked.version).await.unwrap(), []);
    assert_eq!(store.tokens().await.unwrap(), [other, revoked]);

    assert_eq!(store.revoke_token("t9", micros(90)).await.unwrap(), None);
}

async fn tokens_since_lists_exactly_the_changes_after_a_version_in_order(
    f: &Fixture<dyn DirectoryStore>,
) {
    let store = &*f.store;
    assert_eq!(store.tokens_since(0).await.unwrap(), []);
    store.insert_user(&user("amy")).await.unwrap();
    store.insert_user(&user("bob")).await.unwrap();
    let a = store.insert_token(&token("a", "amy", 10)).await.unwrap();
    let b = store.insert_token(&token("b", "bob", 20)).await.unwrap();
    let c = store.insert_token(&token("c", "amy", 5)).await.unwrap();
    let a_revoked = store.revoke_token("a", micros(30)).await.unwrap().unwrap();
    let d = store.insert_token(&token("d", "bob", 1)).await.unwrap();

    // Each change took a version after the one before.
    let versions = [
        a.version,
        b.version,
        c.version,
        a_revoked.version,
        d.version,
    ];
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // A token appears once, as its last change left it, in the order of the changes (not
    // of creation times or ids).
    let all = store.tokens_since(0).await.unwrap();
    assert_eq!(all, [b.clone(), c.clone(), a_revoked.clone(), d.clone()]);
    assert_eq!(
        ids(&store.tokens_since(a.version).await.unwrap()),
        ["b", "c", "a", "d"]
    );
    assert_eq!(
        ids(&store.tokens_since(b.version).await.unwrap()),
        ["c", "a", "d"]
    );
    assert_eq!(
        store.tokens_since(c.version).await.unwrap(),
        [a_revoked.clone(), d.clone()]
    );
    assert_eq!(
        store.tokens_since(a_revoked.version).await.unwrap(),
        slice::from_ref(&d)
    );
    assert_eq!(store.tokens_since(d.version).await.unwrap(), []);
}

async fn incident_roles_change_only_what_differs_each_at_a_version_after_the_tokens(
    f: &Fixture<dyn DirectoryStore>,
) {
    let store = &*f.store;
    let pair = |r: &str, p: &str| (r.to_owned(), p.to_owned());
    let view = |rows: Vec<firebreak_storage::IncidentRoleRecord>| {
        rows.into_iter()
            .map(|r| (r.incident_id, r.role, r.person, r.removed))
            .collect::<Vec<_>>()
    };
    let row =
        |i: &str, r: &str, p: &str, removed| (i.to_owned(), r.to_owned(), p.to_owned(), removed);
    store.insert_user(&user("amy")).await.unwrap();
    let a = store.insert_token(&token("a", "amy", 10)).await.unwrap();

    assert!(
        store
            .set_incident_roles("i1", &[pair("commander", "amy"), pair("responder", "bob")])
            .await
            .unwrap()
    );
    // The same set again changes nothing and takes no version.
    assert!(
        !store
            .set_incident_roles("i1", &[pair("responder", "bob"), pair("commander", "amy")])
            .await
            .unwrap()
    );
    let first = store.incident_roles_since(a.version).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|r| r.version > a.version));
    let after_first = first.iter().map(|r| r.version).max().unwrap();

    // A hand-off: amy's row is marked removed, carol's added, bob's untouched.
    assert!(
        store
            .set_incident_roles(
                "i1",
                &[pair("commander", "carol"), pair("responder", "bob")]
            )
            .await
            .unwrap()
    );
    let handoff = view(store.incident_roles_since(after_first).await.unwrap());
    assert_eq!(handoff.len(), 2, "{handoff:?}");
    assert!(handoff.contains(&row("i1", "commander", "carol", false)));
    assert!(handoff.contains(&row("i1", "commander", "amy", true)));
    // Another incident's roles are its own; a token made after takes a later version.
    assert!(
        store
            .set_incident_roles("i2", &[pair("analyst", "amy")])
            .await
            .unwrap()
    );
    let b = store.insert_token(&token("b", "amy", 20)).await.unwrap();
    let all = store.incident_roles_since(0).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].version < w[1].version));
    assert!(all.iter().all(|r| r.version < b.version));
    // Assigned again after removal, a row comes back.
    assert!(
        store
            .set_incident_roles("i1", &[pair("commander", "amy")])
            .await
            .unwrap()
    );
    let back = view(store.incident_roles_since(b.version).await.unwrap());
    assert_eq!(back.len(), 3, "{back:?}");
    assert!(back.contains(&row("i1", "commander", "amy", false)));
    assert!(back.contains(&row("i1", "commander", "carol", true)));
    assert!(back.contains(&row("i1", "responder", "bob", true)));
    assert_eq!(
        view(store.incident_roles_since(0).await.unwrap())
            .into_iter()
            .filter(|r| r.0 == "i2")
            .collect::<Vec<_>>(),
        [row("i2", "analyst", "amy", false)]
    );
}

async fn updating_a_person_replaces_how_they_are_reached_and_keeps_who_they_are(
    f: &Fixture<dyn DirectoryStore>,
) {
    use firebreak_domain::people::{ContactKind, ContactMethod, NotificationRule};
    let store = &*f.store;
    let amy = user("amy");
    store.insert_user(&amy).await.unwrap();
    let changed = firebreak_storage::UserRecord {
        display_name: "Amy A.".into(),
        time_zone: "America/New_York".into(),
        declared: true,
        contact_methods: vec![
            ContactMethod {
                name: "phone".into(),
                kind: ContactKind::Sms,
                address: "+14155550100".into(),
            },
            amy.contact_methods[0].clone(),
        ],
        notification_rules: vec![
            NotificationRule {
                after_minutes: 0,
                method: "work".into(),
            },
            NotificationRule {
                after_minutes: 5,
                method: "phone".into(),
            },
        ],
        // Neither the kind nor the creation time changes.
        kind: SubjectKind::ServiceAccount,
        created_at: micros(99),
        ..amy.clone()
    };
    assert!(store.update_user(&changed).await.unwrap());
    let stored = store.user("amy").await.unwrap().unwrap();
    assert_eq!(
        stored,
        firebreak_storage::UserRecord {
            kind: amy.kind,
            created_at: amy.created_at,
            ..changed.clone()
        }
    );
    assert!(!store.update_user(&user("nobody")).await.unwrap());
    assert_eq!(store.user("nobody").await.unwrap(), None);

    store.insert_team(&team("payments")).await.unwrap();
    let declared = firebreak_storage::TeamRecord {
        display_name: "Payments".into(),
        declared: true,
        ..team("payments")
    };
    assert!(store.update_team(&declared).await.unwrap());
    let teams = store.teams().await.unwrap();
    assert_eq!(teams[0].display_name, "Payments");
    assert!(teams[0].declared);
    assert!(!store.update_team(&team("nobody")).await.unwrap());
}

async fn deleting_a_user_revokes_exactly_their_live_tokens(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    store.insert_user(&user("amy")).await.unwrap();
    store.insert_user(&user("bob")).await.unwrap();
    let amy1 = store.insert_token(&token("amy1", "amy", 10)).await.unwrap();
    let amy2 = store.insert_token(&token("amy2", "amy", 11)).await.unwrap();
    let amy_old = store.insert_token(&token("amy0", "amy", 5)).await.unwrap();
    let amy_old = store
        .revoke_token(&amy_old.id, micros(20))
        .await
        .unwrap()
        .unwrap();
    let bob1 = store.insert_token(&token("bob1", "bob", 12)).await.unwrap();
    let before = version(store).await;
    assert_eq!(before, bob1.version);

    assert!(store.delete_user("amy", micros(100)).await.unwrap());
    let changed = store.tokens_since(before).await.unwrap();
    // Only amy's live tokens changed: revoked now, each with a version of its own.
    assert_eq!(
        changed
            .iter()
            .map(|t| t.id.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["amy1", "amy2"].into()
    );
    assert!(
        changed.windows(2).all(|w| w[0].version < w[1].version),
        "{changed:?}"
    );
    for was in [&amy1, &amy2] {
        let now = changed.iter().find(|t| t.id == was.id).unwrap();
        assert!(now.version > before, "{now:?}");
        assert_eq!(
            *now,
            TokenRecord {
                revoked_at: Some(micros(100)),
                version: now.version,
                ..was.clone()
            }
        );
    }
    // The token revoked before keeps its revocation and its version; bob's is untouched.
    let all = store.tokens().await.unwrap();
    assert!(all.contains(&amy_old), "{all:?}");
    assert!(all.contains(&bob1), "{all:?}");
    assert_eq!(all.len(), 4);

    // Gone already: nothing changes.
    let after = version(store).await;
    assert!(!store.delete_user("amy", micros(200)).await.unwrap());
    assert_eq!(store.tokens_since(after).await.unwrap(), []);
    // Bob's token goes with him, after amy's.
    assert!(store.delete_user("bob", micros(300)).await.unwrap());
    let bob_after = store.tokens_since(after).await.unwrap();
    assert_eq!(bob_after.len(), 1, "{bob_after:?}");
    assert!(bob_after[0].version > after, "{bob_after:?}");
    assert_eq!(
        bob_after[0],
        TokenRecord {
            revoked_at: Some(micros(300)),
            version: bob_after[0].version,
            ..bob1
        }
    );
    // A user without tokens is deleted without a change to any token.
    store.insert_user(&user("zoe")).await.unwrap();
    let last = version(store).await;
    assert!(store.delete_user("zoe", micros(400)).await.unwrap());
    assert_eq!(store.tokens_since(last).await.unwrap(), []);
    // The subject is gone: no token can be made for it.
    let orphan = store.insert_token(&token("amy3", "amy", 500)).await;
    assert!(matches!(orphan, Err(Error::NotFound(_))), "{orphan:?}");
}

async fn mark_used_only_moves_forward_and_takes_no_version(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    store.insert_user(&user("amy")).await.unwrap();
    let t1 = store.insert_token(&token("t1", "amy", 10)).await.unwrap();
    let t2 = store.insert_token(&token("t2", "amy", 11)).await.unwrap();
    let used = |id: &str, at: i64| (id.to_string(), micros(at));
    let last_used = || async {
        store
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.last_used_at))
            .collect::<Vec<_>>()
    };

    store.mark_used(&[]).await.unwrap();
    store
        .mark_used(&[used("t1", 50), used("unknown", 60)])
        .await
        .unwrap();
    assert_eq!(
        last_used().await,
        [("t2".into(), None), ("t1".into(), Some(micros(50)))]
    );
    // An earlier use reported late does not move it back.
    store.mark_used(&[used("t1", 40)]).await.unwrap();
    assert_eq!(last_used().await[1], ("t1".into(), Some(micros(50))));
    // The latest of a batch wins, wherever it stands in it.
    store
        .mark_used(&[used("t1", 70), used("t2", 30), used("t1", 65)])
        .await
        .unwrap();
    assert_eq!(
        last_used().await,
        [
            ("t2".into(), Some(micros(30))),
            ("t1".into(), Some(micros(70)))
        ]
    );
    // Use is not a change: the versions stay, and no change is listed.
    assert_eq!(store.tokens_since(t2.version).await.unwrap(), []);
    let all = store.tokens().await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.version).collect::<Vec<_>>(),
        [t2.version, t1.version]
    );
    assert_eq!(
        all[1],
        TokenRecord {
            last_used_at: Some(micros(70)),
            ..t1
        }
    );
}

async fn grants_that_do_not_parse_read_as_an_error(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    store.insert_user(&user("amy")).await.unwrap();
    store.insert_token(&token("t1", "amy", 10)).await.unwrap();
    assert_eq!(store.tokens().await.unwrap().len(), 1);
    for bad in [
        "UPDATE api_tokens SET grants = 'root@all'",
        "UPDATE api_tokens SET grants = 'viewer@everywhere'",
        "UPDATE api_tokens SET grants = 'viewer@all,,responder@all'",
    ] {
        assert_eq!(f.backend.exec_raw(bad).await, Ok(1), "{bad}");
        let listed = store.tokens().await;
        assert!(
            matches!(listed, Err(Error::Corrupt(_))),
            "{bad}: {listed:?}"
        );
        let since = store.tokens_since(0).await;
        assert!(matches!(since, Err(Error::Corrupt(_))), "{bad}: {since:?}");
        let revoked = store.revoke_token("t1", micros(20)).await;
        assert!(
            matches!(revoked, Err(Error::Corrupt(_))),
            "{bad}: {revoked:?}"
        );
    }
    // Nothing was revoked on the way.
    assert_eq!(
        f.backend
            .exec_raw("UPDATE api_tokens SET grants = '' WHERE revoked_at IS NULL")
            .await,
        Ok(1)
    );
    let fixed = store.tokens().await.unwrap();
    assert_eq!(fixed[0].grants, []);
    assert_eq!(fixed[0].revoked_at, None);
}

/// The List RPCs' pages: users and teams by name, tokens newest first (time then id, so
/// tokens made in the same microsecond are neither skipped nor repeated), each item once
/// across pages of any size, and a page after the last is empty.
async fn users_teams_and_tokens_page_by_keyset_each_once(f: &Fixture<dyn DirectoryStore>) {
    let store = &*f.store;
    let names = ["carl", "amy", "dee", "bob", "eve"];
    for name in names {
        store.insert_user(&user(name)).await.unwrap();
        store.insert_team(&team(name)).await.unwrap();
    }
    store.set_member("bob", "amy", true).await.unwrap();
    for (id, at) in [("t1", 10), ("t2", 20), ("t3", 20), ("t4", 20), ("t5", 5)] {
        store.insert_token(&token(id, "amy", at)).await.unwrap();
    }
    let sorted = ["amy", "bob", "carl", "dee", "eve"];
    for size in [1, 2, 3, 5, 6] {
        let (mut users, mut after) = (Vec::new(), None::<String>);
        loop {
            let page = store.users_page(after.as_deref(), size).await.unwrap();
            assert!(page.len() <= size as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            users.extend(page.into_iter().map(|u| u.name));
        }
        assert_eq!(users, sorted, "users, pages of {size}");

        let (mut teams, mut after) = (Vec::new(), None::<String>);
        loop {
            let page = store.teams_page(after.as_deref(), size).await.unwrap();
            assert!(page.len() <= size as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            teams.extend(page.into_iter().map(|t| (t.name, t.members)));
        }
        let names: Vec<&str> = teams.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, sorted, "teams, pages of {size}");
        // A page keeps each team's members whole.
        assert_eq!(teams[1].1, ["amy"], "pages of {size}");

        let (mut tokens, mut after) = (Vec::new(), None::<(firebreak_domain::Micros, String)>);
        loop {
            let page = store
                .tokens_page(after.as_ref().map(|(at, id)| (*at, id.as_str())), size)
                .await
                .unwrap();
            assert!(page.len() <= size as usize);
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id.clone()));
            tokens.extend(page.into_iter().map(|t| t.id));
        }
        assert_eq!(
            tokens,
            ["t4", "t3", "t2", "t1", "t5"],
            "tokens, pages of {size}"
        );
    }
    assert_eq!(
        ids(&store.tokens().await.unwrap()),
        ["t4", "t3", "t2", "t1", "t5"]
    );
}
