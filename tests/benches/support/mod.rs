//! What the benchmarks share: the load they drive, percentiles, the process's CPU time and
//! resident memory, the machine line, and the transport ceiling (the gRPC health check).
//!
//! A module of each benchmark (`mod support;`), not a crate: benches are binaries, and this
//! is where their common figures are computed and printed the same way.
#![allow(dead_code, reason = "each benchmark uses what it needs of these")]

use std::path::Path;
use std::time::{Duration, Instant};

use firebreak::{App, Config};
use firebreak_proto::access::AuthedChannel;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Each line's load, unless `FIREBREAK_BENCH_SECONDS` says otherwise.
pub(crate) const SECONDS: u64 = 4;
/// The concurrent callers of a flat-out line (the transport ceiling included).
pub(crate) const CALLERS: usize = 64;

/// Each line's load in seconds: `FIREBREAK_BENCH_SECONDS`, else [`SECONDS`].
pub(crate) fn seconds() -> u64 {
    std::env::var("FIREBREAK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(SECONDS)
}

/// How many cores the machine has and whether this is a debug build, whose figures mean
/// nothing.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let build = if cfg!(debug_assertions) {
        "debug (debug assertions on: figures mean nothing)"
    } else {
        "release (no debug assertions)"
    };
    format!("machine: {cores} cores; build: {build}")
}

/// An embedded stack's configuration: `yaml` written to `dir/config.yaml` and loaded, data
/// in `dir/data`, no runbooks (an empty `dir/runbooks`), both servers on free local ports,
/// and no rate limit for keyless callers (benchmarks measure the work, not the limit).
pub(crate) fn config(dir: &Path, yaml: &str) -> Config {
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let runbooks = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    let mut config = Config::load(Some(&file), Vec::new()).unwrap();
    config.data_dir = dir.join("data");
    config.runbooks_dir = Some(runbooks);
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.intake_anonymous_rate_limit_per_second = 0;
    config
}

/// Runs a built stack until the returned token is cancelled; with it, the admin token its
/// first start wrote to `data_dir`, which every call carries (verified in memory).
pub(crate) fn serve(app: App, data_dir: &Path) -> (String, CancellationToken) {
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let token = std::fs::read_to_string(data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    (token, shutdown)
}

/// A connection of its own to the gRPC server at `grpc`, every call carrying `token`.
pub(crate) async fn connect(grpc: &str, token: &str) -> AuthedChannel {
    let channel = tonic::transport::Endpoint::from_shared(grpc.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    firebreak_proto::access::authed(channel, Some(token))
}

/// The `p` quantile (0 to 1) of sorted durations, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One caller of a load: it makes one call and says how long the answer took.
pub(crate) trait Caller: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Duration> + Send;
}

/// What a load measured: every call's latency (sorted), the wall time it took and the CPU
/// time the process used meanwhile.
pub(crate) struct Load {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) elapsed: f64,
    pub(crate) cpu: f64,
}

impl Load {
    /// `name`, what went through per second (`per_call` of `unit` a call), ack p50/p99, the
    /// calls, and CPU time per `unit`: the start of every throughput line.
    pub(crate) fn line(&self, name: &str, per_call: u64, unit: &str) -> String {
        let units = self.latencies.len() as u64 * per_call;
        format!(
            "  {name:<34} {:>8.0} {unit}s/s  ack p50 {:>6.2} ms  p99 {:>7.2} ms  ({} calls)  cpu {:>4.0} µs/{unit}",
            units as f64 / self.elapsed,
            percentile(&self.latencies, 0.50),
            percentile(&self.latencies, 0.99),
            self.latencies.len(),
            self.cpu * 1e6 / units as f64,
        )
    }
}

/// Runs every caller for `seconds`, flat out, or each one call `every` apart.
pub(crate) async fn drive<C: Caller>(
    callers: Vec<C>,
    seconds: u64,
    every: Option<Duration>,
) -> Load {
    let cpu_before = cpu_seconds();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for mut caller in callers {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            // Paced: each caller on a fixed schedule of its own.
            let mut tick = every.map(|every| {
                let mut i = tokio::time::interval(every);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            while Instant::now() < until {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                latencies.push(caller.call().await);
            }
            latencies
        });
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Load {
        latencies,
        elapsed,
        cpu: cpu_seconds() - cpu_before,
    }
}

/// A caller of the gRPC health check: the transport, no work behind it.
pub(crate) struct Health(pub(crate) HealthClient<AuthedChannel>);

impl Caller for Health {
    async fn call(&mut self) -> Duration {
        let start = Instant::now();
        let r = self
            .0
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(r.is_ok(), "{r:?}");
        start.elapsed()
    }
}

/// The line of the gRPC health check called flat out by [`CALLERS`] callers, each on a
/// connection of its own, for [`seconds`]: what the transport alone (client and server in
/// this process) allows on this machine, the ceiling of one call per unit of work.
pub(crate) async fn transport_ceiling(grpc: &str, token: &str) -> String {
    let rss_reset = reset_peak_rss();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        callers.push(Health(HealthClient::new(connect(grpc, token).await)));
    }
    let load = drive(callers, seconds(), None).await;
    format!(
        "{}  {}",
        load.line("gRPC health check (transport only)", 1, "call"),
        rss(rss_reset)
    )
}

/// Resets the process's peak resident memory (`VmHWM`) to what is resident now; false when
/// the kernel refused (not Linux, or no write access to `clear_refs`).
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident memory since the last reset, and what is resident now, from
/// `/proc/self/status`: callers, stack and allocator together.
pub(crate) fn rss(reset: bool) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mib = |field: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "?".to_owned(),
                |kib| format!("{:.0}", kib as f64 / 1024.0),
            )
    };
    let peak = if reset { "peak" } else { "peak (not reset)" };
    format!(
        "rss {peak} {} MiB, now {} MiB",
        mib("VmHWM:"),
        mib("VmRSS:")
    )
}

/// CPU time (user and system) this process has used, in seconds: callers, the stack and
/// its downstream work together. Steadier than throughput on a shared machine.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}
