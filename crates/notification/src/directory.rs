//! The directory of people (users, service accounts, teams) and the API tokens that act for
//! them, served over `AccessService`; and the credential copy every service's verifier
//! keeps, served over the internal `CredentialService`.
//!
//! Who may call what is decided before a call reaches here (the access layer); these
//! handlers validate input and record the authenticated actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use firebreak_domain::access::{
    self, Grant, NewToken, Role, SubjectKind, mask_token_id, parse_name,
};
use firebreak_domain::{Clock, Micros, SystemClock};
use firebreak_proto::access::{actor, caller, grant, kind, wire_grant, wire_kind};
use firebreak_proto::v1::access_service_server::{AccessService, AccessServiceServer};
use firebreak_proto::v1::credential_service_server::{CredentialService, CredentialServiceServer};
use firebreak_proto::v1::{self};
use firebreak_proto::{micros, timestamp};
use firebreak_storage::{DirectoryStore, TeamRecord, TokenRecord, UserRecord};
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
/// The most token uses one sync reports, and credentials one sync answers with.
pub const MAX_SYNC: usize = 10_000;

/// The directory's gRPC services on its store.
#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn DirectoryStore>,
    clock: Arc<dyn Clock>,
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
    pub async fn credentials_since(&self, since: i64) -> Result<Vec<v1::Credential>, Error> {
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
            .map(|t| v1::Credential {
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

    /// Records the token uses a verifier saw.
    pub async fn mark_used(&self, uses: &[(String, Micros)]) -> Result<(), Error> {
        if uses.len() > MAX_SYNC {
            return Err(Error::Invalid(format!("uses: at most {MAX_SYNC}")));
        }
        Ok(self.store.mark_used(uses).await?)
    }
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

fn user_to_proto(u: &UserRecord) -> v1::User {
    v1::User {
        name: u.name.clone(),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        time_zone: u.time_zone.clone(),
        kind: wire_kind(u.kind) as i32,
        declared: u.declared,
        created_at: Some(timestamp(u.created_at)),
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
        _req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let tokens = self.store.tokens().await.map_err(Error::from)?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
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
        let name = parse_name("name", &u.name).map_err(Error::from)?;
        check_text("display_name", &u.display_name, MAX_DISPLAY_NAME)?;
        check_text("email", &u.email, MAX_EMAIL)?;
        check_text("time_zone", &u.time_zone, MAX_TIME_ZONE)?;
        let kind = match kind(u.kind) {
            Ok(SubjectKind::Service) => {
                return Err(Error::Invalid(
                    "kind: a directory entry is a user or a service account".into(),
                )
                .into());
            }
            Ok(k) => k,
            // Unspecified: a person.
            Err(_) if u.kind == 0 => SubjectKind::User,
            Err(e) => return Err(Error::from(e).into()),
        };
        let record = UserRecord {
            name,
            display_name: u.display_name,
            email: u.email,
            time_zone: u.time_zone,
            kind,
            declared: false,
            created_at: self.clock.now(),
        };
        self.store.insert_user(&record).await.map_err(Error::from)?;
        Ok(Response::new(v1::CreateUserResponse {
            user: Some(user_to_proto(&record)),
        }))
    }

    async fn list_users(
        &self,
        _req: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        let users = self.store.users().await.map_err(Error::from)?;
        Ok(Response::new(v1::ListUsersResponse {
            users: users.iter().map(user_to_proto).collect(),
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
        _req: Request<v1::ListTeamsRequest>,
    ) -> Result<Response<v1::ListTeamsResponse>, Status> {
        let teams = self.store.teams().await.map_err(Error::from)?;
        Ok(Response::new(v1::ListTeamsResponse {
            teams: teams.iter().map(team_to_proto).collect(),
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
        req: Request<v1::SyncCredentialsRequest>,
    ) -> Result<Response<v1::SyncCredentialsResponse>, Status> {
        let r = req.into_inner();
        if r.uses.len() > MAX_SYNC {
            return Err(Error::Invalid(format!("uses: at most {MAX_SYNC}")).into());
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
        Ok(Response::new(v1::SyncCredentialsResponse {
            credentials: self.credentials_since(r.since_version).await?,
        }))
    }
}
