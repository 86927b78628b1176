//! Reloading the configuration in one step (SIGHUP, the console's `RELOAD`, the admin request
//! `RELOAD`): the whole file is read and validated again (with the command line's overrides), then
//! compared with what runs. What can change live is applied; everything else is *reported* as
//! needing a restart, by key: nothing is refused silently, and no client is dropped.
//!
//! Applied live: the backends (added, removed, weights) and the keys `keys!` marks live (timeouts,
//! limits, `pool.size`, `[health]`, `[dns]`, the users, TLS certificates), which everything reads
//! from the live configuration. Removing a backend takes it out of the router at once; sessions
//! holding it finish there and its connections close as they come back. A new `pool.size` gives
//! every shard its fresh share (slots lent between shards are forgotten; connections above a
//! shrunk share close as they come back); with worker processes it is written in the host budget
//! instead, and the workers above their new fair share give slots back as their connections are
//! released (see [`crate::backend::budget`]).
//!
//! Users (see [`crate::users`]): the new list is published with the live configuration, so the
//! next login on any shard checks it; a removed user's sessions keep running until they end (a
//! reload drops no client); a user whose `backend_user` / `backend_password` changed has its
//! pooled connections retired (idle ones close at once, busy ones as they come back) and new
//! ones opened with the new account; a changed password forgets the caching_sha2 fast-path
//! hashes learned for the old one. Limits and routing options apply to new logins.
//!
//! TLS: when `tls.cert` and `tls.key` are set, every reload reads both files again (a
//! certificate renewed in place is picked up without any key changing); new handshakes use
//! the new certificate, sessions already encrypted keep theirs. Files that do not load leave
//! the running certificate in place and the reload says so. `tls.enabled` needs a restart.
//!
//! `SET key = value` (the console; [`set`]) goes the same way for one key: the live
//! configuration with that key changed is validated whole, then [`apply`] applies it as a
//! reload that found only that change (the backends left as they run). Until the next reload:
//! a reload compares the file with what runs, so the file's value wins again.
//!
//! What needs a restart: the listeners, shards and workers, turning TLS on or off, pool mode,
//! timeouts baked into open pools (connect, query), the pin budget, `[auth_from_backend]`,
//! the console's own users. Which is which is decided here, in one place, and the console's
//! `SHOW CONFIG` lists it from the same place.

use crate::backend::router::{Admin, Role};
use crate::config::{BackendConfig, Config};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Every key of the file but the backends, in one list: its name, whether a reload applies it
/// (`live`) or it needs a restart, and where it is. From it come the comparison (`parts`),
/// what a reload copies into the live configuration ([`merge_live`]), so a key marked live is
/// always applied, and the console's `SHOW CONFIG` ([`show`]), so what it calls reloadable is
/// what a reload applies. Everything that reads a live key reads the live configuration (`Shard::cfg`,
/// `Shared::live`).
macro_rules! keys {
    ($($name:literal: $when:ident => $($field:ident).+;)*) => {
        /// Every key (but the backends): its name, whether a reload applies it, and its value
        /// in `a` and in `b` as written.
        fn parts(a: &Config, b: &Config) -> Vec<(&'static str, bool, String, String)> {
            vec![$((
                $name,
                keys!(@live $when),
                format!("{:?}", a.$($field).+),
                format!("{:?}", b.$($field).+),
            )),*]
        }

        /// Every key (but the backends) as `SHOW CONFIG` lists it: its name, whether a reload
        /// applies it, and its value in `c` (secrets hidden: see [`shown`]).
        pub fn show(c: &Config) -> Vec<Shown> {
            vec![$(Shown {
                name: $name.to_string(),
                reloadable: keys!(@live $when),
                value: shown(&c.$($field).+),
            }),*]
        }

        /// Whether a reload applies `name` (`None`: no such key).
        pub fn reloadable(name: &str) -> Option<bool> {
            match name {
                $($name => Some(keys!(@live $when)),)*
                _ => None,
            }
        }

        /// Sets key `name` of `c` from the console's text `value` (see [`set_value`]);
        /// `None`: no such key.
        fn set_key(c: &mut Config, name: &str, value: &str) -> Option<Result<(), String>> {
            match name {
                $($name => Some(set_value(&mut c.$($field).+, value)),)*
                _ => None,
            }
        }

        /// The live configuration after a reload: `new`'s live keys and backends, `running`'s
        /// everything else (what needs a restart keeps running as it started).
        pub fn merge_live(running: &Config, new: &Config) -> Config {
            let mut live = running.clone();
            $(keys!(@merge $when, live, new, $($field).+);)*
            live.backends = new.backends.clone();
            live
        }
    };
    (@live live) => { true };
    (@live restart) => { false };
    (@merge live, $l:ident, $n:ident, $($field:ident).+) => {
        $l.$($field).+ = $n.$($field).+.clone()
    };
    (@merge restart, $l:ident, $n:ident, $($field:ident).+) => {
        ()
    };
}

keys! {
    "listen": restart => listen;
    "shards": restart => shards;
    "workers": restart => workers;
    "listen_backlog": restart => listen_backlog;
    "log_format": restart => log_format;
    "log_level": restart => log_level;
    "max_packet_size": live => max_packet_size;
    "handshake_timeout_ms": live => handshake_timeout_ms;
    "auth_failure_delay_ms": live => auth_failure_delay_ms;
    "net_read_timeout_ms": live => net_read_timeout_ms;
    "net_write_timeout_ms": live => net_write_timeout_ms;
    "client_idle_timeout_ms": live => client_idle_timeout_ms;
    "auth_failure_limit": live => auth_failure_limit;
    "max_client_connections": live => max_client_connections;
    "processlist": live => processlist;
    "metrics_listen": restart => metrics_listen;
    "shutdown_timeout_ms": restart => shutdown_timeout_ms;
    "pool.mode": restart => pool.mode;
    "pool.size": live => pool.size;
    "pool.queue_timeout_ms": live => pool.queue_timeout_ms;
    "pool.connect_timeout_ms": restart => pool.connect_timeout_ms;
    "pool.idle_timeout_ms": live => pool.idle_timeout_ms;
    "pool.max_lifetime_ms": live => pool.max_lifetime_ms;
    "pool.health_check_interval_ms": live => pool.health_check_interval_ms;
    "pool.query_timeout_ms": restart => pool.query_timeout_ms;
    "pool.pin_budget": restart => pool.pin_budget;
    "pool.pin_overflow": live => pool.pin_overflow;
    "pool.shard_weights": restart => pool.shard_weights;
    "pool.prepared_statements_per_connection": live => pool.prepared_statements_per_connection;
    "tls.enabled": restart => tls.enabled;
    "tls.cert": live => tls.cert;
    "tls.key": live => tls.key;
    "tls.require": live => tls.require;
    "tls.min_version": live => tls.min_version;
    "health": live => health;
    "dns": live => dns;
    "routing": restart => routing;
    "admin": restart => admin;
    "users": live => users;
    "auth_from_backend": restart => auth_from_backend;
}

/// A key as `SHOW CONFIG` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    pub name: String,
    /// As written in the file (a table or list as compact JSON); `None` for an unset option.
    pub value: Option<String>,
    pub reloadable: bool,
}

/// A value as `SHOW CONFIG` shows it: a string as it is, an unset option as `None`, anything
/// else as compact JSON, with every field whose name says `password` hidden (a
/// mysql_native_password hash logs in as well as the password does). Hiding by name rather
/// than by marking each field means a secret added later is hidden without anyone
/// remembering to.
fn shown<T: serde::Serialize>(v: &T) -> Option<String> {
    let mut v = match serde_json::to_value(v) {
        Ok(v) => v,
        Err(e) => return Some(format!("(not shown: {e})")),
    };
    hide_secrets(&mut v);
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Replaces the value of every non-empty field named `…password…`, at any depth.
fn hide_secrets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let secret = k.to_ascii_lowercase().contains("password")
                    && !matches!(x, serde_json::Value::Null)
                    && x.as_str() != Some("");
                if secret {
                    *x = serde_json::Value::String("(hidden)".into());
                } else {
                    hide_secrets(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(hide_secrets),
        _ => {}
    }
}

/// The configured backends as `SHOW CONFIG` lists them, one row per field: the address
/// (adding or removing a backend is applied live), the weight (live), the role and TLS (a
/// restart), as [`plan`] treats them. What runs now, with backends added or removed from the
/// console, is `SHOW BACKENDS`.
pub fn show_backends(c: &Config) -> Vec<Shown> {
    let mut out = Vec::new();
    for (i, b) in c.backends.iter().enumerate() {
        let row = |field: &str, value: Option<String>, reloadable: bool| Shown {
            name: format!("backends[{i}].{field}"),
            value,
            reloadable,
        };
        out.push(row("address", Some(b.address.clone()), true));
        out.push(row("role", Some(b.role.name().to_string()), false));
        out.push(row("weight", Some(b.weight.to_string()), true));
        out.push(row("tls", shown(&b.tls), false));
    }
    out
}

/// A value typed at the console (`SET key = value`) as the key's type: a number for a number,
/// `true`/`false`/`on`/`off`/`1`/`0` for a switch, the text for a string (and for an unset
/// option: a number if it reads as one, `NULL` unsets it). Tables and lists (`users`,
/// `health`, `dns`) are refused: they are edited in the file and reloaded.
fn set_value<T: serde::Serialize + serde::de::DeserializeOwned>(
    field: &mut T,
    text: &str,
) -> Result<(), String> {
    use serde_json::Value;
    let current = serde_json::to_value(&*field).map_err(|e| e.to_string())?;
    let v = match current {
        Value::Number(_) => match serde_json::from_str::<Value>(text) {
            Ok(n @ Value::Number(_)) => n,
            _ => return Err(format!("{text:?} is not a number")),
        },
        Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "on" | "1" => Value::Bool(true),
            "false" | "off" | "0" => Value::Bool(false),
            _ => {
                return Err(format!(
                    "{text:?} is not a switch (ON, OFF, true, false, 1, 0)"
                ))
            }
        },
        Value::String(_) => Value::String(text.to_string()),
        Value::Null if text.eq_ignore_ascii_case("NULL") => Value::Null,
        Value::Null => match serde_json::from_str::<Value>(text) {
            Ok(n @ Value::Number(_)) => n,
            _ => Value::String(text.to_string()),
        },
        Value::Object(_) | Value::Array(_) => {
            return Err(
                "a table or list is not set from the console: change it in the file and RELOAD"
                    .to_string(),
            )
        }
    };
    *field = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(())
}

/// What `SET key = value` decides before anything is applied: the new configuration (the live
/// one with that key changed, validated whole), or the MySQL error the console answers (code,
/// SQLSTATE, message) as the server answers `SET` of a variable it does not have (1193), of a
/// read-only one (1238) and of a wrong value (1231).
pub fn set_plan(live: &Config, key: &str, value: &str) -> Result<Config, (u16, [u8; 5], String)> {
    match reloadable(key) {
        None => {
            return Err((
                1193,
                *b"HY000",
                format!("Unknown system variable '{key}' (SHOW CONFIG lists sluice's settings)"),
            ))
        }
        Some(false) => {
            return Err((
                1238,
                *b"HY000",
                format!(
                    "Variable '{key}' is a read only variable: it needs a restart (change the file and restart sluice)"
                ),
            ))
        }
        Some(true) => {}
    }
    let wrong = |why: String| {
        (
            1231,
            *b"42000",
            format!("Variable '{key}' can't be set to the value of '{value}': {why}"),
        )
    };
    let mut new = live.clone();
    match set_key(&mut new, key, value) {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(wrong(e)),
        None => return Err(wrong("no such key".into())),
    }
    new.validate().map_err(|e| wrong(e.to_string()))?;
    Ok(new)
}

/// `SET key = value` in this process: applied exactly as a reload that finds only this key
/// changed applies it ([`apply`]: every shard picks it up). The file is not written: the next
/// reload (SIGHUP, RELOAD) makes the live value the file's again, as PgBouncer's and
/// ProxySQL's reloads do. Answers as [`run`] does; a refusal is `ERR <code> <sqlstate> …`.
pub fn set(shared: &crate::shared::Shared, key: &str, value: &str) -> String {
    let live = shared.live();
    match set_plan(&live, key, value) {
        Ok(new) => {
            let out = apply(shared, &new, Scope::Keys);
            tracing::info!(%key, %value, result = %out, "SET from the console");
            out
        }
        Err((code, state, msg)) => {
            format!("ERR {code} {} {msg}", String::from_utf8_lossy(&state))
        }
    }
}

/// What a reload compares: the file's whole configuration, or the live one with keys changed
/// (`SET`: the backends are left as they run, console-added ones included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    File,
    Keys,
}

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
    /// Reloadable keys that differ (applied).
    pub live: Vec<String>,
    /// Keys that differ but take effect only after a restart.
    pub restart: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.weights.is_empty()
            && self.live.is_empty()
            && self.restart.is_empty()
    }
}

/// Compares the new configuration with what runs: the backends listed now (`running`, not
/// removed) and the live configuration (`started`: as the process started, with what earlier
/// reloads applied).
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
    // Every other part of the file: applied when reloadable, else reported.
    for (key, live, then, now) in parts(started, new) {
        if then != now {
            if live {
                p.live.push(key.to_string());
            } else {
                p.restart.push(key.to_string());
            }
        }
    }
    p
}

/// Is TLS towards clients read from files (which a reload reads again)?
fn tls_from_files(c: &Config) -> bool {
    c.tls.cert.is_some() && c.tls.key.is_some()
}

/// Reloads this process: plans against what runs, applies what can change live, and says what
/// it did and what needs a restart (one line, for the admin request and the log).
pub fn run(shared: &crate::shared::Shared) -> String {
    let new = match load() {
        Ok(c) => c,
        Err(e) => return format!("ERR 1105 HY000 reload refused, nothing changed: {e}"),
    };
    let out = apply(shared, &new, Scope::File);
    tracing::info!(result = %out, "configuration reloaded");
    out
}

/// Applies `new` (validated) to this process in numbered steps: plan against what runs, users,
/// backends, TLS, then the live keys published to every shard.
fn apply(shared: &crate::shared::Shared, new: &Config, scope: Scope) -> String {
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
    let live = shared.live();
    let mut p = plan(&live, &running, new);
    if scope == Scope::Keys {
        // The backends stay as they run (the live list may differ from the file's).
        p.add.clear();
        p.remove.clear();
        p.weights.clear();
    }
    let mut merged = merge_live(&live, new);
    // The users first: nothing is applied if they do not build (validation parsed them already).
    let users = if p.live.iter().any(|k| k == "users") {
        let old = shared.users();
        match crate::users::Users::build(&merged, Some(&old)) {
            Ok(u) => Some((crate::users::diff(&old, &u), u)),
            Err(e) => return format!("ERR 1105 HY000 reload refused, nothing changed: users: {e}"),
        }
    } else {
        None
    };
    let mut done: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for b in &p.add {
        match crate::shared::add_backend(
            &shared.backends,
            b,
            crate::backend::health::Health::Down,
            &new.dns,
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
    let tls_changed = p.live.iter().any(|k| k.starts_with("tls."));
    let mut tls_failed = false;
    let reread = scope == Scope::File && tls_from_files(new);
    if shared.config.tls.enabled && (tls_changed || reread) {
        match crate::tls::server_config(&new.tls) {
            Ok((c, _)) => {
                shared.set_tls(c);
                done.push(match &new.tls.cert {
                    Some(cert) => format!("TLS certificate read from {cert} for new handshakes"),
                    None => "TLS settings for new handshakes".to_string(),
                });
            }
            Err(e) => {
                failed.push(format!("{e} (new handshakes keep the running certificate)"));
                merged.tls = live.tls.clone();
                tls_failed = true;
            }
        }
    }
    if !p.live.is_empty() {
        // Shards pick the new values up at their next look (a login, a command, or their
        // janitor's second), resizing their pools when pool.size changed and retiring the
        // connections of users whose backend account changed.
        let users_diff = users.as_ref().map(|(d, _)| d.describe());
        shared.set_live(merged, users.map(|(_, u)| u));
        for k in &p.live {
            if tls_failed && k.starts_with("tls.") {
                continue;
            }
            match (k.as_str(), &users_diff) {
                ("users", Some(lines)) if !lines.is_empty() => done.extend(lines.iter().cloned()),
                _ => done.push(format!("{k} changed")),
            }
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
    fn show_config_lists_every_key_once_with_secrets_hidden() {
        let c = cfg("[health]\nuser = \"mon\"\npassword = \"s3cret\"\n[[backends]]\naddress = \"10.0.0.1:3306\"\n");
        let rows = show(&c);
        // The same list as the comparison: every key, once.
        let compared: Vec<&str> = parts(&c, &c).iter().map(|p| p.0).collect();
        let listed: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(listed, compared);
        let get = |name: &str| rows.iter().find(|r| r.name == name).unwrap().clone();
        #[rustfmt::skip]
        let table: &[(&str, Option<&str>, bool)] = &[
            ("pool.size", Some("64"), true),
            ("pool.mode", Some("transaction"), false),
            ("listen", Some("127.0.0.1:6033"), false),
            ("client_idle_timeout_ms", Some("0"), true),
            ("auth_from_backend", None, false),
        ];
        for (name, value, reloadable) in table {
            let r = get(name);
            assert_eq!(r.value.as_deref(), *value, "{name}");
            assert_eq!(r.reloadable, *reloadable, "{name}");
        }
        let all = format!("{rows:?}");
        assert!(!all.contains("s3cret"), "{all}");
        assert!(get("health").value.unwrap().contains(r#""user":"mon""#));
        let users = get("users").value.unwrap();
        assert!(users.contains(r#""password":"(hidden)""#), "{users}");
        assert!(
            users.contains(r#""backend_password":"(hidden)""#),
            "{users}"
        );
        let b = show_backends(&c);
        assert_eq!(b.len(), 4);
        assert_eq!(b[0].name, "backends[0].address");
        assert_eq!(b[0].value.as_deref(), Some("10.0.0.1:3306"));
        assert_eq!(
            (b[1].value.as_deref(), b[1].reloadable),
            (Some("any"), false)
        );
        assert_eq!(b[3].value, None, "no TLS");
    }

    #[test]
    fn set_decides_before_applying() {
        let live =
            cfg("[[backends]]\naddress = \"10.0.0.1:3306\"\n[pool]\nqueue_timeout_ms = 1000\n");
        type Want = Result<(&'static str, &'static str), (u16, &'static [u8; 5], &'static str)>;
        #[rustfmt::skip]
        let table: &[(&str, &str, Want)] = &[
            ("pool.queue_timeout_ms", "250", Ok(("pool.queue_timeout_ms", "250"))),
            ("pool.size", "8", Ok(("pool.size", "8"))),
            ("pool.pin_overflow", "wait", Ok(("pool.pin_overflow", "wait"))),
            ("client_idle_timeout_ms", "5000", Ok(("client_idle_timeout_ms", "5000"))),
            ("tls.cert", "/etc/c.pem", Err((1231, b"42000", "tls.cert and tls.key go together"))),
            ("listen", "0.0.0.0:1", Err((1238, b"HY000", "Variable 'listen' is a read only variable: it needs a restart"))),
            ("pool.mode", "session", Err((1238, b"HY000", "'pool.mode'"))),
            ("no.such", "1", Err((1193, b"HY000", "Unknown system variable 'no.such'"))),
            ("backends", "1", Err((1193, b"HY000", "'backends'"))),
            ("pool.queue_timeout_ms", "soon", Err((1231, b"42000", "Variable 'pool.queue_timeout_ms' can't be set to the value of 'soon': \"soon\" is not a number"))),
            ("pool.queue_timeout_ms", "-1", Err((1231, b"42000", "can't be set to the value of '-1'"))),
            ("pool.size", "0", Err((1231, b"42000", "pool.size"))),
            ("pool.pin_overflow", "maybe", Err((1231, b"42000", "pool.pin_overflow"))),
            ("users", "[]", Err((1231, b"42000", "change it in the file and RELOAD"))),
            ("health", "{}", Err((1231, b"42000", "table or list"))),
        ];
        for (key, value, want) in table {
            let got = set_plan(&live, key, value);
            match (got, want) {
                (Ok(new), Ok((k, v))) => {
                    let row = show(&new).into_iter().find(|r| r.name == *k).unwrap();
                    assert_eq!(row.value.unwrap_or_default(), *v, "{key} {value}");
                    // Nothing else changed.
                    let p = plan(&live, &running(&live), &new);
                    assert_eq!(p.live, vec![k.to_string()], "{key} {value}");
                    assert!(p.restart.is_empty(), "{key} {value}");
                }
                (Err((code, state, msg)), Err((c, s, m))) => {
                    assert_eq!((code, &state), (*c, *s), "{key} {value}: {msg}");
                    assert!(msg.contains(m), "{key} {value}: {msg}");
                }
                (got, want) => panic!("{key} {value}: {:?} vs {want:?}", got.map(|_| ())),
            }
        }
    }

    #[test]
    fn secrets_are_hidden_at_any_depth() {
        #[rustfmt::skip]
        let table: &[(&str, &str)] = &[
            (r#"{"password":"x"}"#, r#"{"password":"(hidden)"}"#),
            (r#"{"password":""}"#, r#"{"password":""}"#),
            (r#"{"password":null}"#, r#"{"password":null}"#),
            (r#"[{"a":{"Backend_Password":"y"}}]"#, r#"[{"a":{"Backend_Password":"(hidden)"}}]"#),
            (r#"{"user":"u","n":1}"#, r#"{"n":1,"user":"u"}"#),
        ];
        for (input, want) in table {
            let mut v: serde_json::Value = serde_json::from_str(input).unwrap();
            hide_secrets(&mut v);
            let want: serde_json::Value = serde_json::from_str(want).unwrap();
            assert_eq!(v, want, "{input}");
        }
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
                "other keys: applied when reloadable, else reported",
                format!("shards = 3\nclient_idle_timeout_ms = 5\n{a}{b}[pool]\nsize = 3\nmode = \"session\"\n"),
                Plan {
                    live: vec!["client_idle_timeout_ms".into(), "pool.size".into()],
                    restart: vec!["shards".into(), "pool.mode".into()],
                    ..Plan::default()
                },
            ),
            (
                "users and TLS certificates apply live; turning TLS off needs a restart",
                format!("{a}{b}[tls]\nenabled = false\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n[[users]]\nname = \"other\"\npassword = \"x\"\nbackend_user = \"x\"\n"),
                Plan {
                    live: vec!["tls.cert".into(), "tls.key".into(), "users".into()],
                    restart: vec!["tls.enabled".into()],
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
            assert_eq!(got.live, want.live, "{name}");
            assert_eq!(got.restart, want.restart, "{name}");
        }
    }
}
