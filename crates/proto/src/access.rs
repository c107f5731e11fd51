//! Identity on the wire: roles, grants and subjects to and from the domain's, and the
//! authenticated caller a request carries.

use firebreak_domain::access::{Grant, Principal, Role, Scope, SubjectKind};
use firebreak_domain::people::{ContactKind, ContactMethod};

use crate::v1;

/// A domain role as its wire value.
pub fn wire_role(role: Role) -> v1::Role {
    match role {
        Role::IncidentCommander => v1::Role::IncidentCommander,
        Role::Responder => v1::Role::Responder,
        Role::ItOperator => v1::Role::ItOperator,
        Role::Manager => v1::Role::Manager,
        Role::Analyst => v1::Role::Analyst,
        Role::Viewer => v1::Role::Viewer,
        Role::Admin => v1::Role::Admin,
        Role::Integration => v1::Role::Integration,
        Role::Service => v1::Role::Service,
    }
}

/// A wire role as the domain's; unspecified or unknown values are an error naming `role`.
pub fn role(value: i32) -> Result<Role, firebreak_domain::Error> {
    let known = v1::Role::try_from(value).ok();
    Role::ALL
        .iter()
        .copied()
        .find(|r| Some(wire_role(*r)) == known)
        .ok_or_else(|| firebreak_domain::Error::Invalid {
            field: "role",
            reason: format!("{value} is not a role"),
        })
}

/// A domain grant on the wire.
pub fn wire_grant(g: &Grant) -> v1::Grant {
    v1::Grant {
        role: wire_role(g.role) as i32,
        scope: g.scope.to_string(),
    }
}

/// A wire grant as the domain's; an empty scope means `all`.
pub fn grant(g: &v1::Grant) -> Result<Grant, firebreak_domain::Error> {
    let scope = if g.scope.is_empty() {
        Scope::All
    } else {
        g.scope.parse()?
    };
    Ok(Grant {
        role: role(g.role)?,
        scope,
    })
}

/// A subject kind on the wire.
pub fn wire_kind(kind: SubjectKind) -> v1::SubjectKind {
    match kind {
        SubjectKind::User => v1::SubjectKind::User,
        SubjectKind::ServiceAccount => v1::SubjectKind::ServiceAccount,
        SubjectKind::Service => v1::SubjectKind::Service,
    }
}

/// A wire subject kind as the domain's; unspecified is an error naming `kind`.
pub fn kind(value: i32) -> Result<SubjectKind, firebreak_domain::Error> {
    match v1::SubjectKind::try_from(value) {
        Ok(v1::SubjectKind::User) => Ok(SubjectKind::User),
        Ok(v1::SubjectKind::ServiceAccount) => Ok(SubjectKind::ServiceAccount),
        Ok(v1::SubjectKind::Service) => Ok(SubjectKind::Service),
        _ => Err(firebreak_domain::Error::Invalid {
            field: "kind",
            reason: format!("{value} is not a subject kind"),
        }),
    }
}

/// A contact method's kind on the wire.
pub fn wire_contact_kind(kind: ContactKind) -> v1::ContactKind {
    match kind {
        ContactKind::Email => v1::ContactKind::Email,
        ContactKind::Sms => v1::ContactKind::Sms,
        ContactKind::Voice => v1::ContactKind::Voice,
        ContactKind::Slack => v1::ContactKind::Slack,
        ContactKind::Mattermost => v1::ContactKind::Mattermost,
        ContactKind::Teams => v1::ContactKind::Teams,
        ContactKind::Webhook => v1::ContactKind::Webhook,
    }
}

/// A wire contact kind as the domain's; `None` for unspecified or one this build lacks.
pub fn contact_kind(value: i32) -> Option<ContactKind> {
    match v1::ContactKind::try_from(value).ok()? {
        v1::ContactKind::Email => Some(ContactKind::Email),
        v1::ContactKind::Sms => Some(ContactKind::Sms),
        v1::ContactKind::Voice => Some(ContactKind::Voice),
        v1::ContactKind::Slack => Some(ContactKind::Slack),
        v1::ContactKind::Mattermost => Some(ContactKind::Mattermost),
        v1::ContactKind::Teams => Some(ContactKind::Teams),
        v1::ContactKind::Webhook => Some(ContactKind::Webhook),
        v1::ContactKind::Unspecified => None,
    }
}

/// A contact method on the wire.
pub fn wire_contact(m: &ContactMethod) -> v1::ContactMethod {
    v1::ContactMethod {
        name: m.name.clone(),
        kind: wire_contact_kind(m.kind) as i32,
        address: m.address.clone(),
    }
}

/// A wire contact method as the domain's; an unspecified or unknown kind is an error naming
/// the field.
pub fn contact(m: &v1::ContactMethod) -> Result<ContactMethod, firebreak_domain::Error> {
    let kind = contact_kind(m.kind).ok_or_else(|| firebreak_domain::Error::Invalid {
        field: "contact_methods.kind",
        reason: format!("{} is not a contact kind", m.kind),
    })?;
    Ok(ContactMethod {
        name: m.name.clone(),
        kind,
        address: m.address.clone(),
    })
}

/// The authenticated caller of a request, as the server's access layer verified it (it puts
/// an `Arc<Principal>` on the request: shared, not copied per call); `None` only where no
/// access layer runs (a service's own tests).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request
        .extensions()
        .get::<std::sync::Arc<Principal>>()
        .map(|p| p.as_ref())
}

/// The address a call (gRPC or HTTP) came from: the servers put it on every request, so a
/// service can tell sources apart (intake slows down one that keeps failing to
/// authenticate). Absent where no server of Firebreak's runs (a service's own tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// The address a gRPC request came from, if the server said.
pub fn remote_addr<T>(request: &tonic::Request<T>) -> Option<std::net::SocketAddr> {
    request.extensions().get::<RemoteAddr>().map(|r| r.0)
}

/// The response metadata in which a method that makes what it acts on (a new silence)
/// names it, for the audit log's target: its request could not.
pub const TARGET_METADATA: &str = "firebreak-target";

/// The actor to record for a request's caller: the authenticated identity, never a request
/// field. Without an access layer (a service's own tests), `anonymous`.
pub fn actor<T>(request: &tonic::Request<T>) -> String {
    caller(request).map_or_else(|| "anonymous".to_owned(), Principal::actor)
}

/// Sends a bearer token with every call on a channel (a service's credential to its peers,
/// a person's token from the CLI).
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// `token` as `authorization: Bearer <token>`; `None` (or a token that is not header
    /// text) sends nothing.
    pub fn new(token: Option<&str>) -> Self {
        Self(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(***)"
        } else {
            "Bearer(none)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        // A call that carries its own credentials (an integration key, another token) keeps
        // them.
        if let Some(v) = &self.0
            && !req.metadata().contains_key("authorization")
        {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel that sends a bearer token with every call.
pub type AuthedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel`, sending `token` with every call.
pub fn authed(channel: tonic::transport::Channel, token: Option<&str>) -> AuthedChannel {
    tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_goes_over_the_wire_and_back() {
        for r in Role::ALL {
            assert_eq!(role(wire_role(*r) as i32).unwrap(), *r);
        }
        for bad in [0, 10, -1] {
            assert!(role(bad).unwrap_err().to_string().contains("role"));
        }
        let g = grant(&v1::Grant {
            role: v1::Role::Responder as i32,
            scope: "team:db".into(),
        })
        .unwrap();
        assert_eq!(wire_grant(&g).scope, "team:db");
        assert!(kind(0).is_err());
    }
}
