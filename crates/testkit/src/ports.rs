//! Ports for servers that tests start, picked where no outgoing connection can take them.
//!
//! Binding port 0 and releasing it is racy: the kernel hands the same ephemeral port to the
//! next outgoing connection (a Postgres pool, a gRPC client), and the server that binds it a
//! moment later, or binds it again after a restart, fails with "Address already in use". The
//! kernel picks outgoing ports only from `ip_local_port_range`, so ports below that range
//! stay ours once released. Each process walks its own stretch of that space (offset by its
//! id), and skips a port anything still holds.

use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out; below it live well-known and registered services.
const FLOOR: u32 = 10_000;

/// A port on 127.0.0.1 that nothing listens on now, and that no outgoing connection will
/// take before a server binds it (nor between a server's kill and its restart).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ceiling = ephemeral_floor();
    if ceiling <= FLOOR + 1_000 {
        // The ephemeral range covers nearly everything: fall back to the kernel's pick.
        return kernel_pick();
    }
    let span = ceiling - FLOOR;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FLOOR + (start + n) % span;
        let port = u16::try_from(port).expect("ports are below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_floor() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn kernel_pick() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for p in &ports {
            assert!(
                u32::from(*p) < ephemeral_floor(),
                "{p} is in the ephemeral range"
            );
            std::net::TcpListener::bind(("127.0.0.1", *p)).expect("a handed-out port binds");
        }
    }

    #[test]
    fn a_port_something_holds_is_skipped() {
        let held: Vec<_> = (0..50)
            .map(|_| std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap())
            .collect();
        let held_ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        for _ in 0..100 {
            assert!(!held_ports.contains(&free_port()));
        }
    }
}
