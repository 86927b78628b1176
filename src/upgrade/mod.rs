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
//! 4. **Health check.** The successor answers [`wire::Msg::Ready`] once every shard listens
//!    (saying whether a backend answered its start), or [`wire::Msg::Failed`]. A successor that
//!    reached no backend while the old process knows its server fails the check (it would present
//!    a default server identity). If it fails, exits, or is silent for [`READY_TIMEOUT`], the old
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
//! socket buffer and are read by the successor) and everything it holds can go with it:
//! - **TLS clients stay**: their rustls state (traffic keys, sequence numbers) lives in this
//!   process. Moving them needs rustls's secrets extracted (`dangerous_extract_secrets`, which
//!   the server config must allow) and kernel TLS set on the socket (`TCP_ULP "tls"`, then
//!   `TLS_TX`/`TLS_RX`), after which the successor would read plaintext from the socket but must
//!   handle TLS 1.3's post-handshake records (KeyUpdate, tickets) the kernel hands up as control
//!   messages. Not built, and not testable here: this machine's kernel has no kTLS
//!   (`setsockopt(TCP_ULP, "tls")` fails with ENOENT). They are served by the old process until
//!   they leave or the deadline, then told why (ERR 1053 through their own TLS session, then
//!   close_notify) and closed.
//! - **Sessions whose state lives on their backend move with their backend connection**:
//!   pinned sessions (user variables, temporary tables, GET_LOCK, LOCK TABLES, SQL-level
//!   PREPARE, …), an open transaction (or one that may have begun), a one-shot `insert_id`,
//!   history values and conditions only that connection knows. The connection's socket goes
//!   with the client's in the same message (`SCM_RIGHTS`, a duplicate: the old process keeps
//!   its own until the answer), and the record carries what sluice knows of it
//!   ([`record::BackendRec`], version 2): the backend by its configured address and the account
//!   it logged in as (the pool key, with the session's user), the server's thread id, the
//!   negotiated capabilities and profile, status flags, the settings applied on it, the
//!   statements prepared on it with their server ids (the session's binary statements keep
//!   mapping to them), LAST_INSERT_ID and the last GTID as it knows them, the transaction
//!   tracker's state, the greeting's nonce and auth plugin (COM_CHANGE_USER), its age, and the
//!   session's pins, pin-budget unit and the history values and diagnostics state that live on
//!   it. The successor adopts the connection *as checked out by that session*, in the pool of
//!   (that backend, that user), counted against the pool's bound and, with workers, the host
//!   budget (`backend::pool::Pool::adopt`; with workers the old process gives the slot to the
//!   host budget as the session leaves, `Pool::move_out`, so the successor can take it: the
//!   server sees the same socket throughout, never one more). Until the successor answers, the
//!   old process keeps the lease *in transit* (still counted); adopted, it lets its descriptor
//!   go without a shutdown (`Lease::moved`); refused, it adopts the session back with that
//!   same lease, and the successor's descriptor is closed there, so nothing is counted twice or
//!   left open. The successor refuses (and the old process keeps serving the session, trying
//!   again at each sweep until the deadline) when the backend is not in its configuration (by
//!   address), is configured with TLS there, its pool for the user logs in as another account,
//!   or the pool is at its bound with no slot in the host budget. A successor that predates
//!   version 2 says so in its Ready (no `records` byte), and such sessions stay as before; one
//!   that cannot decode a record refuses it.
//!
//!   *The safe point* is the parked session's, plus the connection's own: nothing in its read
//!   buffer, no query sent ahead, nothing from the server unread in the kernel either (a
//!   `MSG_PEEK`: a server that sent something unasked, such as a KILL's error, leaves the
//!   connection where it is). *An open transaction moves*: it lives on the server, under the
//!   connection, and the socket goes with it; its state flags and tracker come along, and
//!   COMMIT or ROLLBACK in the successor end it as they would have here. *Unread conditions
//!   move* too: the diagnostics area is the connection's, so `SHOW WARNINGS` in the successor
//!   reads the same server area (rather than the session waiting for its client to read them,
//!   which it may never do). Still staying: a connection over **TLS** (its rustls state, as
//!   for clients), one on another backend than the session's (a routed read), user variables
//!   read off a replica not yet made on its next backend, and a **cursor or long data
//!   pending** (sluice's own bookkeeping of a half-fetched result is not encoded). Those are
//!   served by the old process until they leave or the deadline, then told why.
//! - **Session-mode sessions move** when nothing they have lives only on their backend: they
//!   give it up as they do when it is drained (`frontend::session::take_for_upgrade`; history
//!   values only the backend knows are read first, on a task, then the session parks again and
//!   the next sweep moves it); the next command takes a backend in the successor. One whose
//!   backend holds its state moves with it, as above.
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
//!    A session in a transaction (or that may be in one) moves with its backend connection,
//!    whose server-side transaction goes with the socket; the status flags and the transaction
//!    tracker's state sluice keeps for the session and for the connection are in the record,
//!    so the successor knows the transaction is open and holds the connection until COMMIT or
//!    ROLLBACK, as the old process would have. (A transaction on a TLS backend connection
//!    stays, and is told why at the deadline.) Tested with a COMMIT and a ROLLBACK after the
//!    upgrade.
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
//! TLS clients, sessions whose backend connection runs over TLS, and the few others above
//! that stay. A successor shard whose pool is at its bound refuses a session with its backend
//! connection rather than ask a sibling shard to lend it a slot (the old process keeps it and
//! offers it again at each sweep, until the deadline). With `workers = 1` the two processes'
//! pools are counted apart, as before: the server sees what the successor opens plus what
//! sessions still in the old process hold (moved connections are counted once, in the
//! successor). A successor that dies *after* reporting
//! ready leaves the sessions it adopted to die with it: a single process takes back only the
//! sessions it had not had acknowledged, and accepts again; an old worker stops instead (what it
//! still has is told why) and the supervisor restarts the worker as any dead worker. During a
//! handover a `KILL` by id reaches the client in either process ([`peer`]), but other admin
//! requests (`CLIENTS`, `KILL WHERE`) see only the process that answers them. The health
//! check does not send a query through the successor; a client that connected while both
//! processes accepted and landed on a successor that then fails its check ends with it. Nothing is measured yet under
//! load (the 20,000 idle + 200 active clients); the log gives the handover's time.

pub mod peer;
mod predecessor;
pub mod record;
pub mod shard_side;
mod successor;
pub mod wire;
mod workers;

pub use predecessor::{start, start_for_supervisor, ID_GAP};
pub use successor::{
    admin_listener, inherited_listener, inherited_next_id, is_successor, successor_init,
    successor_ready, tcp_listener, Role,
};
pub use workers::{as_successor, supervise, WorkerEvent};

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

/// Blocks SIGUSR2 in the calling thread and every thread it starts from now on: called first
/// thing, so a SIGUSR2 during the start (which the main loop takes once ready) cannot kill the
/// process through a thread that has it unblocked (its default action is to terminate).
pub fn block_trigger() {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Notes the executable's path now, at start: `/proc/self/exe` later names a replaced file
/// "(deleted)", and the upgrade wants whatever is at the path now.
pub fn remember_exe() {
    EXE.get_or_init(|| std::env::current_exe().ok());
}

/// The executable's path as this process started (what an upgrade runs, and what a supervisor
/// restarts workers from: `/proc/self/exe` names a replaced file "(deleted)").
pub fn exe() -> Option<PathBuf> {
    EXE.get().cloned().flatten()
}
