//! Upgrading sluice without dropping a client: the running process (the *old* one) starts the
//! binary now at its path, with its arguments, as a *successor*, and hands it the listeners, then
//! every client session that can move, over a Unix socketpair the successor inherits.
//!
//! # How
//! 1. **Trigger.** `SIGUSR2` to a single-process sluice (`workers = 1`; with workers, to the
//!    supervisor: see below), `sluice upgrade --pid P` (which sends it), or the console's
//!    `UPGRADE`. (The shard watchdog's kick, which used SIGUSR2, moved to a real-time signal: see
//!    `shard::poller`.)
//! 2. **Start.** The old process makes a `SOCK_SEQPACKET` socketpair and starts the executable
//!    at the path it was started from (resolved at start, so a package that replaced the file
//!    runs the new one) with the same arguments; the successor's end is named by
//!    `SLUICE_UPGRADE_FD`. `NOTIFY_SOCKET` is inherited as it is. The successor reads its
//!    configuration file itself, whole, as any start does.
//! 3. **Listeners.** The first message ([`wire::Msg::Hello`]) carries each shard's listening
//!    socket (`SCM_RIGHTS`) and its connection-id counter. The successor's shards accept on
//!    those same sockets (nothing is re-bound: no connection in a backlog is lost). Both accept
//!    for a moment; each connection is accepted once. Each successor shard counts connection
//!    ids on from [`ID_GAP`] past its predecessor's counter: the ids the old process hands out
//!    until it stops accepting are in that gap, so no two clients ever share one.
//! 4. **Health check.** The successor answers [`wire::Msg::Ready`] once every shard listens, or
//!    [`wire::Msg::Failed`]. If it fails, exits, or is silent for [`READY_TIMEOUT`], the old
//!    process kills it, logs why, and goes on with everything it had: it never stopped
//!    accepting or serving (rollback).
//! 5. **systemd.** On Ready, the old process sends `MAINPID=<successor>` and `READY=1` to
//!    `NOTIFY_SOCKET` and says nothing more; the successor sends its own `READY=1` once the
//!    handover is over. The old process then stops accepting.
//! 6. **Sessions.** Every [`SWEEP_EVERY`] (at once while sessions are waiting: each sweep takes
//!    at most a window of them per shard) each shard takes out its parked sessions that may
//!    move ([`shard_side::stays`]) and the old process sends each one's socket with its
//!    versioned record ([`record`]); the successor adopts it on the shard its connection id
//!    names, parked, and acknowledges. A session the successor refuses (its user no longer
//!    configured, over its user's limit) is adopted back by the old process, which keeps serving
//!    it. Active sessions move when they park (after their command and the 200 ms linger), so
//!    every session that reaches a safe point before the deadline moves.
//!    During the handover sessions park right after each command (no linger), so a busy client
//!    moves between two commands.
//! 7. **End.** When no session is left, or after `shutdown_timeout_ms`, the old process tells
//!    the successor it is done. Each parked session still here (one that cannot move, see
//!    below) is sent an ERR 1053 saying why, with sequence id 1 (what the client reads as the
//!    answer to its next command), and closed; then the process shuts down as on SIGTERM
//!    (active sessions end after their command with "Server shutdown in progress").
//!
//! # What moves, and what does not (yet)
//! A session moves when it is parked (no command in flight, no byte buffered in the process: a
//! parked session has no buffer at all, bytes the client sends meanwhile wait in the kernel's
//! socket buffer and are read by the successor) and holds nothing outside its record:
//! - **TLS clients stay**: their rustls state (traffic keys, sequence numbers) lives in this
//!   process. Moving them needs rustls's secrets extracted (`dangerous_extract_secrets`, which
//!   the server config must allow) and kernel TLS set on the socket (`TCP_ULP "tls"`, then
//!   `TLS_TX`/`TLS_RX`), after which the successor would read plaintext from the socket but must
//!   handle TLS 1.3's post-handshake records (KeyUpdate, tickets) the kernel hands up as control
//!   messages. Not built, and not testable here: this machine's kernel has no kTLS
//!   (`setsockopt(TCP_ULP, "tls")` fails with ENOENT). They are served by the old process until
//!   they leave or the deadline, then told why (ERR 1053 through their own TLS session, then
//!   close_notify) and closed.
//! - **Sessions holding a backend stay**: session mode, pinned sessions (user variables,
//!   temporary tables, locks, …), open transactions, pending cursors or long data. Moving them
//!   needs the backend connection moved too (its socket and its protocol state). Transaction-
//!   mode clients between transactions hold no backend, so nearly all clients move.
//! - A session with history values or diagnostics only its backend knows stays for the same
//!   reason.
//!
//! What each session is is encoded whole ([`record::Record`]): user, capabilities, collation,
//! schema, every changed variable, history values (LAST_INSERT_ID, ROW_COUNT, FOUND_ROWS,
//! last GTID), its own session trackers, and its binary prepared statements (text, settings
//! at prepare, parameter types bound, how the text was read); the statement ids go on from
//! where they were. Connection ids stay: a session is adopted on the shard its id names, and
//! each successor shard goes on counting from its predecessor's counter, so no new client gets
//! a moved client's id. The successor refuses to start with another id layout (a changed
//! `shards` or `workers`): that needs a restart. The idle time restarts from zero.
//!
//! # PgBouncer's online restart, and its seven reasons
//! PgBouncer's `-R` (takeover: the new process connected to the old one, sent `SUSPEND`, took
//! its sockets with `SHOW FDS`) was deprecated in pgbouncer/pgbouncer#894 (2023) and removed in
//! #1581 (2026). #894 lists seven problems; each, and where sluice stands:
//! 1. *It does not work with TLS connections* (most production setups use TLS). Same limit here:
//!    TLS clients stay in the old process, are served there until they leave or the deadline,
//!    then told why through their own TLS session (above). Plaintext clients beside them move.
//!    `tests/upgrade.rs` checks both.
//! 2. *`application_name` is not copied over* (it was not part of `SHOW FDS`, unlike the other
//!    tracked settings). Here the record is not a list of chosen settings: it carries every
//!    variable the server reported changed, whatever its name, and every other field of the
//!    parked session; [`shard_side::to_record`] takes each struct apart field by field, so a
//!    field added to a session does not compile until its move is decided.
//! 3. *Data in the old process's buffers is lost during the takeover.* Only parked sessions
//!    move, and a parked session has no buffer: no command half read, no reply half written;
//!    bytes the client sends meanwhile wait in the kernel's socket buffer and go with the socket.
//! 4. *"transaction end, but xact_start == 0" after a takeover* (transaction state not carried).
//!    A session in a transaction (or that may be in one) never moves: it moves once the
//!    transaction ended and it parked, or stays and is told why at the deadline.
//! 5. *A configuration file changed but not loaded yet breaks things* (the new process took the
//!    old one's state under a different file). The successor reads and validates the file
//!    itself, as any start does: an invalid file fails its start and the old process keeps
//!    everything; a user removed from the file makes the successor refuse that user's sessions,
//!    which the old process keeps serving until the deadline.
//! 6. *`track_extra_parameters` are not copied.* Same answer as 2: every reported variable,
//!    and the client's own session trackers, are in the record.
//! 7. *It does not work well with systemd.* The old process sends `MAINPID=<successor>` (which
//!    `NotifyAccess=main` accepts from the current main process) and then says nothing more;
//!    the successor sends `READY=1`; with workers the supervisor stays the main process. Tested
//!    with a notify socket the test makes.
//!
//! PgBouncer's replacement is a rolling restart over `so_reuseport` (#902): a new process joins
//! the port and the old one waits for its clients to leave. That keeps clients only if they
//! leave by themselves; here they move without reconnecting, and the listening sockets move
//! too, so no connection waiting in the old process's backlog is reset.
//!
//! # Worker processes (`workers = N`)
//! SIGUSR2 to the supervisor (or the console's `UPGRADE`, which the supervisor serves) upgrades
//! the workers one at a time ([`supervise`]): the supervisor binds an abstract `SOCK_SEQPACKET`
//! rendezvous and asks worker *i* over its admin socket (`UPGRADE <name>`) to meet it there; it
//! hands the worker one end of a fresh handover channel ([`wire::Msg::Handover`]) and starts the
//! successor worker itself, with the other end and the shared login and health regions, so the
//! successor is the supervisor's own child (restarted if it dies, stopped with the rest). The
//! old worker then runs the same handover as a single process (its admin socket moves with its
//! listeners) and reports Ready or Failed on the rendezvous line; on Ready the supervisor puts
//! the successor in the worker's place and lets the old one stop (it is not restarted); on
//! Failed it kills the successor and stops the upgrade there: the workers not upgraded keep the
//! old binary, the log says so. The next worker starts once the old one closed its line (its
//! handover is over). The supervisor itself is not replaced: it only starts workers and serves
//! the console and metrics, and runs the old binary until a restart.
//!
//! # Not built
//! TLS clients and sessions holding a backend (above). A successor that dies *after* reporting
//! ready leaves the sessions it adopted to die with it: a single process takes back only the
//! sessions it had not had acknowledged, and accepts again; an old worker stops instead (what it
//! still has is told why) and the supervisor restarts the worker as any dead worker. During a
//! handover, a `KILL` or an admin request for a client may reach the process that does not hold
//! it yet (or any more) and answer "unknown thread id".

pub mod record;
pub mod shard_side;
pub mod wire;

use crate::shard::ShardMsg;
use crate::shared::Shared;
use shard_side::{ShardRequest, Sweep};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use wire::{Channel, Msg};

/// The environment variable naming the successor's end of the handover channel.
pub const ENV_FD: &str = "SLUICE_UPGRADE_FD";
/// How long the successor has to report ready (it learns the backends first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the old process looks for sessions that reached a safe point.
pub const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// Sessions sent before their acknowledgements are read (bounded so neither side's socket
/// buffer fills while the other waits).
const WINDOW: usize = 64;
/// How long an answer from a shard or from the successor may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The executable's path as the process started (see [`remember_exe`]).
static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
/// An upgrade is under way in this process.
static UPGRADING: AtomicBool = AtomicBool::new(false);
/// The successor is ready and sessions are being handed over: sessions park right after each
/// command instead of lingering (a lingering session is not at a point where it can move).
static HANDING_OVER: AtomicBool = AtomicBool::new(false);

/// Are sessions being handed over now (the successor is ready; sessions park at once)?
pub fn handing_over() -> bool {
    HANDING_OVER.load(Ordering::Relaxed)
}

/// Notes the executable's path now, at start: `/proc/self/exe` later names a replaced file
/// "(deleted)", and the upgrade wants whatever is at the path now.
pub fn remember_exe() {
    EXE.get_or_init(|| std::env::current_exe().ok());
}

// ---------------------------------------------------------------------------------------------
// The successor's side.

/// A listening socket besides the shards', which a successor takes over as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The SQL admin console (`[admin] listen`).
    Console = 1,
    /// The metrics endpoint (`metrics_listen`).
    Metrics = 2,
    /// A worker's admin socket (abstract, named after its supervisor and its index).
    Admin = 3,
}

impl Role {
    fn from_byte(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Console),
            2 => Some(Role::Metrics),
            3 => Some(Role::Admin),
            _ => None,
        }
    }
}

/// This process's console and metrics listeners (their threads hold them until the process
/// exits, so the descriptors stay valid), to pass on at an upgrade.
static OTHERS: Mutex<Vec<(Role, RawFd)>> = Mutex::new(Vec::new());

/// A TCP listener for `role` on `addr`: the predecessor's, when this is a successor and it had
/// one on that address (binding again would fail: it still listens); otherwise a new one.
pub fn tcp_listener(addr: &str, role: Role) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let wanted: Vec<std::net::SocketAddr> = addr.to_socket_addrs()?.collect();
    let taken = take_other(role, |fd| {
        socket2::SockRef::from(fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| wanted.contains(&a))
    });
    let listener = match taken {
        Some(l) => std::net::TcpListener::from(l),
        None => std::net::TcpListener::bind(addr)?,
    };
    note_other(role, listener.as_raw_fd());
    Ok(listener)
}

/// A worker's admin listener at the abstract address `addr`: its predecessor's when it is a
/// successor (the name is taken while the predecessor lives), otherwise a new one.
pub fn admin_listener(
    addr: &std::os::unix::net::SocketAddr,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let wanted = addr.as_abstract_name();
    // The same name only: a single process's admin socket is named after its own pid, so a
    // successor binds a new one (the predecessor's goes away with it).
    let same = |fd: &OwnedFd| {
        fd.try_clone()
            .ok()
            .map(std::os::unix::net::UnixListener::from)
            .and_then(|l| l.local_addr().ok())
            .is_some_and(|a| a.as_abstract_name().is_some() && a.as_abstract_name() == wanted)
    };
    let listener = match take_other(Role::Admin, same) {
        Some(l) => std::os::unix::net::UnixListener::from(l),
        None => std::os::unix::net::UnixListener::bind_addr(addr)?,
    };
    note_other(Role::Admin, listener.as_raw_fd());
    Ok(listener)
}

fn take_other(role: Role, fits: impl Fn(&OwnedFd) -> bool) -> Option<OwnedFd> {
    inherited(|i| {
        let at = i.others.iter().position(|(r, l)| *r == role && fits(l))?;
        Some(i.others.remove(at).1)
    })
    .flatten()
}

fn note_other(role: Role, fd: RawFd) {
    OTHERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((role, fd));
}

struct Inherited {
    channel: Option<Channel>,
    listeners: Vec<Option<OwnedFd>>,
    next_ids: Vec<u32>,
    others: Vec<(Role, OwnedFd)>,
}

static INHERITED: Mutex<Option<Inherited>> = Mutex::new(None);

fn inherited<T>(f: impl FnOnce(&mut Inherited) -> T) -> Option<T> {
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .map(f)
}

/// Is this process a successor that has not finished its start yet?
pub fn is_successor() -> bool {
    inherited(|i| i.channel.is_some()).unwrap_or(false)
}

/// In a process started by an upgrade (`SLUICE_UPGRADE_FD` set): reads the predecessor's hello
/// (listeners, id counters) and checks the connection-id layout is the same. Returns whether
/// this is a successor. Called before the shards start.
pub fn successor_init(workers: u32, shards: usize) -> Result<bool, String> {
    let Some(v) = std::env::var_os(ENV_FD) else {
        return Ok(false);
    };
    // Not for this process's own children.
    std::env::remove_var(ENV_FD);
    let fd: RawFd = v
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("{ENV_FD}={v:?}: not a descriptor"))?;
    // SAFETY: the predecessor passed this descriptor for us alone; nothing else owns it. It is
    // made close-on-exec again at once.
    let channel = unsafe { Channel::from_raw(fd) };
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let (msg, fds) = channel
        .recv(ANSWER_TIMEOUT)
        .map_err(|e| format!("upgrade: reading the predecessor's hello: {e}"))?
        .ok_or("upgrade: the predecessor sent no hello")?;
    let Msg::Hello {
        workers: w,
        shards: s,
        next_ids,
        listeners,
        others,
    } = msg
    else {
        return Err(format!("upgrade: expected a hello, got {msg:?}"));
    };
    if w != workers || s as usize != shards {
        let why = format!(
            "the connection-id layout changed (predecessor: {w} worker(s) × {s} shard(s), here {workers} × {shards}): moved clients' ids would be wrong; restart instead"
        );
        let _ = channel.send(&Msg::Failed { why: why.clone() }, &[]);
        return Err(format!("upgrade: {why}"));
    }
    let mut fds = fds.into_iter();
    let listeners = listeners
        .iter()
        .map(|&has| if has { fds.next() } else { None })
        .collect();
    let others = others
        .iter()
        .filter_map(|&b| Some((Role::from_byte(b)?, fds.next()?)))
        .collect();
    // No upgrade of this process before its own handover is over.
    UPGRADING.store(true, Ordering::Release);
    *INHERITED.lock().unwrap_or_else(|p| p.into_inner()) = Some(Inherited {
        channel: Some(channel),
        listeners,
        next_ids,
        others,
    });
    info!("upgrade: taking over from the predecessor");
    Ok(true)
}

/// The listener shard `id` inherits, if any.
pub fn inherited_listener(id: usize) -> Option<OwnedFd> {
    inherited(|i| i.listeners.get_mut(id).and_then(Option::take)).flatten()
}

/// The connection-id counter shard `id` goes on from, if it has a predecessor.
pub fn inherited_next_id(id: usize) -> Option<u32> {
    inherited(|i| i.next_ids.get(id).copied()).flatten()
}

/// Tells the predecessor every shard listens, and adopts the sessions it sends, on a thread of
/// its own; `READY=1` goes to systemd once the predecessor is done (it sent `MAINPID=` first).
pub fn successor_ready(
    shared: Arc<Shared>,
    mailboxes: Vec<crate::shard::poller::Mailbox<ShardMsg>>,
    status: impl Fn() -> String + Send + 'static,
) {
    // What the predecessor passed and this process does not use (fewer shards, a listen
    // address changed) is closed now.
    let Some(channel) = inherited(|i| {
        i.listeners.clear();
        i.others.clear();
        i.channel.take()
    })
    .flatten() else {
        return;
    };
    if let Err(e) = channel.send(
        &Msg::Ready {
            pid: std::process::id(),
        },
        &[],
    ) {
        error!(error = %e, "upgrade: cannot tell the predecessor we are ready; it keeps its clients");
        UPGRADING.store(false, Ordering::Release);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-adopt".into())
        .spawn(move || {
            let (adopted, refused) = adopt_loop(&shared, &mailboxes, &channel);
            info!(adopted, refused, "upgrade: handover over");
            UPGRADING.store(false, Ordering::Release);
            crate::notify::ready(&status());
        });
    if let Err(e) = spawned {
        error!(error = %e, "upgrade: cannot start the adopting thread");
        UPGRADING.store(false, Ordering::Release);
    }
}

fn adopt_loop(
    shared: &Shared,
    mailboxes: &[crate::shard::poller::Mailbox<ShardMsg>],
    channel: &Channel,
) -> (u64, u64) {
    let ids = crate::shared::IdLayout::new(shared.workers, shared.shards);
    let (mut adopted, mut refused) = (0u64, 0u64);
    loop {
        // The predecessor sends at least every sweep while it hands over; it may wait for its
        // deadline with nothing to send, so no timeout ends this loop: the channel closing does.
        let (msg, fds) = match channel.recv(Duration::from_secs(3600)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %e, "upgrade: the handover channel ended");
                return (adopted, refused);
            }
        };
        let (conn_id, result) = match (msg, fds.into_iter().next()) {
            (Msg::Done, _) => return (adopted, refused),
            (Msg::Session { record }, Some(fd)) => adopt_one(&ids, mailboxes, &record, fd),
            (Msg::Session { .. }, None) => (0, Err("a session without its socket".to_string())),
            (other, _) => {
                warn!(message = ?other, "upgrade: unexpected message from the predecessor");
                continue;
            }
        };
        match &result {
            Ok(()) => adopted += 1,
            Err(why) => {
                refused += 1;
                warn!(conn = conn_id, why = %why, "upgrade: refused a session (the predecessor keeps it)");
            }
        }
        let ack = Msg::Adopted {
            conn_id,
            refused: result.err(),
        };
        if let Err(e) = channel.send(&ack, &[]) {
            warn!(error = %e, "upgrade: the handover channel ended");
            return (adopted, refused);
        }
        if fault_exit_after() == Some(adopted) {
            error!(
                adopted,
                "upgrade: {FAULT_ENV} says to exit now (a test of the late rollback)"
            );
            std::process::exit(3);
        }
    }
}

/// For tests of the late rollback only: `SLUICE_UPGRADE_FAULT=exit-after:N` makes a successor
/// exit right after acknowledging its N-th session (the old process is started with it and
/// passes it on). Nothing else reads it.
const FAULT_ENV: &str = "SLUICE_UPGRADE_FAULT";

fn fault_exit_after() -> Option<u64> {
    std::env::var(FAULT_ENV)
        .ok()?
        .strip_prefix("exit-after:")?
        .parse()
        .ok()
}

fn adopt_one(
    ids: &crate::shared::IdLayout,
    mailboxes: &[crate::shard::poller::Mailbox<ShardMsg>],
    bytes: &[u8],
    fd: OwnedFd,
) -> (u32, Result<(), String>) {
    let r = match record::decode(bytes) {
        Ok(r) => r,
        Err(e) => return (0, Err(e.to_string())),
    };
    let conn_id = r.conn_id;
    (conn_id, adopt_on_shard(ids, mailboxes, r, fd))
}

/// Adopts `r` on the shard its connection id names.
fn adopt_on_shard(
    ids: &crate::shared::IdLayout,
    mailboxes: &[crate::shard::poller::Mailbox<ShardMsg>],
    r: record::Record,
    fd: OwnedFd,
) -> Result<(), String> {
    let (_, shard) = ids.locate(r.conn_id);
    let mb = mailboxes
        .get(shard as usize)
        .ok_or_else(|| format!("connection id {} names shard {shard}", r.conn_id))?;
    let (tx, rx) = std::sync::mpsc::channel();
    mb.post(ShardMsg::Upgrade(ShardRequest::Adopt {
        record: Box::new(r),
        fd,
        reply: tx,
    }));
    rx.recv_timeout(ANSWER_TIMEOUT)
        .map_err(|_| format!("shard {shard} did not answer"))?
}

// ---------------------------------------------------------------------------------------------
// The old process's side.

/// Starts an upgrade on a thread of its own (SIGUSR2, the console's UPGRADE). Refused while one
/// is under way, while stopping, and in a worker process (its supervisor upgrades workers one
/// at a time: see [`supervise`]).
pub fn start(shared: Arc<Shared>) -> Result<(), String> {
    if shared.supervisor.is_some() {
        return Err("a worker process is upgraded by its supervisor: signal the supervisor".into());
    }
    begin_thread(shared, None)
}

/// A worker's half of its supervisor's upgrade (the admin request `UPGRADE <rendezvous>`): meets
/// the supervisor at the abstract socket `rendezvous`, takes the handover channel to the
/// successor the supervisor starts, and hands over; tells the supervisor how it went.
pub fn start_for_supervisor(shared: Arc<Shared>, rendezvous: String) -> Result<(), String> {
    if shared.supervisor.is_none() {
        return Err("not a worker process".into());
    }
    begin_thread(shared, Some(rendezvous))
}

fn begin_thread(shared: Arc<Shared>, rendezvous: Option<String>) -> Result<(), String> {
    if crate::server::STOPPING.load(Ordering::Acquire) {
        return Err("sluice is stopping".into());
    }
    if UPGRADING.swap(true, Ordering::AcqRel) {
        return Err("an upgrade is already under way".into());
    }
    std::thread::Builder::new()
        .name("sluice-upgrade".into())
        .spawn(move || {
            let launch = match rendezvous {
                None => Ok(Launch::Here),
                Some(name) => meet_supervisor(&name),
            };
            let done = match launch {
                Ok(l) => run_old(&shared, l),
                Err(e) => {
                    error!(error = %e, "upgrade: not started");
                    false
                }
            };
            if done {
                // Whatever could not move ends as at a shutdown; the process exits.
                info!("upgrade: handed over; stopping this process");
                // SAFETY: sends a signal to this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            } else {
                UPGRADING.store(false, Ordering::Release);
            }
        })
        .map(drop)
        .map_err(|e| {
            UPGRADING.store(false, Ordering::Release);
            format!("cannot start the upgrade thread: {e}")
        })
}

/// How the successor is started, and who hears how it went.
enum Launch {
    /// This process starts it (one process).
    Here,
    /// The supervisor started it: `channel` is the handover channel it passed, `control` the
    /// line to the supervisor (Ready / Failed go there).
    BySupervisor { control: Channel, channel: Channel },
}

fn meet_supervisor(name: &str) -> Result<Launch, String> {
    let control = wire::connect(name).map_err(|e| format!("cannot reach the supervisor: {e}"))?;
    match control.recv(ANSWER_TIMEOUT) {
        Ok(Some((Msg::Handover, fds))) if fds.len() == 1 => {
            let fd = fds.into_iter().next().ok_or("no channel")?;
            // SAFETY: a descriptor just received, ours alone.
            let channel = unsafe { Channel::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
            Ok(Launch::BySupervisor { control, channel })
        }
        Ok(other) => Err(format!(
            "the supervisor sent {other:?} instead of a channel"
        )),
        Err(e) => Err(format!("the supervisor's channel: {e}")),
    }
}

fn mailboxes(shared: &Shared) -> Vec<crate::shard::poller::Mailbox<ShardMsg>> {
    shared.mailboxes.get().cloned().unwrap_or_default()
}

/// Asks every shard for (a duplicate of its listener, its id counter).
fn listeners(shared: &Shared) -> Result<Vec<(Option<OwnedFd>, u32)>, String> {
    mailboxes(shared)
        .iter()
        .enumerate()
        .map(|(i, mb)| {
            let (tx, rx) = std::sync::mpsc::channel();
            mb.post(ShardMsg::Upgrade(ShardRequest::Listener { reply: tx }));
            rx.recv_timeout(ANSWER_TIMEOUT)
                .map_err(|_| format!("shard {i} did not answer"))
        })
        .collect()
}

fn spawn_successor(child_end: &Channel) -> Result<std::process::Child, String> {
    let exe = EXE
        .get()
        .cloned()
        .flatten()
        .ok_or("the executable's path is unknown")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(&args);
    // The successor's end of the pair is the one descriptor it inherits beyond the standard
    // streams.
    as_successor(&mut cmd, child_end.as_raw_fd());
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

/// How far past its predecessor's counter a successor shard starts handing out connection ids
/// (less when the counter has fewer than 20 bits: a sixteenth of its space):
/// the predecessor goes on accepting until the successor is ready, and the ids it hands out
/// meanwhile (fewer than this many per shard) stay its own.
pub const ID_GAP: u32 = 1 << 16;

/// Where a successor shard starts counting, from its predecessor's last id `last` (within the
/// counter's bits, as `Shard::next_conn_id` wraps).
fn successor_counter(shared: &Shared, last: u32) -> u32 {
    let bits = crate::shared::IdLayout::new(shared.workers, shared.shards).local_bits();
    counter_after(last, bits)
}

fn counter_after(last: u32, bits: u32) -> u32 {
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    // At most a sixteenth of the counter's space (a layout with very few counter bits).
    let gap = ID_GAP.min(1u32 << bits.saturating_sub(4).min(31));
    last.wrapping_add(gap) & mask
}

/// Waits for the successor's Ready; `Err` says why it is not coming.
fn await_ready(
    channel: &Channel,
    mut child: Option<&mut std::process::Child>,
) -> Result<u32, String> {
    let until = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(Ok(Some(st))) = child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("the successor exited during its start ({st})"));
        }
        if Instant::now() >= until {
            return Err(format!(
                "the successor did not report ready within {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        match channel.recv(Duration::from_millis(100)) {
            Ok(None) => {}
            Ok(Some((Msg::Ready { pid }, _))) => return Ok(pid),
            Ok(Some((Msg::Failed { why }, _))) => {
                return Err(format!("the successor failed: {why}"))
            }
            Ok(Some((m, _))) => return Err(format!("the successor said {m:?} instead of ready")),
            Err(e) => {
                // It closed its end: it exited (or is exiting); say how when we can.
                let st = child
                    .as_mut()
                    .and_then(|c| c.wait().ok())
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                return Err(format!("the successor went away during its start: {e}{st}"));
            }
        }
    }
}

/// The old process's upgrade. Returns `true` when the successor took over (this process should
/// stop), `false` when it rolled back (this process goes on as before).
fn run_old(shared: &Arc<Shared>, launch: Launch) -> bool {
    let started = Instant::now();
    let dups = match listeners(shared) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "upgrade: not started");
            return false;
        }
    };
    let (mine, mut child, control) = match launch {
        Launch::Here => {
            let (mine, theirs) = match wire::pair() {
                Ok(p) => p,
                Err(e) => {
                    error!(error = %e, "upgrade: cannot make the handover channel; not started");
                    return false;
                }
            };
            let child = match spawn_successor(&theirs) {
                Ok(c) => c,
                Err(e) => {
                    error!(error = %e, "upgrade: not started");
                    return false;
                }
            };
            drop(theirs);
            info!(pid = child.id(), "upgrade: successor started");
            (mine, Some(child), None)
        }
        Launch::BySupervisor { control, channel } => (channel, None, Some(control)),
    };
    let others = OTHERS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let hello = Msg::Hello {
        workers: shared.workers,
        shards: shared.shards as u32,
        next_ids: dups
            .iter()
            .map(|d| successor_counter(shared, d.1))
            .collect(),
        listeners: dups.iter().map(|d| d.0.is_some()).collect(),
        others: others.iter().map(|(r, _)| *r as u8).collect(),
    };
    let fds: Vec<RawFd> = dups
        .iter()
        .filter_map(|d| d.0.as_ref().map(AsRawFd::as_raw_fd))
        .chain(others.iter().map(|(_, fd)| *fd))
        .collect();
    let ready = mine
        .send(&hello, &fds)
        .map_err(|e| format!("cannot send the hello: {e}"))
        .and_then(|()| await_ready(&mine, child.as_mut()));
    // Our duplicates of the listeners stay open until the end: if the successor dies during
    // the handover, this process accepts on them again.
    let dups: Vec<Option<OwnedFd>> = dups.into_iter().map(|d| d.0).collect();
    let pid = match ready {
        Ok(pid) => pid,
        Err(why) => {
            if let Some(mut child) = child {
                // SAFETY: signals our own child (still ours to reap: no pid reuse before wait).
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
            }
            if let Some(c) = &control {
                // The supervisor stops the successor it started.
                let _ = c.send(&Msg::Failed { why: why.clone() }, &[]);
            }
            error!(why = %why, "upgrade rolled back: this process keeps its listeners and every client");
            return false;
        }
    };
    if let Some(c) = &control {
        if let Err(e) = c.send(&Msg::Ready { pid }, &[]) {
            warn!(error = %e, "upgrade: cannot tell the supervisor the successor is ready");
        }
    }
    info!(
        pid,
        took_ms = started.elapsed().as_millis() as u64,
        "upgrade: successor ready; handing over"
    );
    crate::notify::hand_over(pid);
    HANDING_OVER.store(true, Ordering::Relaxed);
    // Reap the child when it exits, whenever that is (we exit first, normally).
    if let Some(mut child) = child.take() {
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
    let mbs = mailboxes(shared);
    for mb in &mbs {
        let (tx, _rx) = std::sync::mpsc::channel();
        mb.post(ShardMsg::StopAccepting { reply: tx });
    }
    // The successor opens pools of its own: this process gives its pooled connections up as
    // they are released (RECONNECT), so the server sees the two pools overlap only by what the
    // sessions still here hold.
    let retired = crate::admin::handle(shared, "RECONNECT");
    info!(retired = %retired, "upgrade: pooled connections retired");
    let deadline = Instant::now() + Duration::from_millis(shared.config.shutdown_timeout_ms);
    let (mut moved, mut kept) = (0u64, 0u64);
    let mut last_staying = String::new();
    'sweeps: loop {
        let mut left = 0;
        let mut full = false;
        let mut staying: Vec<(shard_side::Stay, usize)> = Vec::new();
        for (i, mb) in mbs.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            mb.post(ShardMsg::Upgrade(ShardRequest::HandOver {
                max: WINDOW,
                reply: tx,
            }));
            let Ok(sweep) = rx.recv_timeout(ANSWER_TIMEOUT) else {
                warn!(shard = i, "upgrade: shard did not answer a sweep");
                left += 1;
                continue;
            };
            let Sweep {
                moving,
                left: l,
                staying: s,
            } = sweep;
            left += l;
            for (why, n) in s {
                match staying.iter_mut().find(|(w, _)| *w == why) {
                    Some((_, m)) => *m += n,
                    None => staying.push((why, n)),
                }
            }
            let n = moving.len();
            match send_batch(&mine, shared, &mbs, moving) {
                Ok((m, k)) => {
                    moved += m;
                    kept += k;
                    left += k as usize;
                }
                Err(e) if control.is_some() => {
                    // The supervisor restarts the worker whose successor died, as any dead
                    // worker; this one stops (what it still has is told why, below).
                    error!(error = %e, moved, "upgrade: the successor stopped answering; this worker stops (its supervisor restarts the worker)");
                    break 'sweeps;
                }
                Err(e) => {
                    error!(error = %e, moved, "upgrade rolled back late: the successor stopped answering; this process keeps the sessions it still has and accepts again (sessions the successor had taken are lost with it)");
                    crate::notify::take_back();
                    HANDING_OVER.store(false, Ordering::Relaxed);
                    for (mb, l) in mbs.iter().zip(dups) {
                        mb.post(ShardMsg::Upgrade(ShardRequest::Resume { listener: l }));
                    }
                    return false;
                }
            }
            if n == WINDOW {
                // More may be waiting on this shard: sweep again at once.
                left += 1;
                full = true;
            }
        }
        staying.sort_by_key(|(w, _)| w.name());
        let summary: Vec<String> = staying
            .iter()
            .map(|(w, n)| format!("{}={n}", w.name()))
            .collect();
        let summary = summary.join(" ");
        if !summary.is_empty() && summary != last_staying {
            info!(staying = %summary, "upgrade: sessions that cannot move yet");
        }
        last_staying = summary;
        if left == 0 {
            info!(
                moved,
                took_ms = started.elapsed().as_millis() as u64,
                "upgrade: every session moved"
            );
            break;
        }
        if Instant::now() >= deadline {
            warn!(moved, kept, left, staying = %last_staying, "upgrade: deadline (shutdown_timeout_ms) passed; the sessions left end with this process");
            break;
        }
        if !full {
            std::thread::sleep(SWEEP_EVERY);
        }
    }
    let _ = mine.send(&Msg::Done, &[]);
    // What is left ends with this process: idle sessions are told why now; active ones end
    // after their command, as at a shutdown.
    let mut told = 0;
    for mb in &mbs {
        let (tx, rx) = std::sync::mpsc::channel();
        mb.post(ShardMsg::Upgrade(ShardRequest::Farewell { reply: tx }));
        told += rx.recv_timeout(ANSWER_TIMEOUT).unwrap_or(0);
    }
    if told > 0 {
        warn!(
            sessions = told,
            "upgrade: closed the idle sessions that could not move, each told why"
        );
    }
    true
}

/// Sends one sweep's sessions and reads their acknowledgements; a refused session is adopted
/// back here. Returns (moved, kept here); `Err` when the channel failed (the sessions not
/// acknowledged are adopted back first).
fn send_batch(
    channel: &Channel,
    shared: &Shared,
    mbs: &[crate::shard::poller::Mailbox<ShardMsg>],
    moving: Vec<shard_side::Moving>,
) -> Result<(u64, u64), String> {
    let ids = crate::shared::IdLayout::new(shared.workers, shared.shards);
    let mut pending: Vec<shard_side::Moving> = Vec::with_capacity(moving.len());
    let mut failure = None;
    let mut rest = moving.into_iter();
    for m in rest.by_ref() {
        let msg = Msg::Session {
            record: m.record.clone(),
        };
        let sent = channel.send(&msg, &[m.fd.as_raw_fd()]);
        pending.push(m);
        if let Err(e) = sent {
            failure = Some(format!("sending a session: {e}"));
            break;
        }
    }
    // Not sent at all: back here.
    let mut unsent: Vec<shard_side::Moving> = rest.collect();
    let (mut moved, mut kept) = (0, 0);
    while failure.is_none() && !pending.is_empty() {
        match channel.recv(ANSWER_TIMEOUT) {
            Ok(Some((Msg::Adopted { conn_id, refused }, _))) => {
                let Some(i) = pending.iter().position(|m| m.conn_id == conn_id) else {
                    failure = Some(format!("acknowledgement for unknown session {conn_id}"));
                    break;
                };
                let m = pending.swap_remove(i);
                match refused {
                    None => {
                        // Ours closes; the successor's copy keeps the connection.
                        moved += 1;
                        drop(m);
                    }
                    Some(why) => {
                        kept += 1;
                        take_back(&ids, mbs, m, &why);
                    }
                }
            }
            Ok(Some((other, _))) => failure = Some(format!("unexpected message {other:?}")),
            Ok(None) => failure = Some("no acknowledgement in time".into()),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    match failure {
        None => Ok((moved, kept)),
        Some(e) => {
            unsent.append(&mut pending);
            for m in unsent {
                take_back(&ids, mbs, m, "the successor did not acknowledge it");
            }
            Err(e)
        }
    }
}

/// Adopts a session back in this process (the successor refused it or did not answer).
fn take_back(
    ids: &crate::shared::IdLayout,
    mbs: &[crate::shard::poller::Mailbox<ShardMsg>],
    m: shard_side::Moving,
    why: &str,
) {
    let conn_id = m.conn_id;
    let r = match record::decode(&m.record) {
        Ok(r) => adopt_on_shard(ids, mbs, r, m.fd),
        Err(e) => Err(e.to_string()),
    };
    match r {
        Ok(()) => info!(conn = conn_id, why = %why, "upgrade: session kept here"),
        Err(e) => {
            error!(conn = conn_id, why = %why, error = %e, "upgrade: a session could be neither moved nor kept; its connection is closed")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The supervisor's side (`workers = N`): one worker at a time.

/// What the supervisor's upgrade thread tells its main loop.
pub enum WorkerEvent {
    /// Worker `worker`'s successor is ready: it is that worker from now on; the old process
    /// hands its clients over and stops (it must not be restarted).
    Replaced {
        worker: usize,
        child: std::process::Child,
    },
    /// The upgrade is over: how many workers were upgraded, and why it stopped early if it did.
    Finished {
        upgraded: usize,
        failure: Option<String>,
    },
}

/// Makes `cmd` a successor: the handover channel's end `fd` is inherited under [`ENV_FD`].
pub fn as_successor(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    cmd.env(ENV_FD, fd.to_string());
    // SAFETY: only fcntl (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The executable's path as this process started (what an upgrade runs, and what a supervisor
/// restarts workers from: `/proc/self/exe` names a replaced file "(deleted)").
pub fn exe() -> Option<PathBuf> {
    EXE.get().cloned().flatten()
}

/// The supervisor's upgrade of its `n` workers, one at a time, on the calling thread: for each,
/// meets the worker at an abstract socket, gives it one end of a handover channel, starts its
/// successor with `spawn(worker, other end)`, and waits until the successor is ready (then the
/// main loop hears [`WorkerEvent::Replaced`]) and the old worker has handed over (or until
/// `per_worker`). Stops at the first failure: the workers not upgraded yet keep running the old
/// binary, which the log says.
pub fn supervise(
    me: u32,
    n: usize,
    per_worker: Duration,
    spawn: impl Fn(usize, RawFd) -> std::io::Result<std::process::Child>,
    events: std::sync::mpsc::Sender<WorkerEvent>,
) {
    let mut upgraded = 0;
    let mut failure = None;
    for w in 0..n {
        match upgrade_worker(me, w, per_worker, &spawn, &events) {
            Ok(pid) => {
                info!(worker = w, pid, "supervisor: worker upgraded");
                upgraded += 1;
            }
            Err(e) => {
                error!(worker = w, error = %e, "supervisor: upgrade stopped; this worker and the ones after it keep running the old binary");
                failure = Some(format!("worker {w}: {e}"));
                break;
            }
        }
    }
    if failure.is_none() {
        info!(workers = n, "supervisor: every worker upgraded");
    }
    let _ = events.send(WorkerEvent::Finished { upgraded, failure });
}

fn upgrade_worker(
    me: u32,
    w: usize,
    per_worker: Duration,
    spawn: &impl Fn(usize, RawFd) -> std::io::Result<std::process::Child>,
    events: &std::sync::mpsc::Sender<WorkerEvent>,
) -> Result<u32, String> {
    let mut nonce = [0u8; 8];
    let _ = getrandom::getrandom(&mut nonce);
    let name = format!("sluice-upgrade/{me}/{w}/{:016x}", u64::from_le_bytes(nonce));
    let rendezvous = wire::Rendezvous::bind(&name).map_err(|e| format!("rendezvous: {e}"))?;
    let answer = crate::admin::request(me, w as u32, &format!("UPGRADE {name}"))
        .map_err(|e| format!("the worker did not answer: {e}"))?;
    if answer != "OK" {
        return Err(format!("the worker refused: {answer}"));
    }
    let control = rendezvous
        .accept(ANSWER_TIMEOUT)
        .map_err(|e| format!("the worker did not come to the rendezvous: {e}"))?;
    drop(rendezvous);
    let (old_end, new_end) = wire::pair().map_err(|e| format!("channel: {e}"))?;
    control
        .send(&Msg::Handover, &[old_end.as_raw_fd()])
        .map_err(|e| format!("cannot give the worker its channel: {e}"))?;
    drop(old_end);
    let mut child = spawn(w, new_end.as_raw_fd()).map_err(|e| format!("cannot start: {e}"))?;
    // Only the successor holds this end now: its exit is the old worker's EOF.
    drop(new_end);
    let outcome = match control.recv(READY_TIMEOUT + Duration::from_secs(5)) {
        Ok(Some((Msg::Ready { pid }, _))) => Ok(pid),
        Ok(Some((Msg::Failed { why }, _))) => Err(format!("rolled back: {why}")),
        Ok(Some((m, _))) => Err(format!("the worker said {m:?}")),
        Ok(None) => Err("no word from the worker in time".into()),
        Err(e) => Err(format!("the worker's line: {e}")),
    };
    let pid = match outcome {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: signals our own child, reaped right after.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            return Err(e);
        }
    };
    let _ = events.send(WorkerEvent::Replaced { worker: w, child });
    // The old worker closes its line when its handover is over (then it stops).
    let until = Instant::now() + per_worker;
    loop {
        match control.recv(until.saturating_duration_since(Instant::now())) {
            Ok(Some(_)) => continue,
            Ok(None) => {
                warn!(
                    worker = w,
                    "supervisor: the old worker is still handing over; going on"
                );
                break;
            }
            Err(_) => break,
        }
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_counters_leave_a_gap_and_wrap_within_their_bits() {
        let cases = [
            (0, 30, ID_GAP),
            (7, 30, 7 + ID_GAP),
            ((1 << 30) - 1, 30, ID_GAP - 1),
            (u32::MAX, 32, ID_GAP - 1),
            (5, 16, 5 + 4096),
            (65530, 16, (65530 + 4096) & 0xffff),
        ];
        for (last, bits, want) in cases {
            assert_eq!(counter_after(last, bits), want, "{last} {bits}");
        }
    }
}
