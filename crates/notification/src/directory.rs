//! The directory of people (users, service accounts, teams) and the API tokens that act for
//! them, served over `AccessService`; and the credential copy every service's verifier
//! keeps, served over the internal `CredentialService`.
//!
//! It also keeps the audit log: every access layer ships its entries with its credential
//! sync (in-process, or over `CredentialService`), the directory appends them with an `audit`
//! event each, serves them over `AuditService`, and deletes those past the retention.
//!
//! Who may call what is decided before a call reaches here (the access layer); these
//! handlers validate input and record the authenticated actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use firebreak_domain::access::{
    self, Grant, NewToken, Role, SubjectKind, mask_token_id, parse_name,
};
use firebreak_domain::people::NotificationRule;
use firebreak_domain::{Clock, Micros, SystemClock};
use firebreak_proto::access::{actor, caller, grant, kind, wire_grant, wire_kind};
use firebreak_proto::internal::v1 as internal;
use firebreak_proto::internal::v1::credential_service_server::{
    CredentialService, CredentialServiceServer,
};
use firebreak_proto::v1::access_service_server::{AccessService, AccessServiceServer};
use firebreak_proto::v1::audit_service_server::{AuditService, AuditServiceServer};
use firebreak_proto::v1::{self};
use firebreak_proto::{micros, timestamp};
use firebreak_storage::{
    AuditCursor, AuditFilter, AuditRecord, DirectoryStore, OutboxEvent, TeamRecord, TokenRecord,
    UserRecord,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::Error;

/// The most grants one token holds.
const MAX_GRANTS: usize = 16;
/// The most bytes of a token's description.
const MAX_DESCRIPTION: usize = 256;
/// The longest a token may live.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// The most bytes of a display name, an email address and a time zone name.
const MAX_DISPLAY_NAME: usize = 128;
const MAX_EMAIL: usize = 254;
const MAX_TIME_ZONE: usize = 64;
/// The most token uses (and audit entries) one sync reports, and credentials one sync
/// answers with.
pub const MAX_SYNC: usize = 10_000;
/// The most incident roles of one incident the directory copies (triage allows 50).
const MAX_INCIDENT_ROLES: usize = 64;
/// The bounds of a `ListAudit` filter.
const MAX_AUDIT_ACTOR: usize = 256;
const MAX_AUDIT_ACTION: usize = 128;
/// How many audit entries a page holds unless asked for fewer, and at most.
const DEFAULT_AUDIT_PAGE: u32 = 100;
const MAX_AUDIT_PAGE: u32 = 1000;
/// How often entries past the retention are deleted.
const AUDIT_RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The directory's gRPC services on its store.
#[derive(Clone)]
pub struct Directory {
    pub(crate) store: Arc<dyn DirectoryStore>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Directory {
    pub fn new(store: Arc<dyn DirectoryStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same directory reading `clock` (tests move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn grpc(&self) -> AccessServiceServer<Self> {
        AccessServiceServer::new(self.clone())
    }

    pub fn credentials_grpc(&self) -> CredentialServiceServer<Self> {
        CredentialServiceServer::new(self.clone())
    }

    pub fn audit_grpc(&self) -> AuditServiceServer<Self> {
        AuditServiceServer::new(self.clone())
    }

    /// Appends an access layer's audit entries (at most [`MAX_SYNC`]) to the log, each with
    /// its `audit` event; an entry appended before (a sync retried) is skipped. Entries are
    /// made by Firebreak's own access layers, but are stored only within bounds: a field too
    /// long is clipped, NUL is dropped, an id that is not a UUID gets a new one, so one bad
    /// entry never makes the credential sync that carries it fail for ever.
    pub async fn append_audit(&self, entries: &[v1::AuditEntry]) -> Result<u64, Error> {
        if entries.len() > MAX_SYNC {
            return Err(Error::Invalid(format!("audit: at most {MAX_SYNC} entries")));
        }
        let mut seen = std::collections::HashSet::new();
        let batch: Vec<(AuditRecord, OutboxEvent)> = entries
            .iter()
            .map(audit_record)
            .filter(|r| seen.insert(r.id.clone()))
            .map(|r| {
                let event = audit_event(&r);
                (r, event)
            })
            .collect();
        Ok(self.store.append_audit(&batch).await?)
    }

    /// Deletes the audit entries older than `days` days; `0` keeps them for ever.
    pub async fn delete_old_audit(&self, days: u64) -> Result<u64, Error> {
        if days == 0 {
            return Ok(0);
        }
        let keep = Duration::from_secs(days.saturating_mul(86_400));
        let now = self.clock.now().unix_micros();
        let before = now.saturating_sub(i64::try_from(keep.as_micros()).unwrap_or(i64::MAX));
        Ok(self
            .store
            .delete_audit_before(Micros::from_unix_micros(before))
            .await?)
    }

    /// Deletes audit entries older than `days` days now and every hour until `stop` (the
    /// retention; `0` keeps them for ever).
    pub async fn keep_audit(self, days: u64, stop: CancellationToken) {
        if days == 0 {
            return;
        }
        loop {
            match self.delete_old_audit(days).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, days, "audit entries past the retention deleted")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting old audit entries failed; retrying in an hour")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(AUDIT_RETENTION_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Makes a token for `subject` (an existing user or service account) and stores its
    /// hash; returns it with its secret, shown once. `bootstrap` and the gRPC call share it.
    pub async fn create_token(
        &self,
        subject: &str,
        grants: Vec<Grant>,
        description: &str,
        expires_in: Option<Duration>,
        created_by: &str,
    ) -> Result<(TokenRecord, String), Error> {
        parse_name("subject", subject)?;
        if grants.is_empty() || grants.len() > MAX_GRANTS {
            return Err(Error::Invalid(format!(
                "grants: 1-{MAX_GRANTS} grants are needed"
            )));
        }
        if grants.iter().any(|g| g.role == Role::Service) {
            return Err(Error::Invalid(
                "grants: the service role belongs to Firebreak's own services only".into(),
            ));
        }
        check_text("description", description, MAX_DESCRIPTION)?;
        if expires_in.is_some_and(|d| d > MAX_TOKEN_LIFE) {
            return Err(Error::Invalid(
                "expires_in_seconds: at most 10 years".into(),
            ));
        }
        let mut random = [0u8; 38];
        getrandom::fill(&mut random).map_err(|e| Error::Random(e.to_string()))?;
        let made = NewToken::from_random(&random);
        let now = self.clock.now();
        let record = TokenRecord {
            id: made.id.clone(),
            hash: made.hash.clone(),
            subject: subject.to_owned(),
            grants,
            description: description.to_owned(),
            created_by: created_by.to_owned(),
            created_at: now,
            expires_at: expires_in.map(|d| now + d),
            revoked_at: None,
            last_used_at: None,
            version: 0,
        };
        let stored = self
            .store
            .insert_token(&record)
            .await
            .map_err(|e| match e {
                firebreak_storage::Error::NotFound(_) => Error::NotFound(format!("user {subject}")),
                e => e.into(),
            })?;
        Ok((stored, made.token))
    }

    /// Whether any token was ever made (a fresh directory has none: embedded mode's first
    /// start makes the admin's).
    pub async fn has_tokens(&self) -> Result<bool, Error> {
        Ok(!self.store.tokens_since(0).await?.is_empty())
    }

    /// Adds a user unless one by that name exists; returns whether it added one.
    pub async fn ensure_user(&self, user: UserRecord) -> Result<bool, Error> {
        match self.store.insert_user(&user).await {
            Ok(()) => Ok(true),
            Err(firebreak_storage::Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every credential changed after `since` (by version), at most [`MAX_SYNC`], with each
    /// subject's kind: what a verifier applies to its copy.
    pub async fn credentials_since(&self, since: i64) -> Result<Vec<internal::Credential>, Error> {
        let changed = self.store.tokens_since(since).await?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let kinds: HashMap<String, SubjectKind> = self
            .store
            .users()
            .await?
            .into_iter()
            .map(|u| (u.name, u.kind))
            .collect();
        Ok(changed
            .into_iter()
            .take(MAX_SYNC)
            .map(|t| internal::Credential {
                // A token whose subject is gone is revoked already; say so either way.
                revoked: t.revoked_at.is_some() || !kinds.contains_key(&t.subject),
                kind: wire_kind(kinds.get(&t.subject).copied().unwrap_or(SubjectKind::User)) as i32,
                grants: t.grants.iter().map(wire_grant).collect(),
                expires_at: t.expires_at.map(timestamp),
                id: t.id,
                hash: t.hash,
                subject: t.subject,
                version: t.version,
            })
            .collect())
    }

    /// Every change after `since` a verifier applies: credentials and incident roles, at most
    /// [`MAX_SYNC`] of each. A verifier moves its version to the highest it applied, so when
    /// either list is cut short both end at the lower of the cut lists' last versions, and
    /// `more` says to ask again.
    pub async fn changes_since(
        &self,
        since: i64,
    ) -> Result<internal::SyncCredentialsResponse, Error> {
        let mut credentials = self.credentials_since(since).await?;
        let mut incident_grants: Vec<internal::IncidentGrant> = self
            .store
            .incident_roles_since(since)
            .await?
            .into_iter()
            .take(MAX_SYNC)
            .map(|r| internal::IncidentGrant {
                incident_id: r.incident_id,
                role: r.role,
                person: r.person,
                removed: r.removed,
                version: r.version,
            })
            .collect();
        let cut = [
            (credentials.len(), credentials.last().map(|c| c.version)),
            (
                incident_grants.len(),
                incident_grants.last().map(|g| g.version),
            ),
        ]
        .into_iter()
        .filter(|(n, _)| *n >= MAX_SYNC)
        .filter_map(|(_, last)| last)
        .min();
        if let Some(cut) = cut {
            credentials.retain(|c| c.version <= cut);
            incident_grants.retain(|g| g.version <= cut);
        }
        Ok(internal::SyncCredentialsResponse {
            credentials,
            incident_grants,
            more: cut.is_some(),
        })
    }

    /// Copies an incident's roles (as triage announced them) into the directory, where every
    /// verifier's copy picks them up: the guide's roles held by valid user names, at most
    /// [`MAX_INCIDENT_ROLES`]. Returns whether anything changed.
    pub async fn record_incident_roles(&self, incident: &v1::Incident) -> Result<bool, Error> {
        let holders: Vec<(String, String)> = incident
            .roles
            .iter()
            .filter(|a| Role::of_incident_role(&a.role).is_some())
            .filter(|a| parse_name("person", &a.person).is_ok())
            .take(MAX_INCIDENT_ROLES)
            .map(|a| (a.role.clone(), a.person.clone()))
            .collect();
        if incident.id.is_empty() || incident.id.len() > 64 {
            return Err(Error::Invalid("incident.id: 1-64 bytes".into()));
        }
        Ok(self
            .store
            .set_incident_roles(&incident.id, &holders)
            .await?)
    }

    /// Records the token uses a verifier saw.
    pub async fn mark_used(&self, uses: &[(String, Micros)]) -> Result<(), Error> {
        if uses.len() > MAX_SYNC {
            return Err(Error::Invalid(format!("uses: at most {MAX_SYNC}")));
        }
        Ok(self.store.mark_used(uses).await?)
    }
}

/// An entry as it is stored: each field within its bound, without NUL.
fn audit_record(e: &v1::AuditEntry) -> AuditRecord {
    let field = |text: &str, max: usize| crate::clip(&text.replace('\0', ""), max);
    let id = uuid::Uuid::parse_str(&e.id).unwrap_or_else(|_| uuid::Uuid::now_v7());
    AuditRecord {
        id: id.to_string(),
        at: e.at.as_ref().map(micros).unwrap_or_default(),
        actor: field(&e.actor, MAX_AUDIT_ACTOR),
        roles: field(&e.roles, 512),
        method: field(&e.method, 256),
        target: field(&e.target, 256),
        outcome: field(&e.outcome, 32),
        reason: field(&e.reason, 512),
        source: field(&e.source, 128),
        request_id: field(&e.request_id, 128),
        trace_id: field(&e.trace_id, 64),
    }
}

fn audit_to_proto(r: &AuditRecord) -> v1::AuditEntry {
    v1::AuditEntry {
        id: r.id.clone(),
        at: Some(timestamp(r.at)),
        actor: r.actor.clone(),
        roles: r.roles.clone(),
        method: r.method.clone(),
        target: r.target.clone(),
        outcome: r.outcome.clone(),
        reason: r.reason.clone(),
        source: r.source.clone(),
        request_id: r.request_id.clone(),
        trace_id: r.trace_id.clone(),
    }
}

/// The `audit` event of an entry: its id is the entry's, so a consumer sees it once however
/// often it was sent.
fn audit_event(r: &AuditRecord) -> OutboxEvent {
    let event = v1::Event {
        id: r.id.clone(),
        occurred_at: Some(timestamp(r.at)),
        traceparent: String::new(),
        payload: Some(v1::event::Payload::AuditRecorded(v1::AuditRecorded {
            entry: Some(audit_to_proto(r)),
        })),
    };
    OutboxEvent {
        id: r.id.clone(),
        stream: firebreak_bus::streams::AUDIT.to_owned(),
        subject: "audit.recorded".to_owned(),
        payload: firebreak_proto::encode_event(&event),
    }
}

/// A page token of the audit log: `AT.ID` of the last entry of the previous page.
fn audit_token(token: &str) -> Result<Option<AuditCursor>, Error> {
    let Some((at, id)) = time_cursor(AUDIT, token)? else {
        return Ok(None);
    };
    let id = uuid::Uuid::parse_str(&id).map_err(|_| Error::InvalidPageToken)?;
    Ok(Some(AuditCursor {
        at,
        id: id.to_string(),
    }))
}

/// The page tokens' list names (`firebreak_proto::page`).
const AUDIT: &str = "audit";
const TOKENS: &str = "tokens";
const USERS: &str = "users";
const TEAMS: &str = "teams";

/// The cursor a page token of `list` holds; a token this list did not give is
/// INVALID_ARGUMENT naming `page_token`.
fn cursor(list: &str, token: &str) -> Result<Option<String>, Error> {
    firebreak_proto::page::cursor(list, token).map_err(|_| Error::InvalidPageToken)
}

/// A keyset cursor `MICROS.ID` out of a page token of `list`.
fn time_cursor(list: &str, token: &str) -> Result<Option<(Micros, String)>, Error> {
    cursor(list, token)?
        .map(|c| {
            firebreak_proto::page::pair(&c, |a| a.parse::<i64>().ok())
                .map(|(at, id)| (Micros::from_unix_micros(at), id))
                .map_err(|_| Error::InvalidPageToken)
        })
        .transpose()
}

/// A filter's text: empty is no filter; else within `max` bytes, without NUL.
fn filter_text(field: &str, text: &str, max: usize) -> Result<Option<String>, Error> {
    check_text(field, text, max)?;
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), Error> {
    if text.len() > max {
        return Err(Error::Invalid(format!("{field}: at most {max} bytes")));
    }
    if text.contains('\0') {
        return Err(Error::Invalid(format!("{field}: must not hold NUL")));
    }
    Ok(())
}

fn token_to_proto(t: &TokenRecord) -> v1::Token {
    v1::Token {
        id: t.id.clone(),
        masked_id: mask_token_id(&t.id),
        subject: t.subject.clone(),
        grants: t.grants.iter().map(wire_grant).collect(),
        description: t.description.clone(),
        created_by: t.created_by.clone(),
        created_at: Some(timestamp(t.created_at)),
        expires_at: t.expires_at.map(timestamp),
        revoked_at: t.revoked_at.map(timestamp),
        last_used_at: t.last_used_at.map(timestamp),
    }
}

/// A user as a caller sent it, checked: the name, bounded text, a user or service account
/// (unspecified: a person), and contact methods and rules that hold together. Run-time
/// entries are never declared.
fn person(u: v1::User, now: Micros) -> Result<UserRecord, Error> {
    let name = parse_name("name", &u.name)?;
    check_text("display_name", &u.display_name, MAX_DISPLAY_NAME)?;
    check_text("email", &u.email, MAX_EMAIL)?;
    check_text("time_zone", &u.time_zone, MAX_TIME_ZONE)?;
    let kind = match kind(u.kind) {
        Ok(SubjectKind::Service) => {
            return Err(Error::Invalid(
                "kind: a directory entry is a user or a service account".into(),
            ));
        }
        Ok(k) => k,
        // Unspecified: a person.
        Err(_) if u.kind == 0 => SubjectKind::User,
        Err(e) => return Err(e.into()),
    };
    if u.contact_methods.len() > firebreak_domain::people::MAX_CONTACT_METHODS
        || u.notification_rules.len() > firebreak_domain::people::MAX_NOTIFICATION_RULES
    {
        return Err(Error::Invalid(format!(
            "contact_methods, notification_rules: at most {} and {}",
            firebreak_domain::people::MAX_CONTACT_METHODS,
            firebreak_domain::people::MAX_NOTIFICATION_RULES
        )));
    }
    let contact_methods = u
        .contact_methods
        .iter()
        .map(firebreak_proto::access::contact)
        .collect::<Result<Vec<_>, _>>()?;
    let notification_rules: Vec<NotificationRule> = u
        .notification_rules
        .into_iter()
        .map(|r| NotificationRule {
            after_minutes: r.after_minutes,
            method: r.method,
        })
        .collect();
    firebreak_domain::people::check_contacts(&contact_methods, &notification_rules)?;
    Ok(UserRecord {
        name,
        display_name: u.display_name,
        email: u.email,
        time_zone: u.time_zone,
        kind,
        declared: false,
        created_at: now,
        contact_methods,
        notification_rules,
    })
}

fn user_to_proto(u: &UserRecord) -> v1::User {
    v1::User {
        name: u.name.clone(),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        time_zone: u.time_zone.clone(),
        kind: wire_kind(u.kind) as i32,
        declared: u.declared,
        created_at: Some(timestamp(u.created_at)),
        contact_methods: u
            .contact_methods
            .iter()
            .map(firebreak_proto::access::wire_contact)
            .collect(),
        notification_rules: u
            .notification_rules
            .iter()
            .map(|r| v1::NotificationRule {
                after_minutes: r.after_minutes,
                method: r.method.clone(),
            })
            .collect(),
    }
}

fn team_to_proto(t: &TeamRecord) -> v1::Team {
    v1::Team {
        name: t.name.clone(),
        display_name: t.display_name.clone(),
        declared: t.declared,
        members: t.members.clone(),
    }
}

#[tonic::async_trait]
impl AccessService for Directory {
    async fn who_am_i(
        &self,
        req: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let p = caller(&req).ok_or_else(|| Status::unauthenticated("no credentials"))?;
        Ok(Response::new(v1::WhoAmIResponse {
            actor: p.actor(),
            kind: wire_kind(p.kind) as i32,
            name: p.name.clone(),
            token_id: p.token_id.clone(),
            grants: p.grants.iter().map(wire_grant).collect(),
        }))
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let by = actor(&req);
        let r = req.into_inner();
        if r.grants.len() > MAX_GRANTS {
            return Err(Error::Invalid(format!("grants: at most {MAX_GRANTS}")).into());
        }
        let grants = r
            .grants
            .iter()
            .map(grant)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::from)?;
        let expires_in =
            (r.expires_in_seconds > 0).then(|| Duration::from_secs(r.expires_in_seconds));
        let (token, secret) =
            Directory::create_token(self, &r.subject, grants, &r.description, expires_in, &by)
                .await?;
        Ok(Response::new(v1::CreateTokenResponse {
            token: Some(token_to_proto(&token)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let r = req.into_inner();
        let limit = firebreak_proto::page::list_size(r.page_size);
        let after = time_cursor(TOKENS, &r.page_token)?;
        // One more than asked: whether another page follows.
        let mut tokens = self
            .store
            .tokens_page(after.as_ref().map(|(at, id)| (*at, id.as_str())), limit + 1)
            .await
            .map_err(Error::from)?;
        let more = tokens.len() > limit as usize;
        tokens.truncate(limit as usize);
        let next_page_token = firebreak_proto::page::next(
            TOKENS,
            tokens
                .last()
                .map(|t| format!("{}.{}", t.created_at.unix_micros(), t.id)),
            more,
        );
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let r = req.into_inner();
        // Accept the id as listed (fb_ prefix) or bare.
        let id = r.id.strip_prefix(access::TOKEN_PREFIX).unwrap_or(&r.id);
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid("id: a token id is 12 hex digits".into()).into());
        }
        let token = self
            .store
            .revoke_token(id, self.clock.now())
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
        Ok(Response::new(v1::RevokeTokenResponse {
            token: Some(token_to_proto(&token)),
        }))
    }

    async fn create_user(
        &self,
        req: Request<v1::CreateUserRequest>,
    ) -> Result<Response<v1::CreateUserResponse>, Status> {
        let u = req
            .into_inner()
            .user
            .ok_or_else(|| Error::Invalid("user: required".into()))?;
        let record = person(u, self.clock.now())?;
        self.store.insert_user(&record).await.map_err(Error::from)?;
        Ok(Response::new(v1::CreateUserResponse {
            user: Some(user_to_proto(&record)),
        }))
    }

    async fn list_users(
        &self,
        req: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        let r = req.into_inner();
        let limit = firebreak_proto::page::list_size(r.page_size);
        let after = cursor(USERS, &r.page_token)?;
        // One more than asked: whether another page follows.
        let mut users = self
            .store
            .users_page(after.as_deref(), limit + 1)
            .await
            .map_err(Error::from)?;
        let more = users.len() > limit as usize;
        users.truncate(limit as usize);
        let next_page_token =
            firebreak_proto::page::next(USERS, users.last().map(|u| u.name.clone()), more);
        Ok(Response::new(v1::ListUsersResponse {
            users: users.iter().map(user_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        req: Request<v1::UpdateUserRequest>,
    ) -> Result<Response<v1::UpdateUserResponse>, Status> {
        let u = req
            .into_inner()
            .user
            .ok_or_else(|| Error::Invalid("user: required".into()))?;
        let wanted = person(u, self.clock.now())?;
        let Some(stored) = self.store.user(&wanted.name).await.map_err(Error::from)? else {
            return Err(Error::NotFound(format!("user {}", wanted.name)).into());
        };
        if stored.declared {
            return Err(Error::Declared(format!("user {}", wanted.name)).into());
        }
        let record = UserRecord {
            kind: stored.kind,
            declared: stored.declared,
            created_at: stored.created_at,
            ..wanted
        };
        if !self.store.update_user(&record).await.map_err(Error::from)? {
            return Err(Error::NotFound(format!("user {}", record.name)).into());
        }
        Ok(Response::new(v1::UpdateUserResponse {
            user: Some(user_to_proto(&record)),
        }))
    }

    async fn delete_user(
        &self,
        req: Request<v1::DeleteUserRequest>,
    ) -> Result<Response<v1::DeleteUserResponse>, Status> {
        let name = parse_name("name", &req.into_inner().name).map_err(Error::from)?;
        match self.store.user(&name).await.map_err(Error::from)? {
            None => return Err(Error::NotFound(format!("user {name}")).into()),
            Some(u) if u.declared => return Err(Error::Declared(format!("user {name}")).into()),
            Some(_) => {}
        }
        self.store
            .delete_user(&name, self.clock.now())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::DeleteUserResponse {}))
    }

    async fn create_team(
        &self,
        req: Request<v1::CreateTeamRequest>,
    ) -> Result<Response<v1::CreateTeamResponse>, Status> {
        let t = req
            .into_inner()
            .team
            .ok_or_else(|| Error::Invalid("team: required".into()))?;
        let name = parse_name("name", &t.name).map_err(Error::from)?;
        check_text("display_name", &t.display_name, MAX_DISPLAY_NAME)?;
        let record = TeamRecord {
            name,
            display_name: t.display_name,
            declared: false,
            created_at: self.clock.now(),
            members: Vec::new(),
        };
        self.store.insert_team(&record).await.map_err(Error::from)?;
        Ok(Response::new(v1::CreateTeamResponse {
            team: Some(team_to_proto(&record)),
        }))
    }

    async fn list_teams(
        &self,
        req: Request<v1::ListTeamsRequest>,
    ) -> Result<Response<v1::ListTeamsResponse>, Status> {
        let r = req.into_inner();
        let limit = firebreak_proto::page::list_size(r.page_size);
        let after = cursor(TEAMS, &r.page_token)?;
        // One more than asked: whether another page follows.
        let mut teams = self
            .store
            .teams_page(after.as_deref(), limit + 1)
            .await
            .map_err(Error::from)?;
        let more = teams.len() > limit as usize;
        teams.truncate(limit as usize);
        let next_page_token =
            firebreak_proto::page::next(TEAMS, teams.last().map(|t| t.name.clone()), more);
        Ok(Response::new(v1::ListTeamsResponse {
            teams: teams.iter().map(team_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_team(
        &self,
        req: Request<v1::DeleteTeamRequest>,
    ) -> Result<Response<v1::DeleteTeamResponse>, Status> {
        let name = parse_name("name", &req.into_inner().name).map_err(Error::from)?;
        let teams = self.store.teams().await.map_err(Error::from)?;
        match teams.iter().find(|t| t.name == name) {
            None => return Err(Error::NotFound(format!("team {name}")).into()),
            Some(t) if t.declared => return Err(Error::Declared(format!("team {name}")).into()),
            Some(_) => {}
        }
        self.store.delete_team(&name).await.map_err(Error::from)?;
        Ok(Response::new(v1::DeleteTeamResponse {}))
    }

    async fn set_team_member(
        &self,
        req: Request<v1::SetTeamMemberRequest>,
    ) -> Result<Response<v1::SetTeamMemberResponse>, Status> {
        let r = req.into_inner();
        let team = parse_name("team", &r.team).map_err(Error::from)?;
        let user = parse_name("user", &r.user).map_err(Error::from)?;
        self.store
            .set_member(&team, &user, r.member)
            .await
            .map_err(|e| match e {
                firebreak_storage::Error::NotFound(what) => Error::NotFound(what),
                e => e.into(),
            })?;
        let teams = self.store.teams().await.map_err(Error::from)?;
        let t = teams
            .iter()
            .find(|t| t.name == team)
            .ok_or_else(|| Error::NotFound(format!("team {team}")))?;
        Ok(Response::new(v1::SetTeamMemberResponse {
            team: Some(team_to_proto(t)),
        }))
    }
}

#[tonic::async_trait]
impl CredentialService for Directory {
    async fn sync_credentials(
        &self,
        req: Request<internal::SyncCredentialsRequest>,
    ) -> Result<Response<internal::SyncCredentialsResponse>, Status> {
        let r = req.into_inner();
        if r.uses.len() > MAX_SYNC {
            return Err(Error::Invalid(format!("uses: at most {MAX_SYNC}")).into());
        }
        // The caller is a service credential (the access layer checked): its entries are
        // appended first, so a sync that fails after it is retried with them and appends
        // nothing twice.
        if !r.audit.is_empty() {
            self.append_audit(&r.audit).await?;
        }
        let uses: Vec<(String, Micros)> = r
            .uses
            .iter()
            .filter(|u| u.id.len() <= 12)
            .map(|u| (u.id.clone(), u.at.as_ref().map(micros).unwrap_or_default()))
            .collect();
        if !uses.is_empty() {
            self.mark_used(&uses).await?;
        }
        Ok(Response::new(self.changes_since(r.since_version).await?))
    }
}

#[tonic::async_trait]
impl AuditService for Directory {
    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let filter = AuditFilter {
            actor: filter_text("actor", &r.actor, MAX_AUDIT_ACTOR)?,
            since: r.since.as_ref().map(micros),
            action: filter_text("action", &r.action, MAX_AUDIT_ACTION)?,
        };
        let after = audit_token(&r.page_token)?;
        let limit = firebreak_proto::page::size(r.page_size, DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE);
        // One more than asked: whether another page follows.
        let mut rows = self
            .store
            .audit(&filter, after.as_ref(), limit + 1)
            .await
            .map_err(Error::from)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = firebreak_proto::page::next(
            AUDIT,
            rows.last()
                .map(|last| format!("{}.{}", last.at.unix_micros(), last.id)),
            more,
        );
        Ok(Response::new(v1::ListAuditResponse {
            entries: rows.iter().map(audit_to_proto).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use firebreak_domain::ManualClock;
    use firebreak_storage::sqlite::SqliteNotificationStore;

    use super::*;

    pub(crate) async fn directory() -> (Directory, Arc<ManualClock>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteNotificationStore::open(&dir.path().join("n.db"), false)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::default());
        let d = Directory::new(Arc::new(store)).with_clock(clock.clone());
        (d, clock, dir)
    }

    fn entry(actor: &str, at: Micros) -> v1::AuditEntry {
        v1::AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            at: Some(timestamp(at)),
            actor: actor.into(),
            method: "/firebreak.v1.IncidentService/Close".into(),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    async fn list(
        d: &Directory,
        req: v1::ListAuditRequest,
    ) -> Result<v1::ListAuditResponse, Status> {
        d.list_audit(Request::new(req))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn hostile_directory_requests_are_refused_naming_the_field() {
        let (d, _, _dir) = directory().await;
        d.ensure_user(UserRecord {
            name: "alice".into(),
            display_name: String::new(),
            email: String::new(),
            time_zone: String::new(),
            kind: SubjectKind::User,
            declared: false,
            created_at: Micros::from_unix_micros(0),
            contact_methods: Vec::new(),
            notification_rules: Vec::new(),
        })
        .await
        .unwrap();
        let grant = |role: v1::Role, scope: &str| v1::Grant {
            role: role as i32,
            scope: scope.into(),
        };
        let token = |subject: &str, grants: Vec<v1::Grant>, description: &str, expires: u64| {
            v1::CreateTokenRequest {
                subject: subject.into(),
                grants,
                description: description.into(),
                expires_in_seconds: expires,
            }
        };
        let viewer = || vec![grant(v1::Role::Viewer, "all")];
        let tokens = [
            ("subject", token("Alice", viewer(), "", 0)),
            ("subject", token(&"a".repeat(65), viewer(), "", 0)),
            ("grants", token("alice", Vec::new(), "", 0)),
            (
                "grants",
                token("alice", vec![grant(v1::Role::Viewer, "all"); 17], "", 0),
            ),
            (
                "grants",
                token("alice", vec![grant(v1::Role::Service, "all")], "", 0),
            ),
            (
                "role",
                token("alice", vec![grant(v1::Role::Unspecified, "all")], "", 0),
            ),
            (
                "scope",
                token(
                    "alice",
                    vec![grant(v1::Role::Viewer, "team:Bad Team")],
                    "",
                    0,
                ),
            ),
            ("description", token("alice", viewer(), &"d".repeat(257), 0)),
            ("description", token("alice", viewer(), "a\0b", 0)),
            (
                "expires_in_seconds",
                token("alice", viewer(), "", 400_000_000),
            ),
        ];
        for (field, req) in tokens {
            let e = AccessService::create_token(&d, Request::new(req))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        let user = |name: &str, email: &str, kind: v1::SubjectKind| v1::CreateUserRequest {
            user: Some(v1::User {
                name: name.into(),
                email: email.into(),
                kind: kind as i32,
                ..Default::default()
            }),
        };
        let users = [
            ("name", user("-bob", "", v1::SubjectKind::User)),
            ("name", user("bob\0", "", v1::SubjectKind::User)),
            (
                "email",
                user("bob", &"e".repeat(255), v1::SubjectKind::User),
            ),
            ("kind", user("bob", "", v1::SubjectKind::Service)),
        ];
        let reached = |methods: Vec<(&str, v1::ContactKind, &str)>, rules: Vec<(u32, &str)>| {
            v1::CreateUserRequest {
                user: Some(v1::User {
                    name: "bob".into(),
                    contact_methods: methods
                        .into_iter()
                        .map(|(name, kind, address)| v1::ContactMethod {
                            name: name.into(),
                            kind: kind as i32,
                            address: address.into(),
                        })
                        .collect(),
                    notification_rules: rules
                        .into_iter()
                        .map(|(after_minutes, method)| v1::NotificationRule {
                            after_minutes,
                            method: method.into(),
                        })
                        .collect(),
                    ..Default::default()
                }),
            }
        };
        let email = v1::ContactKind::Email;
        let contacts = [
            (
                "contact_methods: [0].address",
                reached(vec![("work", email, "not-an-address")], vec![]),
            ),
            (
                "contact_methods.kind",
                reached(
                    vec![("work", v1::ContactKind::Unspecified, "b@x.io")],
                    vec![],
                ),
            ),
            (
                "contact_methods: [1].name",
                reached(
                    vec![("work", email, "b@x.io"), ("work", email, "c@x.io")],
                    vec![],
                ),
            ),
            (
                "notification_rules: [0].method",
                reached(vec![("work", email, "b@x.io")], vec![(0, "pager")]),
            ),
            (
                "notification_rules: [0].after_minutes",
                reached(vec![("work", email, "b@x.io")], vec![(100_000, "work")]),
            ),
            (
                "contact_methods",
                reached(vec![("work", email, "b@x.io"); 11], vec![]),
            ),
        ];
        for (field, req) in contacts {
            let e = AccessService::create_user(&d, Request::new(req))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        for (field, req) in users {
            let e = AccessService::create_user(&d, Request::new(req))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        let e = AccessService::set_team_member(
            &d,
            Request::new(v1::SetTeamMemberRequest {
                team: "nobody".into(),
                user: "alice".into(),
                member: true,
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = AccessService::revoke_token(
            &d,
            Request::new(v1::RevokeTokenRequest { id: "fb_zz".into() }),
        )
        .await
        .unwrap_err();
        assert!(e.message().contains("id"), "{e:?}");
        // Nothing was made.
        assert!(!d.has_tokens().await.unwrap());
        let names: Vec<String> = d
            .store
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice"]);
    }

    #[tokio::test]
    async fn a_person_is_updated_whole_and_a_declared_one_only_in_configuration() {
        let (d, _, _dir) = directory().await;
        let bob = |address: &str, rules: Vec<v1::NotificationRule>| v1::User {
            name: "bob".into(),
            email: "bob@example.com".into(),
            time_zone: "Europe/Berlin".into(),
            contact_methods: vec![
                v1::ContactMethod {
                    name: "work".into(),
                    kind: v1::ContactKind::Email as i32,
                    address: "bob@example.com".into(),
                },
                v1::ContactMethod {
                    name: "phone".into(),
                    kind: v1::ContactKind::Sms as i32,
                    address: address.into(),
                },
            ],
            notification_rules: rules,
            ..Default::default()
        };
        let made = AccessService::create_user(
            &d,
            Request::new(v1::CreateUserRequest {
                user: Some(bob("+4915112345678", vec![])),
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
        assert_eq!(made.contact_methods.len(), 2);
        let rules = vec![v1::NotificationRule {
            after_minutes: 5,
            method: "phone".into(),
        }];
        let updated = AccessService::update_user(
            &d,
            Request::new(v1::UpdateUserRequest {
                user: Some(bob("+14155550100", rules.clone())),
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
        assert_eq!(updated.contact_methods[1].address, "+14155550100");
        assert_eq!(updated.notification_rules, rules);
        assert_eq!(updated.created_at, made.created_at);
        let stored = d.store.user("bob").await.unwrap().unwrap();
        assert_eq!(stored.contact_methods[1].address, "+14155550100");
        assert_eq!(stored.notification_rules[0].after_minutes, 5);

        // A hostile update changes nothing.
        let e = AccessService::update_user(
            &d,
            Request::new(v1::UpdateUserRequest {
                user: Some(bob("call me maybe", vec![])),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(d.store.user("bob").await.unwrap().unwrap(), stored);
        // Nobody by that name; a declared person is changed in configuration only.
        let nobody = v1::User {
            name: "nobody".into(),
            ..Default::default()
        };
        let e = AccessService::update_user(
            &d,
            Request::new(v1::UpdateUserRequest { user: Some(nobody) }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        d.store
            .update_user(&UserRecord {
                declared: true,
                ..stored.clone()
            })
            .await
            .unwrap();
        let e = AccessService::update_user(
            &d,
            Request::new(v1::UpdateUserRequest {
                user: Some(bob("+4915112345678", vec![])),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("configuration"), "{e:?}");
    }

    #[tokio::test]
    async fn hostile_filters_and_page_tokens_are_invalid_argument_naming_the_field() {
        let (d, _, _dir) = directory().await;
        let cases = [
            (
                "actor",
                v1::ListAuditRequest {
                    actor: "a".repeat(257),
                    ..Default::default()
                },
            ),
            (
                "actor",
                v1::ListAuditRequest {
                    actor: "user:a\0b".into(),
                    ..Default::default()
                },
            ),
            (
                "action",
                v1::ListAuditRequest {
                    action: "A".repeat(129),
                    ..Default::default()
                },
            ),
            (
                "action",
                v1::ListAuditRequest {
                    action: "Close\0".into(),
                    ..Default::default()
                },
            ),
            (
                "page_token",
                v1::ListAuditRequest {
                    page_token: "nope".into(),
                    ..Default::default()
                },
            ),
            (
                "page_token",
                v1::ListAuditRequest {
                    page_token: "12.not-a-uuid".into(),
                    ..Default::default()
                },
            ),
            (
                "page_token",
                v1::ListAuditRequest {
                    page_token: format!("x.{}", uuid::Uuid::now_v7()),
                    ..Default::default()
                },
            ),
            (
                "page_token",
                v1::ListAuditRequest {
                    page_token: "9".repeat(200),
                    ..Default::default()
                },
            ),
        ];
        for (field, req) in cases {
            let e = list(&d, req.clone()).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{req:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        // At the bounds, fine.
        let ok = v1::ListAuditRequest {
            actor: "a".repeat(256),
            action: "A".repeat(128),
            ..Default::default()
        };
        assert!(list(&d, ok).await.unwrap().entries.is_empty());
    }

    #[tokio::test]
    async fn pages_are_clamped_and_followed_to_the_end() {
        let (d, clock, _dir) = directory().await;
        let now = clock.now();
        let batch: Vec<_> = (0..1_001).map(|_| entry("user:alice", now)).collect();
        assert_eq!(d.append_audit(&batch).await.unwrap(), 1_001);
        let page = list(&d, v1::ListAuditRequest::default()).await.unwrap();
        assert_eq!(page.entries.len(), 100);
        assert!(!page.next_page_token.is_empty());
        let big = v1::ListAuditRequest {
            page_size: 5_000,
            ..Default::default()
        };
        let page = list(&d, big.clone()).await.unwrap();
        assert_eq!(page.entries.len(), 1_000);
        let rest = list(
            &d,
            v1::ListAuditRequest {
                page_token: page.next_page_token,
                ..big
            },
        )
        .await
        .unwrap();
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.next_page_token, "");
        // Newest first throughout (ids are time-ordered, all at one time).
        assert!(page.entries.windows(2).all(|w| w[0].id > w[1].id));
        assert!(page.entries[999].id > rest.entries[0].id);
        // More than a sync may carry is refused whole.
        let flood: Vec<_> = (0..=MAX_SYNC).map(|_| entry("user:x", now)).collect();
        assert!(matches!(
            d.append_audit(&flood).await,
            Err(Error::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn entries_are_stored_within_bounds_and_once() {
        let (d, clock, _dir) = directory().await;
        let mut odd = entry("user:a\0b", clock.now());
        odd.id = "not a uuid".into();
        odd.reason = "r".repeat(5_000);
        odd.method = "/m".repeat(1_000);
        let twice = entry("user:bob", clock.now());
        d.append_audit(&[odd, twice.clone(), twice.clone()])
            .await
            .unwrap();
        assert_eq!(
            d.append_audit(std::slice::from_ref(&twice)).await.unwrap(),
            0
        );
        let all = list(&d, v1::ListAuditRequest::default())
            .await
            .unwrap()
            .entries;
        assert_eq!(all.len(), 2);
        let odd = all.iter().find(|e| e.actor != "user:bob").unwrap();
        assert_eq!(odd.actor, "user:ab");
        assert!(uuid::Uuid::parse_str(&odd.id).is_ok());
        assert!(odd.reason.len() <= 512 && odd.method.len() <= 256);
    }

    #[tokio::test]
    async fn retention_deletes_entries_older_than_its_days_and_zero_keeps_all() {
        let (d, clock, _dir) = directory().await;
        let now = clock.now();
        let old = entry(
            "user:old",
            Micros::from_unix_micros(now.unix_micros() - 3 * 86_400_000_000),
        );
        let new = entry("user:new", now);
        d.append_audit(&[old, new]).await.unwrap();
        assert_eq!(d.delete_old_audit(0).await.unwrap(), 0);
        assert_eq!(d.delete_old_audit(5).await.unwrap(), 0);
        assert_eq!(d.delete_old_audit(2).await.unwrap(), 1);
        clock.advance(Duration::from_secs(3 * 86_400));
        assert_eq!(d.delete_old_audit(2).await.unwrap(), 1);
        assert!(
            list(&d, v1::ListAuditRequest::default())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
    }
}
