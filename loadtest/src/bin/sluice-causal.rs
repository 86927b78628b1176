//! `sluice-causal`: the latency of a read that follows the same client's write (issue 13's
//! "added latency of a causal read"), measured on one connection.
//!
//! N times: `INSERT` a new row (autocommit), then at once `SELECT` that row back, on the same
//! connection, timing each statement (`Instant` around a blocking round trip). Run it through
//! sluice with `[routing] reads = "replicas"` and `consistency = "session"` (the read waits on
//! the replica with `MASTER_GTID_WAIT`, or the probe already knows it applied the write), with
//! `eventual` (no wait) and with reads on the primary; the differences of the read's p50/p99 are
//! what read-your-writes costs. A read that does not return the row just written is counted as
//! **stale** (only `eventual` should have any).
//!
//! `--settle ADDR` (repeatable: the primary first, then each replica, all direct): after each
//! write, read the primary's `@@gtid_binlog_pos` and wait (`MASTER_GTID_WAIT`) until every
//! replica given has applied it, before the timed read: the replica is then caught up, and the
//! read measures only what the causal check costs (sluice's probe, polled every 250 ms, does
//! not know yet, so `session` still asks the replica). Without `--settle` the read races
//! replication, as a real client's would.
//!
//! The table (`--table`, default `sluice_causal`: `id BIGINT PRIMARY KEY, v BIGINT`) must
//! exist on every server before the run (the bench script creates it on the primary and waits
//! for the replicas); ids start at `--id-base`, so runs do not collide.
//!
//! ```text
//! sluice-causal -t 127.0.0.1:6033 -u app -p app -d app -n 2000 --id-base 1000000 --json out.json
//! ```

#[allow(dead_code)]
#[path = "../proto.rs"]
mod proto;
#[allow(dead_code)]
#[path = "../syncconn.rs"]
mod syncconn;
#[allow(dead_code)]
#[path = "../sys.rs"]
mod sys;

use clap::Parser;
use proto::{Failure, LoginConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use syncconn::SyncConn;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-causal",
    about = "Write then read back at once on one connection, N times: the read's latency"
)]
struct Cli {
    /// Where to connect (sluice, or a server).
    #[arg(short = 't', long, default_value = "127.0.0.1:6033")]
    target: SocketAddr,
    #[arg(short = 'u', long, default_value = "app")]
    user: String,
    #[arg(short = 'p', long, default_value = "app")]
    password: String,
    #[arg(short = 'd', long, default_value = "app")]
    database: String,
    /// Measured iterations (write + read).
    #[arg(short = 'n', long, default_value_t = 2000)]
    iterations: u64,
    /// Iterations before measuring (connections warm, plans cached).
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// First row id written (each iteration writes the next).
    #[arg(long, default_value_t = 1)]
    id_base: u64,
    #[arg(long, default_value = "sluice_causal")]
    table: String,
    /// Wait for replication between the write and the read: the primary first, then the
    /// replicas (direct addresses, same user).
    #[arg(long)]
    settle: Vec<SocketAddr>,
    /// Pause between iterations, in microseconds.
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// A name for the run, copied into the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the report here (JSON).
    #[arg(long)]
    json: Option<String>,
}

/// Percentiles of a list of durations in nanoseconds (sorted here), in microseconds.
fn summary(ns: &mut [u64]) -> serde_json::Value {
    if ns.is_empty() {
        return serde_json::json!({ "count": 0 });
    }
    ns.sort_unstable();
    let at = |q: f64| {
        let i = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1;
        ns[i] as f64 / 1000.0
    };
    let mean = ns.iter().map(|&v| v as f64).sum::<f64>() / ns.len() as f64 / 1000.0;
    let r = |v: f64| (v * 10.0).round() / 10.0;
    serde_json::json!({
        "count": ns.len(),
        "min_us": r(ns[0] as f64 / 1000.0),
        "mean_us": r(mean),
        "p50_us": r(at(0.50)),
        "p90_us": r(at(0.90)),
        "p99_us": r(at(0.99)),
        "p999_us": r(at(0.999)),
        "max_us": r(ns[ns.len() - 1] as f64 / 1000.0),
    })
}

fn connect(addr: SocketAddr, cli: &Cli, login: &LoginConfig) -> SyncConn {
    SyncConn::connect(addr, login, Duration::from_secs(10)).unwrap_or_else(|e| {
        eprintln!(
            "sluice-causal ({}): cannot log in to {addr} as {}: {}",
            cli.label,
            cli.user,
            e.message()
        );
        std::process::exit(1);
    })
}

fn fail(cli: &Cli, what: &str, e: Failure) -> ! {
    eprintln!("sluice-causal ({}): {what}: {}", cli.label, e.message());
    std::process::exit(1);
}

fn main() {
    let cli = Cli::parse();
    let login = LoginConfig::new(&cli.user, &cli.password, Some(&cli.database), None, true);
    let mut c = connect(cli.target, &cli, &login);
    let mut settle: Vec<SyncConn> = cli
        .settle
        .iter()
        .map(|&a| connect(a, &cli, &login))
        .collect();
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    let (mut stale, mut missing) = (0u64, 0u64);
    let total = cli.warmup + cli.iterations;
    let started = Instant::now();
    for i in 0..total {
        let id = cli.id_base + i;
        let t0 = Instant::now();
        if let Err(e) = c.query(&format!(
            "INSERT INTO {} (id, v) VALUES ({id}, {i})",
            cli.table
        )) {
            fail(&cli, &format!("INSERT of id {id}"), e);
        }
        let write_ns = t0.elapsed().as_nanos() as u64;
        if let Some((primary, replicas)) = settle.split_first_mut() {
            let pos = match primary.query("SELECT @@global.gtid_binlog_pos") {
                Ok(rows) => rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .unwrap_or_default(),
                Err(e) => fail(&cli, "reading the primary's position", e),
            };
            for r in replicas.iter_mut() {
                match r.query(&format!("SELECT MASTER_GTID_WAIT('{pos}', 10)")) {
                    Ok(rows)
                        if rows
                            .first()
                            .and_then(|r| r.first().cloned().flatten())
                            .as_deref()
                            == Some("0") => {}
                    Ok(rows) => {
                        eprintln!(
                            "sluice-causal ({}): a replica did not reach {pos} in 10 s: {rows:?}",
                            cli.label
                        );
                        std::process::exit(1);
                    }
                    Err(e) => fail(&cli, "waiting on a replica", e),
                }
            }
        }
        let t1 = Instant::now();
        let rows = match c.query(&format!("SELECT v FROM {} WHERE id = {id}", cli.table)) {
            Ok(rows) => rows,
            // A replica without the table yet (eventual): a stale read too, not a crash.
            Err(Failure::Query { code: 1146, .. }) => {
                missing += 1;
                Vec::new()
            }
            Err(e) => fail(&cli, &format!("SELECT of id {id}"), e),
        };
        let read_ns = t1.elapsed().as_nanos() as u64;
        let seen = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse::<u64>().ok());
        if i >= cli.warmup {
            writes.push(write_ns);
            reads.push(read_ns);
            if seen != Some(i) {
                stale += 1;
            }
        }
        if cli.pause_us > 0 {
            std::thread::sleep(Duration::from_micros(cli.pause_us));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    c.quit();
    for s in settle {
        s.quit();
    }
    let report = serde_json::json!({
        "label": cli.label,
        "target": cli.target.to_string(),
        "iterations": cli.iterations,
        "warmup": cli.warmup,
        "settled": !cli.settle.is_empty(),
        "stale_reads": stale,
        "missing_table": missing,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "read": summary(&mut reads),
        "write": summary(&mut writes),
    });
    let r = &report["read"];
    eprintln!(
        "sluice-causal ({}): {} reads: p50 {} µs, p99 {} µs; writes p50 {} µs; {stale} stale",
        cli.label, cli.iterations, r["p50_us"], r["p99_us"], report["write"]["p50_us"]
    );
    let text = serde_json::to_string_pretty(&report).expect("a JSON value serializes");
    match &cli.json {
        Some(path) => std::fs::write(path, text + "\n").unwrap_or_else(|e| {
            eprintln!("sluice-causal: cannot write {path}: {e}");
            std::process::exit(1);
        }),
        None => println!("{text}"),
    }
}
