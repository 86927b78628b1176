//! Reloading the configuration in one step (SIGHUP, the console's `RELOAD`, the admin request
//! `RELOAD`): the whole file is read and validated again (with the command line's overrides), then
//! compared with what runs. What can change live is applied; everything else is *reported* as
//! needing a restart, by key: nothing is refused silently, and no client is dropped.
//!
//! Applied live today: the backends (added, removed, weights). Removing a backend takes it out of
//! the router at once; sessions holding it finish there and its connections close as they come
//! back. Every other section is compared and reported (the shards and the sessions read them
//! from the configuration sluice started with). Which is which is decided here, in one place:
//! [`RELOADABLE`].

use crate::backend::router::{Admin, Role};
use crate::config::{BackendConfig, Config};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The keys a reload applies; every other key that differs is reported as needing a restart.
pub const RELOADABLE: &[&str] = &["backends[].address", "backends[].weight"];

/// Where the configuration came from: the file and the command line's overrides (set once by
/// `main`; a reload reads the same file and applies the same overrides).
static SOURCE: OnceLock<(PathBuf, crate::config::Overrides)> = OnceLock::new();

pub fn set_source(path: PathBuf, overrides: crate::config::Overrides) {
    let _ = SOURCE.set((path, overrides));
}

/// Reads, overrides and validates the configuration again.
pub fn load() -> Result<Config, String> {
    let (path, overrides) = SOURCE
        .get()
        .ok_or("this process was not started from a configuration file")?;
    let mut cfg = Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    cfg.apply(overrides);
    cfg.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

/// A backend as it runs now.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub address: String,
    pub role: Role,
    pub weight: u32,
}

/// What a reload does.
#[derive(Debug, Default)]
pub struct Plan {
    pub add: Vec<BackendConfig>,
    pub remove: Vec<String>,
    pub weights: Vec<(String, u32)>,
    /// Keys that differ but take effect only after a restart.
    pub restart: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.weights.is_empty()
            && self.restart.is_empty()
    }
}

/// Compares the new configuration with what runs: the backends listed now (`running`, not
/// removed) and the configuration the process started with (`started`).
pub fn plan(started: &Config, running: &[Running], new: &Config) -> Plan {
    let mut p = Plan::default();
    for (i, b) in new.backends.iter().enumerate() {
        match running.iter().find(|r| r.address == b.address) {
            None => p.add.push(b.clone()),
            Some(r) => {
                if r.weight != b.weight {
                    p.weights.push((b.address.clone(), b.weight));
                }
                if r.role != b.role {
                    p.restart.push(format!("backends[{i}].role"));
                }
            }
        }
        let tls_then = started
            .backends
            .iter()
            .find(|o| o.address == b.address)
            .map(|o| format!("{:?}", o.tls));
        if tls_then.is_some_and(|t| t != format!("{:?}", b.tls)) {
            p.restart.push(format!("backends[{i}].tls"));
        }
    }
    for r in running {
        if !new.backends.iter().any(|b| b.address == r.address) {
            p.remove.push(r.address.clone());
        }
    }
    // Every other part of the file: compared as written, reported when it differs.
    let parts = |c: &Config| -> Vec<(&'static str, String)> {
        vec![
            ("listen", format!("{:?}", c.listen)),
            ("shards", format!("{:?}", c.shards)),
            ("workers", format!("{:?}", c.workers)),
            ("listen_backlog", format!("{:?}", c.listen_backlog)),
            ("log_format", format!("{:?}", c.log_format)),
            ("log_level", format!("{:?}", c.log_level)),
            ("max_packet_size", format!("{:?}", c.max_packet_size)),
            (
                "handshake_timeout_ms",
                format!("{:?}", c.handshake_timeout_ms),
            ),
            (
                "auth_failure_delay_ms",
                format!("{:?}", c.auth_failure_delay_ms),
            ),
            (
                "net_read_timeout_ms",
                format!("{:?}", c.net_read_timeout_ms),
            ),
            (
                "net_write_timeout_ms",
                format!("{:?}", c.net_write_timeout_ms),
            ),
            (
                "client_idle_timeout_ms",
                format!("{:?}", c.client_idle_timeout_ms),
            ),
            ("auth_failure_limit", format!("{:?}", c.auth_failure_limit)),
            (
                "max_client_connections",
                format!("{:?}", c.max_client_connections),
            ),
            ("metrics_listen", format!("{:?}", c.metrics_listen)),
            (
                "shutdown_timeout_ms",
                format!("{:?}", c.shutdown_timeout_ms),
            ),
            ("pool", format!("{:?}", c.pool)),
            ("tls", format!("{:?}", c.tls)),
            ("health", format!("{:?}", c.health)),
            ("dns", format!("{:?}", c.dns)),
            ("admin", format!("{:?}", c.admin)),
            ("users", format!("{:?}", c.users)),
            ("auth_from_backend", format!("{:?}", c.auth_from_backend)),
        ]
    };
    for ((key, then), (_, now)) in parts(started).into_iter().zip(parts(new)) {
        if then != now {
            p.restart.push(key.to_string());
        }
    }
    p
}

/// Reloads this process: plans against what runs, applies what can change live, and says what
/// it did and what needs a restart (one line, for the admin request and the log).
pub fn run(shared: &crate::shared::Shared) -> String {
    let new = match load() {
        Ok(c) => c,
        Err(e) => return format!("ERR 1105 HY000 reload refused, nothing changed: {e}"),
    };
    let listed = shared.backends.snapshot();
    let running: Vec<Running> = listed
        .iter()
        .filter(|b| b.admin() != Admin::Removed)
        .map(|b| Running {
            address: b.address.clone(),
            role: b.role,
            weight: b.weight(),
        })
        .collect();
    let p = plan(&shared.config, &running, &new);
    let mut done: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for b in &p.add {
        match crate::shared::add_backend(
            &shared.backends,
            b,
            crate::backend::health::Health::Down,
            &shared.config.dns,
        ) {
            Ok(_) => done.push(format!("backend {} added", b.address)),
            Err(e) => failed.push(format!("backend {}: {e}", b.address)),
        }
    }
    for a in &p.remove {
        if let Some(b) = shared.backends.find(a) {
            b.set_admin(Admin::Removed);
            done.push(format!("backend {a} removed"));
        }
    }
    for (a, w) in &p.weights {
        if let Some(b) = shared.backends.find(a) {
            b.weight.store(*w, std::sync::atomic::Ordering::Relaxed);
            done.push(format!("backend {a} weight {w}"));
        }
    }
    let mut out = if failed.is_empty() {
        "OK".to_string()
    } else {
        format!("ERR 1105 HY000 not applied: {};", failed.join("; "))
    };
    out.push_str(&format!(
        " applied: {}",
        if done.is_empty() {
            "nothing".to_string()
        } else {
            done.join(", ")
        }
    ));
    if !p.restart.is_empty() {
        out.push_str(&format!("; needs a restart: {}", p.restart.join(", ")));
    }
    tracing::info!(result = %out, "configuration reloaded");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let base = "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n";
        Config::parse(&format!("{extra}\n{base}")).unwrap()
    }

    fn running(c: &Config) -> Vec<Running> {
        c.backends
            .iter()
            .map(|b| Running {
                address: b.address.clone(),
                role: b.role,
                weight: b.weight,
            })
            .collect()
    }

    #[test]
    fn plans() {
        let a = "[[backends]]\naddress = \"10.0.0.1:3306\"\n";
        let b = "[[backends]]\naddress = \"10.0.0.2:3306\"\n";
        let started = cfg(&format!("{a}{b}"));
        let cases: Vec<(&str, String, Plan)> = vec![
            ("nothing changed", format!("{a}{b}"), Plan::default()),
            (
                "one added, one removed",
                format!("{a}[[backends]]\naddress = \"10.0.0.3:3306\"\n"),
                Plan {
                    add: cfg("[[backends]]\naddress = \"10.0.0.3:3306\"\n").backends,
                    remove: vec!["10.0.0.2:3306".into()],
                    ..Plan::default()
                },
            ),
            (
                "a weight changes live, a role needs a restart",
                format!("{a}[[backends]]\naddress = \"10.0.0.2:3306\"\nweight = 5\nrole = \"replica\"\n"),
                Plan {
                    weights: vec![("10.0.0.2:3306".into(), 5)],
                    restart: vec!["backends[1].role".into()],
                    ..Plan::default()
                },
            ),
            (
                "other sections are reported by key",
                format!("shards = 3\nclient_idle_timeout_ms = 5\n{a}{b}[pool]\nsize = 3\n"),
                Plan {
                    restart: vec![
                        "shards".into(),
                        "client_idle_timeout_ms".into(),
                        "pool".into(),
                    ],
                    ..Plan::default()
                },
            ),
        ];
        for (name, text, want) in cases {
            let new = cfg(&text);
            let got = plan(&started, &running(&started), &new);
            assert_eq!(got.add.len(), want.add.len(), "{name}");
            for (g, w) in got.add.iter().zip(&want.add) {
                assert_eq!(g.address, w.address, "{name}");
            }
            assert_eq!(got.remove, want.remove, "{name}");
            assert_eq!(got.weights, want.weights, "{name}");
            assert_eq!(got.restart, want.restart, "{name}");
        }
    }
}
