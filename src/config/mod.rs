//! Configuration: the TOML model, CLI overrides, and validation of the whole file before anything
//! is applied. Every error names the key, the value and why it was refused.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How long a client keeps a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// For the whole client session.
    Session,
    /// For one transaction (or one statement outside a transaction).
    Transaction,
    /// For one statement; inside a transaction, as `transaction`.
    Statement,
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        })
    }
}

/// What happens to a statement that would pin a session when the pin budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinOverflow {
    /// The statement is refused with error 9003.
    Error,
    /// The statement waits (up to `queue_timeout_ms`) for a pinned session to unpin.
    Wait,
}

/// Whose connections `SHOW [FULL] PROCESSLIST`, COM_PROCESS_INFO and
/// `information_schema.PROCESSLIST` list on the client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Processlist {
    /// sluice's clients of the asking client's user, under the ids `CONNECTION_ID()` and `KILL`
    /// use (what a client of the database expects).
    #[default]
    Sluice,
    /// Passed through: the backend's list (sluice's pooled connections, under the server's ids).
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing address (restart to change).
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Shards (executor threads, one per core); 0 = one per available core.
    #[serde(default)]
    pub shards: usize,
    /// Worker processes sharing the listen address (SO_REUSEPORT), each with `shards` shards, all
    /// sharing one budget per pool (`pool.size`: see [`crate::backend::budget`]); 1 = a single
    /// process, no supervisor. More workers let one host hold more clients than one process's
    /// file-descriptor limit allows.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Listen backlog of each shard's SO_REUSEPORT socket.
    #[serde(default = "defaults::listen_backlog")]
    pub listen_backlog: u32,
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// A tracing filter: "info", "sluice=debug", …
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// Largest packet (command or response) sluice accepts from a client, in bytes.
    #[serde(default = "defaults::max_packet_size")]
    pub max_packet_size: usize,
    /// Time a client has to complete the handshake and authentication.
    #[serde(default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Delay before every failed-login answer (same for unknown users and wrong passwords).
    #[serde(default = "defaults::auth_failure_delay_ms")]
    pub auth_failure_delay_ms: u64,
    /// How long a client may take to send the rest of a packet it started (like MySQL's
    /// net_read_timeout).
    #[serde(default = "defaults::net_read_timeout_ms")]
    pub net_read_timeout_ms: u64,
    /// How long a client may leave its socket full while sluice sends it a result (like MySQL's
    /// net_write_timeout).
    #[serde(default = "defaults::net_write_timeout_ms")]
    pub net_write_timeout_ms: u64,
    /// A client idle (between commands, holding no transaction) longer than this is disconnected
    /// with ERR 4031; 0 = never.
    #[serde(default)]
    pub client_idle_timeout_ms: u64,
    /// Failed logins per source address per minute (counted across every shard and worker
    /// process of the instance) after which that address gets ERR 1129 at connect until the
    /// minute is over; 0 = no limit.
    #[serde(default = "defaults::auth_failure_limit")]
    pub auth_failure_limit: u32,
    /// Client connections this process accepts at once (0 = no limit but the fd limit, less
    /// the descriptors sluice reserves for itself); further clients get ERR 1040 "Too many
    /// connections".
    #[serde(default)]
    pub max_client_connections: usize,
    /// `SHOW [FULL] PROCESSLIST` and `information_schema.PROCESSLIST` on the client port:
    /// `sluice` (default: sluice's clients of the same user) or `server` (passed through to
    /// the backend).
    #[serde(default)]
    pub processlist: Processlist,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); empty = off.
    #[serde(default)]
    pub metrics_listen: String,
    /// On SIGTERM/SIGINT: how long commands in flight may take to finish.
    #[serde(default = "defaults::shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    /// Read routing to replicas (off unless `routing.reads = "replicas"`).
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The SQL admin console (off unless `admin.listen` is set).
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Users loaded from the backend's `mysql.user` (beside `[[users]]`).
    #[serde(default)]
    pub auth_from_backend: Option<AuthFromBackend>,
}

/// Authenticate clients against the `mysql_native_password` hashes in the backend's own
/// `mysql.user`, read through `user`/`password` and refreshed every `refresh_ms`. Sluice never
/// learns these users' passwords; their backend connections all use the pool account
/// `backend_user`/`backend_password`, with that account's privileges.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFromBackend {
    /// An account that may read `mysql.user` (e.g. `GRANT SELECT ON mysql.user TO …`).
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// The pool account every such user's backend connections log in as.
    pub backend_user: String,
    #[serde(default)]
    pub backend_password: String,
    #[serde(default = "defaults::auth_refresh_ms")]
    pub refresh_ms: u64,
    /// Pool mode for these users (default: `pool.mode`).
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default = "defaults::pool_mode")]
    pub mode: PoolMode,
    /// Upstream connections per backend and user, across all shards and worker processes.
    #[serde(default = "defaults::pool_size")]
    pub size: usize,
    /// How long a command waits for a backend connection before it gets an error.
    #[serde(default = "defaults::queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Timeout for opening and authenticating a backend connection.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Idle backend connections are closed after this long unused.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Backend connections are recycled after this age (when idle).
    #[serde(default = "defaults::max_lifetime_ms")]
    pub max_lifetime_ms: u64,
    /// Idle backend connections unused this long are pinged before reuse.
    #[serde(default = "defaults::health_check_interval_ms")]
    pub health_check_interval_ms: u64,
    /// A relayed command whose backend sends nothing for this long fails (ERR 2013) and the
    /// connection is closed; 0 = wait as long as the statement runs.
    #[serde(default)]
    pub query_timeout_ms: u64,
    /// Sessions that may be pinned to a backend at once, per backend and user (across shards and
    /// worker processes); 0 = half of `size`.
    #[serde(default)]
    pub pin_budget: usize,
    /// "error" (refuse the statement that would pin) or "wait" (wait for a pinned session to
    /// unpin, up to `queue_timeout_ms`).
    #[serde(default = "defaults::pin_overflow")]
    pub pin_overflow: PinOverflow,
    /// Per-shard weights of each pool's share (one integer per shard, e.g. [3, 1]); empty = an
    /// even split. Shards still lend each other slots when one is starved.
    #[serde(default)]
    pub shard_weights: Vec<usize>,
    /// Binary prepared statements kept per backend connection (least recently used are closed).
    #[serde(default = "defaults::prepared_statements_per_connection")]
    pub prepared_statements_per_connection: usize,
}

impl PoolConfig {
    /// The pin budget in force (resolving the 0 default).
    pub fn pin_budget(&self) -> usize {
        if self.pin_budget == 0 {
            (self.size / 2).max(1)
        } else {
            self.pin_budget
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

/// TLS towards clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Offer TLS to clients (CLIENT_SSL in the greeting).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// PEM certificate chain and private key; without them sluice makes a self-signed
    /// certificate at start.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// Refuse clients that do not upgrade to TLS (ERR 3159).
    #[serde(default)]
    pub require: bool,
    /// "1.2" (TLS 1.2 and 1.3) or "1.3".
    #[serde(default = "defaults::tls_min_version")]
    pub min_version: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

/// TLS towards one backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// Verify the server's certificate against `ca` (turn off for development only).
    #[serde(default = "defaults::yes")]
    pub verify: bool,
    /// PEM file of the certificate authorities to trust.
    #[serde(default)]
    pub ca: Option<String>,
    /// Name to verify in the certificate (default: the host part of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// host:port of a MySQL or MariaDB server, or unix:/path/to/its.sock.
    pub address: String,
    /// Connect to this backend over TLS.
    #[serde(default)]
    pub tls: Option<BackendTls>,
    /// `any` (equivalent peers, e.g. Galera nodes), `primary` or `replica`. A primary or
    /// replica serves clients only while it is writable (`read_only = OFF`, as probed), so
    /// sluice follows a promotion; an `any` backend serves whatever `read_only` says.
    #[serde(default)]
    pub role: crate::backend::router::Role,
    /// Relative share of the load (1..=1000).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

impl BackendConfig {
    /// What is wrong with this backend on its own (its place in a list aside: weights and
    /// duplicates are the list's business): `(field, value, why)`, nothing when it can be used.
    /// The file's validation and the console's `ADD BACKEND` both ask it, so a backend added
    /// while running is held to the file's rules.
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        if let Err(why) = check_host_port(&self.address) {
            out.push(("address", format!("{:?}", self.address), why));
        }
        if let Some(t) = &self.tls {
            if t.verify && t.ca.is_none() {
                out.push((
                    "tls.ca",
                    String::new(),
                    "needed to verify the server (or set verify = false, for development only)"
                        .into(),
                ));
            }
            if self.address.starts_with("unix:") {
                out.push((
                    "tls",
                    String::new(),
                    "TLS over a Unix socket is not supported".into(),
                ));
            }
            let name = t.server_name.clone().unwrap_or_else(|| {
                self.address
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                    .unwrap_or_default()
            });
            if rustls::pki_types::ServerName::try_from(name.clone()).is_err() {
                out.push((
                    "tls.server_name",
                    format!("{name:?}"),
                    "not a DNS name or IP address".into(),
                ));
            }
        }
        out
    }
}

/// Where reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reads {
    /// Everything to the primary (or equivalent peers).
    #[default]
    Primary,
    /// Plain reads outside a transaction to a replica (see `session::route`).
    Replicas,
}

/// What a read on a replica must have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Whatever the replica has applied (within `max_replication_lag_ms`).
    Eventual,
    /// The session's own writes (read-your-writes): the replica must have applied the session's
    /// last GTID, waited for up to `causal_wait_ms`, else the read goes to the primary.
    #[default]
    Session,
    /// Everything committed on the primary when the read starts (its position read first).
    Global,
}

/// Read routing to replicas (see `session::route` and `backend::gtid`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub reads: Reads,
    #[serde(default)]
    pub consistency: Consistency,
    /// A replica further behind than this (measured against the primary's GTID positions, as
    /// probed) gets no reads.
    #[serde(default = "defaults::max_replication_lag_ms")]
    pub max_replication_lag_ms: u64,
    /// How long a causal read waits (MASTER_GTID_WAIT) for its replica before going to the
    /// primary.
    #[serde(default = "defaults::causal_wait_ms")]
    pub causal_wait_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

/// The admin console (see `console`): SQL over the MySQL protocol, its own users.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// host:port of the console; empty = no console (restart to change).
    #[serde(default)]
    pub listen: String,
    #[serde(default)]
    pub users: Vec<AdminUser>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    /// A `*HEX` hash from `sluice hash-password` (mysql_native_password), or plaintext
    /// (development only: sluice warns).
    pub password: String,
}

/// Backend names (see `backend::dns`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Backend names are resolved again this often (sooner when a name server's TTL says so,
    /// and at once after a connect to the backend failed).
    #[serde(default = "defaults::dns_ttl_ms")]
    pub ttl_ms: u64,
    /// Ask this name server (ip:port, UDP) instead of the system resolver.
    #[serde(default)]
    pub nameserver: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

/// The active health probe (see `backend::health`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Probe period per backend (connect once, then ping and read `read_only`).
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    /// A probe without an answer this long has failed.
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
    /// Failures in a row that take a backend down (a refused connection does at once).
    #[serde(default = "defaults::health_down_after")]
    pub down_after: u32,
    /// Good probes in a row that bring a down backend back (after its backoff).
    #[serde(default = "defaults::health_up_after")]
    pub up_after: u32,
    /// First re-admission backoff; doubled for each relapse within a minute, up to 30 s.
    #[serde(default = "defaults::health_backoff_ms")]
    pub backoff_ms: u64,
    /// The account the probe logs in as (one connection per backend per process; it needs no
    /// privilege: it reads `@@global.read_only`). Default: the first user's backend account,
    /// where the probe's connection counts with the pool's. A monitor account of its own keeps
    /// the two apart.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

impl HealthConfig {
    pub fn thresholds(&self) -> crate::backend::health::Thresholds {
        crate::backend::health::Thresholds {
            down_after: self.down_after,
            up_after: self.up_after,
            backoff: Duration::from_millis(self.backoff_ms),
            max_backoff: Duration::from_secs(30).max(Duration::from_millis(self.backoff_ms)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name clients log in with.
    pub name: String,
    /// A hash from `sluice hash-password` ("*HEX…" or "sha2:HEX…"), or a plaintext password
    /// (development only: sluice warns).
    pub password: String,
    /// The plugin clients authenticate with: "mysql_native_password" or "caching_sha2_password".
    /// Default: what the password hash allows, mysql_native_password for plaintext.
    #[serde(default)]
    pub auth_plugin: Option<String>,
    /// Credentials sluice uses for this user's backend connections.
    pub backend_user: String,
    #[serde(default)]
    pub backend_password: String,
    /// Overrides `pool.mode` for this user.
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// Connections this user may have open at once (0 = no limit); further logins get ERR 1040.
    #[serde(default)]
    pub max_connections: usize,
    /// Refuse this user unless it connected with TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Overrides `routing.reads` for this user.
    #[serde(default)]
    pub reads: Option<Reads>,
    /// Overrides `routing.consistency` for this user.
    #[serde(default)]
    pub consistency: Option<Consistency>,
}

mod defaults {
    use super::{LogFormat, PoolMode};
    pub fn weight() -> u32 {
        1
    }
    pub fn max_replication_lag_ms() -> u64 {
        1000
    }
    pub fn causal_wait_ms() -> u64 {
        100
    }
    pub fn dns_ttl_ms() -> u64 {
        5000
    }
    pub fn health_interval_ms() -> u64 {
        250
    }
    pub fn health_timeout_ms() -> u64 {
        300
    }
    pub fn health_down_after() -> u32 {
        2
    }
    pub fn health_up_after() -> u32 {
        2
    }
    pub fn health_backoff_ms() -> u64 {
        500
    }
    pub fn listen() -> String {
        "127.0.0.1:6033".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn tls_min_version() -> String {
        "1.2".into()
    }
    pub fn auth_refresh_ms() -> u64 {
        60_000
    }
    pub fn auth_failure_limit() -> u32 {
        100
    }
    pub fn workers() -> usize {
        1
    }
    pub fn listen_backlog() -> u32 {
        4096
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Human
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn max_packet_size() -> usize {
        64 << 20
    }
    pub fn handshake_timeout_ms() -> u64 {
        10_000
    }
    pub fn auth_failure_delay_ms() -> u64 {
        100
    }
    pub fn net_read_timeout_ms() -> u64 {
        30_000
    }
    pub fn net_write_timeout_ms() -> u64 {
        60_000
    }
    pub fn shutdown_timeout_ms() -> u64 {
        10_000
    }
    pub fn pool_mode() -> PoolMode {
        PoolMode::Transaction
    }
    pub fn pin_overflow() -> super::PinOverflow {
        super::PinOverflow::Error
    }
    pub fn prepared_statements_per_connection() -> usize {
        128
    }
    pub fn pool_size() -> usize {
        64
    }
    pub fn queue_timeout_ms() -> u64 {
        5_000
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn idle_timeout_ms() -> u64 {
        600_000
    }
    pub fn max_lifetime_ms() -> u64 {
        3_600_000
    }
    pub fn health_check_interval_ms() -> u64 {
        30_000
    }
}

/// One problem found in a configuration: where, what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.key, self.why)
        } else {
            write!(f, "{} = {}: {}", self.key, self.value, self.why)
        }
    }
}

/// Every problem in a configuration (validation does not stop at the first).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Overrides from the command line, applied before validation.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub backends: Vec<String>,
    pub shards: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

impl Config {
    /// Parses TOML text (syntax and unknown keys are reported by the TOML layer).
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        toml::from_str(text).map_err(|e| {
            let span = e
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            ConfigErrors(vec![ConfigError {
                key: "<file>".into(),
                value: String::new(),
                why: format!("{}{span}", e.message()),
            }])
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: "<file>".into(),
                value: path.display().to_string(),
                why: format!("cannot read: {e}"),
            }])
        })?;
        Config::parse(&text)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(l) = &o.listen {
            self.listen = l.clone();
        }
        if !o.backends.is_empty() {
            self.backends = o
                .backends
                .iter()
                .map(|a| BackendConfig {
                    address: a.clone(),
                    tls: None,
                    role: Default::default(),
                    weight: defaults::weight(),
                })
                .collect();
        }
        if let Some(s) = o.shards {
            self.shards = s;
        }
        if let Some(f) = o.log_format {
            self.log_format = f;
        }
        if let Some(l) = &o.log_level {
            self.log_level = l.clone();
        }
    }

    /// Checks the whole configuration and reports every problem found.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = Vec::new();
        let mut err = |key: &str, value: &dyn fmt::Display, why: &str| {
            errs.push(ConfigError {
                key: key.into(),
                value: value.to_string(),
                why: why.into(),
            })
        };
        if self.listen.parse::<SocketAddr>().is_err() {
            err(
                "listen",
                &format!("{:?}", self.listen),
                "not an IP:port address",
            );
        }
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<SocketAddr>().is_err() {
            err(
                "metrics_listen",
                &format!("{:?}", self.metrics_listen),
                "not an IP:port address (or empty to turn metrics off)",
            );
        }
        if self.workers == 0 || self.workers > 1024 {
            err("workers", &self.workers, "must be between 1 and 1024");
        }
        if self.shards > 1024 {
            err("shards", &self.shards, "more than 1024 shards");
        }
        if self.listen_backlog == 0 {
            err("listen_backlog", &0, "must be at least 1");
        }
        if self.max_packet_size < 1024 || self.max_packet_size > 1 << 30 {
            err(
                "max_packet_size",
                &self.max_packet_size,
                "must be between 1024 and 1073741824 bytes",
            );
        }
        for (key, v) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("net_read_timeout_ms", self.net_read_timeout_ms),
            ("net_write_timeout_ms", self.net_write_timeout_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
        ] {
            if v == 0 {
                err(key, &0, "must be positive");
            }
        }
        if self.auth_failure_delay_ms > 60_000 {
            err(
                "auth_failure_delay_ms",
                &self.auth_failure_delay_ms,
                "longer than a minute",
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            err(
                "log_level",
                &format!("{:?}", self.log_level),
                &format!("not a log filter: {e}"),
            );
        }
        let p = &self.pool;
        if p.size == 0 {
            err("pool.size", &0, "must be at least 1");
        }
        if p.size > 100_000 {
            err(
                "pool.size",
                &p.size,
                "more than 100000 upstream connections",
            );
        }
        for (key, v) in [
            ("pool.queue_timeout_ms", p.queue_timeout_ms),
            ("pool.connect_timeout_ms", p.connect_timeout_ms),
            ("pool.idle_timeout_ms", p.idle_timeout_ms),
            ("pool.max_lifetime_ms", p.max_lifetime_ms),
            ("pool.health_check_interval_ms", p.health_check_interval_ms),
        ] {
            if v == 0 {
                err(key, &0, "must be positive");
            }
        }
        if !p.shard_weights.is_empty() && p.shard_weights.iter().sum::<usize>() == 0 {
            err(
                "pool.shard_weights",
                &format!("{:?}", p.shard_weights),
                "at least one weight must be positive",
            );
        }
        if self.shards > 0 && !p.shard_weights.is_empty() && p.shard_weights.len() != self.shards {
            err(
                "pool.shard_weights",
                &format!("{:?}", p.shard_weights),
                &format!("needs one weight per shard ({} shards)", self.shards),
            );
        }
        if p.pin_budget > p.size {
            err("pool.pin_budget", &p.pin_budget, "larger than pool.size");
        }
        if p.prepared_statements_per_connection == 0
            || p.prepared_statements_per_connection > 16_000
        {
            err(
                "pool.prepared_statements_per_connection",
                &p.prepared_statements_per_connection,
                "must be between 1 and 16000 (the server's max_prepared_stmt_count is shared by all connections)",
            );
        }
        if self.backends.is_empty() {
            err(
                "backends",
                &"[]",
                "at least one [[backends]] entry is needed",
            );
        }
        for (i, b) in self.backends.iter().enumerate() {
            if !(1..=1000).contains(&b.weight) {
                err(
                    &format!("backends[{i}].weight"),
                    &b.weight,
                    "must be between 1 and 1000",
                );
            }
            if self.backends[..i].iter().any(|o| o.address == b.address) {
                err(
                    &format!("backends[{i}].address"),
                    &format!("{:?}", b.address),
                    "listed twice",
                );
            }
            for (field, value, why) in b.problems() {
                err(&format!("backends[{i}].{field}"), &value, &why);
            }
        }
        if !self.admin.listen.is_empty() {
            if self.admin.listen.parse::<SocketAddr>().is_err() {
                err(
                    "admin.listen",
                    &format!("{:?}", self.admin.listen),
                    "expected ip:port",
                );
            }
            if self.admin.users.is_empty() {
                err(
                    "admin.users",
                    &"[]",
                    "the console needs at least one [[admin.users]] entry",
                );
            }
        }
        for (i, u) in self.admin.users.iter().enumerate() {
            if u.name.is_empty() {
                err(
                    &format!("admin.users[{i}].name"),
                    &"\"\"",
                    "must not be empty",
                );
            }
            if let Err(why) =
                crate::auth::Credential::parse(&u.password, Some("mysql_native_password"))
            {
                err(&format!("admin.users[{i}].password"), &"…", &why);
            }
        }
        if self.routing.causal_wait_ms > 60_000 {
            err(
                "routing.causal_wait_ms",
                &self.routing.causal_wait_ms,
                "must be at most 60000",
            );
        }
        if !(1..=3_600_000).contains(&self.routing.max_replication_lag_ms) {
            err(
                "routing.max_replication_lag_ms",
                &self.routing.max_replication_lag_ms,
                "must be between 1 and 3600000",
            );
        }
        if !(100..=3_600_000).contains(&self.dns.ttl_ms) {
            err(
                "dns.ttl_ms",
                &self.dns.ttl_ms,
                "must be between 100 and 3600000",
            );
        }
        if !self.dns.nameserver.is_empty() && self.dns.nameserver.parse::<SocketAddr>().is_err() {
            err(
                "dns.nameserver",
                &format!("{:?}", self.dns.nameserver),
                "expected ip:port",
            );
        }
        let h = &self.health;
        if !(20..=60_000).contains(&h.interval_ms) {
            err(
                "health.interval_ms",
                &h.interval_ms,
                "must be between 20 and 60000",
            );
        }
        if !(10..=60_000).contains(&h.timeout_ms) {
            err(
                "health.timeout_ms",
                &h.timeout_ms,
                "must be between 10 and 60000",
            );
        }
        if !(1..=100).contains(&h.down_after) {
            err(
                "health.down_after",
                &h.down_after,
                "must be between 1 and 100",
            );
        }
        if !(1..=100).contains(&h.up_after) {
            err("health.up_after", &h.up_after, "must be between 1 and 100");
        }
        if h.backoff_ms > 600_000 {
            err("health.backoff_ms", &h.backoff_ms, "must be at most 600000");
        }
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            err(
                "tls",
                &"",
                "tls.cert and tls.key go together (or neither, for a self-signed certificate)",
            );
        }
        if t.min_version != "1.2" && t.min_version != "1.3" {
            err(
                "tls.min_version",
                &format!("{:?}", t.min_version),
                "must be \"1.2\" or \"1.3\"",
            );
        }
        if t.require && !t.enabled {
            err("tls.require", &true, "needs tls.enabled");
        }
        if self.users.is_empty() && self.auth_from_backend.is_none() {
            err(
                "users",
                &"[]",
                "at least one [[users]] entry (or [auth_from_backend]) is needed",
            );
        }
        if let Some(a) = &self.auth_from_backend {
            if a.user.is_empty() {
                err("auth_from_backend.user", &"\"\"", "must not be empty");
            }
            if a.backend_user.is_empty() {
                err(
                    "auth_from_backend.backend_user",
                    &"\"\"",
                    "must not be empty",
                );
            }
            if a.refresh_ms < 1000 {
                err(
                    "auth_from_backend.refresh_ms",
                    &a.refresh_ms,
                    "must be at least 1000",
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let k = |f: &str| format!("users[{i}].{f}");
            if u.name.is_empty() || u.name.len() > 80 || u.name.contains('\0') {
                err(
                    &k("name"),
                    &format!("{:?}", u.name),
                    "must be 1 to 80 characters, no NUL",
                );
            } else if !names.insert(u.name.as_str()) {
                err(&k("name"), &format!("{:?}", u.name), "duplicate user name");
            }
            if u.backend_user.is_empty() {
                err(&k("backend_user"), &"\"\"", "must not be empty");
            }
            if let Err(why) = crate::auth::Credential::parse(&u.password, u.auth_plugin.as_deref())
            {
                let shown = if crate::auth::looks_like_hash(&u.password) {
                    format!("{:?}", u.password)
                } else {
                    "\"…\"".into()
                };
                let key = if why.contains("auth_plugin") {
                    k("auth_plugin")
                } else {
                    k("password")
                };
                err(&key, &shown, &why);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// Shards to run: the configured number, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

fn check_host_port(s: &str) -> Result<(), String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return if path.starts_with('/') {
            Ok(())
        } else {
            Err("a unix: address needs an absolute path".into())
        };
    }
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {port:?} is not a number from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        listen = "127.0.0.1:6033"
        shards = 0
        [pool]
        mode = "session"
        size = 64
        queue_timeout_ms = 5000
        [[backends]]
        address = "127.0.0.1:3306"
        [[users]]
        name = "app"
        password = "app"
        backend_user = "app"
        backend_password = "app"
    "#;

    #[test]
    fn the_documented_minimal_shape_is_valid() {
        let c = Config::parse(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.pool.mode, PoolMode::Session);
        assert_eq!(c.pool.size, 64);
        assert_eq!(c.backends[0].address, "127.0.0.1:3306");
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../config/sluice.example.toml");
        Config::parse(text).unwrap().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = Config::parse("lisen = \"x\"").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_key_value_and_reason() {
        let text = r#"
            listen = "nowhere"
            [pool]
            size = 0
            [[backends]]
            address = "db:99999"
            [[users]]
            name = "app"
            password = "*ZZZ"
            backend_user = ""
        "#;
        let errs = Config::parse(text).unwrap().validate().unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "pool.size",
                "backends[0].address",
                "users[0].backend_user",
                "users[0].password"
            ]
        );
        let msg = errs.to_string();
        assert!(
            msg.contains("listen = \"nowhere\": not an IP:port address"),
            "{msg}"
        );
        assert!(msg.contains("port \"99999\""), "{msg}");
    }

    #[test]
    fn shard_weights_need_one_positive_weight_per_shard() {
        let with = |shards: &str, w: &str| {
            let text = MINIMAL.replace("shards = 0", shards).replace(
                "queue_timeout_ms = 5000",
                &format!("queue_timeout_ms = 5000\nshard_weights = {w}"),
            );
            Config::parse(&text).unwrap().validate()
        };
        with("shards = 2", "[3, 1]").unwrap();
        let errs = with("shards = 2", "[1, 1, 1]").unwrap_err().to_string();
        assert!(
            errs.contains("needs one weight per shard (2 shards)"),
            "{errs}"
        );
        let errs = with("shards = 2", "[0, 0]").unwrap_err().to_string();
        assert!(
            errs.contains("at least one weight must be positive"),
            "{errs}"
        );
    }

    #[test]
    fn overrides_win() {
        let mut c = Config::parse(MINIMAL).unwrap();
        c.apply(&Overrides {
            listen: Some("0.0.0.0:7000".into()),
            backends: vec!["10.0.0.1:3306".into(), "10.0.0.2:3306".into()],
            shards: Some(3),
            ..Overrides::default()
        });
        c.validate().unwrap();
        assert_eq!(c.listen, "0.0.0.0:7000");
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.shard_count(), 3);
    }
}
