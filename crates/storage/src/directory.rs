//! How the directory's typed columns are stored, the same in both adapters: a user's kind by
//! name, and a token's grants as text (`responder@team:payments,viewer@all`).

use firebreak_domain::access::{Grant, SubjectKind};

use crate::{Error, Result};

/// The stored name of a directory user's kind. A service is Firebreak's own credential, never
/// a row of the directory, so storing one is refused.
pub(crate) fn kind_text(kind: SubjectKind) -> Result<&'static str> {
    match kind {
        SubjectKind::User => Ok("user"),
        SubjectKind::ServiceAccount => Ok("service_account"),
        SubjectKind::Service => Err(Error::Corrupt("a service is not a directory user".into())),
    }
}

/// A user's kind read back: an unknown name is a corrupt row, never a default.
pub(crate) fn parse_kind(text: &str) -> Result<SubjectKind> {
    match text {
        "user" => Ok(SubjectKind::User),
        "service_account" => Ok(SubjectKind::ServiceAccount),
        other => Err(Error::Corrupt(format!(
            "users.kind {other:?} is not user or service_account"
        ))),
    }
}

/// Grants as stored: `role@scope` items joined by commas, in order (neither a role nor a
/// scope holds a comma or an `@`); no grants is the empty text.
pub(crate) fn grants_text(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| format!("{}@{}", g.role.as_str(), g.scope))
        .collect::<Vec<_>>()
        .join(",")
}

/// Grants read back, strictly: an item that is not a known role at a valid scope makes the
/// row corrupt.
pub(crate) fn parse_grants(text: &str) -> Result<Vec<Grant>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| {
            let corrupt =
                |why: String| Error::Corrupt(format!("api_tokens.grants {item:?}: {why}"));
            let (role, scope) = item
                .split_once('@')
                .ok_or_else(|| corrupt("not role@scope".into()))?;
            Ok(Grant {
                role: role.parse().map_err(|e| corrupt(format!("{e}")))?,
                scope: scope.parse().map_err(|e| corrupt(format!("{e}")))?,
            })
        })
        .collect()
}

/// The rows [`crate::DirectoryStore::set_incident_roles`] writes: each (role, person, removed)
/// whose state differs from `current` ((role, person, removed) as stored), given that
/// `wanted` is to be held and nothing else.
pub(crate) fn role_changes(
    current: &[(String, String, bool)],
    wanted: &[(String, String)],
) -> Vec<(String, String, bool)> {
    let held = |r: &str, p: &str| {
        current
            .iter()
            .any(|(cr, cp, removed)| cr == r && cp == p && !removed)
    };
    let mut out: Vec<(String, String, bool)> = Vec::new();
    for (r, p) in wanted {
        if !held(r, p) && !out.iter().any(|(or, op, _)| or == r && op == p) {
            out.push((r.clone(), p.clone(), false));
        }
    }
    for (r, p, removed) in current {
        if !removed && !wanted.iter().any(|(wr, wp)| wr == r && wp == p) {
            out.push((r.clone(), p.clone(), true));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use firebreak_domain::access::{Role, Scope};

    use super::*;

    #[test]
    fn grants_round_trip_through_their_text() {
        let grants = vec![
            Grant {
                role: Role::Responder,
                scope: Scope::Team("payments".into()),
            },
            Grant {
                role: Role::Viewer,
                scope: Scope::All,
            },
            Grant {
                role: Role::Admin,
                scope: Scope::Service("intake".into()),
            },
        ];
        let text = grants_text(&grants);
        assert_eq!(
            text,
            "responder@team:payments,viewer@all,admin@service:intake"
        );
        assert_eq!(parse_grants(&text).unwrap(), grants);
        assert_eq!(grants_text(&[]), "");
        assert_eq!(parse_grants("").unwrap(), []);
    }

    #[test]
    fn grants_that_do_not_parse_are_corrupt() {
        for bad in [
            "root@all",
            "viewer@everywhere",
            "viewer",
            "viewer@all,",
            ",viewer@all",
            "viewer@service:billing",
            "viewer@team:Payments",
        ] {
            let e = parse_grants(bad).unwrap_err();
            assert!(matches!(e, Error::Corrupt(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn kinds_are_stored_by_name_and_a_service_is_refused() {
        for kind in [SubjectKind::User, SubjectKind::ServiceAccount] {
            assert_eq!(parse_kind(kind_text(kind).unwrap()).unwrap(), kind);
        }
        assert!(matches!(
            kind_text(SubjectKind::Service),
            Err(Error::Corrupt(_))
        ));
        for bad in ["service", "User", ""] {
            assert!(matches!(parse_kind(bad), Err(Error::Corrupt(_))), "{bad}");
        }
    }
}
