//! The admin console: SQL over the MySQL protocol on its own listener (`[admin] listen`), for the
//! tools operators already have (`mariadb -h … -P 6034 -u admin -p`). Its own users (hashes from
//! `sluice hash-password`, mysql_native_password); answers are real result sets.
//!
//! The console is a thin SQL front over the admin requests every worker already serves
//! ([`crate::admin`]): each statement becomes one request line, sent to this process (a single
//! process) or to every worker (the supervisor, with `workers = N`), and the answers are merged:
//! `SHOW BACKENDS` sums the workers' connections, a `DRAIN BACKEND` reaches every worker.
//!
//! Statements: `SHOW BACKENDS` (or `SHOW SERVERS`), `SHOW POOLS` (with worker processes, also
//! the host budget and the slots each worker holds: see [`crate::backend::budget`]), `SHOW STATS`,
//! `SHOW WORKERS`
//! (each process: up, shards, clients, paused, commands waiting for RESUME),
//! `SHOW CLIENTS` (id, user, source address, state, schema, backend, idle time, what holds it),
//! `SHOW PINS` (pinned sessions now and pins since start, by reason), `SHOW CONFIG [LIKE 'p']`
//! (every key with its live value, secrets hidden, and whether a reload applies it: the one list
//! in [`crate::reload`]; then the configured backends' fields), `RELOAD` (see [`crate::reload`]),
//! `KILL CLIENT [QUERY] <id>`, `KILL CLIENTS WHERE USER = 'name'` and `… WHERE SOURCE = 'ip'`
//! (the same KILL for every client that matches, in every process; answers how many ended),
//! `UPGRADE` (as SIGUSR2: see [`crate::upgrade`]), `RECONNECT [BACKEND <address|id>]` (retires the pooled connections: idle ones close now,
//! busy ones when they come back, new ones are opened as needed, e.g. after a server's global
//! variables changed; answers both counts per backend), `DRAIN BACKEND <address|id>
//! [TIMEOUT <ms>]`, `UNDRAIN BACKEND …`, `MAINTENANCE BACKEND …`, `ADD BACKEND <address>
//! [ROLE any|primary|replica] [WEIGHT n] [TLS ON] [TLS_CA 'file'] [TLS_SERVER_NAME 'name']
//! [TLS_VERIFY OFF]` (TLS options as a `[[backends]]` entry's `tls` table), `REMOVE BACKEND …`; the client's own start-up
//! queries (`SELECT @@version_comment LIMIT 1`, `SELECT DATABASE()`) are answered too. Anything
//! else is ERR 1064 listing what the console understands.
//!
//! Operations on the whole instance (every shard of every worker):
//!
//! - `PAUSE [TIMEOUT <ms>]` (default 10 s): commands that need a backend wait before their
//!   checkout, as for a free pool slot, except in a session inside a transaction (it runs, so
//!   the transaction can end); logins are accepted, nobody is dropped, pooled connections stay
//!   open (`PAUSE`, restart the server, `RECONNECT`, `RESUME` replaces them). The PAUSE then
//!   waits for work in flight (statements running, transactions open) to end and answers with
//!   what it waited for; at the timeout ERR 1205 names what is still busy and the pause stays
//!   in effect. Paused commands wait without a deadline, as PgBouncer's do:
//!   `pool.queue_timeout_ms` counts from RESUME (a pause is the operator's decision; failing
//!   every client after a few seconds would defeat a pause meant to outlast a server restart).
//!   `SHOW CLIENTS` lists a waiting client as `paused`; KILL QUERY ends its command (ERR
//!   1317; a client's own KILL statement is never held), KILL the client. A RESUME from
//!   another console connection cancels a waiting PAUSE (ERR 1317); closing the connection
//!   that waits ends the wait and leaves the pause in effect (never half-applied: if a worker
//!   cannot be paused, every worker is resumed and the PAUSE fails). A shutdown lifts it.
//!   Decisions: [`crate::shard::pause`].
//! - `RESUME`: lifts the pause at once everywhere; answers how many commands were waiting.
//! - `SHUTDOWN`: what SIGTERM does (no new clients; idle ones closed, active ones after their
//!   command, within `shutdown_timeout_ms`), answered OK first. `SHUTDOWN WAIT_FOR_CLIENTS
//!   [TIMEOUT <ms>]`: every listener closes at once (new connections are refused), connected
//!   clients keep being served; when the last has left (or at the timeout; without one, for as
//!   long as it takes, as PgBouncer's does) the process stops as on SIGTERM and exits 0.
//!   Answered at once with the clients it waits for; the log counts them every 5 s.
//! - `SET [GLOBAL] <key> = <value>`: one key of `SHOW CONFIG`, applied exactly as a reload that
//!   found only that key changed in the file ([`crate::reload::set`]), in every worker.
//!   Refused as the server refuses `SET`: an unknown key ERR 1193, a key that needs a restart
//!   ERR 1238, a value of the wrong type or that fails validation ERR 1231 with the reason,
//!   bad syntax ERR 1064. Tables and lists (`users`, `health`, `dns`) are edited in the file.
//!   The file is not written: the next `RELOAD` or SIGHUP makes the file's values live again
//!   (as PgBouncer's and ProxySQL's reloads do), so put a value that must last in the file.
//!
//! Blocking threads (one per console connection, at most [`MAX_CONNECTIONS`]): consoles are few
//! and never on the shards' path.

use crate::auth::{Credential, Plugin};
use crate::bootstrap::ColumnTemplate;
use crate::codec::auth::AuthSwitch;
use crate::codec::caps::cap;
use crate::codec::handshake::{Handshake, HandshakeResponse};
use crate::codec::packets::{encode_ok, EofPacket, ErrPacket, OkPacket, EOF};
use crate::codec::wire::{put_lenenc_bytes, put_lenenc_int};
use crate::shard::pause::PauseStatus;
use crate::shared::Shared;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Console connections served at once (more are refused with ERR 1040).
pub const MAX_CONNECTIONS: usize = 16;
/// Longest statement the console reads.
const MAX_PACKET: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(300);

/// Where the console's requests go.
#[derive(Clone)]
pub enum Target {
    /// This process's own shards.
    Local(Arc<Shared>),
    /// Every worker of the supervisor with this pid.
    Workers { supervisor: u32, workers: u32 },
}

impl Target {
    /// Sends `line` everywhere; one answer per process (an unreachable worker's is an ERR).
    fn ask_all(&self, line: &str) -> Vec<String> {
        self.ask_all_by(line, |sup, w| crate::admin::request(sup, w, line))
    }

    /// [`Target::ask_all`] for a `KILL` request ([`crate::admin::request_kill`]: longer, and
    /// asked again of a worker whose old process exited during its upgrade).
    fn ask_all_kill(&self, line: &str) -> Vec<String> {
        self.ask_all_by(line, |sup, w| crate::admin::request_kill(sup, w, line))
    }

    fn ask_all_by(
        &self,
        line: &str,
        request: impl Fn(u32, u32) -> std::io::Result<String>,
    ) -> Vec<String> {
        match self {
            Target::Local(shared) => vec![crate::admin::handle(shared, line)],
            Target::Workers {
                supervisor,
                workers,
            } => (0..*workers)
                .map(|w| {
                    request(*supervisor, w).unwrap_or_else(|e| {
                        format!("ERR 2013 HY000 worker {w} did not answer: {e}")
                    })
                })
                .collect(),
        }
    }
}

/// A console account.
pub struct ConsoleUser {
    pub name: String,
    pub credential: Credential,
}

/// The console's accounts from the configuration (validated already).
pub fn users(cfg: &crate::config::Config) -> Vec<ConsoleUser> {
    cfg.admin
        .users
        .iter()
        .filter_map(|u| {
            if !crate::auth::looks_like_hash(&u.password) {
                warn!(user = %u.name, "admin console password configured in plaintext; use `sluice hash-password` in production");
            }
            Some(ConsoleUser {
                name: u.name.clone(),
                credential: Credential::parse(&u.password, Some("mysql_native_password")).ok()?,
            })
        })
        .collect()
}

/// Starts the console on `listen` (a thread accepting, one per connection).
pub fn spawn(listen: &str, users: Vec<ConsoleUser>, target: Target) -> Result<(), String> {
    // An upgrade's successor takes its predecessor's listener over (see crate::upgrade).
    let listener = crate::upgrade::tcp_listener(listen, crate::upgrade::Role::Console)
        .map_err(|e| format!("admin.listen {listen}: {e}"))?;
    let users = Arc::new(users);
    let open = Arc::new(AtomicUsize::new(0));
    info!(%listen, "admin console listening");
    std::thread::Builder::new()
        .name("sluice-console".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let (users, target, open) = (users.clone(), target.clone(), open.clone());
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    let mut c = Conn { s, seq: 0 };
                    let _ = c.err(1040, b"08004", "Too many connections to the admin console");
                    continue;
                }
                let _ = std::thread::Builder::new()
                    .name("sluice-console-conn".into())
                    .spawn(move || {
                        let peer = s.peer_addr().ok();
                        if let Err(e) = serve(s, &users, &target) {
                            tracing::debug!(?peer, error = %e, "admin console connection ended");
                        }
                        open.fetch_sub(1, Ordering::AcqRel);
                    });
            }
        })
        .map_err(|e| format!("admin console thread: {e}"))?;
    Ok(())
}

/// One console connection: framing over a blocking socket.
struct Conn {
    s: TcpStream,
    seq: u8,
}

impl Conn {
    fn read(&mut self) -> std::io::Result<Vec<u8>> {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h)?;
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if len > MAX_PACKET {
            return Err(std::io::Error::other("packet too large for the console"));
        }
        self.seq = h[3].wrapping_add(1);
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p)?;
        Ok(p)
    }

    fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let len = payload.len();
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, self.seq]);
        out.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.s.write_all(&out)
    }

    fn err(&mut self, code: u16, state: &[u8; 5], message: &str) -> std::io::Result<()> {
        let mut p = Vec::new();
        ErrPacket {
            code,
            sql_state: *state,
            message: message.as_bytes(),
        }
        .encode(&mut p);
        self.write(&p)
    }

    fn ok(&mut self, caps: u32) -> std::io::Result<()> {
        let mut p = Vec::new();
        encode_ok(&mut p, crate::codec::caps::status::AUTOCOMMIT, caps);
        self.write(&p)
    }
}

const CAPS: u32 = cap::LONG_PASSWORD
    | cap::PROTOCOL_41
    | cap::SECURE_CONNECTION
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::CONNECT_WITH_DB
    | cap::TRANSACTIONS
    | cap::DEPRECATE_EOF;

fn serve(s: TcpStream, users: &[ConsoleUser], target: &Target) -> std::io::Result<()> {
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let mut c = Conn { s, seq: 0 };
    let mut nonce = [0u8; 20];
    getrandom::getrandom(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    // A scramble byte must not be NUL (clients read part 2 up to a NUL).
    for b in &mut nonce {
        *b = (*b % 94) + 33;
    }
    let mut g = Vec::new();
    Handshake {
        server_version: b"5.5.5-sluice-admin".to_vec(),
        connection_id: 1,
        nonce: nonce.to_vec(),
        capabilities: CAPS,
        collation: 45,
        status: crate::codec::caps::status::AUTOCOMMIT,
        mariadb_capabilities: 0,
        auth_plugin: Plugin::Native.name().to_vec(),
    }
    .encode(&mut g);
    c.write(&g)?;
    let p = c.read()?;
    let Ok(hr) = HandshakeResponse::decode(&p) else {
        return c.err(1043, b"08S01", "Bad handshake");
    };
    let caps = hr.capabilities & CAPS;
    let mut response = hr.auth_response.clone();
    if hr
        .auth_plugin
        .as_deref()
        .is_some_and(|p| p != Plugin::Native.name())
    {
        // Ask for mysql_native_password over the same nonce.
        let mut sw = Vec::new();
        AuthSwitch {
            plugin: Plugin::Native.name().to_vec(),
            data: nonce.to_vec(),
        }
        .encode(&mut sw);
        c.write(&sw)?;
        response = c.read()?;
    }
    let name = String::from_utf8_lossy(&hr.username).into_owned();
    let ok = users
        .iter()
        .find(|u| u.name == name)
        .is_some_and(|u| u.credential.verify(Plugin::Native, &nonce, &response));
    if !ok {
        warn!(user = %name, "admin console: login refused");
        return c.err(
            1045,
            b"28000",
            &format!("Access denied for user '{name}' (admin console)"),
        );
    }
    c.ok(caps)?;
    loop {
        let p = match c.read() {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        match p.first() {
            Some(0x01) => return Ok(()), // COM_QUIT
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&p[1..]).into_owned();
                let fd = c.s.as_raw_fd();
                let gone = move || client_gone(fd);
                let (a, then) = match answer(&sql, target, &gone) {
                    Answer::Then(a, then) => (*a, Some(then)),
                    a => (a, None),
                };
                let sent = match a {
                    Answer::Ok => c.ok(caps),
                    Answer::Rows(cols, rows) => result_set(&cols, &rows, caps)
                        .iter()
                        .try_for_each(|packet| c.write(packet)),
                    Answer::Err(code, state, msg) => c.err(code, state, &msg),
                    Answer::Then(..) => c.err(1105, b"HY000", "sluice console: nested answer"),
                };
                // What comes after the answer (a SHUTDOWN) happens whether it reached the
                // client or not.
                if let Some(then) = then {
                    then();
                }
                sent?;
            }
            Some(0x02 | 0x0e) => c.ok(caps)?, // COM_INIT_DB, COM_PING
            _ => c.err(1047, b"08S01", "Unknown command (admin console)")?,
        }
    }
}

enum Answer {
    Ok,
    Rows(Vec<String>, Vec<Vec<Option<String>>>),
    Err(u16, &'static [u8; 5], String),
    /// This answer, then this action (once the answer is written: a SHUTDOWN).
    Then(Box<Answer>, Box<dyn FnOnce() + Send>),
}

/// A string column (utf8mb4, up to 1024 characters).
const TEXT: ColumnTemplate = [0x0c, 45, 0, 0, 0x10, 0, 0, 0xfd, 0, 0, 0x27, 0, 0];

/// The packets of a text result set.
fn result_set(cols: &[String], rows: &[Vec<Option<String>>], caps: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut n = Vec::new();
    put_lenenc_int(&mut n, cols.len() as u64);
    out.push(n);
    for name in cols {
        out.push(crate::frontend::answer::column(
            &crate::frontend::answer::Column {
                name: name.as_bytes(),
                template: &TEXT,
                charset: None,
                value: None,
            },
            false,
        ));
    }
    let status = crate::codec::caps::status::AUTOCOMMIT;
    let classic = caps & cap::DEPRECATE_EOF == 0;
    let eof = || {
        let mut e = Vec::new();
        EofPacket {
            warnings: 0,
            status,
        }
        .encode(&mut e);
        e
    };
    if classic {
        out.push(eof());
    }
    for r in rows {
        let mut p = Vec::new();
        for v in r {
            match v {
                Some(v) => put_lenenc_bytes(&mut p, v.as_bytes()),
                None => p.push(0xfb),
            }
        }
        out.push(p);
    }
    if classic {
        out.push(eof());
    } else {
        let mut e = Vec::new();
        OkPacket {
            status,
            ..OkPacket::default()
        }
        .encode(&mut e, EOF, caps);
        out.push(e);
    }
    out
}

const HELP: &str = "the admin console understands SHOW BACKENDS | SHOW POOLS | SHOW STATS | SHOW WORKERS | SHOW CLIENTS | SHOW PINS | SHOW CONFIG [LIKE 'pattern'] | KILL CLIENT [QUERY] id | KILL CLIENTS WHERE USER = 'name' | KILL CLIENTS WHERE SOURCE = 'ip' | RECONNECT [BACKEND x] | RELOAD | SET key = value | DRAIN BACKEND x [TIMEOUT ms] | UNDRAIN BACKEND x | MAINTENANCE BACKEND x | ADD BACKEND x [ROLE r] [WEIGHT n] [TLS ON] [TLS_CA 'file'] [TLS_SERVER_NAME 'name'] [TLS_VERIFY OFF] | REMOVE BACKEND x | PAUSE [TIMEOUT ms] | RESUME | SHUTDOWN [WAIT_FOR_CLIENTS] [TIMEOUT ms] | UPGRADE";

/// Splits a statement into words (a quoted or backquoted word keeps its spaces, without its
/// quotes; `=` outside quotes is a word of its own; a trailing `;` goes).
fn words(sql: &str) -> Vec<String> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&ch) = chars.peek() {
        if ch.is_whitespace() {
            chars.next();
        } else if matches!(ch, '\'' | '"' | '`') {
            chars.next();
            let w: String = chars.by_ref().take_while(|&x| x != ch).collect();
            out.push(w);
        } else if ch == '=' {
            chars.next();
            out.push("=".into());
        } else {
            let mut w = String::new();
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() || matches!(x, '=' | '\'' | '"' | '`') {
                    break;
                }
                w.push(x);
                chars.next();
            }
            out.push(w);
        }
    }
    out
}

/// Has the console client on `fd` hung up (while it waits for an answer)? A peek that does not
/// wait: end of stream or an error other than "nothing to read yet".
fn client_gone(fd: std::os::fd::RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the bytes, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

/// `gone`: whether the console client has hung up (a waiting PAUSE stops waiting).
fn answer(sql: &str, target: &Target, gone: &dyn Fn() -> bool) -> Answer {
    let w = words(sql);
    let up: Vec<String> = w.iter().map(|s| s.to_ascii_uppercase()).collect();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    match up.as_slice() {
        ["SELECT", "@@VERSION_COMMENT", ..] => Answer::Rows(
            vec!["@@version_comment".into()],
            vec![vec![Some("sluice admin console".into())]],
        ),
        ["SELECT", "DATABASE()", ..] => Answer::Rows(vec!["DATABASE()".into()], vec![vec![None]]),
        ["SHOW", "BACKENDS" | "SERVERS"] => show_backends(target),
        ["SHOW", "POOLS"] => show_pools(target),
        ["SHOW", "STATS"] => show_stats(target),
        ["SHOW", "WORKERS"] => show_workers(target),
        ["SHOW", "CLIENTS"] => show_clients(target),
        ["SHOW", "CONFIG"] => show_config(target, None),
        ["SHOW", "CONFIG", "LIKE", _] => show_config(target, Some(&w[3])),
        ["SHOW", "PINS"] => show_pins(target),
        ["KILL", "CLIENT", id] | ["KILL", "CLIENT", "CONNECTION", id] => match id.parse::<u32>() {
            Ok(id) => kill_client(target, id, "connection"),
            Err(_) => syntax(),
        },
        ["KILL", "CLIENTS" | "CLIENT", "WHERE", field @ ("USER" | "SOURCE"), "=", _] => {
            kill_where(target, field, &w[5])
        }
        ["KILL", "CLIENT", "QUERY", id] => match id.parse::<u32>() {
            Ok(id) => kill_client(target, id, "query"),
            Err(_) => syntax(),
        },
        ["UPGRADE"] => upgrade(target),
        ["RELOAD"] => {
            // systemd hears RELOADING=1, then READY=1 with the report (see crate::notify).
            let mut answers = Vec::new();
            crate::notify::reloading(|| {
                answers = target.ask_all("RELOAD");
                answers.join("; ")
            });
            if let Some(e) = answers.iter().find(|a| a.starts_with("ERR ")) {
                let msg = e.splitn(4, ' ').nth(3).unwrap_or(e).to_string();
                return Answer::Err(1105, b"HY000", msg);
            }
            per_worker(answers)
        }
        [verb @ ("DRAIN" | "UNDRAIN" | "MAINTENANCE" | "REMOVE"), "BACKEND", ..]
            if w.len() >= 3 =>
        {
            let mut line = format!("BACKEND {verb} {}", w[2]);
            match &up[3..] {
                [] => {}
                ["TIMEOUT", _] if *verb == "DRAIN" => line.push_str(&format!(" TIMEOUT {}", w[4])),
                _ => return syntax(),
            }
            everywhere(target, &line)
        }
        ["PAUSE" | "RESUME" | "SHUTDOWN" | "SET", ..] => match parse_op(&w) {
            Ok(Op::Pause { timeout_ms }) => pause(target, timeout_ms, gone),
            Ok(Op::Resume) => resume(target),
            Ok(Op::Shutdown {
                wait_for_clients,
                timeout_ms,
            }) => shutdown(target, wait_for_clients, timeout_ms),
            Ok(Op::Set { key, value }) => set(target, &key, &value),
            Err(msg) => Answer::Err(1064, b"42000", msg),
        },
        ["RECONNECT"] => reconnect(target, "RECONNECT"),
        ["RECONNECT", "BACKEND", _] => reconnect(target, &format!("RECONNECT {}", w[2])),
        ["ADD", "BACKEND", ..] if w.len() >= 3 => match add_backend_request(&w) {
            Some(line) => everywhere(target, &line),
            None => syntax(),
        },
        _ => syntax(),
    }
}

/// PAUSE's bound when none is given.
pub const PAUSE_TIMEOUT_MS: u64 = 10_000;
/// The longest TIMEOUT taken (a day); longer ones are cut to it.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The operations that change how the whole instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Pause {
        timeout_ms: u64,
    },
    Resume,
    Shutdown {
        wait_for_clients: bool,
        timeout_ms: Option<u64>,
    },
    Set {
        key: String,
        value: String,
    },
}

/// Parses `PAUSE [TIMEOUT ms]`, `RESUME`, `SHUTDOWN [WAIT_FOR_CLIENTS] [TIMEOUT ms]`,
/// `SET [GLOBAL] key = value` (or `TO`) from the statement's words; `Err`: the syntax
/// expected (ERR 1064).
fn parse_op(w: &[String]) -> Result<Op, String> {
    let up: Vec<String> = w.iter().map(|s| s.to_ascii_uppercase()).collect();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    let ms = |s: &str| s.parse::<u64>().ok().map(|n| n.min(MAX_TIMEOUT_MS));
    match up.as_slice() {
        ["PAUSE"] => Ok(Op::Pause {
            timeout_ms: PAUSE_TIMEOUT_MS,
        }),
        ["PAUSE", "TIMEOUT", n] => ms(n)
            .map(|timeout_ms| Op::Pause { timeout_ms })
            .ok_or_else(|| "PAUSE [TIMEOUT <ms>]".to_string()),
        ["RESUME"] => Ok(Op::Resume),
        ["SHUTDOWN", rest @ ..] => {
            let usage = "SHUTDOWN [WAIT_FOR_CLIENTS] [TIMEOUT <ms>]";
            let (wait_for_clients, rest) = match rest {
                ["WAIT_FOR_CLIENTS", rest @ ..] => (true, rest),
                rest => (false, rest),
            };
            let timeout_ms = match rest {
                [] => None,
                ["TIMEOUT", n] if wait_for_clients => Some(ms(n).ok_or(usage)?),
                _ => return Err(usage.into()),
            };
            Ok(Op::Shutdown {
                wait_for_clients,
                timeout_ms,
            })
        }
        ["SET", ..] => {
            let usage = "SET <key> = <value> (SHOW CONFIG lists the keys)";
            let at = if up.get(1) == Some(&"GLOBAL") { 2 } else { 1 };
            match (w.get(at), up.get(at + 1), w.get(at + 2), w.len()) {
                (Some(key), Some(&("=" | "TO")), Some(value), n) if n == at + 3 => {
                    if value.contains(['\n', '\r']) || key.contains(['\n', '\r']) {
                        return Err(usage.into());
                    }
                    Ok(Op::Set {
                        key: key.to_ascii_lowercase(),
                        value: value.clone(),
                    })
                }
                _ => Err(usage.into()),
            }
        }
        _ => Err(HELP.into()),
    }
}

/// Every process's pause status after `line` (`None` for one that did not answer as expected).
fn pause_statuses(target: &Target, line: &str) -> Vec<Option<PauseStatus>> {
    target
        .ask_all(line)
        .iter()
        .map(|a| serde_json::from_str(a).ok())
        .collect()
}

/// `PAUSE [TIMEOUT ms]`: every shard of every process stops handing out backends for new
/// commands (they wait at the gate; see [`crate::shard::pause`]), then this waits for what is in
/// flight (statements running, transactions open) to end, up to the timeout. Answers with what
/// it waited for once all is quiet; at the timeout ERR 1205 naming what is still busy (the pause
/// stays: RESUME lifts it); ERR 1317 when a RESUME (from another console) cancelled it. The pause
/// is applied everywhere before the wait starts; if a process cannot be paused (or stops
/// answering), every process is resumed and the PAUSE fails: never half-applied. Closing the
/// console connection that waits (`gone`) ends the wait and leaves the pause in effect, fully
/// applied, as PgBouncer's does: only RESUME (or a shutdown) lifts it; the log says so.
fn pause(target: &Target, timeout_ms: u64, gone: &dyn Fn() -> bool) -> Answer {
    use crate::shard::pause::{progress, Progress};
    let started = std::time::Instant::now();
    let first = pause_statuses(target, "PAUSE");
    if let Some(i) = first.iter().position(Option::is_none) {
        target.ask_all("RESUME");
        return Answer::Err(
            1105,
            b"HY000",
            format!("PAUSE not applied: worker {i} did not answer; every worker was resumed"),
        );
    }
    let waited_for = PauseStatus::sum(first.iter().flatten());
    info!(waiting_for = %waited_for.describe(), timeout_ms, "PAUSE: new commands wait; waiting for work in flight");
    let deadline = started + Duration::from_millis(timeout_ms);
    let mut now = first;
    loop {
        match progress(&now) {
            Progress::Quiet => {
                let last = PauseStatus::sum(now.iter().flatten());
                let ms = started.elapsed().as_millis().to_string();
                info!(waited_ms = %ms, "PAUSE: quiet");
                return Answer::Rows(
                    vec![
                        "paused".into(),
                        "waited_for_statements".into(),
                        "waited_for_transactions".into(),
                        "clients_waiting".into(),
                        "waited_ms".into(),
                    ],
                    vec![vec![
                        Some("yes".into()),
                        Some(waited_for.running.to_string()),
                        Some(waited_for.in_transaction.to_string()),
                        Some(last.waiting.to_string()),
                        Some(ms),
                    ]],
                );
            }
            Progress::Resumed => {
                info!("PAUSE: cancelled by RESUME");
                return Answer::Err(
                    1317,
                    b"70100",
                    format!(
                        "PAUSE interrupted: the pause was lifted (a RESUME, or a worker restarted) after {} ms",
                        started.elapsed().as_millis()
                    ),
                );
            }
            Progress::Unreachable(i) => {
                target.ask_all("RESUME");
                return Answer::Err(
                    1105,
                    b"HY000",
                    format!("PAUSE failed: worker {i} stopped answering; every worker was resumed"),
                );
            }
            Progress::Busy(b) => {
                if gone() {
                    warn!(busy = %b.describe(), "PAUSE: the console client that asked left; the pause stays in effect (RESUME lifts it)");
                    return Answer::Err(1317, b"70100", "PAUSE: client gone".into());
                }
                if std::time::Instant::now() >= deadline {
                    warn!(busy = %b.describe(), timeout_ms, "PAUSE: timed out; the pause stays in effect");
                    return Answer::Err(
                        1205,
                        b"HY000",
                        format!(
                            "PAUSE timed out after {timeout_ms} ms, still busy: {}; the pause stays in effect (RESUME lifts it)",
                            b.describe()
                        ),
                    );
                }
            }
        }
        std::thread::sleep(PAUSE_POLL);
        now = pause_statuses(target, "PAUSE STATUS");
    }
}

/// How often a waiting PAUSE asks how busy the processes are.
const PAUSE_POLL: Duration = Duration::from_millis(20);

/// `RESUME`: every process lifts its pause; commands waiting at the gate go on at once. One
/// row: how many were waiting.
fn resume(target: &Target) -> Answer {
    let all = pause_statuses(target, "RESUME");
    if let Some(i) = all.iter().position(Option::is_none) {
        return Answer::Err(
            1105,
            b"HY000",
            format!("RESUME: worker {i} did not answer (the others resumed)"),
        );
    }
    let sum = PauseStatus::sum(all.iter().flatten());
    info!(released = sum.waiting, "RESUME");
    Answer::Rows(
        vec!["resumed".into(), "clients_released".into()],
        vec![vec![Some("yes".into()), Some(sum.waiting.to_string())]],
    )
}

/// `UPGRADE`: what SIGUSR2 does (see [`crate::upgrade`]): starts the binary at this path as a
/// successor and hands the clients over. Answered once it started (the successor's start and
/// the handover go on after the answer; the log says how they went). With worker processes, the
/// supervisor upgrades them one at a time.
fn upgrade(target: &Target) -> Answer {
    match target {
        Target::Local(shared) => match crate::upgrade::start(shared.clone()) {
            Ok(()) => {
                info!("UPGRADE from the admin console");
                Answer::Rows(
                    vec!["upgrade".into()],
                    vec![vec![Some(
                        "started: the log says when the successor is ready and how many clients moved"
                            .into(),
                    )]],
                )
            }
            Err(e) => Answer::Err(1105, b"HY000", format!("UPGRADE: {e}")),
        },
        // The supervisor upgrades its workers one at a time on SIGUSR2 (crate::upgrade).
        Target::Workers { .. } => {
            info!("UPGRADE from the admin console: upgrading the workers");
            // SAFETY: kill(2) on our own pid with a valid signal number.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
            Answer::Rows(
                vec!["upgrade".into()],
                vec![vec![Some(
                    "started: the workers are upgraded one at a time; the log says how it goes"
                        .into(),
                )]],
            )
        }
    }
}

/// A SHUTDOWN is under way (a second one with WAIT_FOR_CLIENTS is refused).
static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stops this process as SIGTERM does (the signal goes to this process, whose main thread
/// waits for it: a single process drains its shards, the supervisor stops its workers). Not
/// when it is stopping already: a second signal would make it exit at once.
fn raise_sigterm() {
    if crate::server::STOPPING.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: kill(2) on our own pid with a valid signal number.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// `SHUTDOWN`: as SIGTERM (no new clients; idle ones closed, active ones after their command;
/// `shutdown_timeout_ms`), answered OK first. `SHUTDOWN WAIT_FOR_CLIENTS [TIMEOUT ms]`: every
/// shard of every process closes its listener (new connections are refused) and keeps serving
/// its clients; once none is left (or at the timeout; without one, for as long as it takes)
/// the process stops as SIGTERM stops it. Answered at once with the clients it waits for; the
/// log says every few seconds how many are left.
fn shutdown(target: &Target, wait_for_clients: bool, timeout_ms: Option<u64>) -> Answer {
    if !wait_for_clients {
        SHUTTING_DOWN.store(true, Ordering::Release);
        info!("SHUTDOWN from the admin console: stopping as on SIGTERM");
        return Answer::Then(Box::new(Answer::Ok), Box::new(raise_sigterm));
    }
    if SHUTTING_DOWN.swap(true, Ordering::AcqRel) {
        return Answer::Err(1105, b"HY000", "a SHUTDOWN is already under way".into());
    }
    let answers = target.ask_all("ACCEPT STOP");
    let mut clients = 0u64;
    for a in &answers {
        match a.strip_prefix("OK ").and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => clients += n,
            None => {
                // A process that did not stop accepting: stop everything the plain way rather
                // than leave one half-closed.
                warn!(answer = %a, "SHUTDOWN WAIT_FOR_CLIENTS: a worker did not stop accepting; shutting down now");
                return Answer::Then(
                    Box::new(Answer::Err(
                        1105,
                        b"HY000",
                        format!("a worker did not stop accepting ({a}); shutting down now as SIGTERM does"),
                    )),
                    Box::new(raise_sigterm),
                );
            }
        }
    }
    info!(
        clients,
        ?timeout_ms,
        "SHUTDOWN WAIT_FOR_CLIENTS: no new clients; waiting for the connected ones to leave"
    );
    let target = target.clone();
    let wait = move || {
        let _ = std::thread::Builder::new()
            .name("sluice-shutdown".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let limit = timeout_ms.map(Duration::from_millis);
                let mut said = started;
                loop {
                    if crate::server::STOPPING.load(Ordering::Acquire) {
                        // A signal or a plain SHUTDOWN took over.
                        return;
                    }
                    let left: Option<u64> = json_lines::<Vec<crate::metrics::ShardSnapshot>>(
                        &target, "STATS",
                    )
                    .ok()
                    .map(|all| all.iter().flatten().map(|s| s.clients).sum());
                    if left == Some(0) {
                        info!("SHUTDOWN WAIT_FOR_CLIENTS: every client has left; stopping");
                        break;
                    }
                    if limit.is_some_and(|l| started.elapsed() >= l) {
                        warn!(clients = ?left, "SHUTDOWN WAIT_FOR_CLIENTS: timeout; stopping as on SIGTERM");
                        break;
                    }
                    if said.elapsed() >= Duration::from_secs(5) {
                        said = std::time::Instant::now();
                        info!(clients = ?left, "SHUTDOWN WAIT_FOR_CLIENTS: waiting for clients to leave");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                raise_sigterm();
            });
    };
    Answer::Then(
        Box::new(Answer::Rows(
            vec![
                "shutdown".into(),
                "clients_connected".into(),
                "timeout_ms".into(),
            ],
            vec![vec![
                Some("waiting for clients".into()),
                Some(clients.to_string()),
                timeout_ms.map(|t| t.to_string()),
            ]],
        )),
        Box::new(wait),
    )
}

/// `SET key = value`: every process applies it as a reload that finds only this key changed
/// ([`crate::reload::set`]); refusals are the server's codes for `SET` (1193 unknown, 1238
/// needs a restart, 1231 wrong value). The file is not written: a later RELOAD (or SIGHUP)
/// makes the file's value live again.
fn set(target: &Target, key: &str, value: &str) -> Answer {
    // Decided here first (the same pure check every process makes), so a refusal names the key
    // once and no process applies anything.
    if let Target::Local(shared) = target {
        if let Err((code, state, msg)) = crate::reload::set_plan(&shared.live(), key, value) {
            return Answer::Err(code, static_state(state), msg);
        }
    }
    let answers = target.ask_all(&format!("SET {key} {value}"));
    if let Some(e) = answers.iter().find(|a| a.starts_with("ERR ")) {
        let mut parts = e.splitn(4, ' ').skip(1);
        let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1105);
        let state = parts
            .next()
            .and_then(|s| <[u8; 5]>::try_from(s.as_bytes()).ok())
            .unwrap_or(*b"HY000");
        let msg = parts.next().unwrap_or("").to_string();
        return Answer::Err(code, static_state(state), msg);
    }
    per_worker(answers)
}

/// One row per worker process: its number and its answer.
fn per_worker(answers: Vec<String>) -> Answer {
    Answer::Rows(
        vec!["worker".into(), "result".into()],
        answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| vec![Some(i.to_string()), Some(a)])
            .collect(),
    )
}

/// The SQLSTATEs the console answers with, as `'static` (an [`Answer::Err`] keeps a reference).
fn static_state(state: [u8; 5]) -> &'static [u8; 5] {
    match &state {
        b"42000" => b"42000",
        b"08S01" => b"08S01",
        b"70100" => b"70100",
        _ => b"HY000",
    }
}

/// The admin request for `ADD BACKEND <address> [ROLE r] [WEIGHT n] [TLS ON|OFF] [TLS_CA 'file']
/// [TLS_SERVER_NAME 'name'] [TLS_VERIFY ON|OFF]` (`w`: the statement's words), or `None` for
/// bad syntax. Any `TLS_…` option turns TLS on; as in the file, verifying is the default and
/// needs a CA (the worker checks the backend as it checks the file's: see
/// `BackendConfig::problems`).
fn add_backend_request(w: &[String]) -> Option<String> {
    let (mut role, mut weight) = ("any".to_string(), "1".to_string());
    let (mut tls, mut verify, mut ca, mut name) = (false, true, None, None);
    let on_off = |v: &str| match v.to_ascii_uppercase().as_str() {
        "ON" | "1" | "TRUE" => Some(true),
        "OFF" | "0" | "FALSE" => Some(false),
        _ => None,
    };
    let mut i = 3;
    while i < w.len() {
        let value = w.get(i + 1)?;
        match w[i].to_ascii_uppercase().as_str() {
            "ROLE" => role = value.to_ascii_lowercase(),
            "WEIGHT" => weight = value.clone(),
            "TLS" => tls = on_off(value)?,
            "TLS_VERIFY" => (tls, verify) = (true, on_off(value)?),
            "TLS_CA" => (tls, ca) = (true, Some(value.as_str())),
            "TLS_SERVER_NAME" => (tls, name) = (true, Some(value.as_str())),
            _ => return None,
        }
        i += 2;
    }
    let mut line = format!("BACKEND ADD {} {role} {weight}", w[2]);
    if tls {
        let (ca, name) = (crate::admin::hex_opt(ca), crate::admin::hex_opt(name));
        line.push_str(&format!(" TLS {} {ca} {name}", u8::from(verify)));
    }
    Some(line)
}

fn syntax() -> Answer {
    Answer::Err(1064, b"42000", HELP.into())
}

/// Sends a change to every process; OK when every one applied it, else the first refusal.
fn everywhere(target: &Target, line: &str) -> Answer {
    everywhere_answers(target.ask_all(line))
}

fn everywhere_answers(answers: Vec<String>) -> Answer {
    for a in answers {
        if let Some(e) = a.strip_prefix("ERR ") {
            let mut parts = e.splitn(3, ' ');
            let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1105);
            let _state = parts.next();
            let msg = parts.next().unwrap_or("").to_string();
            return Answer::Err(code, b"HY000", msg);
        }
    }
    Answer::Ok
}

/// Every process's answer to `line`, parsed as JSON (an answer that is not: the error).
fn json_lines<T: serde::de::DeserializeOwned>(
    target: &Target,
    line: &str,
) -> Result<Vec<T>, Answer> {
    target
        .ask_all(line)
        .into_iter()
        .map(|a| {
            serde_json::from_str(&a)
                .map_err(|_| Answer::Err(1105, b"HY000", format!("a worker answered {a:?}")))
        })
        .collect()
}

fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn show_backends(target: &Target) -> Answer {
    let per_worker: Vec<serde_json::Value> = match json_lines(target, "BACKENDS") {
        Ok(v) => v,
        Err(a) => return a,
    };
    const COLS: [&str; 14] = [
        "id",
        "address",
        "role",
        "weight",
        "state",
        "health",
        "writable",
        "open",
        "idle",
        "in_use",
        "pinned",
        "probes",
        "probe_failures",
        "reason",
    ];
    const SUMMED: [&str; 4] = ["open", "idle", "in_use", "pinned"];
    let Some(first) = per_worker.first().and_then(|v| v.as_array()) else {
        return Answer::Rows(COLS.map(String::from).to_vec(), Vec::new());
    };
    let rows = first
        .iter()
        .map(|b| {
            COLS.iter()
                .map(|c| {
                    if SUMMED.contains(c) {
                        let sum: u64 = per_worker
                            .iter()
                            .filter_map(|w| w.as_array())
                            .filter_map(|w| w.iter().find(|x| x["address"] == b["address"]))
                            .filter_map(|x| x[*c].as_u64())
                            .sum();
                        Some(sum.to_string())
                    } else {
                        text(&b[*c])
                    }
                })
                .collect()
        })
        .collect();
    Answer::Rows(COLS.map(String::from).to_vec(), rows)
}

/// Every shard snapshot of every process (`STATS`), by process.
fn stats(target: &Target) -> Result<Vec<Vec<crate::metrics::ShardSnapshot>>, Answer> {
    json_lines(target, "STATS")
}

fn show_pools(target: &Target) -> Answer {
    let all = match stats(target) {
        Ok(v) => v,
        Err(a) => return a,
    };
    let mut pools: std::collections::BTreeMap<(String, String), [u64; 8]> = Default::default();
    // With worker processes, the host budget (see crate::backend::budget): its size and the
    // slots each worker holds (one value per process: its shards report the same).
    type Budget = (u64, std::collections::BTreeMap<usize, u64>);
    let mut budgets: std::collections::BTreeMap<(String, String), Budget> = Default::default();
    for (w, snaps) in all.iter().enumerate() {
        for p in snaps.iter().flat_map(|s| &s.pools).filter(|p| p.budget) {
            let e = budgets
                .entry((p.backend.clone(), p.user.clone()))
                .or_default();
            e.0 = e.0.max(p.budget_limit);
            e.1.insert(w, p.budget_held);
        }
    }
    for p in all.iter().flatten().flat_map(|s| &s.pools) {
        let e = pools
            .entry((p.backend.clone(), p.user.clone()))
            .or_default();
        for (a, b) in e.iter_mut().zip([
            p.open,
            p.idle,
            p.limit,
            p.waiting,
            p.pinned,
            p.checkouts,
            p.waits,
            p.timeouts,
        ]) {
            *a += b;
        }
    }
    let cols = [
        "backend",
        "user",
        "open",
        "idle",
        "in_use",
        "limit",
        "waiting",
        "pinned",
        "checkouts",
        "queue_waits",
        "queue_timeouts",
        "budget",
        "budget_held",
    ];
    let rows = pools
        .into_iter()
        .map(|((b, u), n)| {
            let budget = budgets.get(&(b.clone(), u.clone()));
            let held = budget.map(|(_, by)| {
                by.iter()
                    .map(|(w, h)| format!("worker {w}: {h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let mut r = vec![
                Some(b),
                Some(if u.is_empty() {
                    "(database users)".into()
                } else {
                    u
                }),
            ];
            r.push(Some(n[0].to_string()));
            r.push(Some(n[1].to_string()));
            r.push(Some(n[0].saturating_sub(n[1]).to_string()));
            r.extend(n[2..].iter().map(|v| Some(v.to_string())));
            r.push(budget.map(|(limit, _)| limit.to_string()));
            r.push(held);
            r
        })
        .collect();
    Answer::Rows(cols.map(String::from).to_vec(), rows)
}

fn show_stats(target: &Target) -> Answer {
    let all = match stats(target) {
        Ok(v) => v,
        Err(a) => return a,
    };
    let shards: Vec<&crate::metrics::ShardSnapshot> = all.iter().flatten().collect();
    let sum = |f: fn(&crate::metrics::ShardSnapshot) -> u64| -> String {
        shards.iter().map(|s| f(s)).sum::<u64>().to_string()
    };
    let errors: u64 = shards.iter().flat_map(|s| s.errors.values()).sum();
    let pinned: i64 = shards.iter().flat_map(|s| s.pinned_now.iter()).sum();
    let rows: Vec<(&str, String)> = vec![
        ("clients", sum(|s| s.clients)),
        ("clients_parked", sum(|s| s.parked)),
        ("accepted", sum(|s| s.accepted)),
        ("commands", sum(|s| s.commands)),
        ("errors", errors.to_string()),
        ("sessions_pinned", pinned.to_string()),
        ("pin_refusals", sum(|s| s.pin_refusals)),
        ("settings_syncs", sum(|s| s.syncs)),
        ("lazy_prepares", sum(|s| s.lazy_prepares)),
        ("no_backend_waits", sum(|s| s.no_backend_waits)),
        ("drain_closes", sum(|s| s.drain_closes)),
        ("idle_timeouts", sum(|s| s.idle_timeouts)),
        ("client_bytes_in", sum(|s| s.client_bytes_in)),
        ("client_bytes_out", sum(|s| s.client_bytes_out)),
        ("processes", all.len().to_string()),
        ("shards", shards.len().to_string()),
    ];
    Answer::Rows(
        vec!["name".into(), "value".into()],
        rows.into_iter()
            .map(|(k, v)| vec![Some(k.to_string()), Some(v)])
            .collect(),
    )
}

/// `SHOW CONFIG`: every key with its live value and whether a reload applies it (from the one
/// list in [`crate::reload`]), then the configured backends' fields.
fn show_config(target: &Target, like: Option<&str>) -> Answer {
    match json_lines::<Vec<crate::reload::Shown>>(target, "CONFIG") {
        Ok(per_worker) => Answer::Rows(
            vec!["name".into(), "value".into(), "reloadable".into()],
            merge_config(&per_worker)
                .into_iter()
                .filter(|r| like.is_none_or(|p| like_match(p, r[0].as_deref().unwrap_or(""))))
                .collect(),
        ),
        Err(a) => a,
    }
}

/// SQL `LIKE` without escapes, case-insensitive: `%` any run of characters, `_` one.
fn like_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let s: Vec<char> = s.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point (the last `%`): linear in practice, never
    // exponential.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && (p[i] == '_' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '%' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '%')
}

/// One row per key, in the first process's order. Workers normally agree; where one does not
/// (a reload that failed in one of them), the value names each worker's.
fn merge_config(per_worker: &[Vec<crate::reload::Shown>]) -> Vec<Vec<Option<String>>> {
    let Some(first) = per_worker.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|k| {
            let values: Vec<Option<&str>> = per_worker
                .iter()
                .map(|w| {
                    w.iter()
                        .find(|x| x.name == k.name)
                        .and_then(|x| x.value.as_deref())
                })
                .collect();
            let value = if values.iter().all(|v| *v == values[0]) {
                k.value.clone()
            } else {
                Some(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| format!("worker {i}: {}", v.unwrap_or("NULL")))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            };
            let yes_no = if k.reloadable { "yes" } else { "no" };
            vec![Some(k.name.clone()), value, Some(yes_no.into())]
        })
        .collect()
}

/// `SHOW PINS`: sessions pinned to their backend now and pins since start, by reason, summed
/// over every shard and process (the `sluice_pinned_sessions` / `sluice_pins_total` metrics).
fn show_pins(target: &Target) -> Answer {
    let all = match stats(target) {
        Ok(v) => v,
        Err(a) => return a,
    };
    Answer::Rows(
        vec!["reason".into(), "pinned_now".into(), "pins_total".into()],
        pin_rows(all.iter().flatten()),
    )
}

/// One row per pin reason, in [`crate::session::pins::PinReason::ALL`]'s order.
fn pin_rows<'a>(
    shards: impl Iterator<Item = &'a crate::metrics::ShardSnapshot>,
) -> Vec<Vec<Option<String>>> {
    use crate::session::pins::{PinReason, PIN_REASONS};
    let (mut now, mut total) = ([0i64; PIN_REASONS], [0u64; PIN_REASONS]);
    for s in shards {
        for i in 0..PIN_REASONS {
            now[i] += s.pinned_now[i];
            total[i] += s.pins_total[i];
        }
    }
    PinReason::ALL
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                Some(r.name().to_string()),
                Some(now[i].max(0).to_string()),
                Some(total[i].to_string()),
            ]
        })
        .collect()
}

fn show_clients(target: &Target) -> Answer {
    let per_worker: Vec<serde_json::Value> = match json_lines(target, "CLIENTS") {
        Ok(v) => v,
        Err(a) => return a,
    };
    const COLS: [&str; 10] = [
        "id", "user", "source", "state", "schema", "backend", "idle_s", "holds", "command", "shard",
    ];
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for w in per_worker.iter().filter_map(|w| w.as_array()) {
        for c in w {
            rows.push(COLS.iter().map(|k| text(&c[*k])).collect());
        }
    }
    rows.sort_by_key(|r| r[0].as_deref().and_then(|v| v.parse::<u64>().ok()));
    Answer::Rows(COLS.map(String::from).to_vec(), rows)
}

/// `KILL CLIENTS WHERE USER = 'x' | SOURCE = 'ip'`: every process ends its matching clients;
/// one row, how many ended.
fn kill_where(target: &Target, field: &str, value: &str) -> Answer {
    if value.contains(['\n', '\r']) || value.trim().is_empty() {
        return syntax();
    }
    let answers = target.ask_all(&format!("KILL WHERE {field} {value}"));
    let mut killed = 0u64;
    for a in &answers {
        match a.strip_prefix("OK ").and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => killed += n,
            None if a.starts_with("ERR ") => return everywhere_answers(vec![a.clone()]),
            None => {
                return Answer::Err(
                    1105,
                    b"HY000",
                    format!("sluice console: a worker answered KILL with {a:?}"),
                )
            }
        }
    }
    Answer::Rows(vec!["killed".into()], vec![vec![Some(killed.to_string())]])
}

/// `RECONNECT [BACKEND x]`: every process retires its pooled connections; one row per backend,
/// summed over the processes: closed now, closing as they come back.
fn reconnect(target: &Target, line: &str) -> Answer {
    let answers = target.ask_all(line);
    if let Some(e) = answers.iter().find(|a| a.starts_with("ERR ")) {
        return everywhere_answers(vec![e.clone()]);
    }
    let per_worker: Vec<Vec<crate::admin::Retired>> = match answers
        .iter()
        .map(|a| serde_json::from_str(a))
        .collect::<Result<_, _>>()
    {
        Ok(v) => v,
        Err(_) => {
            return Answer::Err(
                1105,
                b"HY000",
                format!("sluice console: a worker answered RECONNECT with {answers:?}"),
            )
        }
    };
    let mut sum: Vec<crate::admin::Retired> = Vec::new();
    for r in per_worker.into_iter().flatten() {
        match sum.iter_mut().find(|s| s.backend == r.backend) {
            Some(s) => {
                s.closed += r.closed;
                s.closing += r.closing;
            }
            None => sum.push(r),
        }
    }
    Answer::Rows(
        vec![
            "backend".into(),
            "closed_now".into(),
            "closing_when_released".into(),
        ],
        sum.into_iter()
            .map(|r| {
                vec![
                    Some(r.backend),
                    Some(r.closed.to_string()),
                    Some(r.closing.to_string()),
                ]
            })
            .collect(),
    )
}

/// KILL [QUERY] for any client: asked of every process; the one that holds it answers.
fn kill_client(target: &Target, id: u32, kind: &str) -> Answer {
    let line = format!("KILL {id} {kind} {}", crate::shard::kill::BY_ADMIN);
    // (During an upgrade's handover a worker may ask the other process of its upgrade: see
    // `upgrade::peer`.)
    let answers = target.ask_all_kill(&line);
    if answers.iter().any(|a| a == "OK") {
        return Answer::Ok;
    }
    // Not there: every process says so (1094); another refusal says more.
    let best = answers
        .iter()
        .find(|a| !a.starts_with("ERR 1094"))
        .or(answers.first())
        .cloned()
        .unwrap_or_else(|| format!("ERR 1094 HY000 Unknown thread id: {id}"));
    everywhere_answers(vec![best])
}

/// `SHOW WORKERS`: each process's state, shards and clients, and whether it is paused (with
/// the commands waiting for RESUME).
fn show_workers(target: &Target) -> Answer {
    let all = target.ask_all("STATS");
    let pauses = pause_statuses(target, "PAUSE STATUS");
    let rows = all
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let pause = pauses.get(i).cloned().flatten();
            let snaps: Option<Vec<crate::metrics::ShardSnapshot>> = serde_json::from_str(a).ok();
            let clients = snaps
                .as_ref()
                .map(|s| s.iter().map(|x| x.clients).sum::<u64>().to_string());
            vec![
                Some(i.to_string()),
                Some(
                    if snaps.is_some() {
                        "up"
                    } else {
                        "not answering"
                    }
                    .into(),
                ),
                snaps.as_ref().map(|s| s.len().to_string()),
                clients,
                pause
                    .as_ref()
                    .map(|p| if p.paused { "yes" } else { "no" }.to_string()),
                pause.as_ref().map(|p| p.waiting.to_string()),
            ]
        })
        .collect();
    Answer::Rows(
        vec![
            "worker".into(),
            "state".into(),
            "shards".into(),
            "clients".into(),
            "paused".into(),
            "clients_waiting".into(),
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_backend_requests() {
        let req = |sql: &str| add_backend_request(&words(sql));
        let hex = |t: &str| crate::admin::hex_opt(Some(t));
        #[rustfmt::skip]
        let table: &[(&str, Option<String>)] = &[
            ("ADD BACKEND 10.0.0.1:3306", Some("BACKEND ADD 10.0.0.1:3306 any 1".into())),
            ("add backend db:3306 role Replica weight 5",
                Some("BACKEND ADD db:3306 replica 5".into())),
            ("ADD BACKEND db:3306 TLS ON", Some("BACKEND ADD db:3306 any 1 TLS 1 - -".into())),
            ("ADD BACKEND db:3306 TLS OFF", Some("BACKEND ADD db:3306 any 1".into())),
            ("ADD BACKEND db:3306 TLS_CA '/etc/my ca.pem'",
                Some(format!("BACKEND ADD db:3306 any 1 TLS 1 {} -", hex("/etc/my ca.pem")))),
            ("ADD BACKEND 10.0.0.1:3306 TLS_VERIFY off TLS_SERVER_NAME 'db.example'",
                Some(format!("BACKEND ADD 10.0.0.1:3306 any 1 TLS 0 - {}", hex("db.example")))),
            ("ADD BACKEND db:3306 TLS maybe", None),
            ("ADD BACKEND db:3306 TLS_CA", None),
            ("ADD BACKEND db:3306 COLOUR blue", None),
        ];
        for (sql, want) in table {
            assert_eq!(&req(sql), want, "{sql}");
        }
    }

    #[test]
    fn statements_split_into_words() {
        assert_eq!(
            words("drain backend '127.0.0.1:3306' timeout 500;"),
            ["drain", "backend", "127.0.0.1:3306", "timeout", "500"]
        );
        assert_eq!(words("  SHOW   BACKENDS "), ["SHOW", "BACKENDS"]);
        assert_eq!(
            words("add backend `db one:1`"),
            ["add", "backend", "db one:1"]
        );
        assert_eq!(
            words("KILL CLIENTS WHERE user='a b'"),
            ["KILL", "CLIENTS", "WHERE", "user", "=", "a b"]
        );
        assert_eq!(
            words("kill clients where source = '127.0.0.2';"),
            ["kill", "clients", "where", "source", "=", "127.0.0.2"]
        );
        assert_eq!(words("'unterminated"), ["unterminated"]);
    }

    #[test]
    fn operations_parse() {
        let pause = |timeout_ms| Ok(Op::Pause { timeout_ms });
        let shutdown = |wait_for_clients, timeout_ms| {
            Ok(Op::Shutdown {
                wait_for_clients,
                timeout_ms,
            })
        };
        let set = |key: &str, value: &str| {
            Ok(Op::Set {
                key: key.into(),
                value: value.into(),
            })
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Result<Op, ()>)> = vec![
            ("PAUSE", pause(PAUSE_TIMEOUT_MS)),
            ("pause timeout 200;", pause(200)),
            ("PAUSE TIMEOUT 99999999999999999999", Err(())),
            ("PAUSE TIMEOUT 18446744073709551615", pause(MAX_TIMEOUT_MS)),
            ("PAUSE TIMEOUT", Err(())),
            ("PAUSE TIMEOUT -1", Err(())),
            ("PAUSE NOW", Err(())),
            ("RESUME", Ok(Op::Resume)),
            ("RESUME ALL", Err(())),
            ("SHUTDOWN", shutdown(false, None)),
            ("shutdown wait_for_clients", shutdown(true, None)),
            ("SHUTDOWN WAIT_FOR_CLIENTS TIMEOUT 5000", shutdown(true, Some(5000))),
            ("SHUTDOWN TIMEOUT 5000", Err(())),
            ("SHUTDOWN WAIT_FOR_CLIENTS TIMEOUT x", Err(())),
            ("SHUTDOWN NOW", Err(())),
            ("SET pool.queue_timeout_ms = 250", set("pool.queue_timeout_ms", "250")),
            ("set POOL.SIZE=8", set("pool.size", "8")),
            ("SET GLOBAL pool.size = 8", set("pool.size", "8")),
            ("SET tls.cert TO '/etc/a b.pem'", set("tls.cert", "/etc/a b.pem")),
            ("SET pool.size = 'x'", set("pool.size", "x")),
            ("SET pool.size 8", Err(())),
            ("SET pool.size =", Err(())),
            ("SET = 8", Err(())),
            ("SET a = 1 , b = 2", Err(())),
            ("SET NAMES utf8", Err(())),
            ("SET", Err(())),
        ];
        for (sql, want) in table {
            assert_eq!(parse_op(&words(sql)).map_err(|_| ()), want, "{sql}");
        }
    }

    #[test]
    fn pins_are_summed_by_reason() {
        use crate::metrics::ShardSnapshot;
        use crate::session::pins::{PinReason, PIN_REASONS};
        let mut a = ShardSnapshot::default();
        let mut b = ShardSnapshot::default();
        let t = PinReason::TemporaryTable as usize;
        a.pinned_now[t] = 2;
        a.pins_total[t] = 5;
        b.pinned_now[t] = 1;
        b.pins_total[t] = 1;
        // The gauge is signed per shard; a sum below zero (a counting slip) is shown as 0.
        b.pinned_now[PinReason::UserVariable as usize] = -1;
        let rows = pin_rows([a, b].iter());
        assert_eq!(rows.len(), PIN_REASONS);
        let row = |name: &str| rows.iter().find(|r| r[0].as_deref() == Some(name)).unwrap();
        assert_eq!(
            row("temporary_table")[1..],
            [Some("3".to_string()), Some("6".to_string())]
        );
        assert_eq!(row("user_variable")[1].as_deref(), Some("0"));
    }

    #[test]
    fn like_patterns() {
        #[rustfmt::skip]
        let table: &[(&str, &str, bool)] = &[
            ("pool%", "pool.size", true),
            ("POOL.%", "pool.size", true),
            ("pool%", "max_packet_size", false),
            ("%timeout%", "pool.queue_timeout_ms", true),
            ("%_ms", "net_read_timeout_ms", true),
            ("%_ms", "ms", false),
            ("backends[_].%", "backends[0].address", true),
            ("listen", "listen", true),
            ("listen", "listen_backlog", false),
            ("%", "", true),
            ("", "x", false),
            ("%%a%%", "bab", true),
        ];
        for (p, s, want) in table {
            assert_eq!(like_match(p, s), *want, "{p} {s}");
        }
    }

    #[test]
    fn config_rows_merge_over_workers() {
        use crate::reload::Shown;
        let k = |name: &str, value: Option<&str>, reloadable: bool| Shown {
            name: name.into(),
            value: value.map(String::from),
            reloadable,
        };
        let w0 = vec![k("pool.size", Some("8"), true), k("listen", None, false)];
        let same = merge_config(&[w0.clone(), w0.clone()]);
        assert_eq!(
            same,
            vec![
                vec![
                    Some("pool.size".into()),
                    Some("8".into()),
                    Some("yes".into())
                ],
                vec![Some("listen".into()), None, Some("no".into())],
            ]
        );
        let w1 = vec![k("pool.size", Some("4"), true), k("listen", None, false)];
        let differ = merge_config(&[w0, w1]);
        assert_eq!(differ[0][1].as_deref(), Some("worker 0: 8; worker 1: 4"));
        assert_eq!(differ[1][1], None);
        assert!(merge_config(&[]).is_empty());
    }

    #[test]
    fn result_sets_are_well_formed_in_both_framings() {
        use crate::codec::command::ResponseKind;
        use crate::codec::response::{ResponseTracker, Role};
        let cols = vec!["a".to_string(), "b".to_string()];
        let rows = vec![
            vec![Some("1".to_string()), None],
            vec![Some("2".to_string()), Some("x".to_string())],
        ];
        for (caps, deprecate) in [(cap::PROTOCOL_41, false), (CAPS, true)] {
            let mut t = ResponseTracker::new(ResponseKind::Query, deprecate);
            let mut n = 0;
            let packets = result_set(&cols, &rows, caps);
            for (i, p) in packets.iter().enumerate() {
                let role = t.on_packet(p.len(), p).unwrap();
                if let Role::Row { .. } = role {
                    n += 1;
                }
                if i + 1 == packets.len() {
                    assert!(t.is_done(), "done after the last packet");
                }
            }
            assert_eq!(n, 2);
        }
    }
}
