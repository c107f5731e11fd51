//! The process's own metrics, read from `/proc` at each scrape (Linux; elsewhere none):
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//! `process_max_fds` and `process_start_time_seconds`, as the Prometheus client libraries
//! name them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks a second in `/proc`'s times (`USER_HZ`, 100 on every Linux architecture).
const TICKS: f64 = 100.0;

/// Reads the process's figures when scraped.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// What `/proc` says of this process; each `None` where it could not be read.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Figures {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

/// `utime + stime` and `starttime` (in ticks since boot) of a `/proc/PID/stat` line; the
/// command name (in parentheses) may hold spaces and parentheses, so fields count from the
/// last `)`.
fn stat_times(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let tick = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    Some((tick(14)? + tick(15)?, tick(22)?))
}

/// The `VmRSS` of a `/proc/PID/status`, in bytes.
fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft `Max open files` of a `/proc/PID/limits`.
fn max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `btime` (boot, seconds since the epoch) of `/proc/stat`.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// This process's figures now.
pub(crate) fn figures() -> Figures {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let times = read("/proc/self/stat").as_deref().and_then(stat_times);
    let boot = read("/proc/stat").as_deref().and_then(boot_time);
    Figures {
        cpu_seconds: times.map(|(cpu, _)| cpu / TICKS),
        resident_bytes: read("/proc/self/status")
            .as_deref()
            .and_then(resident_bytes),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as i64),
        max_fds: read("/proc/self/limits").as_deref().and_then(max_fds),
        start_time_seconds: times
            .zip(boot)
            .map(|((_, start), boot)| boot + start / TICKS),
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = figures();
        if let Some(v) = f.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                f.resident_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                f.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                f.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        if let Some(v) = f.start_time_seconds {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_by_field_whatever_the_command_name_holds() {
        let stat =
            "4242 (fire (break) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 12345 1000 300";
        assert_eq!(stat_times(stat), Some((300.0, 12345.0)));
        assert_eq!(stat_times("garbage"), None);
        assert_eq!(stat_times("1 (x) S 1"), None);
        assert_eq!(
            resident_bytes("Name:\tfirebreak\nVmRSS:\t   48128 kB\n"),
            Some(48128 * 1024)
        );
        assert_eq!(
            max_fds(
                "Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1764806400\n"),
            Some(1_764_806_400.0)
        );
    }

    #[test]
    fn this_process_has_figures_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let f = figures();
        assert!(f.cpu_seconds.is_some_and(|c| c >= 0.0), "{f:?}");
        assert!(f.resident_bytes.is_some_and(|b| b > 0), "{f:?}");
        assert!(f.open_fds.is_some_and(|n| n > 0), "{f:?}");
        assert!(f.max_fds.is_some_and(|n| n > 0), "{f:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            f.start_time_seconds
                .is_some_and(|s| s <= now + 1.0 && s > now - 86_400.0 * 365.0),
            "{f:?}"
        );
    }
}
