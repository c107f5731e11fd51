//! The command line: `firebreak up` and the client commands that talk to a running server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use firebreak_proto::WireState as _;
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    intake_service_client::IntakeServiceClient,
    integration_service_client::IntegrationServiceClient,
    runbook_service_client::RunbookServiceClient,
};
use tokio_util::sync::CancellationToken;

use crate::cli_access::AccessCmd;

use crate::output::{Exit, Failure, Out, OutputFormat};
use crate::{App, Config};

/// What `--help` says about exit codes; the README's table says the same.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failed: what the command checked failed (runbook test, simulated run), or another error
  2  usage: the command line is wrong
  3  unavailable: the server is unreachable, did not answer in time, or is overloaded (retry)
  4  not found: what the command names does not exist
  5  invalid: the server refused the input
  6  conflict: the target's state does not allow it (already exists, wrong state)
  7  denied: the caller may not do this
Under --output json an error is one JSON object on stderr: {\"code\", \"message\", \"exit\"}.";

/// Firebreak: incident management with durable, sandboxed runbooks.
#[derive(Debug, Parser)]
#[command(name = "firebreak", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The server's gRPC address, for client commands.
    #[arg(
        long,
        global = true,
        env = "FIREBREAK_SERVER",
        default_value = "http://127.0.0.1:7400"
    )]
    pub server: String,
    /// The API token client commands send [default: the credentials file's entry for
    /// --server (`firebreak login`), else, for a server on this machine, the admin token
    /// in its data directory ($FIREBREAK_DATA_DIR or ./firebreak-data)].
    #[arg(long, global = true, env = "FIREBREAK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Send the token over plaintext to a server that is not on this machine (the network
    /// can read it).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// The CA an `https://` server's certificate is checked against [default: the system's
    /// roots].
    #[arg(long, global = true, env = "FIREBREAK_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for servers that require one (mTLS), with --client-key.
    #[arg(
        long,
        global = true,
        env = "FIREBREAK_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    #[arg(
        long,
        global = true,
        env = "FIREBREAK_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// A client configuration for a distributed deployment: a YAML map of each service's
    /// gRPC address (`intake`, `triage`, `orchestration`, `notification`); services it does
    /// not name are reached at --server.
    #[arg(long, global = true, env = "FIREBREAK_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// How client commands print results.
    #[arg(long, global = true, env = "FIREBREAK_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// How long client commands wait for a connection to a service (`5s`, `500ms`, `5`).
    #[arg(long, global = true, env = "FIREBREAK_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How long client commands wait for each answer (`30s`, `2m`).
    #[arg(long, global = true, env = "FIREBREAK_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Render CHANNEL's message for an event of an incident, as the channel would send it.
    Preview {
        channel: String,
        #[arg(long)]
        incident: String,
        /// opened (default), acknowledged, resolved, closed, escalated, page, ...
        #[arg(long, default_value = "opened")]
        event: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all four services in one process (embedded mode: SQLite, in-process bus).
    Up(UpArgs),
    /// Run one service of a distributed deployment (Postgres, NATS JetStream); run any
    /// number of replicas of each.
    Serve(ServeArgs),
    /// Create the services' Postgres databases if missing and apply their schema migrations
    /// (distributed mode), then exit: once per release, before `serve --no-migrate`.
    Migrate(MigrateArgs),
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
    /// Silences (Alertmanager's): alerts they match are stored and page nobody.
    #[command(subcommand)]
    Silence(crate::cli_silence::SilenceCmd),
    /// Events consumers gave up on (distributed mode): parked in NATS, never dropped.
    #[command(subcommand)]
    Parked(ParkedCmd),
    /// API tokens: create (printed once), list (masked), revoke; generate a service
    /// credential.
    #[command(subcommand)]
    Token(crate::cli_access::TokenCmd),
    /// Users and service accounts of the directory.
    #[command(subcommand)]
    User(crate::cli_access::UserCmd),
    /// Teams and their members.
    #[command(subcommand)]
    Team(crate::cli_access::TeamCmd),
    /// The audit log: refused calls and calls that changed something (needs audit.read).
    #[command(subcommand)]
    Audit(crate::cli_access::AuditCmd),
    /// Escalation policies: who would be paged, and when.
    #[command(subcommand)]
    Escalation(crate::cli_access::EscalationCmd),
    /// Notification deliveries and pages.
    #[command(subcommand)]
    Delivery(crate::cli_access::DeliveryCmd),
    /// On-call schedules: the final schedule, and its gaps.
    #[command(subcommand)]
    Schedule(crate::cli_access::ScheduleCmd),
    /// Channels' messages: what a channel would send (rendered, nothing sent).
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Maintenance windows: when incidents of some services page nobody.
    #[command(subcommand)]
    Maintenance(crate::cli_access::MaintenanceCmd),
    /// Who is on call now, in every schedule or one.
    Oncall {
        #[arg(long)]
        schedule: Option<String>,
    },
    /// Incident figures per group, over the incidents opened in a window: count, time to
    /// acknowledge and to resolve (nearest-rank p50/p90), the share a runbook resolved before
    /// any person acted, alerts per incident, and silenced alerts (docs/reports.md).
    Report {
        /// The window, ending now: whole minutes, hours, days or weeks (90m, 12h, 30d, 2w),
        /// at most 366 days.
        #[arg(long, default_value = firebreak_domain::report::DEFAULT_SINCE)]
        since: String,
        /// Group by category, severity, service or integration.
        #[arg(long, default_value = "category")]
        by: String,
    },
    /// Who the server takes this client for: the actor it records, and its roles.
    Whoami,
    /// Check a token with --server and keep it for that server (mode 0600, in
    /// $FIREBREAK_CREDENTIALS or ~/.config/firebreak/credentials).
    Login {
        /// The token (else read from standard input).
        #[arg(
            long = "with-token",
            env = "FIREBREAK_LOGIN_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
    },
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
        /// A file holding a signing secret (16 to 256 bytes, surrounding white space
        /// aside): its webhook calls must then carry `X-Firebreak-Signature`. A file, not
        /// a flag's value, so the secret stays out of shell history and process lists.
        #[arg(long)]
        signing_secret_file: Option<PathBuf>,
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
    /// A runbook directory, replacing the built-in runbooks (`runbooks_builtin: true` in
    /// the configuration keeps them beside it) [default: the built-in runbooks].
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
    /// A runbook directory (orchestration), replacing the built-in runbooks
    /// [default: the built-in runbooks].
    #[arg(long)]
    pub runbooks: Option<PathBuf>,
    /// Let runbooks' side-effecting actions act for real (default: dry runs).
    #[arg(long)]
    pub live: bool,
    /// Do not migrate the database at start: wait (live, not ready) until `firebreak migrate`
    /// has applied every migration this build needs.
    #[arg(long)]
    pub no_migrate: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The services whose databases to migrate [default: all four].
    #[arg(value_enum)]
    pub services: Vec<crate::app::Service>,
    /// A YAML configuration file with `database_url` (or FIREBREAK_DATABASE_URL); the rest
    /// of `serve`'s keys may be there too, and are not used.
    #[arg(long)]
    pub config: Option<PathBuf>,
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
        /// open, acknowledged, mitigated, resolved or closed.
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
    /// Follow timelines live: every entry as it is written, of one incident or of all,
    /// until interrupted (a line each; JSON lines with --output json).
    Watch {
        id: Option<String>,
    },
    /// An incident's alerts, first seen first: labels, firing or resolved, how many times
    /// each fired, first and last seen (at most 500; a note on stderr when cut).
    Alerts {
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
    /// The impact is contained (paging stops; alerts still attach).
    Mitigate {
        id: String,
        #[arg(long, default_value = "")]
        summary: String,
    },
    /// Open a resolved incident again (within `reopen.window_seconds` of its resolve).
    Reopen {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Move every alert of ID into INTO and close ID with a link to it.
    Merge {
        id: String,
        #[arg(long)]
        into: String,
        #[arg(long)]
        reason: String,
    },
    /// Set the severity (1-5), priority (1-5) or category by hand, with a reason (a
    /// severity alone recomputes the priority).
    Set {
        id: String,
        #[arg(long)]
        severity: Option<u32>,
        #[arg(long)]
        priority: Option<u32>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        reason: String,
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
    /// Give PERSON an incident role (commander hands off: it has one holder; responder,
    /// it-operator, manager, analyst and extra roles such as scribe may have several).
    Assign {
        id: String,
        /// The role: commander (or incident-commander), responder, it-operator, manager,
        /// analyst, or an extra one (scribe, communications…).
        #[arg(long)]
        role: String,
        /// The user given the role.
        person: String,
    },
    /// Take an incident role from PERSON.
    Unassign {
        id: String,
        #[arg(long)]
        role: String,
        person: String,
    },
    /// The post-incident review of a resolved or closed incident: Markdown, or the
    /// structured review (--format json).
    Review {
        id: String,
        #[arg(long, value_enum, default_value = "markdown")]
        format: crate::cli_review::ReviewFormat,
    },
    /// Set the review's summary (an empty TEXT clears it).
    Summary {
        id: String,
        text: String,
    },
    /// The review's follow-up action items: add, done, reopen, edit, list.
    #[command(subcommand, name = "follow-up")]
    FollowUp(crate::cli_review::FollowUpCmd),
    /// Post a status update to the incident's stakeholders (its subscribers, per incident
    /// and by rule): on the timeline and delivered to each once. A `resolved` update does
    /// not resolve the incident (docs/status-updates.md).
    Update {
        id: String,
        /// investigating, identified, monitoring or resolved.
        #[arg(long)]
        status: String,
        /// What stakeholders are told (1 to 4096 bytes).
        message: String,
    },
    /// Subscribe a person (a user of the directory) or a channel to the incident's status
    /// updates (configuration's `subscriptions` rules add more).
    Subscribe {
        id: String,
        #[command(flatten)]
        who: crate::cli_updates::SubscriberArgs,
    },
    /// End a person's or channel's subscription to the incident's status updates.
    Unsubscribe {
        id: String,
        #[command(flatten)]
        who: crate::cli_updates::SubscriberArgs,
    },
    /// The people and channels subscribed to the incident (not those of rules).
    Subscribers {
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
        /// The runbook directory of the fixture's runbook [default: ./runbooks] (with
        /// --incident, the server's catalogue is used).
        #[arg(long, conflicts_with = "incident")]
        runbooks: Option<PathBuf>,
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
        /// Runs per page, newest first (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Where the previous page ended (printed on stderr when more follow).
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// A run with its whole journal (fetched page by page).
    Show { run: String },
    /// Follow runs live: what they did so far, then each change as it happens (a line each;
    /// JSON lines with --output json). One run: until it finishes; an incident's runs, or
    /// every run (from now on): until interrupted.
    Watch {
        run: Option<String>,
        /// The runs of this incident.
        #[arg(long, conflicts_with = "run")]
        incident: Option<String>,
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
    /// Why: recorded on the incident's timeline (the decider is the token's identity).
    #[arg(long, default_value = "")]
    pub comment: String,
}

fn who() -> String {
    std::env::var("USER").map_or_else(|_| "user:cli".into(), |u| format!("user:{u}"))
}

/// A duration on the command line: `500ms`, `5s`, `2m`, or plain seconds; 1 ms to 1 hour.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_span(
        text,
        &[
            ("ms", Duration::from_millis(1)),
            ("s", Duration::from_secs(1)),
            ("m", Duration::from_secs(60)),
        ],
        "a duration such as 500ms, 5s or 2m",
    )?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
        return Err(format!("{text:?} must lie between 1ms and 1h"));
    }
    Ok(d)
}

/// A number with one of `units` (plain seconds without one), saying it is not `what`
/// otherwise.
pub(crate) fn parse_span(
    text: &str,
    units: &[(&str, Duration)],
    what: &str,
) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let bad = || format!("{text:?} is not {what}");
    let n: u32 = number.parse().map_err(|_| bad())?;
    let unit = units
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, d)| *d)
        .ok_or_else(bad)?;
    unit.checked_mul(n).ok_or_else(bad)
}

/// Whether the raw command line (or `FIREBREAK_OUTPUT`) asks for JSON, for errors found
/// before clap could parse it.
fn json_requested(args: &[String]) -> bool {
    let mut json = std::env::var("FIREBREAK_OUTPUT").is_ok_and(|v| v == "json");
    for (i, a) in args.iter().enumerate() {
        if a == "--output=json" || (a == "--output" && args.get(i + 1).is_some_and(|v| v == "json"))
        {
            json = true;
        } else if a.starts_with("--output") {
            json = false;
        }
    }
    json
}

/// Parses the process's command line. Help and version go to stdout (exit 0); a usage error
/// exits 2, as a JSON object on stderr when JSON output was asked for.
pub fn parse() -> Cli {
    let args: Vec<String> = std::env::args().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let usage = !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            if usage && json_requested(&args) {
                let rendered = e.render().to_string();
                // The error's paragraph, without clap's usage and hint.
                let message = rendered
                    .lines()
                    .map(str::trim)
                    .take_while(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_start_matches("error: ")
                    .to_owned();
                crate::output::report_error(OutputFormat::Json, Exit::Usage, &message);
                std::process::exit(Exit::Usage.code());
            }
            e.exit()
        }
    }
}

impl Cli {
    /// Runs the command and reports its error; returns the process exit code (see
    /// [`EXIT_CODES`]).
    pub async fn main(self) -> i32 {
        let format = self.output;
        match self.run().await {
            Ok(code) => code,
            Err(e) => {
                let exit = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<Failure>())
                    .map_or(Exit::Failed, |f| f.exit);
                crate::output::report_error(format, exit, &format!("{e:#}"));
                exit.code()
            }
        }
    }

    /// Runs the command; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<i32> {
        let out = Out::new(self.output);
        let token = crate::cli_access::token_for(&self.server, self.token.as_deref());
        let targets = Targets {
            token,
            insecure: self.insecure,
            tls: crate::tls::ClientTls {
                ca_file: self.ca_file,
                cert_file: self.client_cert,
                key_file: self.client_key,
                server_name: None,
            },
            server: self.server,
            client_config: self.client_config,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
        };
        match self.command {
            Command::Up(args) => up(args).await.map(|()| 0),
            Command::Serve(args) => serve(args).await.map(|()| 0),
            Command::Migrate(args) => migrate(args).await.map(|()| 0),
            Command::Parked(cmd) => parked(cmd, &out).await.map(|()| 0),
            Command::Runbook(RunbookCmd::Check { dir }) => check(&dir, &out),
            Command::Runbook(RunbookCmd::Test { dir, require_tests }) => {
                crate::authoring::test(&dir, require_tests, &out)
            }
            Command::Runbook(RunbookCmd::DryRun {
                name,
                incident,
                fixture,
                case,
                runbooks,
            }) => match (incident, fixture) {
                (Some(id), _) => dry_run_on_server(&targets, &name, id, &out).await,
                (None, Some(path)) => {
                    let dir = runbooks.unwrap_or_else(|| "./runbooks".into());
                    crate::authoring::dry_run(&dir, &name, path, case, &out).await
                }
                (None, None) => bail!("give --incident ID or --fixture FILE"),
            },
            Command::Token(crate::cli_access::TokenCmd::Generate) => {
                crate::output::say_raw(&crate::auth::generate_token()?);
                Ok(0)
            }
            Command::Login { token } => login(&targets, token).await.map(|()| 0),
            Command::Silence(cmd) => {
                let channel = targets.connect(Service::Intake).await?;
                let timeout = targets.request_timeout;
                crate::cli_silence::run(cmd, channel, self.output, |s| status(s, timeout))
                    .await
                    .map(|()| 0)
            }
            Command::Report { since, by } => report(&targets, &since, &by, &out).await.map(|()| 0),
            Command::Template(TemplateCmd::Preview {
                channel,
                incident,
                event,
            }) => template_preview(&targets, channel, incident, event, self.output)
                .await
                .map(|()| 0),
            cmd @ (Command::Token(_)
            | Command::User(_)
            | Command::Team(_)
            | Command::Audit(_)
            | Command::Escalation(_)
            | Command::Delivery(_)
            | Command::Schedule(_)
            | Command::Maintenance(_)
            | Command::Oncall { .. }
            | Command::Whoami) => {
                let cmd = match cmd {
                    Command::Token(c) => AccessCmd::Token(c),
                    Command::User(c) => AccessCmd::User(c),
                    Command::Team(c) => AccessCmd::Team(c),
                    Command::Audit(c) => AccessCmd::Audit(c),
                    Command::Escalation(c) => AccessCmd::Escalation(c),
                    Command::Delivery(c) => AccessCmd::Delivery(c),
                    Command::Schedule(c) => AccessCmd::Schedule(c),
                    Command::Oncall { schedule } => AccessCmd::OnCall { schedule },
                    Command::Maintenance(c) => AccessCmd::Maintenance(c),
                    _ => AccessCmd::WhoAmI,
                };
                let channel = targets.connect(Service::Notification).await?;
                let timeout = targets.request_timeout;
                crate::cli_access::run(cmd, channel, self.output, |s| status(s, timeout))
                    .await
                    .map(|()| 0)
            }
            cmd => client(cmd, &targets, &out).await.map(|()| 0),
        }
    }
}

/// `firebreak report`: triage's figures over the window, with intake's silenced alerts
/// (counted from the window's start triage answered with) added per group.
async fn report(targets: &Targets, since: &str, by: &str, out: &Out) -> anyhow::Result<()> {
    // Refused here, naming the field, before any call; the servers check the same.
    firebreak_domain::report::parse_since(since)
        .map_err(|e| Failure::new(Exit::Usage, format!("--since: {e}")))?;
    let by = firebreak_domain::report::GroupBy::parse(by)
        .map_err(|e| Failure::new(Exit::Usage, format!("--by: {e}")))?;
    let status = |s: tonic::Status| status(s, targets.request_timeout);
    let mut r = IncidentServiceClient::new(targets.connect(Service::Triage).await?)
        .get_report(v1::GetReportRequest {
            since: since.to_owned(),
            group_by: firebreak_proto::wire_grouping(by) as i32,
        })
        .await
        .map_err(status)?
        .into_inner();
    let silenced = IntegrationServiceClient::new(targets.connect(Service::Intake).await?)
        .get_silenced_counts(v1::GetSilencedCountsRequest {
            since: r.since,
            group_by: r.group_by,
        })
        .await
        .map_err(status)?
        .into_inner()
        .counts;
    add_silenced(&mut r, &silenced);
    out.report(&r);
    Ok(())
}

/// Adds silenced alerts per key to a report: to the group of that key, or to a new group of
/// no incidents (groups stay in key order); and to the total.
fn add_silenced(r: &mut v1::GetReportResponse, counts: &[v1::SilencedGroupCount]) {
    for c in counts {
        match r.groups.binary_search_by(|g| g.key.as_str().cmp(&c.key)) {
            Ok(i) => r.groups[i].silenced += c.count,
            Err(i) => r.groups.insert(
                i,
                v1::ReportGroup {
                    key: c.key.clone(),
                    silenced: c.count,
                    ..Default::default()
                },
            ),
        }
        r.total.get_or_insert_with(Default::default).silenced += c.count;
    }
}

/// `firebreak login`: asks the server who the token is, then keeps it for the server.
async fn login(targets: &Targets, token: Option<String>) -> anyhow::Result<()> {
    let token = match token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    let token = token.trim().to_owned();
    let checked = Targets {
        token: Some(token.clone()),
        insecure: targets.insecure,
        tls: targets.tls.clone(),
        server: targets.server.clone(),
        client_config: targets.client_config.clone(),
        connect_timeout: targets.connect_timeout,
        request_timeout: targets.request_timeout,
    };
    let me = v1::access_service_client::AccessServiceClient::new(
        checked.connect(Service::Notification).await?,
    )
    .who_am_i(v1::WhoAmIRequest {})
    .await
    .map_err(|s| status(s, targets.request_timeout))?
    .into_inner();
    let path = crate::cli_access::save_login(&targets.server, &token)?;
    crate::output::say_raw(&format!(
        "logged in to {} as {} (kept in {})",
        targets.server,
        me.actor,
        path.display()
    ));
    Ok(())
}

/// `runbook dry-run NAME --incident ID`: the incident from triage, simulated by
/// orchestration with the runbook, parameters and limits it runs with.
/// `firebreak template preview`: the incident from triage, rendered by notification.
async fn template_preview(
    targets: &Targets,
    channel: String,
    id: String,
    event: String,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let status = |s: tonic::Status| status(s, targets.request_timeout);
    let incident = IncidentServiceClient::new(targets.connect(Service::Triage).await?)
        .get_incident(v1::GetIncidentRequest { id })
        .await
        .map_err(status)?
        .into_inner()
        .incident
        .ok_or_else(|| Failure::new(Exit::Failed, "triage answered without the incident"))?;
    let r = v1::notification_service_client::NotificationServiceClient::new(
        targets.connect(Service::Notification).await?,
    )
    .preview_template(v1::PreviewTemplateRequest {
        channel: channel.clone(),
        kind: event_kind(&event)? as i32,
        incident: Some(incident),
    })
    .await
    .map_err(status)?
    .into_inner();
    if matches!(format, OutputFormat::Json) {
        crate::cli_access::print_json(
            serde_json::json!({ "channel": channel, "event": event, "text": r.text }),
        );
    } else {
        crate::output::say_raw(&r.text);
    }
    Ok(())
}

async fn dry_run_on_server(
    targets: &Targets,
    name: &str,
    id: String,
    out: &Out,
) -> anyhow::Result<i32> {
    let status = |s: tonic::Status| status(s, targets.request_timeout);
    let incident = IncidentServiceClient::new(targets.connect(Service::Triage).await?)
        .get_incident(v1::GetIncidentRequest { id })
        .await
        .map_err(status)?
        .into_inner()
        .incident
        .ok_or_else(|| Failure::new(Exit::Failed, "triage answered without the incident"))?;
    let r = RunbookServiceClient::new(targets.connect(Service::Orchestration).await?)
        .dry_run(v1::DryRunRequest {
            runbook: name.to_owned(),
            incident: Some(incident),
        })
        .await
        .map_err(status)?
        .into_inner();
    let failed = r.end_state() == v1::DryRunOutcome::Failed;
    let end_state = r.end_state;
    let steps: Vec<firebreak_runbook::PlannedStep> = r
        .steps
        .into_iter()
        .map(|s| firebreak_runbook::PlannedStep {
            seq: s.seq,
            action: s.action,
            args: serde_json::from_str(&s.args).unwrap_or(serde_json::Value::String(s.args)),
            result: serde_json::from_str(&s.result).unwrap_or(serde_json::Value::String(s.result)),
            mocked: false,
        })
        .collect();
    let outcome = if failed {
        format!("failed: {}", r.error)
    } else {
        v1::DryRunOutcome::shown(end_state).to_owned()
    };
    out.simulation(name, &outcome, &steps, &r.log);
    if r.truncated {
        eprintln!("the server left out steps or log lines to keep its answer within 1 MiB");
    }
    Ok(i32::from(failed))
}

/// The services client commands call.
#[derive(Debug, Clone, Copy)]
enum Service {
    Intake,
    Triage,
    Orchestration,
    Notification,
}

/// Where each service's calls go: all to --server (embedded mode), or each to its address
/// in the client configuration (distributed mode). A command connects only to the service
/// it calls, so `raise` works while triage is down.
struct Targets {
    /// The token every call sends, if any.
    token: Option<String>,
    insecure: bool,
    /// How `https://` servers are reached.
    tls: crate::tls::ClientTls,
    server: String,
    client_config: Option<PathBuf>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Targets {
    /// Connects to `service`, with the connect and request timeouts.
    async fn connect(&self, service: Service) -> anyhow::Result<AuthedChannel> {
        let peers = match &self.client_config {
            Some(path) => crate::config::Peers::load(path)
                .map_err(|e| anyhow::Error::new(Failure::new(Exit::Usage, format!("{e:#}"))))?,
            None => crate::config::Peers::default(),
        };
        let (name, peer) = match service {
            Service::Intake => ("intake", peers.intake),
            Service::Triage => ("triage", peers.triage),
            Service::Orchestration => ("orchestration", peers.orchestration),
            Service::Notification => ("notification", peers.notification),
        };
        let url = peer.unwrap_or_else(|| self.server.clone());
        if self.token.is_some()
            && url.starts_with("http://")
            && !crate::cli_access::is_loopback(&url)
            && !self.insecure
        {
            return Err(Failure::new(
                Exit::Usage,
                format!("refusing to send a token over plaintext to {url}: use https://, or --insecure to send it anyway"),
            )
            .into());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|_| Failure::new(Exit::Usage, format!("invalid {name} address {url:?}")))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        let endpoint = self
            .tls
            .apply(endpoint, None)
            .map_err(|e| Failure::new(Exit::Usage, format!("{e:#}")))?;
        match tokio::time::timeout(self.connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(firebreak_proto::access::authed(
                channel,
                self.token.as_deref(),
            )),
            Ok(Err(e)) => Err(Failure::new(
                Exit::Unavailable,
                format!("cannot reach {name} at {url}: {} (is `firebreak up` or `firebreak serve` running there?)", error_chain(&e)),
            )
            .into()),
            Err(_) => Err(Failure::new(
                Exit::Unavailable,
                format!(
                    "cannot reach {name} at {url}: no connection within {:?} (--connect-timeout)",
                    self.connect_timeout
                ),
            )
            .into()),
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
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
        config.runbooks_dir = Some(r);
    }
    config.live |= args.live;
    let service = args.service;
    let telemetry = telemetry(&config, &format!("firebreak-{}", service.name()))?;
    let json = config.log_json;
    let schema = if args.no_migrate {
        firebreak_storage::postgres::Schema::Require
    } else {
        firebreak_storage::postgres::Schema::Migrate
    };
    let app = App::serve(config, service).await?.with_schema(schema);
    if json {
        tracing::info!(
            mode = "distributed",
            service = service.name(),
            grpc = %app.grpc_addr(),
            http = %app.http_addr(),
            "firebreak is up"
        );
    } else {
        eprintln!(
            "firebreak {} is up (distributed mode)\n  gRPC    {}  (health, reflection)\n  HTTP    http://{}/healthz",
            service.name(),
            app.grpc_addr(),
            app.http_addr(),
        );
    }
    let ran = run_until_signal(app).await;
    telemetry.shutdown(std::time::Duration::from_secs(5));
    ran
}

/// Sets up logs and OpenTelemetry for the process: the `otel:` section over the `OTEL_*`
/// variables; `service` names the process's spans and log lines.
fn telemetry(config: &Config, service: &str) -> anyhow::Result<firebreak_telemetry::Telemetry> {
    let telemetry = firebreak_telemetry::init(firebreak_telemetry::TelemetryOptions {
        json: config.log_json,
        service: service.to_owned(),
        otel: (&config.otel).into(),
        env: std::env::vars()
            .filter(|(k, _)| k.starts_with("OTEL_"))
            .collect(),
        default_log_filter: "info".to_owned(),
    })
    .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
    if let Some(export) = &telemetry.export {
        tracing::info!(
            endpoint = %export.endpoint,
            sample_ratio = export.sample_ratio,
            service = %export.resource.get("service.name").map_or("", String::as_str),
            "exporting traces over OTLP/gRPC"
        );
    }
    Ok(telemetry)
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let _telemetry = telemetry(&config, "firebreak-migrate")?;
    config.log_ignored_env();
    let services = if args.services.is_empty() {
        use crate::app::Service as S;
        vec![S::Intake, S::Triage, S::Orchestration, S::Notification]
    } else {
        args.services
    };
    for m in crate::app::migrate(&config, &services).await? {
        let line = if m.from == m.to {
            format!("{}: up to date (schema version {})", m.service, m.to)
        } else {
            format!(
                "{}: migrated from schema version {} to {}",
                m.service, m.from, m.to
            )
        };
        crate::output::say_raw(&line);
    }
    Ok(())
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
        config.runbooks_dir = Some(r);
    }
    config.live |= args.live;
    let telemetry = telemetry(&config, "firebreak")?;
    let json = config.log_json;
    let live = config.live;
    let data_dir = config.data_dir.clone();
    let catalogue = match (&config.runbooks_dir, config.runbooks_builtin) {
        (None, Some(false)) => "none".to_owned(),
        (None, _) => "built in".to_owned(),
        (Some(dir), Some(true)) => format!("built in + {}", dir.display()),
        (Some(dir), _) => dir.display().to_string(),
    };
    let app = App::build(config).await?;
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    let mode = if live {
        "LIVE: side-effecting actions act for real"
    } else {
        "dry run: side-effecting actions are simulated (--live to act)"
    };
    if json {
        tracing::info!(
            mode = "embedded",
            grpc = %grpc,
            http = %http,
            data = %data_dir.display(),
            runbooks = app.runbook_count(),
            catalogue = %catalogue,
            live,
            "firebreak is up"
        );
        let ran = run_until_signal(app).await;
        telemetry.shutdown(std::time::Duration::from_secs(5));
        return ran;
    }
    eprintln!(
        "firebreak is up (embedded mode)\n  gRPC    {grpc}  (health, reflection)\n  HTTP    http://{http}/healthz  http://{http}/metrics\n  data    {}\n  runbooks {} loaded ({catalogue}), {}\n\nraise a first incident:\n  firebreak raise --title \"checkout latency above SLO\" --label service=checkout\n  firebreak incident list",
        data_dir.display(),
        app.runbook_count(),
        mode,
    );
    let ran = run_until_signal(app).await;
    telemetry.shutdown(std::time::Duration::from_secs(5));
    ran
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

fn check(dir: &std::path::Path, out: &Out) -> anyhow::Result<i32> {
    let catalog = crate::authoring::load(dir)?;
    let names: Vec<&str> = catalog
        .all()
        .iter()
        .map(|r| r.manifest.name.as_str())
        .collect();
    out.check_ok(&names);
    Ok(0)
}

async fn client(cmd: Command, targets: &Targets, out: &Out) -> anyhow::Result<()> {
    let service = match &cmd {
        Command::Raise(_) | Command::ResolveAlert { .. } | Command::Integration(_) => {
            Service::Intake
        }
        Command::Incident(
            IncidentCmd::Subscribe { .. }
            | IncidentCmd::Unsubscribe { .. }
            | IncidentCmd::Subscribers { .. },
        ) => Service::Notification,
        Command::Incident(_) => Service::Triage,
        _ => Service::Orchestration,
    };
    let channel = targets.connect(service).await?;
    let mut incidents = IncidentServiceClient::new(channel.clone());
    let mut runs = RunbookServiceClient::new(channel.clone());
    let status = |s: tonic::Status| status(s, targets.request_timeout);
    match cmd {
        Command::Raise(a) => {
            let mut labels = std::collections::HashMap::new();
            for l in &a.labels {
                let (k, v) = firebreak_domain::parse_label(l)
                    .map_err(|e| Failure::new(Exit::Usage, format!("--label {l:?}: {e}")))?;
                labels.insert(k, v);
            }
            let r = IntakeServiceClient::new(channel)
                .raise_incident(v1::RaiseIncidentRequest {
                    alert: Some(v1::AlertInput {
                        title: a.title,
                        description: a.description,
                        severity: firebreak_proto::wire_level(a.severity.unwrap_or(0)),
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
            let state_filter = match state.as_deref() {
                None | Some("") => 0,
                Some(s) => s
                    .parse::<firebreak_domain::IncidentState>()
                    .map_err(|e| Failure::new(Exit::Usage, format!("--state: {e}")))?
                    .wire(),
            };
            let r = incidents
                .list_incidents(v1::ListIncidentsRequest {
                    state_filter,
                    page_size: limit,
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
        Command::Incident(IncidentCmd::Alerts { id }) => {
            // Every alert, page by page.
            let alerts = every_page!(page_token => incidents
                .list_incident_alerts(v1::ListIncidentAlertsRequest {
                    id: id.clone(),
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(&status)?
                .into_inner(), alerts);
            out.incident_alerts(&alerts);
        }
        Command::Incident(IncidentCmd::Timeline { id }) => {
            // The whole timeline, page by page (each bounded in size).
            let mut entries = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = incidents
                    .get_timeline(v1::GetTimelineRequest {
                        id: id.clone(),
                        page_size: 0,
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
        Command::Incident(IncidentCmd::Watch { id }) => {
            let mut stream = incidents
                .watch_incidents(v1::WatchIncidentsRequest {
                    incident_id: id.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(item) = stream.message().await.map_err(status)? {
                if let Some(entry) = &item.entry {
                    out.watched(entry);
                }
            }
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
        Command::Incident(IncidentCmd::Mitigate { id, summary }) => {
            let r = incidents
                .mitigate(v1::MitigateRequest {
                    id,
                    actor: who(),
                    summary,
                })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Reopen { id, reason }) => {
            let r = incidents
                .reopen(v1::ReopenRequest {
                    id,
                    actor: who(),
                    reason,
                })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Merge { id, into, reason }) => {
            let r = incidents
                .merge(v1::MergeRequest {
                    id,
                    into,
                    actor: who(),
                    reason,
                })
                .await
                .map_err(status)?;
            out.merged(&r.into_inner());
        }
        Command::Incident(IncidentCmd::Set {
            id,
            severity,
            priority,
            category,
            reason,
        }) => {
            // 0 on the wire is "unchanged": a 0 given here must be refused, not ignored.
            let level = |field: &str, v: Option<u32>| match v {
                Some(0) => Err(Failure::new(
                    Exit::Usage,
                    format!("--{field}: 1 to 5, not 0"),
                )),
                Some(n) => Ok(i32::try_from(n).unwrap_or(i32::MAX)),
                None => Ok(0),
            };
            let r = incidents
                .reclassify(v1::ReclassifyRequest {
                    id,
                    actor: who(),
                    severity: level("severity", severity)?,
                    priority: level("priority", priority)?,
                    category: category.unwrap_or_default(),
                    reason,
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
        Command::Incident(IncidentCmd::Assign { id, role, person }) => {
            let r = incidents
                .assign_role(v1::AssignRoleRequest { id, role, person })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Unassign { id, role, person }) => {
            let r = incidents
                .unassign_role(v1::UnassignRoleRequest { id, role, person })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(IncidentCmd::Review { id, format }) => {
            crate::cli_review::review(channel, id, format, out.format(), status).await?;
        }
        Command::Incident(IncidentCmd::Summary { id, text }) => {
            crate::cli_review::summary(channel, id, text, out.format(), status).await?;
        }
        Command::Incident(IncidentCmd::FollowUp(cmd)) => {
            crate::cli_review::follow_up(cmd, channel, out.format(), status).await?;
        }
        Command::Incident(IncidentCmd::Update {
            id,
            status: given,
            message,
        }) => {
            let parsed = given
                .parse::<firebreak_domain::UpdateStatus>()
                .map_err(|e| match e {
                    firebreak_domain::Error::Invalid { reason, .. } => {
                        Failure::new(Exit::Usage, format!("--status: {reason}"))
                    }
                    other => Failure::new(Exit::Usage, format!("--status: {other}")),
                })?;
            let r = incidents
                .post_status_update(v1::PostStatusUpdateRequest {
                    id,
                    status: firebreak_proto::WireState::wire(parsed),
                    message,
                })
                .await
                .map_err(status)?;
            out.incident(r.into_inner().incident.as_ref());
        }
        Command::Incident(
            cmd @ (IncidentCmd::Subscribe { .. }
            | IncidentCmd::Unsubscribe { .. }
            | IncidentCmd::Subscribers { .. }),
        ) => {
            crate::cli_updates::subscriptions(cmd, channel, out)
                .await
                .map_err(status)?;
        }
        Command::Runbook(RunbookCmd::List) => {
            let runbooks = every_page!(page_token => runs
                .list_runbooks(v1::ListRunbooksRequest {
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(&status)?
                .into_inner(), runbooks);
            out.runbooks(&runbooks);
        }
        Command::Run(RunCmd::List {
            incident,
            state,
            limit,
            page_token,
        }) => {
            let state_filter = match state.as_deref() {
                None | Some("") => 0,
                Some(s) => s
                    .parse::<firebreak_domain::RunState>()
                    .map_err(|e| Failure::new(Exit::Usage, format!("--state: {e}")))?
                    .wire(),
            };
            let r = runs
                .list_runs(v1::ListRunsRequest {
                    incident_id: incident.unwrap_or_default(),
                    page_size: limit,
                    state_filter,
                    page_token,
                })
                .await
                .map_err(status)?
                .into_inner();
            out.runs(&r.runs);
            if !r.next_page_token.is_empty() {
                eprintln!("more runs: --page-token {}", r.next_page_token);
            }
        }
        Command::Run(RunCmd::Watch { run, incident }) => {
            let mut stream = runs
                .watch_runs(v1::WatchRunsRequest {
                    run_id: run.unwrap_or_default(),
                    incident_id: incident.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(item) = stream.message().await.map_err(status)? {
                if let Some(p) = &item.progress {
                    out.run_progress(p);
                }
            }
        }
        Command::Run(RunCmd::Show { run }) => {
            // The run with its whole journal, page by page (each bounded in size).
            let mut first: Option<v1::Run> = None;
            let mut page_token = String::new();
            loop {
                let r = runs
                    .get_run(v1::GetRunRequest {
                        id: run.clone(),
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                let Some(page) = r.run else { break };
                match &mut first {
                    Some(whole) => whole.actions.extend(page.actions),
                    None => first = Some(page),
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            if let Some(whole) = &mut first {
                whole.next_actions_page_token.clear();
            }
            out.run(first.as_ref());
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
                IntegrationCmd::Create {
                    name,
                    kind,
                    signing_secret_file,
                } => {
                    let signing_secret = match signing_secret_file {
                        None => String::new(),
                        Some(path) => std::fs::read_to_string(&path)
                            .map_err(|e| {
                                Failure::new(
                                    Exit::Usage,
                                    format!("cannot read {}: {e}", path.display()),
                                )
                            })?
                            .trim()
                            .to_owned(),
                    };
                    let integration_kind = match v1::IntegrationKind::from_name(kind.trim()) {
                        v1::IntegrationKind::Unspecified => {
                            return Err(Failure::new(
                                Exit::Usage,
                                format!(
                                    "--kind: {:?} is not alertmanager, pagerduty or grpc",
                                    kind
                                ),
                            )
                            .into());
                        }
                        k => k as i32,
                    };
                    let r = integrations
                        .create_integration(v1::CreateIntegrationRequest {
                            name,
                            integration_kind,
                            signing_secret,
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                    out.integrations(r.integration.as_slice(), true);
                }
                IntegrationCmd::List => {
                    let list = every_page!(page_token => integrations
                        .list_integrations(v1::ListIntegrationsRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await
                        .map_err(&status)?
                        .into_inner(), integrations);
                    out.integrations(&list, false);
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
            // Every approval waiting, page by page.
            let mut approvals = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = runs
                    .list_approvals(v1::ListApprovalsRequest {
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                approvals.extend(r.approvals);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            out.approvals(&approvals);
        }
        Command::Run(cmd @ (RunCmd::Approve(_) | RunCmd::Reject(_))) => {
            let (approve, d) = match cmd {
                RunCmd::Approve(d) => (true, d),
                RunCmd::Reject(d) => (false, d),
                _ => bail!("not a decision"),
            };
            let (run_id, actor, comment) = (d.run, who(), d.comment);
            let run = if approve {
                let req = v1::ApproveRequest {
                    run_id,
                    actor,
                    comment,
                };
                runs.approve(req).await.map_err(status)?.into_inner().run
            } else {
                let req = v1::RejectRequest {
                    run_id,
                    actor,
                    comment,
                };
                runs.reject(req).await.map_err(status)?.into_inner().run
            };
            out.run(run.as_ref());
        }
        Command::Up(_)
        | Command::Serve(_)
        | Command::Migrate(_)
        | Command::Parked(_)
        | Command::Token(_)
        | Command::User(_)
        | Command::Team(_)
        | Command::Audit(_)
        | Command::Escalation(_)
        | Command::Delivery(_)
        | Command::Schedule(_)
        | Command::Maintenance(_)
        | Command::Oncall { .. }
        | Command::Template(_)
        | Command::Silence(_)
        | Command::Whoami
        | Command::Login { .. }
        | Command::Report { .. }
        | Command::Runbook(
            RunbookCmd::Check { .. } | RunbookCmd::Test { .. } | RunbookCmd::DryRun { .. },
        ) => {
            bail!("not a client command")
        }
    }
    Ok(())
}

/// A failed call as an error with its exit code.
/// A channel's event as `template preview --event` names it (`opened`, `page`,
/// `runbook_message`; empty: opened), as the message kind the wire carries.
fn event_kind(event: &str) -> anyhow::Result<v1::DeliveryKind> {
    let name = match event.trim() {
        "" => return Ok(v1::DeliveryKind::IncidentOpened),
        "page" => "escalation.page".to_owned(),
        "runbook_message" => "runbook.message".to_owned(),
        e => format!("incident.{e}"),
    };
    match v1::DeliveryKind::from_name(&name) {
        v1::DeliveryKind::Unspecified
        | v1::DeliveryKind::EscalationStep
        | v1::DeliveryKind::StatusReminder => Err(Failure::new(
            // As the server would answer it (INVALID_ARGUMENT): refused here, before a call.
            Exit::Invalid,
            format!("--event: {event:?} is not an event a channel sends"),
        )
        .into()),
        kind => Ok(kind),
    }
}

pub(crate) fn status(s: tonic::Status, request_timeout: Duration) -> anyhow::Error {
    let exit = Exit::of_status(s.code());
    let message = if s.code() == tonic::Code::Cancelled && s.message().contains("Timeout expired") {
        format!("no answer within {request_timeout:?} (--request-timeout)")
    } else {
        format!("{:?}: {}", s.code(), s.message())
    };
    Failure::new(exit, message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_their_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in [
            "",
            "5h",
            "-1s",
            "0s",
            "2h",
            "99999999999999999999s",
            "1.5s",
            "5 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let day = [("d", Duration::from_secs(86_400))];
        assert_eq!(
            parse_span("30d", &day, "a lifetime").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        let e = parse_span("30y", &day, "a lifetime").unwrap_err();
        assert!(e.contains("a lifetime"), "{e}");
        assert!(
            parse_span("99999999999d", &day, "a lifetime").is_err(),
            "too large"
        );
    }
}
