//! The worker admin socket: how the processes of one sluice instance reach each other. Each worker
//! listens on an abstract Unix socket named after the supervisor's pid and its own index (no file
//! to clean up). A request is one line; the answer is one line:
//!
//! - `KILL <connection id> <query|connection> <user index>` → `OK` or
//!   `ERR <code> <sqlstate> <message>`: KILL for a session living in this worker;
//! - `KILL WHERE USER <name>` / `KILL WHERE SOURCE <ip>` → `OK <n>`: ends every client of
//!   this worker logged in as that user (the rest of the line, spaces included) or connected
//!   from that address, each as `KILL CONNECTION` by the admin does; `n` is how many ended;
//! - `PING` → `OK`: the process is up (it opens this socket only once all its shards listen;
//!   the supervisor waits for every worker's answer before telling systemd it is ready);
//! - `STATS` → this worker's shard snapshots as JSON (the supervisor sums them for `/metrics`);
//! - `CLIENTS` → this worker's clients as JSON (id, user, state, schema, backend, idle time,
//!   what holds it on its backend); `CLIENTS HERE`: this process's alone, during a handover;
//! - `RELOAD` → re-reads the configuration file, applies what can change live, says what needs
//!   a restart (see [`crate::reload`]);
//! - `CONFIG` → this process's live configuration as JSON, one row per key (name, value with
//!   secrets hidden, reloadable), then the configured backends' fields (see
//!   [`crate::reload::show`]);
//! - `RECONNECT [<id or address>]` → retires the pooled connections to that backend (or to
//!   every backend): idle ones close now, busy ones as they come back, new ones are opened as
//!   needed; JSON per backend: connections `closed` now and `closing` (out now: leased, held
//!   by a session, or being opened);
//! - `BACKENDS` → the backends as JSON (state, health, role, weight, connections held);
//! - `BACKEND ADD <address> [any|primary|replica] [weight] [TLS <verify 0|1> <ca> <server name>]`
//!   → `OK <id>` (the CA file's path and the server name hex-encoded, `-` for none: a path may
//!   hold spaces; checked as the file's `[[backends]]` are);
//!   `BACKEND DRAIN <id or address> [TIMEOUT <ms>]` → `OK` (after the timeout, sessions that still
//!   hold the backend are closed with an error naming what kept them there);
//!   `BACKEND UNDRAIN|MAINTENANCE|REMOVE <id or address>` → `OK`;
//! - `PAUSE` / `RESUME` / `PAUSE STATUS` → JSON (paused, running, in_transaction, waiting):
//!   pauses, resumes or only reads every shard's pause and counts what its sessions are doing
//!   (see [`crate::shard::pause`]; the console's PAUSE waits by asking `PAUSE STATUS`);
//! - `ACCEPT STOP` → `OK <clients>`: every shard closes its listener (new connections are
//!   refused) and keeps serving its clients (SHUTDOWN WAIT_FOR_CLIENTS);
//! - `SET <key> <value>` → as `RELOAD` answers: one reloadable key changed as a reload
//!   applying that one change would (see [`crate::reload::set`]).
//!
//! A single process (no workers) serves the same socket, named after its own pid, worker 0;
//! `sluice ctl --pid PID 'REQUEST'` sends a request to every worker of an instance.
//!
//! During an upgrade's handover the clients of one process (or worker) are in two: the old
//! process and its successor, which may both answer this socket. `CLIENTS`, `STATS` and `KILL
//! WHERE` then answer for both: the process asked adds the other's part, asked over the KILL
//! line between them ([`crate::upgrade::peer::ask_admin`], [`merge`]). A client on its way
//! between them (sent, not yet adopted: well under a millisecond, unless the successor is slow)
//! is in neither part.
//!
//! Abstract sockets have no file permissions, so every connection's peer credentials are checked:
//! only processes of sluice's own user (or root) are served.

use crate::error::Reply;
use crate::metrics::ShardSnapshot;
use crate::shard::table::KillKind;
use crate::shard::{Reply1, ShardMsg};
use crate::shared::{IdLayout, Shared};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How long a request's answer may take (but a KILL's: [`KILL_TIMEOUT`]).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker's shard may take over a `KILL` request: during an upgrade's handover it
/// may wait for a session on its way, then ask the other process (see `upgrade::peer`).
const KILL_WAIT: Duration = Duration::from_secs(
    crate::upgrade::peer::TRANSIT_WAIT.as_secs() + crate::upgrade::peer::ASK_TIMEOUT.as_secs() + 5,
);
/// How long whoever sends a `KILL` request waits for its answer (longer than the worker's
/// own wait, so it hears the worker's answer rather than a timeout).
pub const KILL_TIMEOUT: Duration = Duration::from_secs(KILL_WAIT.as_secs() + 5);
/// Longest request line read (requests are a few dozen bytes; a SET's value may be longer).
const MAX_REQUEST: u64 = 4096;

/// The uid of the process at the other end of `s`.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and sized for SO_PEERCRED's ucred.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Whether the peer may use the admin socket: the same user as this process, or root.
fn peer_allowed(s: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    matches!(peer_uid(s), Some(uid) if uid == me || uid == 0)
}

pub fn socket_name(supervisor: u32, worker: u32) -> String {
    format!("sluice/{supervisor}/{worker}")
}

fn addr(name: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Sends one request line to a worker and returns its answer line.
pub fn request(supervisor: u32, worker: u32, line: &str) -> std::io::Result<String> {
    request_within(supervisor, worker, line, TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer.
pub fn request_within(
    supervisor: u32,
    worker: u32,
    line: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let s = UnixStream::connect_addr(&addr(&socket_name(supervisor, worker))?)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    (&s).write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

/// A `KILL` request to a worker, answered. During a worker's upgrade its old and new processes
/// both answer on the worker's socket, and the old one exits once its handover is over: a
/// request it took and did not answer (the connection closed without a line, or reset before
/// it read it) is sent once more, and reaches the new one. Not a KILL applied twice: a session
/// still in the old process when it exits ends with it (the new process then finds nothing),
/// and a KILL the old process had passed to the new one through the KILL line finds the same
/// session there (a KILL QUERY just delivered is not sent again: `shard::kill`, rule 2).
pub fn request_kill(supervisor: u32, worker: u32, line: &str) -> std::io::Result<String> {
    match request_within(supervisor, worker, line, KILL_TIMEOUT) {
        Ok(a) if a.is_empty() => request_within(supervisor, worker, line, KILL_TIMEOUT),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            request_within(supervisor, worker, line, KILL_TIMEOUT)
        }
        r => r,
    }
}

/// KILL for a session of another worker.
pub fn remote_kill(
    supervisor: u32,
    worker: u32,
    conn_id: u32,
    kind: KillKind,
    user: u32,
) -> Result<(), Reply> {
    let kind = if kind == KillKind::Query {
        "query"
    } else {
        "connection"
    };
    match request_kill(supervisor, worker, &format!("KILL {conn_id} {kind} {user}")) {
        Ok(a) if a == "OK" => Ok(()),
        Ok(a) => Err(parse_err(&a).unwrap_or_else(|| {
            Reply::new(1094, b"HY000", format!("Unknown thread id: {conn_id}"))
        })),
        Err(e) => Err(Reply::new(
            1094,
            b"HY000",
            format!("Unknown thread id: {conn_id} (worker {worker} unreachable: {e})"),
        )),
    }
}

fn parse_err(a: &str) -> Option<Reply> {
    let mut it = a.splitn(4, ' ');
    if it.next()? != "ERR" {
        return None;
    }
    let code = it.next()?.parse().ok()?;
    let state: [u8; 5] = it.next()?.as_bytes().try_into().ok()?;
    Some(Reply::new(code, &state, it.next().unwrap_or_default()))
}

/// A worker's shard snapshots, for the supervisor's metrics endpoint.
pub fn remote_stats(supervisor: u32, worker: u32) -> Option<Vec<ShardSnapshot>> {
    let a = request(supervisor, worker, "STATS").ok()?;
    serde_json::from_str(&a).ok()
}

/// A worker's clients (`None`: it did not answer).
pub fn remote_clients(supervisor: u32, worker: u32) -> Option<Vec<crate::metrics::ClientRow>> {
    let a = request(supervisor, worker, "CLIENTS").ok()?;
    serde_json::from_str(&a).ok()
}

/// Answers the admin request `line`: for this process, and during an upgrade's handover for
/// both processes where the request is about clients (see the module's doc).
pub fn handle(shared: &Shared, line: &str) -> String {
    let here = handle_here(shared, line);
    let Some(kind) = Merged::of(line) else {
        return here;
    };
    match crate::upgrade::peer::ask_admin(line) {
        None => here,
        Some(Ok(there)) => merge(kind, &here, &there),
        Some(Err(why)) => {
            warn!(request = line, why = %why, "admin: the other process of the upgrade under way did not answer; this answer covers this process only");
            unanswered(kind, here, &why)
        }
    }
}

/// Requests whose answer covers both processes of a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merged {
    Clients,
    Stats,
    KillWhere,
}

impl Merged {
    fn of(line: &str) -> Option<Merged> {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("CLIENTS"), None) => Some(Merged::Clients),
            (Some("STATS"), None) => Some(Merged::Stats),
            (Some("KILL"), Some("WHERE")) => Some(Merged::KillWhere),
            _ => None,
        }
    }
}

/// One answer from this process's (`here`) and the other's (`there`): the two lists of
/// clients (one row per id: a client listed by both moved between the two reads) or shard
/// snapshots, the sum of the clients killed. An ERR from either is the answer, saying what was
/// done here.
fn merge(kind: Merged, here: &str, there: &str) -> String {
    if kind == Merged::KillWhere {
        let n = |a: &str| a.strip_prefix("OK ").and_then(|n| n.parse::<u64>().ok());
        return match (n(here), n(there)) {
            (Some(a), Some(b)) => format!("OK {}", a + b),
            (Some(a), None) => format!(
                "ERR 1105 HY000 {a} client(s) ended in this process; the other process of the upgrade under way answered: {there}"
            ),
            (None, _) => here.to_string(),
        };
    }
    let list = |a: &str| serde_json::from_str::<Vec<serde_json::Value>>(a).ok();
    let (Some(mut rows), Some(theirs)) = (list(here), list(there)) else {
        return here.to_string();
    };
    match kind {
        Merged::Clients => {
            for r in theirs {
                if !rows.iter().any(|m| m["id"] == r["id"]) {
                    rows.push(r);
                }
            }
        }
        _ => rows.extend(theirs),
    }
    serde_json::to_string(&rows).unwrap_or_else(|_| here.to_string())
}

/// The answer when the other process of a handover did not answer: this process's part of a
/// list (logged), an ERR for a KILL (never "done" when it may not be).
fn unanswered(kind: Merged, here: String, why: &str) -> String {
    match (kind, here.strip_prefix("OK ")) {
        (Merged::KillWhere, Some(n)) => format!(
            "ERR 1105 HY000 {n} client(s) ended in this process; the other process of the upgrade under way did not answer ({why}): its clients may remain"
        ),
        _ => here,
    }
}

/// Answers the admin request `line` for this process alone.
pub fn handle_here(shared: &Shared, line: &str) -> String {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("PING") => "OK".into(),
        Some("STATS") => {
            let snaps = crate::metrics::collect(shared, Duration::from_secs(2));
            serde_json::to_string(&snaps).unwrap_or_else(|_| "[]".into())
        }
        Some("KILL") if line.split_whitespace().nth(1) == Some("WHERE") => {
            let rest = line.trim_start().trim_start_matches("KILL").trim_start();
            let rest = rest.trim_start_matches("WHERE").trim_start();
            match ClientFilter::parse(rest) {
                Ok(f) => kill_where(shared, &f),
                Err(e) => format!("ERR 1210 HY000 {e}"),
            }
        }
        Some("KILL") => {
            let (Some(id), Some(kind), Some(user)) = (
                words.next().and_then(|w| w.parse::<u32>().ok()),
                words.next(),
                words.next().and_then(|w| w.parse::<u32>().ok()),
            ) else {
                return "ERR 1064 42000 bad admin request".into();
            };
            let kind = if kind == "query" {
                KillKind::Query
            } else {
                KillKind::Connection
            };
            let (_, shard) = IdLayout::new(shared.workers, shared.shards).locate(id);
            let Some(mb) = shared.mailboxes.get().and_then(|m| m.get(shard as usize)) else {
                return format!("ERR 1094 HY000 Unknown thread id: {id}");
            };
            let reply = Reply1::default();
            // A client of this worker, wherever it is during an upgrade's handover: here,
            // or (after a handover began) in the other process of this worker's upgrade.
            mb.post(ShardMsg::Kill {
                conn_id: id,
                kind,
                by_user: user,
                ask_peer: true,
                reply: reply.clone(),
            });
            match reply.recv_blocking(KILL_WAIT) {
                Some(Ok(())) => "OK".into(),
                Some(Err(r)) => format!(
                    "ERR {} {} {}",
                    r.code,
                    String::from_utf8_lossy(&r.sql_state),
                    r.message
                ),
                None => format!("ERR 1094 HY000 Unknown thread id: {id}"),
            }
        }
        Some("BACKENDS") => backends(shared),
        Some("RELOAD") => crate::reload::run(shared),
        Some("CONFIG") => {
            let live = shared.live();
            let mut rows = crate::reload::show(&live);
            rows.extend(crate::reload::show_backends(&live));
            serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
        }
        Some("CLIENTS") => {
            let rows = crate::metrics::collect_clients(shared, Duration::from_secs(2));
            serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
        }
        Some("PAUSE") => match words.next() {
            None => pause(shared, Some(true)),
            Some("STATUS") => pause(shared, None),
            Some(_) => "ERR 1064 42000 PAUSE [STATUS]".into(),
        },
        Some("RESUME") => pause(shared, Some(false)),
        Some("ACCEPT") if words.next() == Some("STOP") => {
            let per_shard = crate::metrics::ask_shards(shared, Duration::from_secs(2), |reply| {
                ShardMsg::StopAccepting { reply }
            });
            if per_shard.len() < shared.shards {
                return "ERR 1105 HY000 a shard did not answer ACCEPT STOP".into();
            }
            format!("OK {}", per_shard.iter().sum::<u64>())
        }
        Some("SET") => {
            // `SET <key> <value>`: the value is the rest of the line, spaces kept.
            let rest = line
                .trim_start()
                .strip_prefix("SET")
                .unwrap_or("")
                .trim_start();
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            crate::reload::set(shared, key, value.trim())
        }
        Some("BACKEND") => backend(shared, words.next(), words.next(), words),
        Some("RECONNECT") => reconnect(shared, words.next()),
        _ => "ERR 1064 42000 unknown admin request".into(),
    }
}

/// `PAUSE` (`set`: `Some(true)`), `RESUME` (`Some(false)`), `PAUSE STATUS` (`None`): every
/// shard of this process changes (or keeps) its pause and says what its sessions are doing;
/// the sum as JSON ([`crate::shard::pause::PauseStatus`]). A shard that does not answer makes
/// it an ERR (after a PAUSE the console then resumes everything: never half-applied).
fn pause(shared: &Shared, set: Option<bool>) -> String {
    let per_shard = crate::metrics::ask_shards(shared, Duration::from_secs(2), |reply| {
        ShardMsg::Pause { set, reply }
    });
    if per_shard.len() < shared.shards {
        return "ERR 1105 HY000 a shard did not answer the pause request".into();
    }
    let sum = crate::shard::pause::PauseStatus::sum(&per_shard);
    serde_json::to_string(&sum).unwrap_or_else(|_| "{}".into())
}

/// `BACKENDS`: every backend this process lists, with its state and the connections its pools
/// hold on every shard (JSON, one line).
fn backends(shared: &Shared) -> String {
    #[derive(serde::Serialize)]
    struct Row {
        #[serde(flatten)]
        b: crate::metrics::BackendSnapshot,
        open: u64,
        idle: u64,
        in_use: u64,
        pinned: u64,
    }
    let snaps = crate::metrics::collect(shared, Duration::from_secs(2));
    let rows: Vec<Row> = shared
        .backends
        .snapshot()
        .iter()
        .map(|b| {
            let mut r = Row {
                b: b.snapshot(),
                open: 0,
                idle: 0,
                in_use: 0,
                pinned: 0,
            };
            for p in snaps
                .iter()
                .flat_map(|s| &s.pools)
                .filter(|p| p.backend == b.address)
            {
                r.open += p.open;
                r.idle += p.idle;
                r.in_use += p.open.saturating_sub(p.idle);
                r.pinned += p.pinned;
            }
            if r.b.state == "draining" && r.open == 0 {
                r.b.state = "drained".into();
            }
            r
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

/// `BACKEND ADD <address> [role] [weight]`, `BACKEND DRAIN|UNDRAIN|MAINTENANCE|REMOVE <id or
/// address>`: the internal API for backends that come and go (the SQL admin console and reload
/// will call the same).
fn backend<'a>(
    shared: &Shared,
    verb: Option<&str>,
    key: Option<&str>,
    mut rest: impl Iterator<Item = &'a str>,
) -> String {
    use crate::backend::router::{Admin, Role};
    let Some(key) = key else {
        return "ERR 1064 42000 BACKEND needs a verb and a backend".into();
    };
    if verb == Some("ADD") {
        let role = match rest.next().unwrap_or("any") {
            "any" => Role::Any,
            "primary" => Role::Primary,
            "replica" => Role::Replica,
            r => return format!("ERR 1064 42000 unknown role {r:?} (any, primary, replica)"),
        };
        let weight = match rest.next().map(str::parse::<u32>) {
            None => 1,
            Some(Ok(w)) if (1..=1000).contains(&w) => w,
            Some(_) => return "ERR 1064 42000 weight must be between 1 and 1000".into(),
        };
        let tls = match (rest.next(), rest.next(), rest.next(), rest.next()) {
            (None, ..) => None,
            (Some("TLS"), Some(verify @ ("0" | "1")), Some(ca), Some(name)) => {
                let (Some(ca), Some(name)) = (unhex_opt(ca), unhex_opt(name)) else {
                    return "ERR 1064 42000 BACKEND ADD … TLS: bad hex".into();
                };
                Some(crate::config::BackendTls {
                    verify: verify == "1",
                    ca,
                    server_name: name,
                })
            }
            _ => return "ERR 1064 42000 BACKEND ADD <address> <role> <weight> [TLS <verify 0|1> <ca hex|-> <server name hex|->]".into(),
        };
        let cfg = crate::config::BackendConfig {
            address: key.to_string(),
            tls,
            role,
            weight,
        };
        // Held to the file's rules (a TLS check left to the connect would panic or fail later).
        if let Some((field, value, why)) = cfg.problems().into_iter().next() {
            let value = if value.is_empty() {
                String::new()
            } else {
                format!(" {value}")
            };
            return format!("ERR 1210 HY000 backend {field}{value}: {why}");
        }
        // Down until its probes show it works (see `shard::probe`).
        return match crate::shared::add_backend(
            &shared.backends,
            &cfg,
            crate::backend::health::Health::Down,
            &shared.live().dns,
        ) {
            Ok(id) => {
                let tls = cfg.tls.is_some();
                tracing::info!(backend = %key, id, role = role.name(), weight, tls, "backend added");
                format!("OK {id}")
            }
            Err(e) => format!("ERR 1210 HY000 {e}"),
        };
    }
    let admin = match verb {
        Some("DRAIN") => Admin::Draining,
        Some("UNDRAIN") => Admin::Active,
        Some("MAINTENANCE") => Admin::Maintenance,
        Some("REMOVE") => Admin::Removed,
        _ => return "ERR 1064 42000 BACKEND ADD|DRAIN|UNDRAIN|MAINTENANCE|REMOVE".into(),
    };
    let Some(b) = shared.backends.find(key) else {
        return format!("ERR 1210 HY000 no backend {key:?}");
    };
    if b.admin() == Admin::Removed {
        return format!("ERR 1210 HY000 backend {} was removed", b.address);
    }
    if admin == Admin::Draining {
        let timeout = match (rest.next(), rest.next().map(str::parse::<u64>)) {
            (None, _) => None,
            (Some(w), Some(Ok(ms))) if w.eq_ignore_ascii_case("TIMEOUT") => {
                Some(Duration::from_millis(ms))
            }
            _ => return "ERR 1064 42000 BACKEND DRAIN <backend> [TIMEOUT <ms>]".into(),
        };
        b.drain(timeout);
    } else {
        b.set_admin(admin);
    }
    tracing::info!(backend = %b.address, state = b.state_name(), "backend intent changed");
    "OK".into()
}

/// Which clients a KILL by filter ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFilter {
    /// Logged in as this user.
    User(String),
    /// Connected from this address.
    Source(std::net::IpAddr),
}

impl ClientFilter {
    /// `USER <name>` (the rest of the line, spaces inside kept) or `SOURCE <ip>`.
    pub fn parse(s: &str) -> Result<ClientFilter, String> {
        let s = s.trim();
        let (field, value) = s.split_once(' ').unwrap_or((s, ""));
        let value = value.trim();
        match field.to_ascii_uppercase().as_str() {
            "USER" if !value.is_empty() => Ok(ClientFilter::User(value.to_string())),
            "SOURCE" => match value.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(ClientFilter::Source(ip.to_canonical())),
                Err(_) => Err(format!(
                    "sluice admin: {value:?} is not an IP address (KILL CLIENTS WHERE SOURCE = 'ip')"
                )),
            },
            _ => Err(
                "sluice admin: KILL CLIENTS WHERE USER = 'name' | WHERE SOURCE = 'ip'".to_string(),
            ),
        }
    }

    /// Does the client `c` match?
    pub fn matches(&self, c: &crate::metrics::ClientRow) -> bool {
        match self {
            ClientFilter::User(u) => !c.user.is_empty() && c.user == *u,
            ClientFilter::Source(ip) => c
                .source
                .as_deref()
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                .is_some_and(|s| s.to_canonical() == *ip),
        }
    }
}

/// Ends every client of this process that `f` matches, through the same per-shard KILL as
/// `KILL <id>` (posted to every shard first, then awaited); `OK <how many ended>`. A client
/// that left meanwhile is not counted.
fn kill_where(shared: &Shared, f: &ClientFilter) -> String {
    let clients = crate::metrics::collect_clients(shared, Duration::from_secs(2));
    let layout = IdLayout::new(shared.workers, shared.shards);
    let Some(mailboxes) = shared.mailboxes.get() else {
        return "OK 0".into();
    };
    let replies: Vec<Reply1<Result<(), Reply>>> = clients
        .iter()
        .filter(|c| f.matches(c))
        .filter_map(|c| {
            let (_, shard) = layout.locate(c.id);
            let mb = mailboxes.get(shard as usize)?;
            let reply = Reply1::default();
            mb.post(ShardMsg::Kill {
                conn_id: c.id,
                kind: KillKind::Connection,
                by_user: crate::shard::kill::BY_ADMIN,
                ask_peer: false,
                reply: reply.clone(),
            });
            Some(reply)
        })
        .collect();
    let deadline = std::time::Instant::now() + TIMEOUT / 2;
    let killed = replies
        .iter()
        .filter(|r| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            matches!(r.recv_blocking(left), Some(Ok(())))
        })
        .count();
    tracing::info!(filter = ?f, killed, "clients killed by the admin");
    format!("OK {killed}")
}

/// A backend's connections retired by RECONNECT, in one process.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Retired {
    pub backend: String,
    /// Idle connections closed at once.
    pub closed: u64,
    /// Connections out (leased, held by a session, being opened) that close as they come back.
    pub closing: u64,
}

/// `RECONNECT [<id or address>]`: bumps the backend's connection generation (every backend's
/// but removed ones, without a key), then has every shard close the idle connections of older
/// generations (busy ones close when released: see `Pool::stale`).
fn reconnect(shared: &Shared, key: Option<&str>) -> String {
    let chosen: Vec<Arc<crate::backend::registry::Backend>> = match key {
        Some(k) => match shared.backends.find(k) {
            Some(b) if b.admin() == crate::backend::router::Admin::Removed => {
                return format!("ERR 1210 HY000 backend {} was removed", b.address);
            }
            Some(b) => vec![b],
            None => return format!("ERR 1210 HY000 no backend {k:?}"),
        },
        None => shared
            .backends
            .snapshot()
            .iter()
            .filter(|b| b.admin() != crate::backend::router::Admin::Removed)
            .cloned()
            .collect(),
    };
    for b in &chosen {
        b.retire_connections();
        tracing::info!(backend = %b.address, "RECONNECT: pooled connections retired");
    }
    let one = key.and(chosen.first().map(|b| b.id));
    let per_shard = crate::metrics::ask_shards(shared, Duration::from_secs(2), |reply| {
        ShardMsg::Reconnect {
            backend: one,
            reply,
        }
    });
    let rows: Vec<Retired> = chosen
        .iter()
        .map(|b| {
            let mut r = Retired {
                backend: b.address.clone(),
                ..Retired::default()
            };
            for (_, now, later) in per_shard.iter().flatten().filter(|x| x.0 == b.id) {
                r.closed += *now as u64;
                r.closing += *later as u64;
            }
            r
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

/// Serves this worker's admin socket on a thread of its own.
pub fn spawn(shared: Arc<Shared>, supervisor: u32) -> std::io::Result<()> {
    let name = socket_name(supervisor, shared.worker);
    // An upgrade's successor takes its predecessor's listener over (see crate::upgrade).
    let listener = crate::upgrade::admin_listener(&addr(&name)?)?;
    std::thread::Builder::new()
        .name("sluice-admin".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                if !peer_allowed(&s) {
                    warn!(peer_uid = ?peer_uid(&s), "admin socket: refused a process of another user");
                    continue;
                }
                let shared = shared.clone();
                // One short-lived thread per request: requests are rare (KILL, scrapes).
                let _ = std::thread::Builder::new()
                    .name("sluice-admin-req".into())
                    .spawn(move || {
                        let _ = s.set_read_timeout(Some(TIMEOUT));
                        let _ = s.set_write_timeout(Some(TIMEOUT));
                        let mut line = String::new();
                        if BufReader::new((&s).take(MAX_REQUEST))
                            .read_line(&mut line)
                            .is_err()
                        {
                            return;
                        }
                        let line = line.trim();
                        // The supervisor upgrades this worker: meet it at this abstract socket
                        // (see crate::upgrade).
                        let answer = match line.strip_prefix("UPGRADE ") {
                            Some(name) => match crate::upgrade::start_for_supervisor(
                                shared.clone(),
                                name.trim().to_string(),
                            ) {
                                Ok(()) => "OK".to_string(),
                                Err(e) => format!("ERR 1105 HY000 {e}"),
                            },
                            None => handle(&shared, line),
                        };
                        if let Err(e) = (&s).write_all(format!("{answer}\n").as_bytes()) {
                            debug!(error = %e, "admin answer not delivered");
                        }
                    });
            }
            warn!("admin socket closed");
        })?;
    Ok(())
}

/// `text` as lowercase hex, for a value that may hold spaces in a request line (`-`: none).
pub fn hex_opt(text: Option<&str>) -> String {
    match text {
        None => "-".into(),
        Some(t) => t.bytes().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The inverse of [`hex_opt`]: `Some(None)` for `-`, `None` for anything that is not hex of
/// UTF-8 text.
fn unhex_opt(hex: &str) -> Option<Option<String>> {
    if hex == "-" {
        return Some(None);
    }
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_text_with_spaces() {
        for t in ["/etc/sluice/ca bundle.pem", "db.example", "", "é"] {
            assert_eq!(unhex_opt(&hex_opt(Some(t))), Some(Some(t.to_string())));
        }
        assert_eq!(unhex_opt(&hex_opt(None)), Some(None));
        for bad in ["abc", "zz", "ff", "é1"] {
            assert_eq!(unhex_opt(bad), None, "{bad}");
        }
    }

    #[test]
    fn kill_filters_parse_and_match() {
        use crate::metrics::ClientRow;
        let row = |user: &str, source: Option<&str>| ClientRow {
            user: user.into(),
            source: source.map(String::from),
            ..ClientRow::default()
        };
        let ip = |s: &str| ClientFilter::Source(s.parse().unwrap());
        #[rustfmt::skip]
        let parse: &[(&str, Result<ClientFilter, ()>)] = &[
            ("USER app", Ok(ClientFilter::User("app".into()))),
            ("user  two words ", Ok(ClientFilter::User("two words".into()))),
            ("SOURCE 127.0.0.2", Ok(ip("127.0.0.2"))),
            ("SOURCE ::ffff:127.0.0.2", Ok(ip("127.0.0.2"))),
            ("SOURCE ::1", Ok(ip("::1"))),
            ("SOURCE localhost", Err(())),
            ("SOURCE", Err(())),
            ("USER", Err(())),
            ("HOST x", Err(())),
            ("", Err(())),
        ];
        for (text, want) in parse {
            assert_eq!(ClientFilter::parse(text).map_err(|_| ()), *want, "{text}");
        }
        #[rustfmt::skip]
        let matching: &[(ClientFilter, ClientRow, bool)] = &[
            (ClientFilter::User("app".into()), row("app", None), true),
            (ClientFilter::User("app".into()), row("App", None), false),
            (ClientFilter::User("app".into()), row("", Some("127.0.0.1")), false),
            (ip("127.0.0.2"), row("app", Some("127.0.0.2")), true),
            (ip("127.0.0.2"), row("app", Some("::ffff:127.0.0.2")), true),
            (ip("127.0.0.2"), row("app", Some("127.0.0.1")), false),
            (ip("127.0.0.2"), row("app", None), false),
        ];
        for (f, c, want) in matching {
            assert_eq!(f.matches(c), *want, "{f:?} {c:?}");
        }
    }

    #[test]
    fn both_sides_of_a_handover_answer_as_one() {
        use Merged::*;
        assert_eq!(Merged::of("CLIENTS"), Some(Clients));
        assert_eq!(Merged::of("CLIENTS HERE"), None);
        assert_eq!(Merged::of("STATS"), Some(Stats));
        assert_eq!(Merged::of("KILL WHERE USER app"), Some(KillWhere));
        assert_eq!(Merged::of("KILL 7 query 0"), None);
        assert_eq!(Merged::of("RELOAD"), None);
        #[rustfmt::skip]
        let table: &[(Merged, &str, &str, &str)] = &[
            // One row per client: one listed by both moved between the two reads.
            (Clients, r#"[{"id":1},{"id":2}]"#, r#"[{"id":2},{"id":3}]"#, r#"[{"id":1},{"id":2},{"id":3}]"#),
            (Clients, "[]", r#"[{"id":3}]"#, r#"[{"id":3}]"#),
            // Shard snapshots of both processes.
            (Stats, r#"[{"shard":0}]"#, r#"[{"shard":0}]"#, r#"[{"shard":0},{"shard":0}]"#),
            // This process's answer when either is not a list.
            (Clients, "ERR 1105 HY000 x", "[]", "ERR 1105 HY000 x"),
            (Clients, r#"[{"id":1}]"#, "garbage", r#"[{"id":1}]"#),
            (KillWhere, "OK 2", "OK 3", "OK 5"),
            (KillWhere, "ERR 1210 HY000 bad", "OK 3", "ERR 1210 HY000 bad"),
            (KillWhere, "OK 2", "ERR 1105 HY000 slow",
             "ERR 1105 HY000 2 client(s) ended in this process; the other process of the upgrade under way answered: ERR 1105 HY000 slow"),
        ];
        for (kind, here, there, want) in table {
            assert_eq!(merge(*kind, here, there), *want, "{kind:?} {here} {there}");
        }
        // The other process silent: a KILL says so, a list is this process's.
        assert!(unanswered(KillWhere, "OK 2".into(), "timeout").starts_with(
            "ERR 1105 HY000 2 client(s) ended in this process; the other process of the upgrade under way did not answer (timeout)"
        ));
        assert_eq!(unanswered(Clients, "[]".into(), "timeout"), "[]");
    }

    #[test]
    fn peers_are_identified_by_uid() {
        let (a, b) = UnixStream::pair().unwrap();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(peer_uid(&a), Some(me));
        assert!(peer_allowed(&b));
    }
}
