//! Command line and the resolved run configuration.

use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Open N connections, hold them idle for --hold seconds, close them.
    Idle,
    /// An active set runs point selects (COM_QUERY) at --rate for --duration, optionally next to
    /// --idle idle connections (benchmark B2).
    Select,
    /// Like select, but each operation is BEGIN; SELECT; UPDATE; COMMIT.
    Trx,
    /// --workers loops each repeatedly connect, log in, run one select and quit (COM_QUIT).
    Storm,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Idle => "idle",
            Mode::Select => "select",
            Mode::Trx => "trx",
            Mode::Storm => "storm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthPlugin {
    /// Answer with the plugin the server proposes.
    Auto,
    /// mysql_native_password.
    Native,
    /// caching_sha2_password (fast path: the server must have the credential cached).
    Sha2,
}

/// sluice-load: a MySQL-protocol load generator for up to a million connections.
///
/// Connections are spread over worker processes (each one epoll loop holding at most
/// --per-process sockets) and over source addresses in 127.0.0.0/8 with explicit (address, port)
/// binds. The coordinator prints progress on stderr, a summary on stdout, and with --json a
/// machine-readable report. Exit status: 0 = no errors, 1 = errors (report still written),
/// 2 = usage error.
#[derive(Debug, Parser)]
#[command(name = "sluice-load", version, max_term_width = 100)]
pub struct Cli {
    /// Server to connect to (sluice or MySQL/MariaDB), HOST:PORT.
    #[arg(short, long, value_name = "HOST:PORT")]
    pub target: String,
    /// MySQL user.
    #[arg(short, long, default_value = "app")]
    pub user: String,
    /// Its password.
    #[arg(short, long, default_value = "app")]
    pub password: String,
    /// Initial schema (empty string: none).
    #[arg(short, long, default_value = "app", value_name = "SCHEMA")]
    pub database: String,
    /// Authentication plugin to answer the greeting with (the server may switch it).
    #[arg(long, value_enum, default_value_t = AuthPlugin::Auto)]
    pub auth_plugin: AuthPlugin,
    /// Do not ask for CLIENT_DEPRECATE_EOF (classic EOF packets, like old clients).
    #[arg(long)]
    pub classic_eof: bool,

    /// What to do.
    #[arg(short, long, value_enum, default_value_t = Mode::Idle)]
    pub mode: Mode,
    /// Total connections. idle: all idle. select/trx: the active set (default: all of them up to
    /// 1,000, else 200) plus the rest idle. storm: idle connections held during the storm.
    #[arg(short = 'n', long, value_name = "N")]
    pub connections: Option<u64>,
    /// Idle connections opened first and held during the run (alternative to -n).
    #[arg(long, value_name = "N")]
    pub idle: Option<u64>,
    /// Active connections of select/trx (default 64 without -n).
    #[arg(long, value_name = "M")]
    pub active: Option<u64>,
    /// Target total operations per second of the active set; 0 = as fast as possible (each
    /// connection sends its next statement as soon as the previous one is answered).
    #[arg(long, default_value_t = 0.0, value_name = "QPS")]
    pub rate: f64,
    /// Seconds the select/trx/storm run lasts.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub duration: f64,
    /// Seconds to hold idle connections (idle mode); 0 = until SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub hold: f64,
    /// Run the active set once *before* opening the idle connections too, and report the p99
    /// ratio with/without idle clients (benchmark B2 in one run).
    #[arg(long)]
    pub baseline: bool,
    /// Concurrent connect/login/query/quit loops in storm mode.
    #[arg(short, long, default_value_t = 64, value_name = "W")]
    pub workers: u64,
    /// A fixed statement to run instead of the point select (select and storm modes).
    #[arg(long, value_name = "SQL")]
    pub query: Option<String>,

    /// Create table sluice_load (id INT PRIMARY KEY, v VARCHAR(64)) with --table-size rows if
    /// missing, before the run.
    #[arg(long)]
    pub prepare_table: bool,
    /// Rows of sluice_load (ids 1..=ROWS); point selects pick ids uniformly in this range.
    #[arg(long, default_value_t = 10_000, value_name = "ROWS")]
    pub table_size: u64,

    /// Seconds allowed for one connection's TCP connect + greeting + login.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds allowed for one statement's complete response.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub query_timeout: f64,
    /// Connections being opened at once, in total (split over the worker processes).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub connect_concurrency: u64,
    /// Cap on new connections per second, in total; 0 = no cap.
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    pub connect_rate: f64,
    /// Connections per worker process (default: RLIMIT_NOFILE minus 100).
    #[arg(long, value_name = "N")]
    pub per_process: Option<u64>,
    /// Worker processes sharing the active set / storm loops.
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub active_procs: u64,
    /// First source address (in 127.0.0.0/8); later ones follow it.
    #[arg(long, default_value = "127.1.0.1", value_name = "IP")]
    pub src_base: Ipv4Addr,
    /// Source port range, LO-HI; each address uses the first --per-ip ports of it (with the
    /// defaults 10000-14999, below the kernel's ephemeral range).
    #[arg(long, default_value = "10000-60000", value_name = "LO-HI")]
    pub src_ports: String,
    /// Connections per source address.
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub per_ip: u32,
    /// Source addresses each storm process cycles through.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub storm_ips: u64,
    /// Let the kernel pick the source address and an ephemeral port (for non-loopback targets;
    /// limits a target to ~28,000 connections).
    #[arg(long)]
    pub no_source_bind: bool,

    /// Seconds to wait after all idle connections are up before the steady-state sample.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub settle: f64,
    /// Check idle connections for server-side closes every SECS while holding them in idle mode
    /// (0 = only once, before closing them).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub idle_check: f64,
    /// Sample this process's RSS and CPU time (repeatable): before connecting, at steady state
    /// (all idle connections up), at the end.
    #[arg(long = "sample-pid", value_name = "PID")]
    pub sample_pid: Vec<i32>,
    /// Sample the processes listed in FILE too (one pid per line; re-read at every sample).
    #[arg(long, value_name = "FILE")]
    pub sample_pids_from: Option<PathBuf>,
    /// Also ask this MySQL server (HOST:PORT, same credentials unless --backend-user/-password)
    /// for Threads_connected at every sample: the upstream connections a proxy holds.
    #[arg(long, value_name = "HOST:PORT")]
    pub sample_backend: Option<String>,
    /// User for --sample-backend (default: --user).
    #[arg(long)]
    pub backend_user: Option<String>,
    /// Password for --sample-backend (default: --password).
    #[arg(long)]
    pub backend_password: Option<String>,

    /// Write a machine-readable report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress output on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Everything a run needs, resolved and checked. Workers get it through fork().
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub target: SocketAddrV4,
    pub target_arg: String,
    pub user: String,
    #[serde(skip)]
    pub password: String,
    pub database: Option<String>,
    pub auth_plugin: AuthPlugin,
    pub deprecate_eof: bool,
    pub mode: Mode,
    pub idle: u64,
    /// Active connections (select/trx) or storm loops.
    pub active: u64,
    pub rate: f64,
    pub duration: f64,
    pub hold: f64,
    pub baseline: bool,
    pub query: Option<String>,
    pub prepare_table: bool,
    pub table_size: u64,
    pub connect_timeout: f64,
    pub query_timeout: f64,
    pub connect_concurrency: u64,
    pub connect_rate: f64,
    pub per_process: u64,
    pub active_procs: u64,
    pub src_base: Ipv4Addr,
    pub src_port_lo: u16,
    pub src_port_hi: u16,
    pub per_ip: u32,
    pub storm_ips: u64,
    pub source_bind: bool,
    pub settle: f64,
    pub idle_check: f64,
    pub sample_pids: Vec<i32>,
    pub sample_pids_from: Option<PathBuf>,
    pub sample_backend: Option<String>,
    pub backend_user: String,
    #[serde(skip)]
    pub backend_password: String,
    pub json: Option<PathBuf>,
    pub quiet: bool,
    pub rlimit_nofile: u64,
}

pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("--src-ports {s:?}: expected LO-HI"))?;
    let lo: u16 = a.trim().parse().map_err(|_| format!("bad port {a:?}"))?;
    let hi: u16 = b.trim().parse().map_err(|_| format!("bad port {b:?}"))?;
    if lo == 0 || hi < lo {
        return Err(format!("--src-ports {s:?}: need 1 <= LO <= HI"));
    }
    Ok((lo, hi))
}

pub fn resolve_v4(s: &str) -> Result<SocketAddrV4, String> {
    let addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?;
    for a in addrs {
        if let std::net::SocketAddr::V4(v4) = a {
            return Ok(v4);
        }
    }
    Err(format!("{s:?} has no IPv4 address"))
}

fn positive(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a positive number of seconds"))
    }
}

impl Cli {
    /// Resolves counts and defaults; `Err` is a usage error (exit 2).
    pub fn resolve(self, rlimit_nofile: u64) -> Result<Config, String> {
        let target = resolve_v4(&self.target)?;
        let (src_port_lo, src_port_hi) = parse_ports(&self.src_ports)?;
        positive("--connect-timeout", self.connect_timeout)?;
        positive("--query-timeout", self.query_timeout)?;
        positive("--duration", self.duration)?;
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err("--rate must be >= 0".into());
        }
        if !(self.connect_rate >= 0.0 && self.connect_rate.is_finite()) {
            return Err("--connect-rate must be >= 0".into());
        }
        for (n, v) in [
            ("--hold", self.hold),
            ("--settle", self.settle),
            ("--idle-check", self.idle_check),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{n} must be >= 0"));
            }
        }
        if self.table_size == 0 || self.table_size > i32::MAX as u64 {
            return Err("--table-size must be between 1 and 2^31-1".into());
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        let (idle, active) = match self.mode {
            Mode::Idle => {
                if self.active.is_some() {
                    return Err("--active makes no sense in idle mode (use --mode select)".into());
                }
                let n = match (self.connections, self.idle) {
                    (Some(a), Some(b)) if a != b => {
                        return Err("give -n or --idle, not both".into());
                    }
                    (Some(a), _) | (None, Some(a)) => a,
                    (None, None) => return Err("idle mode needs -n N".into()),
                };
                if n == 0 {
                    return Err("-n must be at least 1".into());
                }
                (n, 0)
            }
            Mode::Select | Mode::Trx => {
                let active = match (self.active, self.connections) {
                    (Some(m), _) => m,
                    (None, Some(n)) if n <= 1000 => n,
                    (None, Some(_)) => 200,
                    (None, None) => 64,
                };
                if active == 0 {
                    return Err("--active must be at least 1".into());
                }
                let idle = match (self.connections, self.idle) {
                    (Some(n), Some(i)) if n != i + active => {
                        return Err(format!(
                            "-n {n} disagrees with --idle {i} + --active {active}"
                        ));
                    }
                    (_, Some(i)) => i,
                    (Some(n), None) => n
                        .checked_sub(active)
                        .ok_or_else(|| format!("--active {active} is more than -n {n}"))?,
                    (None, None) => 0,
                };
                (idle, active)
            }
            Mode::Storm => {
                if self.active.is_some() {
                    return Err("storm mode uses --workers, not --active".into());
                }
                if self.workers == 0 {
                    return Err("--workers must be at least 1".into());
                }
                let idle = match (self.connections, self.idle) {
                    (Some(a), Some(b)) if a != b => {
                        return Err("give -n or --idle, not both".into());
                    }
                    (Some(a), _) | (None, Some(a)) => a,
                    (None, None) => 0,
                };
                (idle, self.workers)
            }
        };
        if self.query.is_some() && self.mode == Mode::Trx {
            return Err("--query does not apply to trx mode".into());
        }
        if self.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err("--query is empty".into());
        }
        if self.baseline && (self.mode == Mode::Idle || idle == 0) {
            return Err("--baseline needs an active mode and idle connections (--idle N)".into());
        }
        let per_process = match self.per_process {
            Some(0) => return Err("--per-process must be at least 1".into()),
            Some(p) => p,
            None => crate::plan::default_per_process(rlimit_nofile),
        };
        if per_process + 20 > rlimit_nofile {
            return Err(format!(
                "--per-process {per_process} leaves no room under RLIMIT_NOFILE {rlimit_nofile}"
            ));
        }
        let database = (!self.database.is_empty()).then_some(self.database);
        Ok(Config {
            target,
            target_arg: self.target,
            backend_user: self.backend_user.unwrap_or_else(|| self.user.clone()),
            backend_password: self
                .backend_password
                .unwrap_or_else(|| self.password.clone()),
            user: self.user,
            password: self.password,
            database,
            auth_plugin: self.auth_plugin,
            deprecate_eof: !self.classic_eof,
            mode: self.mode,
            idle,
            active,
            rate: self.rate,
            duration: self.duration,
            hold: self.hold,
            baseline: self.baseline,
            query: self.query,
            prepare_table: self.prepare_table,
            table_size: self.table_size,
            connect_timeout: self.connect_timeout,
            query_timeout: self.query_timeout,
            connect_concurrency: self.connect_concurrency,
            connect_rate: self.connect_rate,
            per_process,
            active_procs: self.active_procs.max(1),
            src_base: self.src_base,
            src_port_lo,
            src_port_hi,
            per_ip: self.per_ip,
            storm_ips: self.storm_ips.max(1),
            source_bind: !self.no_source_bind,
            settle: self.settle,
            idle_check: self.idle_check,
            sample_pids: self.sample_pid,
            sample_pids_from: self.sample_pids_from,
            sample_backend: self.sample_backend,
            json: self.json,
            quiet: self.quiet,
            rlimit_nofile,
        })
    }
}

impl Config {
    pub fn login(&self) -> crate::proto::LoginConfig {
        let plugin: Option<&[u8]> = match self.auth_plugin {
            AuthPlugin::Auto => None,
            AuthPlugin::Native => Some(b"mysql_native_password"),
            AuthPlugin::Sha2 => Some(b"caching_sha2_password"),
        };
        crate::proto::LoginConfig::new(
            &self.user,
            &self.password,
            self.database.as_deref(),
            plugin,
            self.deprecate_eof,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["sluice-load", "-t", "127.0.0.1:3306"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap().resolve(20_000)
    }

    #[test]
    fn counts_resolve_per_mode() {
        let c = resolve(&["-n", "1000"]).unwrap();
        assert_eq!((c.idle, c.active, c.per_process), (1000, 0, 19_900));
        let c = resolve(&["-m", "select", "-n", "500"]).unwrap();
        assert_eq!((c.idle, c.active), (0, 500));
        let c = resolve(&["-m", "select", "-n", "100000"]).unwrap();
        assert_eq!((c.idle, c.active), (99_800, 200));
        let c = resolve(&["-m", "select", "--idle", "50000", "--active", "200"]).unwrap();
        assert_eq!((c.idle, c.active), (50_000, 200));
        let c = resolve(&["-m", "trx"]).unwrap();
        assert_eq!((c.idle, c.active), (0, 64));
        let c = resolve(&["-m", "storm", "-w", "32", "--idle", "10"]).unwrap();
        assert_eq!((c.idle, c.active), (10, 32));
        assert!(c.deprecate_eof);
    }

    #[test]
    fn usage_errors() {
        assert!(resolve(&[]).is_err()); // idle needs -n
        assert!(resolve(&["-n", "0"]).is_err());
        assert!(resolve(&["-n", "10", "--active", "2"]).is_err());
        assert!(resolve(&["-m", "select", "-n", "10", "--active", "20"]).is_err());
        assert!(resolve(&["-m", "select", "-n", "10", "--idle", "5", "--active", "2"]).is_err());
        assert!(resolve(&["-m", "trx", "--query", "SELECT 1"]).is_err());
        assert!(resolve(&["-m", "select", "--baseline"]).is_err());
        assert!(resolve(&["-n", "5", "--src-ports", "9-1"]).is_err());
        assert!(resolve(&["-n", "5", "--per-process", "19990"]).is_err());
        assert!(resolve(&["-n", "5", "--connect-timeout", "0"]).is_err());
        assert!(resolve(&["-m", "select", "--rate=-1"]).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("10000-60000"), Ok((10000, 60000)));
        assert!(parse_ports("10000").is_err());
        assert!(parse_ports("0-5").is_err());
        assert!(parse_ports("5-70000").is_err());
    }
}
