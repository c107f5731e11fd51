//! Benchmark: paging in embedded mode, from an incident raised to its page handed to the
//! provider, and how late 1,000 escalations' second steps reach it.
//!
//! The provider is a local Slack Web API stand-in (testkit's `Recorder`, answering
//! `chat.postMessage` with `{"ok":true,"channel":..,"ts":..}`) that records when each
//! request arrives. Every incident is routed to a policy whose step 1 pages user `first`
//! and, in the escalation line, whose step 2 (60 s later, the shortest delay a policy
//! allows) pages user `second`, both through their Slack member ids, so the stand-in tells
//! the steps apart by the member a message goes to and the incidents by the id in its text.
//!
//! Lines, each on a fresh stack (SQLite, the in-process bus, all four services):
//! - the gRPC health check called flat out: what the transport alone allows (the ceiling);
//! - incidents raised through gRPC `RaiseIncident` paced at 10, 50 and 100 a second for a
//!   few seconds each: raise → page arrival at the provider, p50/p99/max, and pages/s;
//! - 1,000 incidents raised at once by 64 callers: raise → step 1's page the same way, then,
//!   a minute later, how late each step 2 ran and how late its page reached the provider,
//!   both against the step's due time. The due time is exact: step 1's delivery is created
//!   at the instant step 1 runs, and step 2 is due 60 s after that instant (docs/oncall.md),
//!   read back through `ListDeliveries`. Real deliveries on the real clock: the line takes a
//!   little over a minute.
//!
//! Each line prints the process's peak resident memory during it (`VmHWM`, reset at its
//! start; callers and the provider stand-in included) and what is resident at its end. It
//! asserts no time, only correctness: every incident's every step pages its person exactly
//! once (a missing or doubled page fails the run).
//!
//! Run with `just bench` (release build); arguments after `--` pick the lines whose name
//! holds them. `FIREBREAK_BENCH_SECONDS` changes each paced line's length (4 s by default).
#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use firebreak::App;
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{
    self, intake_service_client::IntakeServiceClient,
    notification_service_client::NotificationServiceClient,
};
use firebreak_testkit::recorder::{Received, Recorder};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use support::{CALLERS, percentile, reset_peak_rss, rss, seconds};

mod support;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const SLACK_TOKEN: &str = "xoxb-0000-bench-token";
/// The Slack member ids of the people steps 1 and 2 page.
const FIRST: &str = "U0BENCH01";
const SECOND: &str = "U0BENCH02";
/// How many incidents escalate at once, and step 2's delay (the least a policy allows).
const AT_ONCE: usize = 1_000;
const STEP_2_AFTER: Duration = Duration::from_secs(60);
/// How long pages may take to arrive before the run fails as missing them.
const PATIENCE: Duration = Duration::from_secs(300);

/// A running embedded stack, its clients and its provider.
struct Bench {
    intake: IntakeServiceClient<AuthedChannel>,
    notifications: NotificationServiceClient<AuthedChannel>,
    slack: Recorder,
    grpc: String,
    token: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// A fresh stack whose every incident is routed to a policy of one step (paging
    /// `first`), or of two (then `second`, [`STEP_2_AFTER`] later).
    async fn start(two_steps: bool) -> Self {
        let slack = Recorder::answering(slack_answer).await;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("slack-bot-token"), SLACK_TOKEN).unwrap();
        let step_2 = if two_steps {
            format!(
                "      - {{ after_seconds: {}, targets: [{{ user: second }}] }}\n",
                STEP_2_AFTER.as_secs()
            )
        } else {
            String::new()
        };
        let config = support::config(
            dir.path(),
            &format!(
                "secrets_dir: {secrets}
users:
  - {{ name: first, contact_methods: [{{ name: chat, kind: slack, address: {FIRST} }}] }}
  - {{ name: second, contact_methods: [{{ name: chat, kind: slack, address: {SECOND} }}] }}
channels:
  - {{ name: slack, kind: slack, token: {{ secret: slack-bot-token }}, api_url: '{api}/api' }}
escalation_policies:
  - name: bench
    steps:
      - targets: [{{ user: first }}]
{step_2}routes:
  - {{ policy: bench }}
",
                secrets = secrets.display(),
                api = slack.url,
            ),
        );
        let data_dir = config.data_dir.clone();
        let app = App::build(config).await.unwrap();
        let grpc = format!("http://{}", app.grpc_addr());
        let (token, shutdown) = support::serve(app, &data_dir);
        let channel = support::connect(&grpc, &token).await;
        Self {
            intake: IntakeServiceClient::new(channel.clone()),
            notifications: NotificationServiceClient::new(channel),
            slack,
            grpc,
            token,
            shutdown,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Every page the provider received, by incident and member.
    fn pages(&self) -> HashMap<(String, String), Vec<SystemTime>> {
        let mut pages: HashMap<(String, String), Vec<SystemTime>> = HashMap::new();
        for r in self.slack.received.lock().unwrap().iter() {
            assert_eq!(r.path, "/api/chat.postMessage", "{r:?}");
            let member = r.body["channel"].as_str().unwrap_or_default().to_owned();
            // Slack's built-in page text names the incident between backquotes.
            let text = r.body["text"].as_str().unwrap_or_default();
            let id = text.split('`').nth(1).unwrap_or_default().to_owned();
            pages.entry((id, member)).or_default().push(r.at);
        }
        pages
    }

    /// When each incident's page to `member` arrived, once all have; fails after
    /// [`PATIENCE`] saying how many are missing.
    async fn arrivals(&self, ids: &[String], member: &str) -> Vec<SystemTime> {
        let started = Instant::now();
        loop {
            let pages = self.pages();
            let arrived: Vec<SystemTime> = ids
                .iter()
                .filter_map(|id| pages.get(&(id.clone(), member.to_owned())))
                .map(|at| at[0])
                .collect();
            if arrived.len() == ids.len() {
                return arrived;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{} of {} pages to {member} missing after {PATIENCE:?}",
                ids.len() - arrived.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fails unless the provider received exactly one page per incident and member, and
    /// none for anything else.
    fn exactly_once(&self, ids: &[String], members: &[&str]) {
        let pages = self.pages();
        for id in ids {
            for member in members {
                let n = pages
                    .get(&(id.clone(), (*member).to_owned()))
                    .map_or(0, Vec::len);
                assert_eq!(n, 1, "incident {id} paged {member} {n} times");
            }
        }
        assert_eq!(
            pages.len(),
            ids.len() * members.len(),
            "pages for unknown incidents or people"
        );
    }

    /// Every delivery of the stack, page by page.
    async fn deliveries(&self) -> Vec<v1::Delivery> {
        let mut client = self.notifications.clone();
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_deliveries(v1::ListDeliveriesRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            all.extend(page.deliveries);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }
}

/// Slack's answer to `chat.postMessage`: the conversation and the message's `ts`.
fn slack_answer(_: usize, r: &Received) -> serde_json::Value {
    let since =
        r.at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
    json!({
        "ok": true,
        "channel": r.body["channel"],
        "ts": format!("{}.{:06}", since.as_secs(), since.subsec_micros()),
    })
}

/// Raises incident `n` of line `tag` (a dedup key of its own: every raise opens one); its
/// id and when the call started.
async fn raise(
    mut intake: IntakeServiceClient<AuthedChannel>,
    tag: &str,
    n: usize,
) -> (String, SystemTime) {
    let at = SystemTime::now();
    let r = intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: format!("bench page {tag} {n}"),
                source: "bench".into(),
                dedup_key: format!("bench-{tag}-{n}"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.incident_id.is_empty(), "{r:?}");
    (r.incident_id, at)
}

/// `later - earlier`, negative when `later` is earlier (a step that ran early).
fn signed(later: SystemTime, earlier: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// p50, p99 and max of durations in milliseconds.
fn spread(mut ms: Vec<f64>) -> String {
    ms.sort_unstable_by(f64::total_cmp);
    let sorted: Vec<Duration> = ms
        .iter()
        .map(|&m| Duration::from_secs_f64(m.max(0.0) / 1000.0))
        .collect();
    let early = ms.iter().filter(|&&m| m < 0.0).count();
    let early = if early > 0 {
        format!(" ({early} early)")
    } else {
        String::new()
    };
    format!(
        "p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms{early}",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
    )
}

/// Raise → page at the provider for each incident, in milliseconds, and pages/s from the
/// first raise to the last arrival.
fn to_page(raised: &[(String, SystemTime)], arrived: &[SystemTime]) -> (Vec<f64>, f64) {
    let ms = raised
        .iter()
        .zip(arrived)
        .map(|((_, at), page)| signed(*page, *at) * 1000.0)
        .collect();
    let first = raised.iter().map(|(_, at)| *at).min().unwrap();
    let last = arrived.iter().max().unwrap();
    (ms, arrived.len() as f64 / signed(*last, first))
}

/// Incidents raised at `rate` a second for [`seconds`], each on a task of its own so a slow
/// answer does not hold back the next raise.
async fn paced(name: &str, rate: u64) {
    let rss_reset = reset_peak_rss();
    let b = Bench::start(false).await;
    let cpu_before = support::cpu_seconds();
    let n = (rate * seconds()) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tick.tick().await;
        let intake = b.intake.clone();
        let tag = format!("paced{rate}");
        tasks.spawn(async move { (i, raise(intake, &tag, i).await) });
    }
    let mut raised = vec![(String::new(), SystemTime::UNIX_EPOCH); n];
    while let Some(r) = tasks.join_next().await {
        let (i, incident) = r.unwrap();
        raised[i] = incident;
    }
    let ids: Vec<String> = raised.iter().map(|(id, _)| id.clone()).collect();
    let arrived = b.arrivals(&ids, FIRST).await;
    let cpu = support::cpu_seconds() - cpu_before;
    let (ms, per_second) = to_page(&raised, &arrived);
    // A late double would arrive after the first: give it the time to.
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.exactly_once(&ids, &[FIRST]);
    println!(
        "  {name:<34} raise → page {}  {per_second:>6.0} pages/s ({n} pages)  cpu {:>5.0} µs/page  {}",
        spread(ms),
        cpu * 1e6 / n as f64,
        rss(rss_reset),
    );
    b.stop().await;
}

/// [`AT_ONCE`] incidents raised at once, then their second steps a minute later.
async fn at_once(name: &str) {
    let rss_reset = reset_peak_rss();
    let b = Bench::start(true).await;
    let cpu_before = support::cpu_seconds();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CALLERS {
        let intake = b.intake.clone();
        tasks.spawn(async move {
            let mut raised = Vec::new();
            for i in (c..AT_ONCE).step_by(CALLERS) {
                raised.push((i, raise(intake.clone(), "burst", i).await));
            }
            raised
        });
    }
    let mut raised = vec![(String::new(), SystemTime::UNIX_EPOCH); AT_ONCE];
    while let Some(r) = tasks.join_next().await {
        for (i, incident) in r.unwrap() {
            raised[i] = incident;
        }
    }
    let ids: Vec<String> = raised.iter().map(|(id, _)| id.clone()).collect();
    let first = b.arrivals(&ids, FIRST).await;
    let cpu = support::cpu_seconds() - cpu_before;
    let (ms, per_second) = to_page(&raised, &first);
    println!(
        "  {name:<34} raise → page {}  {per_second:>6.0} pages/s ({AT_ONCE} pages)  cpu {:>5.0} µs/page",
        spread(ms),
        cpu * 1e6 / AT_ONCE as f64,
    );

    let second = b.arrivals(&ids, SECOND).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.exactly_once(&ids, &[FIRST, SECOND]);
    // Step 1 ran at its delivery's creation; step 2 was due 60 s later and ran at its
    // delivery's `delivered_at`.
    let time = |t: &Option<firebreak_proto::Timestamp>| {
        let t = t.as_ref().expect("a delivery's time");
        SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
    };
    let mut steps: HashMap<(String, u32), v1::Delivery> = HashMap::new();
    for d in b.deliveries().await {
        if d.delivery_kind() != v1::DeliveryKind::EscalationStep {
            continue;
        }
        let step = if d.event_id.ends_with("#0.1") {
            1
        } else if d.event_id.ends_with("#0.2") {
            2
        } else {
            panic!("an unexpected step: {d:?}")
        };
        let previous = steps.insert((d.incident_id.clone(), step), d);
        assert!(previous.is_none(), "a step twice: {previous:?}");
    }
    let (mut ran, mut paged, mut dues) = (Vec::new(), Vec::new(), Vec::new());
    for (id, arrived) in ids.iter().zip(&second) {
        let due = time(&steps[&(id.clone(), 1)].created_at) + STEP_2_AFTER;
        ran.push(signed(time(&steps[&(id.clone(), 2)].delivered_at), due) * 1000.0);
        paged.push(signed(*arrived, due) * 1000.0);
        dues.push(due);
    }
    // The steps fell due over the time step 1 took to run for all of them.
    let due_over = signed(*dues.iter().max().unwrap(), *dues.iter().min().unwrap());
    println!(
        "  {:<34} step 2 ran late   {}  (due over {due_over:.1} s)",
        "",
        spread(ran)
    );
    println!(
        "  {:<34} its page late     {}  {}",
        "",
        spread(paged),
        rss(rss_reset)
    );
    b.stop().await;
}

#[tokio::main]
async fn main() {
    println!(
        "paging, embedded mode (SQLite WAL, in-process bus, a Slack Web API stand-in in this process), a fresh stack per line; rss is the whole process, callers and provider included"
    );
    println!("{}", support::machine());
    // `cargo bench --bench paging -- paced` runs only the lines whose name holds "paced".
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    if wanted("gRPC health check (transport only)") {
        let b = Bench::start(false).await;
        println!("{}", support::transport_ceiling(&b.grpc, &b.token).await);
        b.stop().await;
    }
    for rate in [10, 50, 100] {
        let name = format!("paced at {rate} incidents/s");
        if wanted(&name) {
            paced(&name, rate).await;
        }
    }
    let name = "1,000 incidents raised at once";
    if wanted(name) {
        at_once(name).await;
    }
}
