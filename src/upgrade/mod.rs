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
//! - **Sessions whose state lives on their backend stay**: pinned sessions (user variables,
//!   temporary tables, locks, …), open transactions, conditions not read yet, pending cursors or
//!   long data. Moving them needs the backend connection moved too (its socket and its protocol
//!   state). Transaction-mode clients between transactions hold no backend, so nearly all
//!   clients move.
//! - **Session-mode sessions move** when nothing they have lives only on their backend: they
//!   give it up as they do when it is drained (`frontend::session::take_for_upgrade`; history
//!   values only the backend knows are read first, on a task, then the session parks again and
//!   the next sweep moves it); the next command takes a backend in the successor.
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
//! TLS clients and sessions whose state lives on their backend (above). A successor that dies *after* reporting
//! ready leaves the sessions it adopted to die with it: a single process takes back only the
//! sessions it had not had acknowledged, and accepts again; an old worker stops instead (what it
//! still has is told why) and the supervisor restarts the worker as any dead worker. During a
//! handover, a `KILL` or an admin request for a client may reach the process that does not hold
//! it yet (or any more) and answer "unknown thread id". The health check does not send a query
//! through the successor; a client that connected while both processes accepted and landed on
//! a successor that then fails its check ends with it. Nothing is measured yet under
//! load (the 20,000 idle + 200 active clients); the log gives the handover's time.

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
