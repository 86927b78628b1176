//! The run report: what `--json` writes, and the human summary printed on stdout.

use crate::cli::Config;
use crate::hist::Summary;
use crate::sample::Sample;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Processes {
    pub idle: u64,
    pub active: u64,
    pub per_process: u64,
    pub pids: Vec<i32>,
    /// Workers that died or hung (their connections are lost).
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct IdleReport {
    pub target: u64,
    pub established: u64,
    pub failed: u64,
    /// Seconds from the start of the idle phase until every connection had succeeded or failed.
    pub connect_seconds: f64,
    /// established / connect_seconds.
    pub connect_rate: f64,
    /// TCP connect + greeting + login, per connection, µs.
    pub connect_latency_us: Summary,
    pub addr_retries: u64,
    pub auth_plugins: BTreeMap<String, u64>,
    /// Seconds the idle connections were held after all were up (until the close began).
    pub held_seconds: f64,
    /// At the final check: alive, and found closed by the server.
    pub alive_at_end: u64,
    pub closed_while_idle: u64,
    pub close_seconds: f64,
    /// CPU seconds the --sample-pid processes used while the idle connections were opened,
    /// and per connection established (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_cpu_us_per_conn: Option<f64>,
    /// CPU seconds the generator's idle workers used opening them.
    pub generator_cpu_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RunReport {
    /// "run", or "baseline" (before the idle connections) / "with_idle".
    pub label: String,
    pub mode: String,
    /// Active connections (select/trx) or concurrent loops (storm).
    pub connections: u64,
    pub connections_failed: u64,
    /// Target operations/s (0 = closed loop).
    pub target_rate: f64,
    pub seconds: f64,
    pub ok: u64,
    pub failed: u64,
    /// ok / seconds (transactions/s in trx mode, connect cycles/s in storm mode).
    pub throughput: f64,
    /// Operations the target rate called for that never started (the rate was not met).
    pub missed: u64,
    /// From the intended start under --rate (no coordinated omission), else from the send; in
    /// storm mode from the start of the connect to the query's response.
    pub latency_us: Summary,
    /// From the actual send (select/trx).
    pub service_us: Summary,
    /// Connections opened during the run (storm cycles, replacements).
    pub connects: u64,
    pub reconnects: u64,
    pub auth_plugins: BTreeMap<String, u64>,
    /// CPU seconds the --sample-pid processes used during the run, and per successful
    /// operation (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_cpu_us_per_op: Option<f64>,
    /// CPU seconds the generator's active workers used during the run.
    pub generator_cpu_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Resources {
    pub samples: Vec<Sample>,
    /// (RSS at steady state − RSS before) / idle connections established, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    pub slab_per_conn_bytes: Option<f64>,
    pub sunreclaim_per_conn_bytes: Option<f64>,
    /// The generator's worker processes right after they started (before any connection).
    pub generator_rss_start_bytes: u64,
    /// (Generator RSS at steady state − at start) / idle connections.
    pub generator_rss_per_conn_bytes: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub started_unix: f64,
    pub finished_unix: f64,
    /// "completed", "interrupted" (SIGINT/SIGTERM ended it early but cleanly) or "aborted".
    pub status: String,
    pub exit_status: i32,
    pub config: Config,
    pub processes: Processes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_rows_inserted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunReport>,
    /// run p99 / baseline p99 (benchmark B2's ratio), with --baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ratio: Option<f64>,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    /// One message per error kind, as first seen.
    pub error_samples: BTreeMap<String, String>,
    pub resources: Resources,
    pub warnings: Vec<String>,
}

/// Seconds since the epoch and an RFC 3339 UTC timestamp (millisecond precision).
pub fn now_stamp() -> (f64, String) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs_f64(), rfc3339(d.as_secs(), d.subsec_millis()))
}

pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

pub fn fmt_bytes(b: f64) -> String {
    let a = b.abs();
    if a < 1024.0 {
        format!("{b:.0} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

fn fmt_summary(s: &Summary) -> String {
    if s.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        fmt_us(s.p50),
        fmt_us(s.p90),
        fmt_us(s.p99),
        fmt_us(s.p999),
        fmt_us(s.max)
    )
}

fn fmt_plugins(p: &BTreeMap<String, u64>) -> String {
    p.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_lines(out: &mut String, r: &RunReport) {
    let what = match r.mode.as_str() {
        "storm" => "connect+login+query+quit cycles",
        "trx" => "transactions",
        _ => "queries",
    };
    let target = if r.target_rate > 0.0 {
        format!("target {}", fmt_rate(r.target_rate))
    } else {
        "closed loop".to_string()
    };
    let conns = if r.mode == "storm" {
        format!("{} loops", r.connections)
    } else if r.connections_failed > 0 {
        format!(
            "{} connections ({} failed to open)",
            r.connections, r.connections_failed
        )
    } else {
        format!("{} connections", r.connections)
    };
    let _ = writeln!(
        out,
        "{}: {conns}, {target}, {:.1} s: {} {what} ok, {} failed, {}",
        r.label,
        r.seconds,
        r.ok,
        r.failed,
        fmt_rate(r.throughput)
    );
    let _ = writeln!(out, "  latency  {}", fmt_summary(&r.latency_us));
    if r.service_us.count > 0 && r.target_rate > 0.0 {
        let _ = writeln!(
            out,
            "  service  {}  (from the actual send)",
            fmt_summary(&r.service_us)
        );
    }
    if let Some(x) = r.sampled_cpu_us_per_op {
        let _ = writeln!(
            out,
            "  sampled processes' CPU: {:.2} s, {x:.1} µs per operation (generator {:.2} s)",
            r.sampled_cpu_seconds.unwrap_or(0.0),
            r.generator_cpu_seconds
        );
    }
    if r.missed > 0 {
        let _ = writeln!(
            out,
            "  WARNING: {} operations due at the target rate never started (rate not met)",
            r.missed
        );
    }
    if r.reconnects > 0 {
        let _ = writeln!(out, "  {} replacement connections", r.reconnects);
    }
}

impl Report {
    /// The human summary (stdout).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(
            out,
            "sluice-load {}: mode {}, target {}, {} worker process(es) ({} idle, {} active), {}",
            self.version,
            c.mode.name(),
            c.target_arg,
            self.processes.idle + self.processes.active,
            self.processes.idle,
            self.processes.active,
            self.status
        )
        .map(|_| ());
        if let Some(n) = self.table_rows_inserted {
            let _ = writeln!(
                out,
                "table sluice_load: {n} rows inserted (size {})",
                c.table_size
            );
        }
        if let Some(r) = &self.baseline {
            run_lines(&mut out, r);
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                out,
                "idle: {}/{} established, {} failed, in {:.2} s ({})",
                i.established,
                i.target,
                i.failed,
                i.connect_seconds,
                fmt_rate(i.connect_rate)
            );
            let _ = writeln!(
                out,
                "  connect+login  {}",
                fmt_summary(&i.connect_latency_us)
            );
            let _ = writeln!(
                out,
                "  held {:.1} s; at the end {} alive, {} closed by the server; closed in {:.2} s{}",
                i.held_seconds,
                i.alive_at_end,
                i.closed_while_idle,
                i.close_seconds,
                if i.auth_plugins.is_empty() {
                    String::new()
                } else {
                    format!("; auth: {}", fmt_plugins(&i.auth_plugins))
                }
            );
        }
        if let Some(x) = self.idle.as_ref().and_then(|i| i.sampled_cpu_us_per_conn) {
            let i = self.idle.as_ref().expect("checked");
            let _ = writeln!(
                out,
                "  sampled processes' CPU while connecting: {:.2} s, {x:.1} µs per connection (generator {:.2} s)",
                i.sampled_cpu_seconds.unwrap_or(0.0),
                i.generator_cpu_seconds
            );
        }
        if let Some(r) = &self.run {
            run_lines(&mut out, r);
        }
        if let Some(x) = self.p99_ratio {
            let _ = writeln!(out, "p99 with idle / without: {x:.2}");
        }
        let res = &self.resources;
        if res.samples.iter().any(|s| !s.pids.is_empty()) {
            let rss: Vec<String> = res
                .samples
                .iter()
                .map(|s| format!("{} {}", s.label, fmt_bytes(s.rss_bytes as f64)))
                .collect();
            let _ = writeln!(out, "sampled RSS: {}", rss.join(", "));
        }
        if let Some(x) = res.rss_per_conn_bytes {
            let _ = writeln!(out, "  RSS per idle connection: {}", fmt_bytes(x));
        }
        if let (Some(a), Some(b)) = (res.slab_per_conn_bytes, res.sunreclaim_per_conn_bytes) {
            let _ = writeln!(
                out,
                "kernel slab per idle connection: {} (SUnreclaim {}) — both ends of each socket",
                fmt_bytes(a),
                fmt_bytes(b)
            );
        }
        if let Some(x) = res.generator_rss_per_conn_bytes {
            let _ = writeln!(out, "generator RSS per idle connection: {}", fmt_bytes(x));
        }
        let threads: Vec<String> = res
            .samples
            .iter()
            .filter_map(|s| {
                s.backend_threads_connected
                    .map(|n| format!("{} {n}", s.label))
            })
            .collect();
        if !threads.is_empty() {
            let _ = writeln!(out, "backend Threads_connected: {}", threads.join(", "));
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        if self.errors_total == 0 {
            let _ = writeln!(out, "errors: none");
        } else {
            let _ = writeln!(out, "errors: {}", self.errors_total);
            for (k, n) in &self.errors {
                let msg = self.error_samples.get(k).map(String::as_str).unwrap_or("");
                let _ = writeln!(out, "  {k:<28} {n:>9}  e.g. {msg}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_763_700_000, 999), "2025-11-21T04:40:00.999Z");
    }

    #[test]
    fn units() {
        assert_eq!(fmt_us(999), "999 µs");
        assert_eq!(fmt_us(1_500), "1.50 ms");
        assert_eq!(fmt_us(2_500_000), "2.50 s");
        assert_eq!(fmt_bytes(512.0), "512 B");
        assert_eq!(fmt_bytes(-2048.0), "-2.0 KiB");
        assert_eq!(fmt_bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
        assert_eq!(fmt_rate(2000.4), "2000/s");
        assert_eq!(fmt_rate(12.34), "12.3/s");
    }

    fn sample_report() -> Report {
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "sluice-load",
            "-t",
            "127.0.0.1:3306",
            "-m",
            "select",
            "--idle",
            "1000",
            "--active",
            "200",
            "--rate",
            "2000",
            "--baseline",
        ])
        .unwrap();
        let config = cli.resolve(20_000).unwrap();
        let run = RunReport {
            label: "with_idle".into(),
            mode: "select".into(),
            connections: 200,
            target_rate: 2000.0,
            seconds: 20.0,
            ok: 40_000,
            throughput: 2000.0,
            latency_us: Summary {
                count: 40_000,
                p50: 300,
                p90: 500,
                p99: 1200,
                p999: 2500,
                max: 9000,
                ..Summary::default()
            },
            ..RunReport::default()
        };
        let mut errors = BTreeMap::new();
        errors.insert("connect_refused".to_string(), 3);
        let mut error_samples = BTreeMap::new();
        error_samples.insert(
            "connect_refused".to_string(),
            "connection refused".to_string(),
        );
        Report {
            tool: "sluice-load",
            version: "0.1.0",
            started_at: rfc3339(0, 0),
            finished_at: rfc3339(20, 0),
            started_unix: 0.0,
            finished_unix: 20.0,
            status: "completed".into(),
            exit_status: 1,
            config,
            processes: Processes {
                idle: 1,
                active: 1,
                per_process: 19_900,
                ..Processes::default()
            },
            table_rows_inserted: None,
            idle: Some(IdleReport {
                target: 1000,
                established: 997,
                failed: 3,
                connect_seconds: 0.5,
                connect_rate: 1994.0,
                ..IdleReport::default()
            }),
            baseline: Some(RunReport {
                label: "baseline".into(),
                ..run.clone()
            }),
            run: Some(run),
            p99_ratio: Some(1.0),
            errors_total: 3,
            errors,
            error_samples,
            resources: Resources {
                rss_per_conn_bytes: Some(400.0),
                ..Resources::default()
            },
            warnings: vec![],
        }
    }

    #[test]
    fn summary_and_json() {
        let r = sample_report();
        let s = r.summary();
        assert!(s.contains("idle: 997/1000 established, 3 failed"), "{s}");
        assert!(
            s.contains("with_idle: 200 connections, target 2000/s, 20.0 s: 40000 queries ok"),
            "{s}"
        );
        assert!(s.contains("p99 1.20 ms"), "{s}");
        assert!(s.contains("p99 with idle / without: 1.00"), "{s}");
        assert!(s.contains("RSS per idle connection: 400 B"), "{s}");
        assert!(s.contains("connect_refused"), "{s}");
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["run"]["latency_us"]["p99"], 1200);
        assert_eq!(j["errors"]["connect_refused"], 3);
        assert_eq!(j["config"]["mode"], "select");
        assert_eq!(j["config"]["idle"], 1000);
        assert!(j["config"].get("password").is_none());
        assert_eq!(j["idle"]["established"], 997);
    }
}
