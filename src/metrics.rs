//! Prometheus metrics over HTTP (`GET /metrics`). Every shard keeps its own counters in plain
//! cells; a scrape asks each shard (through its mailbox) for a snapshot and sums them, so the hot
//! path never touches shared memory.
//!
//! The endpoint is a small blocking HTTP/1.0 responder on its own thread: scrapes are rare and
//! tiny, and a thread keeps them off the shards' executors entirely.

use crate::session::pins::PinReason;
use crate::shard::ShardMsg;
use crate::shared::Shared;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Upper bounds (seconds) of the queue-wait histogram buckets.
pub const WAIT_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// One pool's numbers on one shard.
#[derive(Debug, Clone, Default)]
pub struct PoolSnapshot {
    pub backend: String,
    pub user: String,
    pub open: u64,
    pub idle: u64,
    pub limit: u64,
    pub waiting: u64,
    pub pinned: u64,
    pub checkouts: u64,
    pub waits: u64,
    pub timeouts: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub discarded: u64,
    /// Cumulative counts per [`WAIT_BUCKETS`] bound, then the total count and the sum (s).
    pub wait_buckets: [u64; WAIT_BUCKETS.len()],
    pub wait_count: u64,
    pub wait_sum_s: f64,
}

/// One shard's numbers.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub clients: u64,
    pub parked: u64,
    pub accepted: u64,
    pub commands: u64,
    pub auth_failures: u64,
    pub refused_max_clients: u64,
    pub pin_refusals: u64,
    pub syncs: u64,
    pub lazy_prepares: u64,
    pub client_bytes_in: u64,
    pub client_bytes_out: u64,
    pub pins_total: [u64; 8],
    pub pinned_now: [i64; 8],
    pub errors: BTreeMap<&'static str, u64>,
    pub pools: Vec<PoolSnapshot>,
}

/// Collects every shard's snapshot (waiting at most `timeout` for each).
pub fn collect(shared: &Shared, timeout: Duration) -> Vec<ShardSnapshot> {
    let Some(mailboxes) = shared.mailboxes.get() else {
        return Vec::new();
    };
    let (tx, rx) = std::sync::mpsc::channel();
    for mb in mailboxes {
        mb.post(ShardMsg::Stats { reply: tx.clone() });
    }
    drop(tx);
    let mut out = Vec::with_capacity(mailboxes.len());
    let deadline = std::time::Instant::now() + timeout;
    while out.len() < mailboxes.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
    }
    out
}

fn line(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the sum of `shards` in the Prometheus text format.
pub fn render(shards: &[ShardSnapshot], worker: u32) -> String {
    let mut o = String::with_capacity(8192);
    let sum = |f: &dyn Fn(&ShardSnapshot) -> u64| shards.iter().map(f).sum::<u64>();
    let w = format!("worker=\"{worker}\"");
    let clients = sum(&|s| s.clients);
    let parked = sum(&|s| s.parked);
    line(
        &mut o,
        "sluice_clients_connected",
        "Client connections open.",
        "gauge",
    );
    let _ = writeln!(o, "sluice_clients_connected{{{w}}} {clients}");
    line(
        &mut o,
        "sluice_clients_parked",
        "Idle clients parked (no task, no buffer).",
        "gauge",
    );
    let _ = writeln!(o, "sluice_clients_parked{{{w}}} {parked}");
    line(
        &mut o,
        "sluice_clients_active",
        "Clients being served (a task is running for them).",
        "gauge",
    );
    let _ = writeln!(
        o,
        "sluice_clients_active{{{w}}} {}",
        clients.saturating_sub(parked)
    );
    let waiting: u64 = shards
        .iter()
        .flat_map(|s| &s.pools)
        .map(|p| p.waiting)
        .sum();
    line(
        &mut o,
        "sluice_clients_waiting",
        "Commands waiting for a backend connection.",
        "gauge",
    );
    let _ = writeln!(o, "sluice_clients_waiting{{{w}}} {waiting}");
    for (name, help, v) in [
        (
            "sluice_clients_accepted_total",
            "Client connections accepted.",
            sum(&|s| s.accepted),
        ),
        (
            "sluice_commands_total",
            "Client commands served.",
            sum(&|s| s.commands),
        ),
        (
            "sluice_auth_failures_total",
            "Failed client logins.",
            sum(&|s| s.auth_failures),
        ),
        (
            "sluice_clients_refused_total",
            "Clients refused at max_client_connections or the fd limit.",
            sum(&|s| s.refused_max_clients),
        ),
        (
            "sluice_pin_refusals_total",
            "Statements refused because the pin budget was used up.",
            sum(&|s| s.pin_refusals),
        ),
        (
            "sluice_backend_syncs_total",
            "Times a backend was given a client's settings before a command.",
            sum(&|s| s.syncs),
        ),
        (
            "sluice_lazy_prepares_total",
            "Statements prepared on a backend on demand.",
            sum(&|s| s.lazy_prepares),
        ),
    ] {
        line(&mut o, name, help, "counter");
        let _ = writeln!(o, "{name}{{{w}}} {v}");
    }
    line(
        &mut o,
        "sluice_client_bytes_total",
        "Bytes read from / written to clients.",
        "counter",
    );
    let _ = writeln!(
        o,
        "sluice_client_bytes_total{{{w},direction=\"in\"}} {}",
        sum(&|s| s.client_bytes_in)
    );
    let _ = writeln!(
        o,
        "sluice_client_bytes_total{{{w},direction=\"out\"}} {}",
        sum(&|s| s.client_bytes_out)
    );
    line(
        &mut o,
        "sluice_pins_total",
        "Times a session became pinned to its backend, by reason.",
        "counter",
    );
    for r in PinReason::ALL {
        let v: u64 = shards.iter().map(|s| s.pins_total[r as usize]).sum();
        let _ = writeln!(o, "sluice_pins_total{{{w},reason=\"{}\"}} {v}", r.name());
    }
    line(
        &mut o,
        "sluice_pinned_sessions",
        "Sessions pinned now, by reason.",
        "gauge",
    );
    for r in PinReason::ALL {
        let v: i64 = shards.iter().map(|s| s.pinned_now[r as usize]).sum();
        let _ = writeln!(
            o,
            "sluice_pinned_sessions{{{w},reason=\"{}\"}} {v}",
            r.name()
        );
    }
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    for s in shards {
        for (k, v) in &s.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    line(
        &mut o,
        "sluice_errors_total",
        "Errors by kind (origin: client, backend or proxy).",
        "counter",
    );
    for (k, v) in &errors {
        let _ = writeln!(o, "sluice_errors_total{{{w},kind=\"{k}\"}} {v}");
    }
    // Pools: summed over shards per (backend, user).
    let mut pools: BTreeMap<(String, String), PoolSnapshot> = BTreeMap::new();
    for p in shards.iter().flat_map(|s| &s.pools) {
        let e = pools
            .entry((p.backend.clone(), p.user.clone()))
            .or_default();
        e.open += p.open;
        e.idle += p.idle;
        e.limit += p.limit;
        e.waiting += p.waiting;
        e.pinned += p.pinned;
        e.checkouts += p.checkouts;
        e.waits += p.waits;
        e.timeouts += p.timeouts;
        e.connects += p.connects;
        e.connect_failures += p.connect_failures;
        e.discarded += p.discarded;
        for (a, b) in e.wait_buckets.iter_mut().zip(p.wait_buckets) {
            *a += b;
        }
        e.wait_count += p.wait_count;
        e.wait_sum_s += p.wait_sum_s;
    }
    let open: u64 = pools.values().map(|p| p.open).sum();
    line(
        &mut o,
        "sluice_backend_connections",
        "Backend connections by pool and state.",
        "gauge",
    );
    for ((b, u), p) in &pools {
        let l = format!("{w},backend=\"{b}\",user=\"{u}\"");
        let _ = writeln!(
            o,
            "sluice_backend_connections{{{l},state=\"open\"}} {}",
            p.open
        );
        let _ = writeln!(
            o,
            "sluice_backend_connections{{{l},state=\"idle\"}} {}",
            p.idle
        );
        let _ = writeln!(
            o,
            "sluice_backend_connections{{{l},state=\"in_use\"}} {}",
            p.open.saturating_sub(p.idle)
        );
        let _ = writeln!(
            o,
            "sluice_backend_connections{{{l},state=\"limit\"}} {}",
            p.limit
        );
    }
    line(
        &mut o,
        "sluice_multiplexing_ratio",
        "Client connections per open backend connection.",
        "gauge",
    );
    let ratio = if open == 0 {
        0.0
    } else {
        clients as f64 / open as f64
    };
    let _ = writeln!(o, "sluice_multiplexing_ratio{{{w}}} {ratio}");
    for (name, help, f) in [
        (
            "sluice_pool_checkouts_total",
            "Backend checkouts.",
            (|p: &PoolSnapshot| p.checkouts) as fn(&PoolSnapshot) -> u64,
        ),
        (
            "sluice_pool_queue_waits_total",
            "Checkouts that had to queue.",
            |p| p.waits,
        ),
        (
            "sluice_pool_queue_timeouts_total",
            "Checkouts that gave up at queue_timeout_ms.",
            |p| p.timeouts,
        ),
        (
            "sluice_pool_connects_total",
            "Backend connections opened.",
            |p| p.connects,
        ),
        (
            "sluice_pool_connect_failures_total",
            "Backend connections that failed to open.",
            |p| p.connect_failures,
        ),
        (
            "sluice_pool_discarded_total",
            "Backend connections closed (broken, aged, idle, unclean).",
            |p| p.discarded,
        ),
    ] {
        line(&mut o, name, help, "counter");
        for ((b, u), p) in &pools {
            let _ = writeln!(o, "{name}{{{w},backend=\"{b}\",user=\"{u}\"}} {}", f(p));
        }
    }
    line(
        &mut o,
        "sluice_pool_pinned_sessions",
        "Sessions pinned, by pool (the pin budget counts these).",
        "gauge",
    );
    for ((b, u), p) in &pools {
        let _ = writeln!(
            o,
            "sluice_pool_pinned_sessions{{{w},backend=\"{b}\",user=\"{u}\"}} {}",
            p.pinned
        );
    }
    line(
        &mut o,
        "sluice_pool_queue_wait_seconds",
        "Time checkouts waited in the queue.",
        "histogram",
    );
    for ((b, u), p) in &pools {
        let l = format!("{w},backend=\"{b}\",user=\"{u}\"");
        for (bound, c) in WAIT_BUCKETS.iter().zip(p.wait_buckets) {
            let _ = writeln!(
                o,
                "sluice_pool_queue_wait_seconds_bucket{{{l},le=\"{bound}\"}} {c}"
            );
        }
        let _ = writeln!(
            o,
            "sluice_pool_queue_wait_seconds_bucket{{{l},le=\"+Inf\"}} {}",
            p.wait_count
        );
        let _ = writeln!(
            o,
            "sluice_pool_queue_wait_seconds_sum{{{l}}} {}",
            p.wait_sum_s
        );
        let _ = writeln!(
            o,
            "sluice_pool_queue_wait_seconds_count{{{l}}} {}",
            p.wait_count
        );
    }
    o
}

/// Serves `GET /metrics` on `addr` until the process exits.
pub fn spawn(shared: Arc<Shared>, addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    info!(%addr, "metrics endpoint listening");
    std::thread::Builder::new().name("sluice-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap_or(0);
            let head = String::from_utf8_lossy(&req[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                let snaps = collect(&shared, Duration::from_secs(2));
                if snaps.len() < shared.shards {
                    warn!(got = snaps.len(), "metrics: not every shard answered");
                }
                ("200 OK", render(&snaps, shared.worker))
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let _ = write!(
                s,
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_shards_and_renders_every_family() {
        let mut a = ShardSnapshot {
            clients: 10,
            parked: 8,
            commands: 5,
            ..Default::default()
        };
        a.pins_total[PinReason::UserVariable as usize] = 2;
        a.pinned_now[PinReason::UserVariable as usize] = 1;
        a.errors.insert("pool_timeout", 3);
        a.pools.push(PoolSnapshot {
            backend: "db:3306".into(),
            user: "app".into(),
            open: 4,
            idle: 1,
            limit: 8,
            wait_count: 2,
            ..Default::default()
        });
        let b = ShardSnapshot {
            clients: 5,
            parked: 5,
            pools: vec![PoolSnapshot {
                backend: "db:3306".into(),
                user: "app".into(),
                open: 1,
                idle: 1,
                limit: 8,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&[a, b], 0);
        for needle in [
            "sluice_clients_connected{worker=\"0\"} 15",
            "sluice_clients_active{worker=\"0\"} 2",
            "sluice_pins_total{worker=\"0\",reason=\"user_variable\"} 2",
            "sluice_pinned_sessions{worker=\"0\",reason=\"user_variable\"} 1",
            "sluice_errors_total{worker=\"0\",kind=\"pool_timeout\"} 3",
            "sluice_backend_connections{worker=\"0\",backend=\"db:3306\",user=\"app\",state=\"open\"} 5",
            "sluice_backend_connections{worker=\"0\",backend=\"db:3306\",user=\"app\",state=\"in_use\"} 3",
            "sluice_multiplexing_ratio{worker=\"0\"} 3",
            "sluice_pool_queue_wait_seconds_count{worker=\"0\",backend=\"db:3306\",user=\"app\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
