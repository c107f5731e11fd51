//! The command line: `firebreak up` and the client commands that talk to a running server.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use firebreak_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    intake_service_client::IntakeServiceClient,
    integration_service_client::IntegrationServiceClient,
    runbook_service_client::RunbookServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::output::{Out, OutputFormat};
use crate::{App, Config};

/// Firebreak: incident management with durable, sandboxed runbooks.
#[derive(Debug, Parser)]
#[command(name = "firebreak", version, about)]
pub struct Cli {
    /// The server's gRPC address, for client commands.
    #[arg(
        long,
        global = true,
        env = "FIREBREAK_SERVER",
        default_value = "http://127.0.0.1:7400"
    )]
    pub server: String,
    /// A client configuration for a distributed deployment: a YAML map of each service's
    /// gRPC address (`intake`, `triage`, `orchestration`, `notification`); services it does
    /// not name are reached at --server.
    #[arg(long, global = true, env = "FIREBREAK_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// How client commands print results.
    #[arg(long, global = true, env = "FIREBREAK_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all four services in one process (embedded mode: SQLite, in-process bus).
    Up(UpArgs),
    /// Run one service of a distributed deployment (Postgres, NATS JetStream); run any
    /// number of replicas of each.
    Serve(ServeArgs),
    /// Raise an incident (an alert that opens or joins one).
    Raise(RaiseArgs),
    /// Look at and move incidents.
    #[command(subcommand)]
    Incident(IncidentCmd),
    /// Runbooks on the server, or check a directory of them locally.
    #[command(subcommand)]
    Runbook(RunbookCmd),
    /// Runbook runs.
    #[command(subcommand)]
    Run(RunCmd),
    /// Resolve the firing alert raised with this alert key.
    ResolveAlert { alert_key: String },
    /// Integrations: the keys monitoring tools send with.
    #[command(subcommand)]
    Integration(IntegrationCmd),
    /// Events consumers gave up on (distributed mode): parked in NATS, never dropped.
    #[command(subcommand)]
    Parked(ParkedCmd),
}

#[derive(Debug, Subcommand)]
pub enum ParkedCmd {
    /// List parked events, oldest first, with the consumer and the error that parked them.
    List {
        /// The servers' configuration file (its `nats:` is used).
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish a parked event again to its stream: the consumer that gave up on it handles
    /// it anew, the others recognise it as handled.
    Replay {
        /// The parked sequence number `parked list` shows.
        seq: u64,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntegrationCmd {
    /// Create an integration and print its key.
    Create {
        name: String,
        /// alertmanager, pagerduty or grpc.
        #[arg(long)]
        kind: String,
    },
    /// List integrations (keys masked).
    List,
    /// Delete an integration created at run time.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// A YAML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the SQLite databases live [default: ./firebreak-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7400].
    #[arg(long)]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address for /healthz and /metrics [default: 127.0.0.1:7401].
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// The runbook directory [default: ./runbooks].
    #[arg(long)]
    pub runbooks: Option<PathBuf>,
    /// Let runbooks' side-effecting actions act for real (default: dry runs).
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub service: crate::app::Service,
    /// A YAML configuration file: `database_url`, `nats`, `peers` and the rest of `up`'s keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7400].
    #[arg(long)]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address for /healthz and /metrics (and intake's webhooks) [default: 127.0.0.1:7401].
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// The runbook directory (orchestration) [default: ./runbooks].
    #[arg(long)]
    pub runbooks: Option<PathBuf>,
    /// Let runbooks' side-effecting actions act for real (default: dry runs).
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Args)]
pub struct RaiseArgs {
    #[arg(long)]
    pub title: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// 1 (critical) to 5 (low); omitted lets the rules decide.
    #[arg(long)]
    pub severity: Option<u32>,
    /// A category of the taxonomy; omitted lets the rules decide.
    #[arg(long, default_value = "")]
    pub category: String,
    /// A label as key=value; repeat for more.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(long, default_value = "cli")]
    pub source: String,
    #[arg(long, default_value = "")]
    pub dedup_key: String,
    /// Your key for this alert: repeats while it fires are recognised, and
    /// `firebreak resolve-alert KEY` resolves it.
    #[arg(long, default_value = "")]
    pub alert_key: String,
}

#[derive(Debug, Subcommand)]
pub enum IncidentCmd {
    /// List incidents, newest first.
    List {
        /// open, acknowledged, resolved or closed.
        #[arg(long)]
        state: Option<String>,
        /// Incidents per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Where the previous page ended (printed on stderr when more follow).
        #[arg(long, default_value = "")]
        page_token: String,
    },
    Show {
        id: String,
    },
    Timeline {
        id: String,
    },
    #[command(name = "ack")]
    Acknowledge {
        id: String,
    },
    Resolve {
        id: String,
        #[arg(long, default_value = "")]
        summary: String,
    },
    /// Close a resolved incident; the root cause is required.
    Close {
        id: String,
        #[arg(long)]
        root_cause: String,
    },
    /// Add a note to the timeline.
    Note {
        id: String,
        text: String,
    },
    /// The post-incident review draft (Markdown).
    Review {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunbookCmd {
    /// The runbooks the server loaded.
    List,
    /// Compile every runbook in DIR and report errors as file:line:col.
    Check {
        #[arg(default_value = "./runbooks")]
        dir: PathBuf,
    },
    /// Run the tests beside the runbooks of DIR (NAME.test.yaml); non-zero exit on failure.
    Test {
        #[arg(default_value = "./runbooks")]
        dir: PathBuf,
        /// Fail when a runbook has no tests.
        #[arg(long)]
        require_tests: bool,
    },
    /// Show what a runbook would do, every action simulated: for an incident on the server
    /// (--incident) or a test fixture's case (--fixture).
    DryRun {
        name: String,
        #[arg(long, conflicts_with = "fixture", required_unless_present = "fixture")]
        incident: Option<String>,
        /// A fixture file; runs its case named by --case, else its first.
        #[arg(long)]
        fixture: Option<PathBuf>,
        #[arg(long, requires = "fixture")]
        case: Option<String>,
        /// The runbook directory.
        #[arg(long, default_value = "./runbooks")]
        runbooks: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    List {
        #[arg(long)]
        incident: Option<String>,
        /// pending, running, sleeping, waiting_approval, succeeded, failed or rejected.
        #[arg(long)]
        state: Option<String>,
    },
    Show {
        run: String,
    },
    /// Approvals waiting for a person, oldest first.
    Approvals,
    /// Approve a run's pending approval (or its plan); the run resumes.
    Approve(DecideArgs),
    /// Reject a run's pending approval; the run resumes with the answer "no" (a rejected
    /// plan ends the run).
    Reject(DecideArgs),
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    pub run: String,
    /// Why: recorded on the incident's timeline.
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Who decides [default: $FIREBREAK_USER, else $USER].
    #[arg(long = "as", env = "FIREBREAK_USER")]
    pub actor: Option<String>,
}

fn who() -> String {
    std::env::var("USER").map_or_else(|_| "user:cli".into(), |u| format!("user:{u}"))
}

impl Cli {
    /// Runs the command; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<i32> {
        let out = Out::new(self.output);
        match self.command {
            Command::Up(args) => up(args).await.map(|()| 0),
            Command::Serve(args) => serve(args).await.map(|()| 0),
            Command::Parked(cmd) => parked(cmd, &out).await.map(|()| 0),
            Command::Runbook(RunbookCmd::Check { dir }) => Ok(check(&dir, &out)),
            Command::Runbook(RunbookCmd::Test { dir, require_tests }) => {
                Ok(crate::authoring::test(&dir, require_tests, &out))
            }
            Command::Runbook(RunbookCmd::DryRun {
                name,
                incident,
                fixture,
                case,
                runbooks,
            }) => {
                let source = match (incident, fixture) {
                    (Some(id), _) => crate::authoring::Source::Incident {
                        id,
                        channel: Targets::connect(&self.server, self.client_config.as_deref())
                            .await?
                            .triage,
                    },
                    (None, Some(path)) => crate::authoring::Source::Fixture { path, case },
                    (None, None) => bail!("give --incident ID or --fixture FILE"),
                };
                crate::authoring::dry_run(&runbooks, &name, source, &out).await
            }
            cmd => {
                let targets = Targets::connect(&self.server, self.client_config.as_deref()).await?;
                client(cmd, targets, &out).await.map(|()| 0)
            }
        }
    }
}

/// Where each service's calls go: all to --server (embedded mode), or each to its address
/// in the client configuration (distributed mode).
struct Targets {
    intake: Channel,
    triage: Channel,
    orchestration: Channel,
}

impl Targets {
    async fn connect(
        server: &str,
        client_config: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let peers = match client_config {
            Some(path) => crate::config::Peers::load(path)?,
            None => crate::config::Peers::default(),
        };
        // One connection per distinct address.
        let mut open: std::collections::HashMap<String, Channel> = Default::default();
        let mut channel = async |p: &Option<String>| -> anyhow::Result<Channel> {
            let url = p.clone().unwrap_or_else(|| server.to_owned());
            if let Some(c) = open.get(&url) {
                return Ok(c.clone());
            }
            let c = connect(&url).await?;
            open.insert(url, c.clone());
            Ok(c)
        };
        Ok(Self {
            intake: channel(&peers.intake).await?,
            triage: channel(&peers.triage).await?,
            orchestration: channel(&peers.orchestration).await?,
        })
    }
}

async fn connect(server: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("invalid server address {server:?}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach Firebreak at {server} (is `firebreak up` or `firebreak serve` running there?)"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(a) = args.grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(a) = args.http_addr {
        config.http_addr = a;
    }
    if let Some(r) = args.runbooks {
        config.runbooks_dir = r;
    }
    config.live |= args.live;
    firebreak_telemetry::init_tracing(config.log_json);
    let service = args.service;
    let app = App::serve(config, service).await?;
    eprintln!(
        "firebreak {} is up (distributed mode)\n  gRPC    {}  (health, reflection)\n  HTTP    http://{}/healthz",
        service.name(),
        app.grpc_addr(),
        app.http_addr(),
    );
    run_until_signal(app).await
}

async fn parked(cmd: ParkedCmd, out: &Out) -> anyhow::Result<()> {
    let path = match &cmd {
        ParkedCmd::List { config, .. } | ParkedCmd::Replay { config, .. } => config,
    };
    let config = Config::load(Some(path), std::env::vars())?;
    let bus = crate::app::connect_nats(&config).await?;
    match cmd {
        ParkedCmd::List { limit, .. } => out.parked(&bus.parked(limit).await?),
        ParkedCmd::Replay { seq, .. } => {
            bus.replay(seq).await?;
            out.replayed(seq);
        }
    }
    Ok(())
}

async fn run_until_signal(app: App) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down; a second signal exits at once");
        signal.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
    app.run(shutdown).await
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(a) = args.http_addr {
        config.http_addr = a;
    }
    if let Some(r) = args.runbooks {
        config.runbooks_dir = r;
    }
    config.live |= args.live;
    firebreak_telemetry::init_tracing(config.log_json);
    let live = config.live;
    let data_dir = config.data_dir.clone();
    let app = App::build(config).await?;
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    eprintln!(
        "firebreak is up (embedded mode)\n  gRPC    {grpc}  (health, reflection)\n  HTTP    http://{http}/healthz  http://{http}/metrics\n  data    {}\n  runbooks {} loaded, {}\n\nraise a first incident:\n  firebreak raise --title \"checkout latency above SLO\" --label service=checkout\n  firebreak incident list",
        data_dir.display(),
        app.runbook_count(),
        if live {
            "LIVE: side-effecting actions act for real"
        } else {
            "dry run: side-effecting actions are simulated (--live to act)"
        },
    );
    run_until_signal(app).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check(dir: &std::path::Path, out: &Out) -> i32 {
    match firebreak_runbook::Catalog::load(dir, &firebreak_runbook::Limits::default()) {
        Ok(catalog) => {
            let names: Vec<&str> = catalog
                .all()
                .iter()
                .map(|r| r.manifest.name.as_str())
                .collect();
            out.check_ok(&names);
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.len());
            1
        }
    }
}

async fn client(cmd: Command, targets: Targets, out: &Out) -> anyhow::Result<()> {
    let mut incidents = IncidentServiceClient::new(targets.triage);
    let mut runs = RunbookServiceClient::new(targets.orchestration);
    let channel = targets.intake;
    match cmd {
        Command::Raise(a) => {
            let mut labels = std::collections::HashMap::new();
            for l in &a.labels {
                let (k, v) = firebreak_domain::parse_label(l)?;
                labels.insert(k, v);
            }
            let r = IntakeServiceClient::new(channel)
                .raise_incident(v1::RaiseIncidentRequest {
                    alert: Some(v1::AlertInput {
                        title: a.title,
                        description: a.description,
                        severity: a.severity.unwrap_or(0),
                        category: a.category,
                        labels,
                        source: a.source,
                        dedup_key: a.dedup_key,
                        alert_key: a.alert_key,
                    }),
                    idempotency_key: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            out.raised(&r);
        }
        Command::Incident(IncidentCmd::List {
            state,
            limit,
            page_token,
        }) => {
            let r = incidents
                .list_incidents(v1::ListIncidentsRequest {
                    state: state.unwrap_or_default(),
                    limit,
                    page_token,
                })
                .await
                .map_err(status)?
                .into_inner();
            out.incidents(&r.incidents);
            if !r.next_page_token.is_empty() {
                eprintln!("more incidents: --page-token {}", r.next_page_token);
            }
        }
        Command::Incident(IncidentCmd::Show { id }) => {
            let r = incidents
                .get_incident(v1::GetIncidentRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            out.incident(r.incident.as_ref());
        }
        Command::Incident(IncidentCmd::Timeline { id }) => {
            // The whole timeline, page by page (each bounded in size).
            let mut entries = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = incidents
                    .get_timeline(v1::GetTimelineRequest {
                        id: id.clone(),
                        limit: 0,
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
            out.timeline(&entries);
        }
        Command::Incident(IncidentCmd::Acknowledge { id }) => {
            let r = incidents
                .acknowledge(v1::AcknowledgeRequest { id, actor: who() })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Resolve { id, summary }) => {
            let r = incidents
                .resolve(v1::ResolveRequest {
                    id,
                    actor: who(),
                    summary,
                })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Close { id, root_cause }) => {
            let r = incidents
                .close(v1::CloseRequest {
                    id,
                    actor: who(),
                    root_cause,
                })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Note { id, text }) => {
            let r = incidents
                .add_note(v1::AddNoteRequest {
                    id,
                    actor: who(),
                    text,
                })
                .await
                .map_err(status)?;
            out.timeline(r.into_inner().entry.as_slice());
        }
        Command::Incident(IncidentCmd::Review { id }) => {
            let r = incidents
                .get_review(v1::GetReviewRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            out.review(&r);
        }
        Command::Runbook(RunbookCmd::List) => {
            let r = runs
                .list_runbooks(v1::ListRunbooksRequest {})
                .await
                .map_err(status)?
                .into_inner();
            out.runbooks(&r.runbooks);
        }
        Command::Run(RunCmd::List { incident, state }) => {
            let r = runs
                .list_runs(v1::ListRunsRequest {
                    incident_id: incident.unwrap_or_default(),
                    limit: 0,
                    state: state.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            out.runs(&r.runs);
        }
        Command::Run(RunCmd::Show { run }) => {
            let r = runs
                .get_run(v1::GetRunRequest { id: run })
                .await
                .map_err(status)?
                .into_inner();
            out.run(r.run.as_ref());
        }
        Command::ResolveAlert { alert_key } => {
            let r = IntakeServiceClient::new(channel)
                .resolve_alert(v1::ResolveAlertRequest {
                    alert_key,
                    idempotency_key: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            out.resolved_alert(&r.alert_id);
        }
        Command::Integration(cmd) => {
            let mut integrations = IntegrationServiceClient::new(channel);
            match cmd {
                IntegrationCmd::Create { name, kind } => {
                    let r = integrations
                        .create_integration(v1::CreateIntegrationRequest { name, kind })
                        .await
                        .map_err(status)?
                        .into_inner();
                    out.integrations(r.integration.as_slice(), true);
                }
                IntegrationCmd::List => {
                    let r = integrations
                        .list_integrations(v1::ListIntegrationsRequest {})
                        .await
                        .map_err(status)?
                        .into_inner();
                    out.integrations(&r.integrations, false);
                }
                IntegrationCmd::Delete { name } => {
                    integrations
                        .delete_integration(v1::DeleteIntegrationRequest { name: name.clone() })
                        .await
                        .map_err(status)?;
                    out.deleted(&name);
                }
            }
        }
        Command::Run(RunCmd::Approvals) => {
            let r = runs
                .list_approvals(v1::ListApprovalsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            out.approvals(&r.approvals);
        }
        Command::Run(cmd @ (RunCmd::Approve(_) | RunCmd::Reject(_))) => {
            let (approve, d) = match cmd {
                RunCmd::Approve(d) => (true, d),
                RunCmd::Reject(d) => (false, d),
                _ => bail!("not a decision"),
            };
            let req = v1::DecideApprovalRequest {
                run_id: d.run,
                actor: d.actor.unwrap_or_else(who),
                comment: d.comment,
            };
            let r = if approve {
                runs.approve(req).await
            } else {
                runs.reject(req).await
            };
            out.run(r.map_err(status)?.into_inner().run.as_ref());
        }
        Command::Up(_)
        | Command::Serve(_)
        | Command::Parked(_)
        | Command::Runbook(
            RunbookCmd::Check { .. } | RunbookCmd::Test { .. } | RunbookCmd::DryRun { .. },
        ) => {
            bail!("not a client command")
        }
    }
    Ok(())
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}
