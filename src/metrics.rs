//! Prometheus metrics over HTTP (`GET /metrics`). Every shard keeps its own counters in plain
//! cells; a scrape asks each shard (through its mailbox) for a snapshot and sums them, so the hot
//! path never touches shared memory.
//!
//! The endpoint is a small blocking HTTP/1.0 responder on its own thread: scrapes are rare and
//! tiny, and a thread keeps them off the shards' executors entirely.

use crate::session::pins::PinReason;
use crate::shard::ShardMsg;
use crate::shared::Shared;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Upper bounds (seconds) of the queue-wait histogram buckets.
pub const WAIT_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One pool's numbers on one shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// The host budget (worker processes; see [`crate::backend::budget`]): the pool's size,
    /// the slots this worker holds and every worker's (one value per process: shards report
    /// the same), slots this shard took from and gave back to it. `budget` is false without one.
    #[serde(default)]
    pub budget: bool,
    #[serde(default)]
    pub budget_limit: u64,
    #[serde(default)]
    pub budget_held: u64,
    #[serde(default)]
    pub budget_total: u64,
    #[serde(default)]
    pub budget_taken: u64,
    #[serde(default)]
    pub budget_given: u64,
}

/// A backend as the process sees it (shard 0 reports these: health is one view per process).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendSnapshot {
    pub id: u16,
    pub address: String,
    pub role: String,
    pub weight: u32,
    /// The operator's intent when not active (draining, maintenance, removed), else the health.
    pub state: String,
    pub health: String,
    /// `read_only` as last probed (None: not known yet).
    pub writable: Option<bool>,
    pub probes: u64,
    pub probe_failures: u64,
    pub transitions: u64,
    /// Why an `incompatible` backend is kept out (its first differences from the instance's
    /// catalog); None otherwise.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A client as the console's SHOW CLIENTS lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientRow {
    pub id: u32,
    pub shard: u32,
    pub user: String,
    /// The client's IP address (`None`: not known, e.g. during its handshake on a shard that
    /// had not recorded its socket yet).
    #[serde(default)]
    pub source: Option<String>,
    /// The client's TCP port (`None`: not known, or a Unix socket).
    #[serde(default)]
    pub port: Option<u16>,
    /// It is being served a command now (an active session between commands is not).
    #[serde(default)]
    pub busy: bool,
    /// The command it is being served, as the server's processlist names it (`Query`,
    /// `Execute`, …).
    #[serde(default)]
    pub command: Option<String>,
    /// parked, pinned (parked, holding its backend for a pin), active, paused (its command
    /// waits for RESUME).
    pub state: String,
    pub schema: Option<String>,
    /// The backend it holds (parked) or runs a statement on (active).
    pub backend: Option<String>,
    /// Seconds since its last command (parked clients).
    pub idle_s: u64,
    /// What keeps it on its backend (session mode, a transaction, pin reasons), if anything.
    pub holds: Option<String>,
}

/// Lists the clients of every shard (waiting at most `timeout` in all).
pub fn collect_clients(shared: &Shared, timeout: Duration) -> Vec<ClientRow> {
    ask_shards(shared, timeout, |reply| ShardMsg::Clients { reply })
        .into_iter()
        .flatten()
        .collect()
}

/// One shard's numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Backends given back with their session's diagnostics dropped (pressure or idle).
    #[serde(default)]
    pub diagnostics_released: u64,
    /// Routed reads run again on the primary to make the conditions a session left on a replica.
    #[serde(default)]
    pub replica_conditions_rerun: u64,
    /// KILL QUERYs sent to backends.
    #[serde(default)]
    pub kills_sent: u64,
    /// KILL requests served by a KILL QUERY already sent for the same statement.
    #[serde(default)]
    pub kills_shared: u64,
    /// Statements whose backend waited for a KILL in flight after they ended.
    #[serde(default)]
    pub kill_holds: u64,
    pub client_bytes_in: u64,
    pub client_bytes_out: u64,
    #[serde(default)]
    pub tls_clients: u64,
    #[serde(default)]
    pub auth_blocked: u64,
    #[serde(default)]
    pub idle_timeouts: u64,
    /// Times the watchdog interrupted the shard's sleep (see `shard::poller`).
    #[serde(default)]
    pub kicks: u64,
    /// Heap allocations of the whole process (shard 0 reports them; `count-allocs` builds only).
    #[serde(default)]
    pub allocations: u64,
    pub pins_total: [u64; crate::session::pins::PIN_REASONS],
    pub pinned_now: [i64; crate::session::pins::PIN_REASONS],
    pub errors: BTreeMap<String, u64>,
    pub pools: Vec<PoolSnapshot>,
    /// Checkouts that found no usable backend and waited for one.
    #[serde(default)]
    pub no_backend_waits: u64,
    /// Sessions closed at a drain's deadline.
    #[serde(default)]
    pub drain_closes: u64,
    pub session_moves: [u64; 2],
    /// Routed reads served by replicas; routed reads the primary served, by reason.
    #[serde(default)]
    pub reads_to_replicas: u64,
    #[serde(default)]
    pub read_fallbacks: [u64; 4],
    #[serde(default)]
    pub causal_waits: u64,
    #[serde(default)]
    pub causal_wait_us: u64,
    /// The position follower's waits sent, answered "applied", timed out, failed
    /// (`shard::follow`).
    #[serde(default)]
    pub follow_waits: u64,
    #[serde(default)]
    pub follow_applied: u64,
    #[serde(default)]
    pub follow_timeouts: u64,
    #[serde(default)]
    pub follow_errors: u64,
    #[serde(default)]
    pub backends: Vec<BackendSnapshot>,
    /// PAUSE is in effect (1) or not (0); summed per worker as "any shard paused".
    #[serde(default)]
    pub paused: u64,
    /// Commands waiting at the pause for RESUME.
    #[serde(default)]
    pub clients_paused: u64,
}

/// Collects every shard's snapshot (waiting at most `timeout` for each).
pub fn collect(shared: &Shared, timeout: Duration) -> Vec<ShardSnapshot> {
    ask_shards(shared, timeout, |reply| ShardMsg::Stats { reply })
}

/// Posts every shard the message `ask` makes around a reply channel, and gathers the answers
/// that come within `timeout` (a shard that does not answer in time is left out).
pub(crate) fn ask_shards<T>(
    shared: &Shared,
    timeout: Duration,
    ask: impl Fn(std::sync::mpsc::Sender<T>) -> ShardMsg,
) -> Vec<T> {
    let Some(mailboxes) = shared.mailboxes.get() else {
        return Vec::new();
    };
    let (tx, rx) = std::sync::mpsc::channel();
    for mb in mailboxes {
        mb.post(ask(tx.clone()));
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

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One worker's shards summed, pools keyed by (backend, user).
struct WorkerSum {
    worker: u32,
    s: ShardSnapshot,
    pools: BTreeMap<(String, String), PoolSnapshot>,
}

fn sum_worker(worker: u32, shards: &[ShardSnapshot]) -> WorkerSum {
    let mut s = ShardSnapshot::default();
    let mut pools: BTreeMap<(String, String), PoolSnapshot> = BTreeMap::new();
    for x in shards {
        s.clients += x.clients;
        s.parked += x.parked;
        s.accepted += x.accepted;
        s.commands += x.commands;
        s.auth_failures += x.auth_failures;
        s.refused_max_clients += x.refused_max_clients;
        s.pin_refusals += x.pin_refusals;
        s.syncs += x.syncs;
        s.lazy_prepares += x.lazy_prepares;
        s.diagnostics_released += x.diagnostics_released;
        s.replica_conditions_rerun += x.replica_conditions_rerun;
        s.paused = s.paused.max(x.paused);
        s.clients_paused += x.clients_paused;
        s.kills_sent += x.kills_sent;
        s.kills_shared += x.kills_shared;
        s.kill_holds += x.kill_holds;
        s.client_bytes_in += x.client_bytes_in;
        s.client_bytes_out += x.client_bytes_out;
        s.tls_clients += x.tls_clients;
        s.auth_blocked += x.auth_blocked;
        s.idle_timeouts += x.idle_timeouts;
        s.kicks += x.kicks;
        s.allocations += x.allocations;
        s.no_backend_waits += x.no_backend_waits;
        s.drain_closes += x.drain_closes;
        for (a, b) in s.session_moves.iter_mut().zip(x.session_moves) {
            *a += b;
        }
        s.reads_to_replicas += x.reads_to_replicas;
        for (a, b) in s.read_fallbacks.iter_mut().zip(x.read_fallbacks) {
            *a += b;
        }
        s.causal_waits += x.causal_waits;
        s.causal_wait_us += x.causal_wait_us;
        s.follow_waits += x.follow_waits;
        s.follow_applied += x.follow_applied;
        s.follow_timeouts += x.follow_timeouts;
        s.follow_errors += x.follow_errors;
        // (Shard 0 lists the backends; during an upgrade's handover a worker's snapshots are
        // both processes', each with its shard 0: one row per backend.)
        for b in &x.backends {
            if !s.backends.iter().any(|y| y.address == b.address) {
                s.backends.push(b.clone());
            }
        }
        for i in 0..crate::session::pins::PIN_REASONS {
            s.pins_total[i] += x.pins_total[i];
            s.pinned_now[i] += x.pinned_now[i];
        }
        for (k, v) in &x.errors {
            *s.errors.entry(k.clone()).or_default() += v;
        }
        for p in &x.pools {
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
            e.budget |= p.budget;
            e.budget_limit = e.budget_limit.max(p.budget_limit);
            e.budget_held = e.budget_held.max(p.budget_held);
            e.budget_total = e.budget_total.max(p.budget_total);
            e.budget_taken += p.budget_taken;
            e.budget_given += p.budget_given;
        }
    }
    WorkerSum { worker, s, pools }
}

/// Renders the metrics of one or more workers (each a list of shard snapshots) in the
/// Prometheus text format: every family once, one series per worker.
pub fn render(workers: &[(u32, Vec<ShardSnapshot>)]) -> String {
    let ws: Vec<WorkerSum> = workers.iter().map(|(w, s)| sum_worker(*w, s)).collect();
    let mut o = String::with_capacity(8192);
    let scalar =
        |o: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&WorkerSum) -> String| {
            family(o, name, help, kind);
            for w in &ws {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", w.worker, f(w));
            }
        };
    scalar(
        &mut o,
        "sluice_clients_connected",
        "Client connections open.",
        "gauge",
        &|w| w.s.clients.to_string(),
    );
    scalar(
        &mut o,
        "sluice_clients_parked",
        "Idle clients parked (no task, no buffer).",
        "gauge",
        &|w| w.s.parked.to_string(),
    );
    scalar(
        &mut o,
        "sluice_clients_active",
        "Clients being served (a task is running for them).",
        "gauge",
        &|w| w.s.clients.saturating_sub(w.s.parked).to_string(),
    );
    scalar(
        &mut o,
        "sluice_paused",
        "1 while the console's PAUSE is in effect (RESUME lifts it).",
        "gauge",
        &|w| w.s.paused.to_string(),
    );
    scalar(
        &mut o,
        "sluice_clients_paused",
        "Commands waiting at the pause for RESUME.",
        "gauge",
        &|w| w.s.clients_paused.to_string(),
    );
    scalar(
        &mut o,
        "sluice_clients_waiting",
        "Commands waiting for a backend connection.",
        "gauge",
        &|w| w.pools.values().map(|p| p.waiting).sum::<u64>().to_string(),
    );
    type Counter = (&'static str, &'static str, fn(&ShardSnapshot) -> u64);
    let counters: [Counter; 16] = [
        (
            "sluice_tls_clients_total",
            "Clients that upgraded to TLS.",
            |s| s.tls_clients,
        ),
        (
            "sluice_auth_blocked_total",
            "Connections refused: their address failed to log in too often.",
            |s| s.auth_blocked,
        ),
        (
            "sluice_idle_timeouts_total",
            "Clients disconnected by client_idle_timeout_ms.",
            |s| s.idle_timeouts,
        ),
        (
            "sluice_shard_kicks_total",
            "Times a shard's watchdog woke it from a sleep that missed its wake-up.",
            |s| s.kicks,
        ),
        (
            "sluice_clients_accepted_total",
            "Client connections accepted.",
            |s| s.accepted,
        ),
        ("sluice_commands_total", "Client commands served.", |s| {
            s.commands
        }),
        ("sluice_auth_failures_total", "Failed client logins.", |s| {
            s.auth_failures
        }),
        (
            "sluice_clients_refused_total",
            "Clients refused at max_client_connections or the fd limit.",
            |s| s.refused_max_clients,
        ),
        (
            "sluice_pin_refusals_total",
            "Statements refused because the pin budget was used up.",
            |s| s.pin_refusals,
        ),
        (
            "sluice_backend_syncs_total",
            "Times a backend was given a client's settings before a command.",
            |s| s.syncs,
        ),
        (
            "sluice_lazy_prepares_total",
            "Statements prepared on a backend on demand.",
            |s| s.lazy_prepares,
        ),
        (
            "sluice_diagnostics_released_total",
            "Backends given back although their session's warnings or errors lived there (other sessions waited, or the session stayed idle past a second); SHOW WARNINGS reads empty for it afterwards.",
            |s| s.diagnostics_released,
        ),
        (
            "sluice_replica_conditions_rerun_total",
            "Routed reads run again on the session's next backend (answer dropped) because the session left the replica before reading the warnings or errors they raised there.",
            |s| s.replica_conditions_rerun,
        ),
        (
            "sluice_kill_queries_sent_total",
            "KILL QUERYs sent to backends (for client KILL and KILL QUERY statements).",
            |s| s.kills_sent,
        ),
        (
            "sluice_kill_queries_shared_total",
            "Client KILLs answered by the KILL QUERY already sent for the same statement (in flight, or answered within 100 ms).",
            |s| s.kills_shared,
        ),
        (
            "sluice_kill_holds_total",
            "Statements that ended while a KILL aimed at them was still on its way: their backend waited for it before serving anyone else.",
            |s| s.kill_holds,
        ),
    ];
    for (name, help, f) in counters {
        scalar(&mut o, name, help, "counter", &|w| f(&w.s).to_string());
    }
    family(
        &mut o,
        "sluice_client_bytes_total",
        "Bytes read from / written to clients.",
        "counter",
    );
    for w in &ws {
        let _ = writeln!(
            o,
            "sluice_client_bytes_total{{worker=\"{}\",direction=\"in\"}} {}",
            w.worker, w.s.client_bytes_in
        );
        let _ = writeln!(
            o,
            "sluice_client_bytes_total{{worker=\"{}\",direction=\"out\"}} {}",
            w.worker, w.s.client_bytes_out
        );
    }
    family(
        &mut o,
        "sluice_pins_total",
        "Times a session became pinned to its backend, by reason.",
        "counter",
    );
    for w in &ws {
        for r in PinReason::ALL {
            let _ = writeln!(
                o,
                "sluice_pins_total{{worker=\"{}\",reason=\"{}\"}} {}",
                w.worker,
                r.name(),
                w.s.pins_total[r as usize]
            );
        }
    }
    family(
        &mut o,
        "sluice_pinned_sessions",
        "Sessions pinned now, by reason.",
        "gauge",
    );
    for w in &ws {
        for r in PinReason::ALL {
            let _ = writeln!(
                o,
                "sluice_pinned_sessions{{worker=\"{}\",reason=\"{}\"}} {}",
                w.worker,
                r.name(),
                w.s.pinned_now[r as usize]
            );
        }
    }
    family(
        &mut o,
        "sluice_errors_total",
        "Errors by kind (origin: client, backend or proxy).",
        "counter",
    );
    for w in &ws {
        for (k, v) in &w.s.errors {
            let _ = writeln!(
                o,
                "sluice_errors_total{{worker=\"{}\",kind=\"{k}\"}} {v}",
                w.worker
            );
        }
    }
    scalar(
        &mut o,
        "sluice_no_backend_waits_total",
        "Checkouts that found no usable backend (all down, draining or read-only) and waited for one.",
        "counter",
        &|w| w.s.no_backend_waits.to_string(),
    );
    scalar(
        &mut o,
        "sluice_reads_to_replicas_total",
        "Routed reads served by a replica.",
        "counter",
        &|w| w.s.reads_to_replicas.to_string(),
    );
    family(
        &mut o,
        "sluice_read_fallbacks_total",
        "Routed reads the primary served instead, by reason (no_replica, behind, global, replica_error).",
        "counter",
    );
    for w in &ws {
        for (i, r) in crate::shard::FALLBACK_REASONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "sluice_read_fallbacks_total{{worker=\"{}\",reason=\"{r}\"}} {}",
                w.worker, w.s.read_fallbacks[i]
            );
        }
    }
    scalar(
        &mut o,
        "sluice_causal_waits_total",
        "Causal reads that waited for their replica (MASTER_GTID_WAIT).",
        "counter",
        &|w| w.s.causal_waits.to_string(),
    );
    scalar(
        &mut o,
        "sluice_causal_wait_seconds_total",
        "Time causal reads waited for their replica.",
        "counter",
        &|w| (w.s.causal_wait_us as f64 / 1e6).to_string(),
    );
    scalar(
        &mut o,
        "sluice_follow_waits_total",
        "MASTER_GTID_WAITs the position follower sent to replicas (while causal reads are served).",
        "counter",
        &|w| w.s.follow_waits.to_string(),
    );
    scalar(
        &mut o,
        "sluice_follow_applied_total",
        "Position follower waits a replica answered applied (its known position raised).",
        "counter",
        &|w| w.s.follow_applied.to_string(),
    );
    scalar(
        &mut o,
        "sluice_follow_timeouts_total",
        "Position follower waits that ran out of time (the replica had not applied the target).",
        "counter",
        &|w| w.s.follow_timeouts.to_string(),
    );
    scalar(
        &mut o,
        "sluice_follow_errors_total",
        "Position follower waits or connects that failed (the follower backs off).",
        "counter",
        &|w| w.s.follow_errors.to_string(),
    );
    scalar(
        &mut o,
        "sluice_drain_closes_total",
        "Sessions closed at a drain's deadline because what they held could not move.",
        "counter",
        &|w| w.s.drain_closes.to_string(),
    );
    family(
        &mut o,
        "sluice_session_moves_total",
        "Session-mode sessions moved to another backend between their commands, by reason (leaving: their backend was draining, in maintenance or removed; rebalance: another served them with less load).",
        "counter",
    );
    for w in &ws {
        for (i, r) in crate::shard::MOVE_REASONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "sluice_session_moves_total{{worker=\"{}\",reason=\"{r}\"}} {}",
                w.worker, w.s.session_moves[i]
            );
        }
    }
    family(
        &mut o,
        "sluice_backend_state",
        "Each backend's state (1 for the current one): up, suspect, down, incompatible (answers, but another kind of server than the instance learned at start), draining, maintenance, removed.",
        "gauge",
    );
    for w in &ws {
        for b in &w.s.backends {
            for st in [
                "up",
                "suspect",
                "down",
                "incompatible",
                "draining",
                "maintenance",
                "removed",
            ] {
                let _ = writeln!(
                    o,
                    "sluice_backend_state{{worker=\"{}\",backend=\"{}\",role=\"{}\",state=\"{st}\"}} {}",
                    w.worker,
                    b.address,
                    b.role,
                    u8::from(b.state == st)
                );
            }
        }
    }
    family(
        &mut o,
        "sluice_backend_writable",
        "1 when the backend's read_only is OFF as last probed, 0 when ON (absent: not known).",
        "gauge",
    );
    for w in &ws {
        for b in w.s.backends.iter().filter(|b| b.writable.is_some()) {
            let _ = writeln!(
                o,
                "sluice_backend_writable{{worker=\"{}\",backend=\"{}\"}} {}",
                w.worker,
                b.address,
                u8::from(b.writable == Some(true))
            );
        }
    }
    type BackendCounter = (&'static str, &'static str, fn(&BackendSnapshot) -> u64);
    let backend_counters: [BackendCounter; 3] = [
        ("sluice_backend_probes_total", "Health probes.", |b| {
            b.probes
        }),
        (
            "sluice_backend_probe_failures_total",
            "Health probes that failed (refused, timed out, lost).",
            |b| b.probe_failures,
        ),
        (
            "sluice_backend_transitions_total",
            "Health changes (up, suspect, down).",
            |b| b.transitions,
        ),
    ];
    for (name, help, f) in backend_counters {
        family(&mut o, name, help, "counter");
        for w in &ws {
            for b in &w.s.backends {
                let _ = writeln!(
                    o,
                    "{name}{{worker=\"{}\",backend=\"{}\"}} {}",
                    w.worker,
                    b.address,
                    f(b)
                );
            }
        }
    }
    family(
        &mut o,
        "sluice_backend_connections",
        "Backend connections by pool and state.",
        "gauge",
    );
    for w in &ws {
        for ((b, u), p) in &w.pools {
            let l = format!("worker=\"{}\",backend=\"{b}\",user=\"{u}\"", w.worker);
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
    }
    scalar(
        &mut o,
        "sluice_multiplexing_ratio",
        "Client connections per open backend connection.",
        "gauge",
        &|w| {
            let open: u64 = w.pools.values().map(|p| p.open).sum();
            if open == 0 {
                "0".into()
            } else {
                (w.s.clients as f64 / open as f64).to_string()
            }
        },
    );
    type PoolCounter = (&'static str, &'static str, fn(&PoolSnapshot) -> u64);
    let pool_counters: [PoolCounter; 6] = [
        ("sluice_pool_checkouts_total", "Backend checkouts.", |p| {
            p.checkouts
        }),
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
            "Backend connections closed (broken, aged, idle, unclean, lent).",
            |p| p.discarded,
        ),
    ];
    for (name, help, f) in pool_counters {
        family(&mut o, name, help, "counter");
        for w in &ws {
            for ((b, u), p) in &w.pools {
                let _ = writeln!(
                    o,
                    "{name}{{worker=\"{}\",backend=\"{b}\",user=\"{u}\"}} {}",
                    w.worker,
                    f(p)
                );
            }
        }
    }
    type BudgetValue = (
        &'static str,
        &'static str,
        &'static str,
        fn(&PoolSnapshot) -> u64,
    );
    let budget: [BudgetValue; 5] = [
        (
            "sluice_pool_budget_limit",
            "The host-wide budget of a pool (pool.size), shared by the worker processes.",
            "gauge",
            |p| p.budget_limit,
        ),
        (
            "sluice_pool_budget_held",
            "Slots of the host budget this worker holds (its shards' limits).",
            "gauge",
            |p| p.budget_held,
        ),
        (
            "sluice_pool_budget_held_all",
            "Slots of the host budget every worker holds together, as this worker read them.",
            "gauge",
            |p| p.budget_total,
        ),
        (
            "sluice_pool_budget_taken_total",
            "Slots this worker took from the host budget.",
            "counter",
            |p| p.budget_taken,
        ),
        (
            "sluice_pool_budget_given_total",
            "Slots this worker gave back to the host budget for another worker.",
            "counter",
            |p| p.budget_given,
        ),
    ];
    if ws.iter().any(|w| w.pools.values().any(|p| p.budget)) {
        for (name, help, kind, f) in budget {
            family(&mut o, name, help, kind);
            for w in &ws {
                for ((b, u), p) in w.pools.iter().filter(|(_, p)| p.budget) {
                    let _ = writeln!(
                        o,
                        "{name}{{worker=\"{}\",backend=\"{b}\",user=\"{u}\"}} {}",
                        w.worker,
                        f(p)
                    );
                }
            }
        }
    }
    family(
        &mut o,
        "sluice_pool_pinned_sessions",
        "Sessions pinned, by pool (the pin budget counts these).",
        "gauge",
    );
    for w in &ws {
        for ((b, u), p) in &w.pools {
            let _ = writeln!(
                o,
                "sluice_pool_pinned_sessions{{worker=\"{}\",backend=\"{b}\",user=\"{u}\"}} {}",
                w.worker, p.pinned
            );
        }
    }
    family(
        &mut o,
        "sluice_pool_queue_wait_seconds",
        "Time checkouts waited in the queue.",
        "histogram",
    );
    for w in &ws {
        for ((b, u), p) in &w.pools {
            let l = format!("worker=\"{}\",backend=\"{b}\",user=\"{u}\"", w.worker);
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
    }
    if crate::alloc_count::allocations().is_some() {
        scalar(
            &mut o,
            "sluice_heap_allocations_total",
            "Heap allocations (a count-allocs build, for benchmarks).",
            "counter",
            &|w| w.s.allocations.to_string(),
        );
    }
    o
}

/// Where a metrics endpoint gets its numbers: this process's shards, or every worker's.
pub type Source = Box<dyn Fn() -> Vec<(u32, Vec<ShardSnapshot>)> + Send>;

/// This process's shards as a metrics source.
pub fn local_source(shared: Arc<Shared>) -> Source {
    Box::new(move || {
        let snaps = collect(&shared, Duration::from_secs(2));
        if snaps.len() < shared.shards {
            warn!(got = snaps.len(), "metrics: not every shard answered");
        }
        vec![(shared.worker, snaps)]
    })
}

/// Serves `GET /metrics` on `addr` until the process exits.
pub fn spawn(source: Source, addr: &str) -> std::io::Result<()> {
    // An upgrade's successor takes its predecessor's listener over (see crate::upgrade).
    let listener = crate::upgrade::tcp_listener(addr, crate::upgrade::Role::Metrics)?;
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
                ("200 OK", render(&source()))
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
            paused: 1,
            clients_paused: 2,
            ..Default::default()
        };
        a.pins_total[PinReason::UserVariable as usize] = 2;
        a.pinned_now[PinReason::UserVariable as usize] = 1;
        a.errors.insert("pool_timeout".into(), 3);
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
        let text = render(&[
            (0, vec![a, b]),
            (
                1,
                vec![ShardSnapshot {
                    clients: 7,
                    ..Default::default()
                }],
            ),
        ]);
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
            "sluice_clients_connected{worker=\"1\"} 7",
            "sluice_paused{worker=\"0\"} 1",
            "sluice_clients_paused{worker=\"0\"} 2",
            "sluice_paused{worker=\"1\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // Each family is declared once, whatever the number of workers.
        assert_eq!(
            text.matches("# TYPE sluice_clients_connected gauge")
                .count(),
            1
        );
    }
}
