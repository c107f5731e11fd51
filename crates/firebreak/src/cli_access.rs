//! The CLI's identity commands (`token`, `user`, `team`, `whoami`, `login`, `audit`) and how
//! every client command finds the token it sends.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use firebreak_proto::access::{AuthedChannel, wire_grant};
use firebreak_proto::v1::{
    self, access_service_client::AccessServiceClient, audit_service_client::AuditServiceClient,
};
use serde_json::json;

use crate::output::{Exit, Failure, OutputFormat, say_raw, ts_json};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token for a user or service account and print it (once).
    Create(TokenCreateArgs),
    /// List tokens: masked ids, subject, roles, expiry, last use.
    List,
    /// Revoke a token (its id as `token list` shows it).
    Revoke { id: String },
    /// Print a new random token without asking a server: the service credential
    /// (`auth.service_token`) of a distributed deployment.
    Generate,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The user or service account the token acts as.
    #[arg(long)]
    pub subject: String,
    /// A role, optionally where it applies: `responder`, `responder@team:payments`,
    /// `admin@service:intake`. Repeat for more.
    #[arg(long = "role", required = true)]
    pub roles: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// How long it lives: `30d`, `12h`, `90m`; never expires without it.
    #[arg(long, value_parser = parse_lifetime)]
    pub expires_in: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a person (or, with --service-account, a non-person account).
    Create {
        name: String,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long, default_value = "")]
        email: String,
        /// An IANA time zone such as Europe/Berlin.
        #[arg(long, default_value = "")]
        time_zone: String,
        /// A monitoring tool or a CI job rather than a person.
        #[arg(long)]
        service_account: bool,
        /// How they are paged, KIND:NAME=ADDRESS (email, sms, voice, slack, mattermost,
        /// teams, webhook), e.g. `email:work=alice@example.com`; repeatable.
        #[arg(long = "contact", value_parser = contact_arg)]
        contacts: Vec<v1::ContactMethod>,
        /// When, MINUTES:METHOD (`0:work`, `5:phone`); repeatable. None: at once through the
        /// first contact method.
        #[arg(long = "rule", value_parser = rule_arg)]
        rules: Vec<v1::NotificationRule>,
    },
    /// Change a user made at run time (a declared one changes in the configuration). Options
    /// not given keep their value; --contact or --rule replaces that whole list.
    Update {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long = "contact", value_parser = contact_arg)]
        contacts: Vec<v1::ContactMethod>,
        #[arg(long = "rule", value_parser = rule_arg)]
        rules: Vec<v1::NotificationRule>,
        /// Remove every contact method and rule.
        #[arg(long, conflicts_with_all = ["contacts", "rules"])]
        clear_contacts: bool,
    },
    List,
    /// Delete a user: their team memberships go, and their tokens are revoked.
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TeamCmd {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    List,
    Delete {
        name: String,
    },
    /// Make a user a member of a team.
    Add {
        team: String,
        user: String,
    },
    /// Take a user off a team.
    Remove {
        team: String,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Audit entries, newest first: refused calls and calls that changed something.
    List(AuditListArgs),
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only this actor: user:alice, account:grafana, service:firebreak, anonymous.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries since then: a time ago (`1h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<time::OffsetDateTime>,
    /// Only this method: `IncidentService/Close`, `Close`, or its whole path.
    #[arg(long)]
    pub action: Option<String>,
    /// The most entries shown.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// `1h`, `7d` (that long ago) or an RFC 3339 time.
fn parse_since(text: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(at) =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
    {
        return Ok(at);
    }
    let ago = parse_lifetime(text)
        .map_err(|_| format!("{text:?} is neither a time ago (1h, 7d) nor an RFC 3339 time"))?;
    Ok(time::OffsetDateTime::now_utc() - ago)
}

/// `30d`, `12h`, `90m`, `3600s` (or plain seconds).
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    crate::cli::parse_span(
        text,
        &[
            ("s", Duration::from_secs(1)),
            ("m", Duration::from_secs(60)),
            ("h", Duration::from_secs(3600)),
            ("d", Duration::from_secs(86_400)),
        ],
        "a lifetime such as 30d, 12h or 90m",
    )
}

/// A `ROLE[@SCOPE]` argument as a wire grant.
fn grant_arg(text: &str) -> Result<v1::Grant, Failure> {
    let (role, scope) = text.split_once('@').unwrap_or((text, "all"));
    let role: firebreak_domain::access::Role = role
        .parse()
        .map_err(|e| Failure::new(Exit::Usage, format!("--role {text:?}: {e}")))?;
    let scope: firebreak_domain::access::Scope = scope
        .parse()
        .map_err(|e| Failure::new(Exit::Usage, format!("--role {text:?}: {e}")))?;
    Ok(wire_grant(&firebreak_domain::access::Grant { role, scope }))
}

fn grants_text(grants: &[v1::Grant]) -> String {
    grants
        .iter()
        .map(|g| {
            let role = firebreak_proto::access::role(g.role)
                .map_or_else(|_| "?".to_owned(), |r| r.as_str().to_owned());
            if g.scope == "all" || g.scope.is_empty() {
                role
            } else {
                format!("{role}@{}", g.scope)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A timestamp for a table cell: RFC 3339, or empty when unset.
fn ts(t: Option<&firebreak_proto::Timestamp>) -> String {
    crate::output::rfc3339(t).unwrap_or_default()
}

fn token_json(t: &v1::Token) -> serde_json::Value {
    json!({
        "id": t.id, "masked_id": t.masked_id, "subject": t.subject, "grants": grants_text(&t.grants),
        "description": t.description, "created_by": t.created_by,
        "created_at": ts_json(t.created_at.as_ref()), "expires_at": ts_json(t.expires_at.as_ref()),
        "revoked_at": ts_json(t.revoked_at.as_ref()), "last_used_at": ts_json(t.last_used_at.as_ref()),
    })
}

fn audit_json(e: &v1::AuditEntry) -> serde_json::Value {
    json!({
        "id": e.id, "at": ts_json(e.at.as_ref()), "actor": e.actor, "roles": e.roles,
        "method": e.method, "target": e.target, "outcome": e.outcome, "reason": e.reason,
        "source": e.source, "request_id": e.request_id, "trace_id": e.trace_id,
    })
}

/// `firebreak audit list`: pages through the log until `limit` entries are shown.
async fn audit(
    cmd: AuditCmd,
    channel: AuthedChannel,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let AuditCmd::List(a) = cmd;
    let mut client = AuditServiceClient::new(channel);
    let since = a.since.map(|t| firebreak_proto::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    });
    let mut entries = Vec::new();
    let mut page_token = String::new();
    while entries.len() < a.limit as usize {
        let want = (a.limit as usize - entries.len()).min(1000) as u32;
        let r = client
            .list_audit(v1::ListAuditRequest {
                actor: a.actor.clone().unwrap_or_default(),
                since,
                action: a.action.clone().unwrap_or_default(),
                page_size: want,
                page_token,
            })
            .await
            .map_err(status)?
            .into_inner();
        entries.extend(r.entries);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    if json_out {
        print_json(json!(entries.iter().map(audit_json).collect::<Vec<_>>()));
    } else {
        crate::output::table(
            &["at", "actor", "method", "outcome", "source", "reason"],
            entries
                .iter()
                .map(|e| {
                    vec![
                        ts(e.at.as_ref()),
                        e.actor.clone(),
                        e.method.trim_start_matches("/firebreak.v1.").to_owned(),
                        e.outcome.clone(),
                        e.source.clone(),
                        e.reason.clone(),
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

pub(crate) fn print_json(v: serde_json::Value) {
    say_raw(&serde_json::to_string_pretty(&v).unwrap_or_default());
}

/// Runs an identity command against the directory (notification's service).
pub(crate) async fn run(
    cmd: AccessCmd,
    channel: AuthedChannel,
    format: OutputFormat,
    status: impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let json_out = matches!(format, OutputFormat::Json);
    let cmd = match cmd {
        AccessCmd::Audit(a) => return audit(a, channel, json_out, &status).await,
        AccessCmd::Escalation(e) => return escalation(e, channel, json_out, &status).await,
        AccessCmd::Delivery(d) => return delivery(d, channel, json_out, &status).await,
        AccessCmd::Schedule(s) => return schedule(s, channel, json_out, &status).await,
        AccessCmd::OnCall { schedule: s } => return oncall(s, channel, json_out, &status).await,
        AccessCmd::Maintenance(m) => return maintenance(m, channel, json_out, &status).await,
        cmd => cmd,
    };
    let mut access = AccessServiceClient::new(channel);
    match cmd {
        AccessCmd::WhoAmI => {
            let r = access
                .who_am_i(v1::WhoAmIRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if json_out {
                print_json(
                    json!({ "actor": r.actor, "token_id": r.token_id, "grants": grants_text(&r.grants) }),
                );
            } else {
                say_raw(&format!("{} ({})", r.actor, grants_text(&r.grants)));
            }
        }
        AccessCmd::Token(TokenCmd::Create(a)) => {
            let grants = a
                .roles
                .iter()
                .map(|r| grant_arg(r))
                .collect::<Result<Vec<_>, _>>()?;
            let r = access
                .create_token(v1::CreateTokenRequest {
                    subject: a.subject,
                    grants,
                    description: a.description,
                    expires_in_seconds: a.expires_in.map_or(0, |d| d.as_secs().max(1)),
                })
                .await
                .map_err(status)?
                .into_inner();
            if json_out {
                let mut v = r.token.as_ref().map(token_json).unwrap_or_default();
                v["token"] = json!(r.secret);
                print_json(v);
            } else {
                // Stdout holds the token alone: TOKEN=$(firebreak token create …).
                say_raw(&r.secret);
                eprintln!("keep it now: Firebreak stores only its hash and cannot show it again");
            }
        }
        AccessCmd::Token(TokenCmd::List) => {
            let r = v1::ListTokensResponse {
                tokens: every_page!(page_token => access
         .list_tokens(v1::ListTokensRequest { page_size: 0, page_token })
         .await
         .map_err(&status)?
         .into_inner(), tokens),
                next_page_token: String::new(),
            };
            if json_out {
                print_json(json!(r.tokens.iter().map(token_json).collect::<Vec<_>>()));
            } else {
                crate::output::table(
                    &["id", "subject", "roles", "expires", "last used", "revoked"],
                    r.tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.masked_id.clone(),
                                t.subject.clone(),
                                grants_text(&t.grants),
                                ts(t.expires_at.as_ref()),
                                ts(t.last_used_at.as_ref()),
                                ts(t.revoked_at.as_ref()),
                            ]
                        })
                        .collect(),
                );
            }
        }
        AccessCmd::Token(TokenCmd::Revoke { id }) => {
            let r = access
                .revoke_token(v1::RevokeTokenRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            let t = r.token.unwrap_or_default();
            if json_out {
                print_json(token_json(&t));
            } else {
                say_raw(&format!("revoked {}", t.masked_id));
            }
        }
        AccessCmd::Token(TokenCmd::Generate) => {
            unreachable!("generated locally before connecting")
        }
        AccessCmd::User(cmd) => user(cmd, &mut access, json_out, &status).await?,
        AccessCmd::Team(cmd) => team(cmd, &mut access, json_out, &status).await?,
        AccessCmd::Audit(_)
        | AccessCmd::Escalation(_)
        | AccessCmd::Delivery(_)
        | AccessCmd::Schedule(_)
        | AccessCmd::OnCall { .. }
        | AccessCmd::Maintenance(_) => {
            unreachable!("answered above")
        }
    }
    Ok(())
}

async fn user(
    cmd: UserCmd,
    access: &mut AccessServiceClient<AuthedChannel>,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let show = |u: &v1::User| {
        let contacts: Vec<_> = u
            .contact_methods
            .iter()
            .map(|m| json!({ "name": m.name, "kind": contact_kind_name(m.kind), "address": m.address }))
            .collect();
        let rules: Vec<_> = u
            .notification_rules
            .iter()
            .map(|r| json!({ "after_minutes": r.after_minutes, "method": r.method }))
            .collect();
        json!({ "name": u.name, "display_name": u.display_name, "email": u.email,
                "time_zone": u.time_zone, "service_account": u.kind == v1::SubjectKind::ServiceAccount as i32,
                "declared": u.declared, "contact_methods": contacts, "notification_rules": rules })
    };
    match cmd {
        UserCmd::Create {
            name,
            display_name,
            email,
            time_zone,
            service_account,
            contacts,
            rules,
        } => {
            let kind = if service_account {
                v1::SubjectKind::ServiceAccount
            } else {
                v1::SubjectKind::User
            };
            let r = access
                .create_user(v1::CreateUserRequest {
                    user: Some(v1::User {
                        name,
                        display_name,
                        email,
                        time_zone,
                        kind: kind as i32,
                        contact_methods: contacts,
                        notification_rules: rules,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status)?
                .into_inner();
            let u = r.user.unwrap_or_default();
            if json_out {
                print_json(show(&u));
            } else {
                say_raw(&format!("created user {}", u.name));
            }
        }
        UserCmd::List => {
            let r = v1::ListUsersResponse {
                users: every_page!(page_token => access
         .list_users(v1::ListUsersRequest { page_size: 0, page_token })
         .await
         .map_err(&status)?
         .into_inner(), users),
                next_page_token: String::new(),
            };
            if json_out {
                print_json(json!(r.users.iter().map(show).collect::<Vec<_>>()));
            } else {
                crate::output::table(
                    &["name", "display name", "email", "time zone", "kind"],
                    r.users
                        .iter()
                        .map(|u| {
                            let kind = if u.kind == v1::SubjectKind::ServiceAccount as i32 {
                                "service account"
                            } else {
                                "user"
                            };
                            vec![
                                u.name.clone(),
                                u.display_name.clone(),
                                u.email.clone(),
                                u.time_zone.clone(),
                                kind.to_owned(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        UserCmd::Update {
            name,
            display_name,
            email,
            time_zone,
            contacts,
            rules,
            clear_contacts,
        } => {
            let users = v1::ListUsersResponse {
                users: every_page!(page_token => access
         .list_users(v1::ListUsersRequest { page_size: 0, page_token })
         .await
         .map_err(&status)?
         .into_inner(), users),
                next_page_token: String::new(),
            }
            .users;
            let mut u = users
                .into_iter()
                .find(|u| u.name == name)
                .ok_or_else(|| anyhow::anyhow!("no user {name:?}"))?;
            u.display_name = display_name.unwrap_or(u.display_name);
            u.email = email.unwrap_or(u.email);
            u.time_zone = time_zone.unwrap_or(u.time_zone);
            if clear_contacts {
                u.contact_methods.clear();
                u.notification_rules.clear();
            }
            if !contacts.is_empty() {
                u.contact_methods = contacts;
            }
            if !rules.is_empty() {
                u.notification_rules = rules;
            }
            let r = access
                .update_user(v1::UpdateUserRequest { user: Some(u) })
                .await
                .map_err(status)?
                .into_inner();
            let u = r.user.unwrap_or_default();
            if json_out {
                print_json(show(&u));
            } else {
                say_raw(&format!("updated user {}", u.name));
            }
        }
        UserCmd::Delete { name } => {
            access
                .delete_user(v1::DeleteUserRequest { name: name.clone() })
                .await
                .map_err(status)?;
            if json_out {
                print_json(json!({ "deleted": name }));
            } else {
                say_raw(&format!("deleted user {name}; their tokens are revoked"));
            }
        }
    }
    Ok(())
}

/// `KIND:NAME=ADDRESS`, as `--contact` takes it.
fn contact_arg(s: &str) -> Result<v1::ContactMethod, String> {
    let (kind, rest) = s
        .split_once(':')
        .ok_or("expected KIND:NAME=ADDRESS, e.g. email:work=alice@example.com")?;
    let (name, address) = rest
        .split_once('=')
        .ok_or("expected KIND:NAME=ADDRESS, e.g. email:work=alice@example.com")?;
    let kind: firebreak_domain::people::ContactKind = kind.parse().map_err(|e| format!("{e}"))?;
    Ok(firebreak_proto::access::wire_contact(
        &firebreak_domain::people::ContactMethod {
            name: name.to_owned(),
            kind,
            address: address.to_owned(),
        },
    ))
}

/// `MINUTES:METHOD`, as `--rule` takes it.
fn rule_arg(s: &str) -> Result<v1::NotificationRule, String> {
    let (minutes, method) = s
        .split_once(':')
        .ok_or("expected MINUTES:METHOD, e.g. 5:phone")?;
    Ok(v1::NotificationRule {
        after_minutes: minutes
            .parse()
            .map_err(|_| format!("{minutes:?} is not a number of minutes"))?,
        method: method.to_owned(),
    })
}

/// A wire contact kind's name (`email`), as the CLI shows it.
fn contact_kind_name(kind: i32) -> String {
    firebreak_proto::access::contact_kind(kind)
        .map_or("unknown", |k| k.as_str())
        .to_owned()
}

/// A planned page's way: the contact method's kind, or `channel` for a channel.
fn page_kind(p: &v1::PlannedPage) -> String {
    if p.user.is_empty() {
        "channel".to_owned()
    } else {
        contact_kind_name(p.contact_kind)
    }
}

async fn team(
    cmd: TeamCmd,
    access: &mut AccessServiceClient<AuthedChannel>,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let show = |t: &v1::Team| json!({ "name": t.name, "display_name": t.display_name, "members": t.members, "declared": t.declared });
    let membership =
        |team: String, user: String, member: bool| v1::SetTeamMemberRequest { team, user, member };
    let team = match cmd {
        TeamCmd::Create { name, display_name } => {
            access
                .create_team(v1::CreateTeamRequest {
                    team: Some(v1::Team {
                        name,
                        display_name,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status)?
                .into_inner()
                .team
        }
        TeamCmd::List => {
            let r = v1::ListTeamsResponse {
                teams: every_page!(page_token => access
         .list_teams(v1::ListTeamsRequest { page_size: 0, page_token })
         .await
         .map_err(&status)?
         .into_inner(), teams),
                next_page_token: String::new(),
            };
            if json_out {
                print_json(json!(r.teams.iter().map(show).collect::<Vec<_>>()));
            } else {
                crate::output::table(
                    &["name", "display name", "members"],
                    r.teams
                        .iter()
                        .map(|t| vec![t.name.clone(), t.display_name.clone(), t.members.join(",")])
                        .collect(),
                );
            }
            return Ok(());
        }
        TeamCmd::Delete { name } => {
            access
                .delete_team(v1::DeleteTeamRequest { name: name.clone() })
                .await
                .map_err(status)?;
            say_raw(&format!("deleted team {name}"));
            return Ok(());
        }
        TeamCmd::Add { team, user } => {
            access
                .set_team_member(membership(team, user, true))
                .await
                .map_err(status)?
                .into_inner()
                .team
        }
        TeamCmd::Remove { team, user } => {
            access
                .set_team_member(membership(team, user, false))
                .await
                .map_err(status)?
                .into_inner()
                .team
        }
    };
    let t = team.unwrap_or_default();
    if json_out {
        print_json(show(&t));
    } else {
        say_raw(&format!("team {}: {}", t.name, t.members.join(", ")));
    }
    Ok(())
}

/// The identity commands, which call the directory.
#[derive(Debug)]
pub enum AccessCmd {
    WhoAmI,
    Token(TokenCmd),
    User(UserCmd),
    Team(TeamCmd),
    Audit(AuditCmd),
    Escalation(EscalationCmd),
    Delivery(DeliveryCmd),
    Schedule(ScheduleCmd),
    OnCall { schedule: Option<String> },
    Maintenance(MaintenanceCmd),
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCmd {
    /// Every maintenance window: whether it is in force now, its rule and scope, and its
    /// next occurrences in its time zone.
    List {
        /// Occurrences to show per window (the one in force first), 1-20.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        occurrences: u32,
    },
    /// Creates or replaces a run-time window from a YAML file (one `maintenance:` entry's
    /// fields: name, time_zone, start, duration, rrule, services, integrations, matchers,
    /// comment).
    Put { file: std::path::PathBuf },
    /// Starts a one-off window now (UTC, from this minute) for `--for`: planned work on some
    /// services, integrations or labels that should page nobody.
    Start {
        name: String,
        /// How long: `30m`, `2h`, `1d`.
        #[arg(long = "for")]
        duration: String,
        /// A service (its `service` label, else its source); repeatable.
        #[arg(long = "service")]
        services: Vec<String>,
        /// An integration; repeatable.
        #[arg(long = "integration")]
        integrations: Vec<String>,
        /// A label matcher such as `env="prod"` or `job=~"web.*"`; repeatable.
        #[arg(long = "matcher")]
        matchers: Vec<String>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Deletes a run-time window (configured ones change only in configuration).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// The final schedule: shifts with who, from and to (nobody included), in the
    /// schedule's time zone or --tz.
    Show {
        name: String,
        /// From (RFC 3339, or a time ago such as `1d`); now by default.
        #[arg(long, value_parser = parse_since)]
        from: Option<time::OffsetDateTime>,
        /// Until, RFC 3339; a week after --from by default (at most 400 days).
        #[arg(long, value_parser = parse_since)]
        to: Option<time::OffsetDateTime>,
        /// Show times in this IANA time zone.
        #[arg(long)]
        tz: Option<String>,
    },
    /// Where nobody is on call over the next --days days.
    Gaps {
        name: String,
        #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=400))]
        days: u32,
        #[arg(long)]
        tz: Option<String>,
    },
    /// Every schedule: declared in configuration or made at run time, with its overrides.
    List,
    /// Creates or replaces a run-time schedule from a YAML file (the configuration's shape).
    Put { file: std::path::PathBuf },
    /// Deletes a run-time schedule and its overrides.
    Delete { name: String },
    /// Overrides: someone covers for someone else, or joins, for a while.
    #[command(subcommand)]
    Override(OverrideCmd),
}

#[derive(Debug, Subcommand)]
pub enum OverrideCmd {
    /// `--replace A --with B` (B covers for A) or `--add B` (B is on call too), from --from
    /// to --to.
    Add {
        schedule: String,
        #[arg(long, value_parser = parse_since)]
        from: time::OffsetDateTime,
        #[arg(long, value_parser = parse_since)]
        to: time::OffsetDateTime,
        #[arg(long, requires = "with", conflicts_with = "add")]
        replace: Option<String>,
        #[arg(long, requires = "replace")]
        with: Option<String>,
        #[arg(long, required_unless_present = "replace")]
        add: Option<String>,
    },
    /// Removes an override by its id (`schedule list` shows them).
    Remove { schedule: String, id: String },
}

fn proto_time(t: time::OffsetDateTime) -> firebreak_proto::Timestamp {
    firebreak_proto::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

/// `t` as local time in `zone`, RFC 3339 with its offset.
fn in_zone(t: Option<&firebreak_proto::Timestamp>, zone: &jiff::tz::TimeZone) -> String {
    t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M %:z")
                .to_string()
        })
        .unwrap_or_default()
}

async fn schedule(
    cmd: ScheduleCmd,
    channel: AuthedChannel,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let mut client = v1::notification_service_client::NotificationServiceClient::new(channel);
    let (name, from, to, tz, gaps_only) = match cmd {
        ScheduleCmd::List => {
            let r = v1::ListSchedulesResponse {
                schedules: every_page!(page_token => client
         .list_schedules(v1::ListSchedulesRequest { page_size: 0, page_token })
         .await
         .map_err(&status)?
         .into_inner(), schedules),
                next_page_token: String::new(),
            };
            return print_schedules(&r.schedules, json_out);
        }
        ScheduleCmd::Put { file } => {
            let yaml = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let r = client
                .put_schedule(v1::PutScheduleRequest { yaml })
                .await
                .map_err(status)?
                .into_inner();
            let name = r.schedule.map(|s| s.name).unwrap_or_default();
            if json_out {
                print_json(json!({ "schedule": name }));
            } else {
                say_raw(&format!("schedule {name} stored"));
            }
            return Ok(());
        }
        ScheduleCmd::Delete { name } => {
            client
                .delete_schedule(v1::DeleteScheduleRequest { name: name.clone() })
                .await
                .map_err(status)?;
            say_raw(&format!("schedule {name} deleted"));
            return Ok(());
        }
        ScheduleCmd::Override(OverrideCmd::Add {
            schedule,
            from,
            to,
            replace,
            with,
            add,
        }) => {
            let r = client
                .add_override(v1::AddOverrideRequest {
                    schedule,
                    r#override: Some(v1::ScheduleOverride {
                        from: Some(proto_time(from)),
                        to: Some(proto_time(to)),
                        replace: replace.unwrap_or_default(),
                        with: with.unwrap_or_default(),
                        add: add.unwrap_or_default(),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status)?
                .into_inner();
            let id = r.r#override.map(|o| o.id).unwrap_or_default();
            if json_out {
                print_json(json!({ "id": id }));
            } else {
                say_raw(&format!("override {id} added"));
            }
            return Ok(());
        }
        ScheduleCmd::Override(OverrideCmd::Remove { schedule, id }) => {
            client
                .remove_override(v1::RemoveOverrideRequest {
                    schedule,
                    id: id.clone(),
                })
                .await
                .map_err(status)?;
            say_raw(&format!("override {id} removed"));
            return Ok(());
        }
        ScheduleCmd::Show { name, from, to, tz } => (name, from, to, tz, false),
        ScheduleCmd::Gaps { name, days, tz } => {
            let now = time::OffsetDateTime::now_utc();
            (
                name,
                Some(now),
                Some(now + time::Duration::days(i64::from(days))),
                tz,
                true,
            )
        }
    };
    // Every shift of the range, page by page (the time zone is the same on each).
    let (mut shifts, mut page_token) = (Vec::new(), String::new());
    let time_zone = loop {
        let r = client
            .list_shifts(v1::ListShiftsRequest {
                schedule: name.clone(),
                from: from.map(proto_time),
                to: to.map(proto_time),
                user: String::new(),
                page_size: 0,
                page_token,
            })
            .await
            .map_err(status)?
            .into_inner();
        shifts.extend(r.shifts);
        if r.next_page_token.is_empty() {
            break r.time_zone;
        }
        page_token = r.next_page_token;
    };
    let r = v1::ListShiftsResponse {
        shifts,
        time_zone,
        next_page_token: String::new(),
    };
    let zone_name = tz.unwrap_or_else(|| r.time_zone.clone());
    let zone = firebreak_domain::schedule::time_zone(&zone_name)
        .ok_or_else(|| anyhow::anyhow!("--tz: {zone_name:?} is not an IANA time zone"))?;
    let shifts: Vec<&v1::Shift> = r
        .shifts
        .iter()
        .filter(|s| !gaps_only || s.users.is_empty())
        .collect();
    if json_out {
        print_json(json!(
            shifts
                .iter()
                .map(|s| json!({
                    "start": crate::output::rfc3339(s.start.as_ref()),
                    "end": crate::output::rfc3339(s.end.as_ref()),
                    "users": s.users,
                }))
                .collect::<Vec<_>>()
        ));
    } else if gaps_only && shifts.is_empty() {
        say_raw("no gaps: someone is on call throughout");
    } else {
        crate::output::table(
            &["from", "to", "on call"],
            shifts
                .iter()
                .map(|s| {
                    let who = who_of(&s.users);
                    vec![
                        in_zone(s.start.as_ref(), &zone),
                        in_zone(s.end.as_ref(), &zone),
                        who,
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

fn print_schedules(schedules: &[v1::ScheduleInfo], json_out: bool) -> anyhow::Result<()> {
    let o = |o: &v1::ScheduleOverride| {
        let who = if o.add.is_empty() {
            format!("{} for {}", o.with, o.replace)
        } else {
            format!("+{}", o.add)
        };
        (
            o.id.clone(),
            crate::output::rfc3339(o.from.as_ref()).unwrap_or_default(),
            crate::output::rfc3339(o.to.as_ref()).unwrap_or_default(),
            who,
        )
    };
    if json_out {
        print_json(json!(
            schedules
                .iter()
                .map(|s| json!({
                    "name": s.name, "declared": s.declared, "updated_by": s.updated_by,
                    "overrides": s.overrides.iter().map(|x| {
                        let (id, from, to, who) = o(x);
                        json!({ "id": id, "from": from, "to": to, "who": who, "by": x.created_by })
                    }).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    let mut rows = Vec::new();
    for s in schedules {
        let origin = if s.declared {
            "configuration"
        } else {
            "run time"
        };
        rows.push(vec![
            s.name.clone(),
            origin.to_owned(),
            String::new(),
            String::new(),
        ]);
        for x in &s.overrides {
            let (id, from, to, who) = o(x);
            rows.push(vec![
                String::new(),
                format!("override {id}"),
                format!("{from} .. {to}"),
                who,
            ]);
        }
    }
    crate::output::table(&["schedule", "from", "when", "who"], rows);
    Ok(())
}

/// People on call as the CLI prints them: `alice, bob`, or `nobody`.
fn who_of(users: &[String]) -> String {
    if users.is_empty() {
        "nobody".to_owned()
    } else {
        users.join(", ")
    }
}

async fn oncall(
    schedule: Option<String>,
    channel: AuthedChannel,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let r = v1::notification_service_client::NotificationServiceClient::new(channel)
        .who_is_on_call(v1::WhoIsOnCallRequest {
            schedule: schedule.unwrap_or_default(),
            at: None,
        })
        .await
        .map_err(status)?
        .into_inner();
    if json_out {
        print_json(json!(r
            .schedules
            .iter()
            .map(|s| json!({ "schedule": s.schedule, "users": s.users, "time_zone": s.time_zone }))
            .collect::<Vec<_>>()));
    } else {
        crate::output::table(
            &["schedule", "on call"],
            r.schedules
                .iter()
                .map(|s| {
                    let who = who_of(&s.users);
                    vec![s.schedule.clone(), who]
                })
                .collect(),
        );
    }
    Ok(())
}

async fn maintenance(
    cmd: MaintenanceCmd,
    channel: AuthedChannel,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let mut client = v1::notification_service_client::NotificationServiceClient::new(channel);
    let yaml = match cmd {
        MaintenanceCmd::List { occurrences } => {
            return list_maintenance(&mut client, occurrences, json_out, status).await;
        }
        MaintenanceCmd::Delete { name } => {
            client
                .delete_maintenance_window(v1::DeleteMaintenanceWindowRequest {
                    name: name.clone(),
                })
                .await
                .map_err(status)?;
            say_raw(&format!("maintenance window {name} deleted\n"));
            return Ok(());
        }
        MaintenanceCmd::Put { file } => std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
        MaintenanceCmd::Start {
            name,
            duration,
            services,
            integrations,
            matchers,
            comment,
        } => {
            let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
            serde_yaml::to_string(&firebreak_domain::maintenance::WindowSpec {
                name,
                time_zone: "UTC".into(),
                start: now.strftime("%Y-%m-%dT%H:%M").to_string(),
                duration,
                rrule: String::new(),
                services,
                integrations,
                matchers,
                comment,
            })?
        }
    };
    let w = client
        .put_maintenance_window(v1::PutMaintenanceWindowRequest { yaml })
        .await
        .map_err(status)?
        .into_inner()
        .window
        .unwrap_or_default();
    if json_out {
        print_json(window_json(&w));
    } else {
        say_raw(&format!("{}\n", maintenance_text(&w)));
    }
    Ok(())
}

/// A window as JSON, as `maintenance list --output json` prints each.
fn window_json(w: &v1::MaintenanceWindow) -> serde_json::Value {
    let occurrence = |o: &v1::MaintenanceOccurrence| json!({ "start": ts_json(o.start.as_ref()), "end": ts_json(o.end.as_ref()) });
    json!({
        "name": w.name, "time_zone": w.time_zone, "start": w.start,
        "duration": w.duration, "rrule": w.rrule, "services": w.services,
        "integrations": w.integrations, "matchers": w.matchers, "comment": w.comment,
        "in_force": w.in_force, "current": w.current.as_ref().map(occurrence),
        "occurrences": w.occurrences.iter().map(occurrence).collect::<Vec<_>>(),
        "declared": w.declared, "updated_by": w.updated_by,
        "updated_at": ts_json(w.updated_at.as_ref()),
    })
}

async fn list_maintenance(
    client: &mut v1::notification_service_client::NotificationServiceClient<AuthedChannel>,
    occurrences: u32,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let r = v1::ListMaintenanceWindowsResponse {
        windows: every_page!(page_token => client
            .list_maintenance_windows(v1::ListMaintenanceWindowsRequest {
                at: None,
                occurrences,
                page_size: 0,
                page_token,
            })
            .await
            .map_err(&status)?
            .into_inner(), windows),
        next_page_token: String::new(),
    };
    if json_out {
        print_json(json!(r.windows.iter().map(window_json).collect::<Vec<_>>()));
        return Ok(());
    }
    if r.windows.is_empty() {
        say_raw("no maintenance windows\n");
    }
    for w in &r.windows {
        say_raw(&format!("{}\n", maintenance_text(w)));
    }
    Ok(())
}

/// A window as `maintenance list` prints it: a block of lines, times in its own zone.
fn maintenance_text(w: &v1::MaintenanceWindow) -> String {
    let zone =
        firebreak_domain::schedule::time_zone(&w.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let span = |o: &v1::MaintenanceOccurrence| {
        format!(
            "{} – {}",
            in_zone(o.start.as_ref(), &zone),
            in_zone(o.end.as_ref(), &zone)
        )
    };
    let state = match &w.current {
        Some(c) => format!("in force until {}", in_zone(c.end.as_ref(), &zone)),
        None => "not in force".to_owned(),
    };
    let rule = if w.rrule.is_empty() {
        "once".to_owned()
    } else {
        w.rrule.clone()
    };
    let mut scope = Vec::new();
    for (what, list) in [
        ("services", &w.services),
        ("integrations", &w.integrations),
        ("matchers", &w.matchers),
    ] {
        if !list.is_empty() {
            scope.push(format!("{what} {}", list.join(", ")));
        }
    }
    let origin = if w.declared {
        "configured".to_owned()
    } else {
        format!("made by {}", w.updated_by)
    };
    let mut lines = vec![
        format!("{}  {state}  ({}, {origin})", w.name, w.time_zone),
        format!("  rule:  {rule} from {} for {}", w.start, w.duration),
        format!("  scope: {}", scope.join("; ")),
    ];
    if !w.comment.is_empty() {
        lines.push(format!("  note:  {}", w.comment));
    }
    match w.occurrences.split_first() {
        None => lines.push("  next:  none (the rule has ended)".to_owned()),
        Some((first, rest)) => {
            lines.push(format!("  next:  {}", span(first)));
            lines.extend(rest.iter().map(|o| format!("         {}", span(o))));
        }
    }
    lines.join("\n")
}

#[derive(Debug, Subcommand)]
pub enum DeliveryCmd {
    /// Deliveries and pages, newest first: channel, kind, state, attempts, last error.
    List {
        /// Only this incident's.
        #[arg(long)]
        incident: Option<String>,
        /// Only failed ones (the same as --status failed).
        #[arg(long, conflicts_with = "status")]
        failed: bool,
        /// Only those in this state: pending, sent, delivered, failed, cancelled.
        #[arg(long)]
        status: Option<firebreak_domain::DeliveryState>,
        /// At most this many (following pages), 1-10000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
}

async fn delivery(
    cmd: DeliveryCmd,
    channel: AuthedChannel,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    use firebreak_proto::WireState as _;
    let DeliveryCmd::List {
        incident,
        failed,
        status: state,
        limit,
    } = cmd;
    let state = if failed {
        Some(firebreak_domain::DeliveryState::Failed)
    } else {
        state
    };
    let mut client = v1::notification_service_client::NotificationServiceClient::new(channel);
    let (mut all, mut page_token) = (Vec::new(), String::new());
    while all.len() < limit as usize {
        let r = client
            .list_deliveries(v1::ListDeliveriesRequest {
                incident_id: incident.clone().unwrap_or_default(),
                page_size: (limit as usize - all.len()).min(1000) as u32,
                page_token,
                status: state.map_or(0, |s| s.wire()),
            })
            .await
            .map_err(status)?
            .into_inner();
        all.extend(r.deliveries);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    let state_name = |d: &v1::Delivery| {
        firebreak_domain::DeliveryState::from_wire(d.status).map_or("unknown", |s| s.as_str())
    };
    if json_out {
        print_json(json!(
            all.iter()
                .map(|d| json!({
                    "id": d.id, "incident_id": d.incident_id, "channel": d.channel,
                    "kind": v1::DeliveryKind::shown(d.delivery_kind),
                    "status": state_name(d), "attempts": d.attempts, "last_error": d.last_error,
                    "provider_id": d.provider_id,
                    "created_at": crate::output::rfc3339(d.created_at.as_ref()),
                    "sent_at": crate::output::rfc3339(d.sent_at.as_ref()),
                    "delivered_at": crate::output::rfc3339(d.delivered_at.as_ref()),
                    "acknowledged_at": crate::output::rfc3339(d.acknowledged_at.as_ref()),
                    "acknowledged_by": d.acknowledged_by,
                }))
                .collect::<Vec<_>>()
        ));
    } else {
        crate::output::table(
            &[
                "created",
                "incident",
                "channel",
                "kind",
                "status",
                "attempts",
                "provider id",
                "acknowledged by",
                "last error",
            ],
            all.iter()
                .map(|d| {
                    vec![
                        ts(d.created_at.as_ref()),
                        d.incident_id.clone(),
                        d.channel.clone(),
                        v1::DeliveryKind::shown(d.delivery_kind).to_owned(),
                        state_name(d).to_owned(),
                        d.attempts.to_string(),
                        d.provider_id.chars().take(40).collect(),
                        d.acknowledged_by.clone(),
                        d.last_error.chars().take(80).collect(),
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum EscalationCmd {
    /// Who a policy would page, at each step and when, if nobody acknowledged an incident
    /// opened at --at (now by default): the directory and schedules as they stand. Pages
    /// nobody.
    Test {
        policy: String,
        /// When the incident opens: an RFC 3339 time, or a time ago (`1h`).
        #[arg(long, value_parser = parse_since)]
        at: Option<time::OffsetDateTime>,
    },
}

async fn escalation(
    cmd: EscalationCmd,
    channel: AuthedChannel,
    json_out: bool,
    status: &impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let EscalationCmd::Test { policy, at } = cmd;
    let at = at.map(|t| firebreak_proto::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    });
    let r = v1::notification_service_client::NotificationServiceClient::new(channel)
        .test_escalation(v1::TestEscalationRequest { policy, at })
        .await
        .map_err(status)?
        .into_inner();
    let when = |p: &v1::PlannedPage| crate::output::rfc3339(p.at.as_ref()).unwrap_or_default();
    if json_out {
        print_json(json!(r
            .pages
            .iter()
            .map(|p| json!({ "step": p.step, "repeat": p.repeat, "at": when(p), "user": p.user, "via": p.via, "kind": page_kind(p) }))
            .collect::<Vec<_>>()));
    } else if r.pages.is_empty() {
        say_raw("nobody would be paged");
    } else {
        crate::output::table(
            &["at", "step", "repeat", "who", "via"],
            r.pages
                .iter()
                .map(|p| {
                    let step = if p.step == 0 {
                        "fallback".to_owned()
                    } else {
                        p.step.to_string()
                    };
                    let who = if p.user.is_empty() {
                        "-".to_owned()
                    } else {
                        p.user.clone()
                    };
                    vec![
                        when(p),
                        step,
                        p.repeat.to_string(),
                        who,
                        format!("{} ({})", p.via, page_kind(p)),
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

/// Where `firebreak login` keeps tokens: `$FIREBREAK_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/firebreak/credentials`, else `~/.config/firebreak/credentials`.
pub(crate) fn credentials_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FIREBREAK_CREDENTIALS") {
        return Some(p.into());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("firebreak").join("credentials"))
}

/// The credentials file: server URL → token, one `URL TOKEN` line each.
fn read_credentials(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (url, token) = l.trim().split_once(' ')?;
            Some((url.to_owned(), token.trim().to_owned()))
        })
        .collect()
}

/// `firebreak login --server URL --token T`: checks the token with the server, then keeps
/// it (mode 0600) for that server.
pub(crate) fn save_login(server: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = credentials_path().context("no home directory for the credentials file")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut lines: Vec<(String, String)> = read_credentials(&path)
        .into_iter()
        .filter(|(url, _)| url != server)
        .collect();
    lines.push((server.to_owned(), token.to_owned()));
    let text: Vec<String> = lines.iter().map(|(u, t)| format!("{u} {t}")).collect();
    crate::auth::write_secret(&path, &text.join("\n"))?;
    Ok(path)
}

/// Whether `url`'s host is this machine (a token sent there never crosses a network).
pub(crate) fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The token a client command sends to `server`: `--token` / `FIREBREAK_TOKEN`, else the
/// credentials file's entry for the server, else (a server on this machine) the admin token
/// embedded mode wrote in its data directory (`$FIREBREAK_DATA_DIR`, else
/// `./firebreak-data`).
pub(crate) fn token_for(server: &str, given: Option<&str>) -> Option<String> {
    if let Some(t) = given.filter(|t| !t.is_empty()) {
        return Some(t.trim().to_owned());
    }
    if let Some(path) = credentials_path()
        && let Some((_, t)) = read_credentials(&path)
            .into_iter()
            .find(|(u, _)| u == server)
    {
        return Some(t);
    }
    if is_loopback(server) {
        let dir = std::env::var_os("FIREBREAK_DATA_DIR")
            .map_or_else(|| PathBuf::from("firebreak-data"), PathBuf::from);
        let text = std::fs::read_to_string(dir.join(crate::auth::ADMIN_TOKEN_FILE)).ok()?;
        return Some(text.trim().to_owned());
    }
    None
}
