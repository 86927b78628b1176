//! KILL across an upgrade's handover: while two processes hold the clients (the old one and
//! its successor), a `KILL [QUERY] <id>`, and the console's `KILL CLIENT`, reach the client in
//! whichever of the two holds it, or is about to.
//!
//! # The gap it closes
//! Connection ids stay the same across the move, and a KILL finds its target from the id alone
//! (worker, shard: see `shard::ids`). But during a handover the same id names a session that
//! may be in the old process, in the successor, or *on its way*: taken out of the old process's
//! table and sent, not yet adopted (then it is in neither table). A KILL handled by the process
//! that does not hold the client answered "Unknown thread id" (ERR 1094).
//!
//! # How
//! 1. **A KILL line.** The old process makes a `SOCK_SEQPACKET` socketpair and passes one end
//!    to the successor with the listeners (in the hello, as one more socket of its own role,
//!    [`super::Role::Peer`], last: a successor that predates it drops the descriptor, and the
//!    old process then sees the line closed and never asks). Each process asks on its end
//!    ([`Msg::Kill`], with the answer channel, a fresh socketpair end, riding along) and a
//!    thread of each serves the other's questions ([`serve`]): one thread per question, which
//!    hands it to the shard the id names and answers on the channel that came with it
//!    ([`Msg::Killed`]). So answers need no request ids, and a slow KILL delays no other. The
//!    old process answers from the hello on and asks from the successor's ready on (before, the
//!    successor answers nothing yet, and a question would wait for its start); the successor
//!    asks from its start (its shards accept before it reports ready) and answers from its
//!    ready.
//! 2. **A ladder** ([`next`], pure): a process that does not find the id asks the other one,
//!    which looks only in its own table (never asks back). The successor, told "unknown", looks
//!    in its own table once more: the old process's "unknown" means the session was in neither
//!    its table nor on its way *when it looked*, so if it exists it was adopted by then, and
//!    adoption completes before the old process learns of it. The old process asks the
//!    successor only after waiting for a session on its way to arrive (below), so the
//!    successor's answer is final.
//! 3. **On its way.** The old process's shard marks each session it takes out for the successor
//!    as *moving* in the same step as it leaves the table, and clears it when the successor
//!    answers (adopted: `ShardRequest::Gone`; refused: taken back into the table). A KILL that
//!    finds its id moving waits for that, at most [`TRANSIT_WAIT`], then looks again (see
//!    `Shard::kill_local`).
//! 4. **The same permission check.** The other process's user ids may differ (each process
//!    numbers accounts by name as it first sees them, and a successor reads the configuration
//!    afresh), so the question carries the user's *name*; the answering shard takes its own
//!    id for that name and runs the same `kill_local` check as any KILL (a user kills its own
//!    clients only; the console any).
//!
//! Every KILL is applied at most once, and only where the session is: each place applies it
//! only when it finds the session there, and the ladder stops at the first place that does. A
//! question the other process does not answer in [`ASK_TIMEOUT`] ends the KILL with an error
//! saying so (never a guess); one it could not answer because it is gone (its end of the line
//! closed) is as "unknown": its sessions went with it.
//!
//! # Alternatives turned down
//! - *The handover channel itself* (the brief's first idea): it is a lockstep exchange (a
//!   window of sessions, then their acknowledgements, read by the one upgrade thread on each
//!   side, which sleeps between sweeps). Questions in both directions would need a reader and
//!   a demultiplexer on both sides of the protocol that moves sessions; a line of its own
//!   leaves that protocol as it was.
//! - *The admin socket* (how worker processes reach each other): with workers, an old worker
//!   passes its admin listener on and both processes accept on it during the handover, so
//!   neither can address the other through it.
//! - *Retrying locally until the id arrives*: a process cannot tell "on its way here" from "in
//!   the other process" or "nowhere" without asking, and waiting for an id that exists nowhere
//!   would delay every ERR 1094.
//!
//! One line per process: a successor upgraded again while its own predecessor still finishes
//! its last sessions asks only its new successor.
//!
//! # Admin requests on the same line
//! The admin socket's `CLIENTS`, `STATS` and `KILL WHERE` answer for both processes of a
//! handover (`crate::admin::handle`): the process asked sends [`Msg::Admin`] with the request,
//! the other answers for itself alone ([`Msg::AdminAnswer`]), on the same terms as a KILL
//! question (a thread per question, the answer channel riding along, [`ASK_TIMEOUT`]). A
//! process older than these messages would take one for a broken line, so each side asks only
//! once the other said it answers them: the old process with a mark after the line in its hello
//! (`Role::PeerAdmin`, no descriptor: a successor that predates it skips it), the successor in
//! its ready (`Msg::Ready::admin`).

use super::wire::{self, Channel, Msg};
use crate::error::Reply;
use crate::shard::kill::no_such_thread;
use crate::shard::table::KillKind;
use crate::shard::{Reply1, ShardMsg};
use crate::shared::{IdLayout, Shared};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long a KILL waits for a session on its way to the successor to arrive (adopted, or
/// taken back): an adoption takes well under a millisecond, and the old process takes a
/// session back at once when the successor refuses it.
pub const TRANSIT_WAIT: Duration = Duration::from_secs(3);
/// How long a process waits for the other's answer: the other may wait [`TRANSIT_WAIT`], then
/// send a KILL QUERY to a backend (which MariaDB may hold two seconds).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the answering side waits for its shard (less than [`ASK_TIMEOUT`], so the asking
/// side hears why).
const SERVE_WAIT: Duration = Duration::from_secs(9);

/// Which end of the handover this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The old process: it sends sessions (and knows which are on their way).
    Predecessor,
    /// The new process: it adopts them.
    Successor,
}

/// Where a KILL looks for its session, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// This process (the old one waits for a session on its way first).
    Here,
    /// The other process of the handover, which looks only in its own table.
    Peer,
    /// This process again (the successor, after the old process did not find it).
    HereAgain,
}

/// What one place said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// It has the session: the KILL was applied, or refused (not its owner, …).
    Found(Result<(), Reply>),
    /// It has no session with that id (ERR 1094).
    Unknown,
    /// There is no other process (no handover, or it is gone: its sessions went with it).
    NoPeer,
    /// The other process did not answer (in time, or at all): whether it applied the KILL is
    /// not known.
    NoAnswer(String),
}

impl Said {
    /// What the KILL answers when the ladder stops at this.
    pub fn into_result(self, conn_id: u32) -> Result<(), Reply> {
        match self {
            Said::Found(r) => r,
            Said::Unknown | Said::NoPeer => Err(no_such_thread(conn_id)),
            Said::NoAnswer(why) => Err(Reply::new(
                1105,
                b"HY000",
                format!("sluice: KILL {conn_id}: the other sluice process of an upgrade did not answer ({why}); the KILL may not have happened"),
            )),
        }
    }
}

/// Where a KILL looks next after `at` said `said`, in a process that is `side` of a handover
/// (`None`: no handover); `None`: it answers with what was said. Pure.
pub fn next(side: Option<Side>, at: Place, said: &Said) -> Option<Place> {
    match (at, said) {
        (_, Said::Found(_)) => None,
        (Place::Here, Said::Unknown) => side.map(|_| Place::Peer),
        // The old process did not have it (nor was it on its way) when it looked: if it
        // exists, it was adopted here by then.
        (Place::Peer, Said::Unknown | Said::NoPeer) if side == Some(Side::Successor) => {
            Some(Place::HereAgain)
        }
        _ => None,
    }
}

/// The line to the other process.
struct Peer {
    side: Side,
    line: Channel,
    /// This process asks the other (the old process from the successor's ready on: before,
    /// the successor answers nothing yet, and holds none of the old process's clients).
    asking: AtomicBool,
    /// The other process answers admin requests ([`Msg::Admin`]) too: it said so (the old
    /// process with a mark in its hello, the successor in its ready). One that predates them
    /// would take the message for a broken line.
    admin: AtomicBool,
}

/// The line to the other process of the handover under way, if any.
static PEER: Mutex<Option<Arc<Peer>>> = Mutex::new(None);

fn current() -> Option<Arc<Peer>> {
    PEER.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Which side of a handover this process is, while the other process can be asked.
pub fn side() -> Option<Side> {
    current()
        .filter(|p| p.asking.load(Ordering::Acquire))
        .map(|p| p.side)
}

/// A new KILL line: (this process's end, the other's).
pub(super) fn pair() -> std::io::Result<(Channel, Channel)> {
    let (a, b) = wire::pair()?;
    for c in [&a, &b] {
        // A question never blocks its thread for long on a full line.
        let tv = libc::timeval {
            tv_sec: ASK_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the right size on a socket we own.
        unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
    }
    Ok((a, b))
}

/// Takes `line` to the other process (this process is `side`): [`serve`] answers its
/// questions; this process asks it from now on if `asking`, else from [`start_asking`] on,
/// admin requests too if `admin` (the other process answers them).
pub(super) fn open(side: Side, line: Channel, asking: bool, admin: bool) {
    *PEER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Peer {
        side,
        line,
        asking: AtomicBool::new(asking),
        admin: AtomicBool::new(admin),
    }));
}

/// This process asks the other from now on (the old process, once its successor is ready),
/// admin requests too if `admin`.
pub(super) fn start_asking(admin: bool) {
    if let Some(p) = current() {
        p.admin.store(admin, Ordering::Release);
        p.asking.store(true, Ordering::Release);
    }
}

/// Stops asking (the successor was stopped: a rollback).
pub(super) fn close() {
    PEER.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// Forgets `p` if it is still the line in use (its other end closed).
fn forget(p: &Arc<Peer>) {
    let mut g = PEER.lock().unwrap_or_else(|p| p.into_inner());
    if g.as_ref().is_some_and(|q| Arc::ptr_eq(q, p)) {
        g.take();
    }
}

/// Serves the other process's questions on the line in use, on a thread of its own, until the
/// other process closes its end.
pub(super) fn serve(shared: Arc<Shared>) {
    let Some(peer) = current() else { return };
    let spawned = std::thread::Builder::new()
        .name("sluice-kill-line".into())
        .spawn(move || {
            loop {
                match peer.line.recv(Duration::from_secs(3600)) {
                    Ok(None) => {}
                    Ok(Some((Msg::Kill { conn_id, query, by }, fds))) => {
                        let Some(fd) = fds.into_iter().next() else {
                            warn!(
                                conn_id,
                                "upgrade: a KILL question without its answer channel"
                            );
                            continue;
                        };
                        // SAFETY: a descriptor just received, ours alone.
                        let answer =
                            unsafe { Channel::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
                        let shared = shared.clone();
                        let kind = if query {
                            KillKind::Query
                        } else {
                            KillKind::Connection
                        };
                        // One thread per question: a KILL waiting for its session (or for a
                        // backend) delays no other. KILLs are rare.
                        let spawned = std::thread::Builder::new()
                            .name("sluice-kill-answer".into())
                            .spawn(move || {
                                let r = kill_here(&shared, conn_id, kind, by);
                                reply(&answer, r);
                            });
                        if let Err(e) = spawned {
                            warn!(error = %e, "upgrade: cannot answer a KILL question");
                        }
                    }
                    Ok(Some((Msg::Admin { line }, fds))) => {
                        let Some(fd) = fds.into_iter().next() else {
                            warn!("upgrade: an admin request without its answer channel");
                            continue;
                        };
                        // SAFETY: a descriptor just received, ours alone.
                        let answer =
                            unsafe { Channel::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
                        let shared = shared.clone();
                        let spawned = std::thread::Builder::new()
                            .name("sluice-admin-answer".into())
                            .spawn(move || {
                                // This process's part only: never asks back.
                                let text = crate::admin::handle_here(&shared, &line);
                                if let Err(e) = answer.send(&Msg::AdminAnswer { text }, &[]) {
                                    debug!(error = %e, "upgrade: an admin answer was not delivered");
                                }
                            });
                        if let Err(e) = spawned {
                            warn!(error = %e, "upgrade: cannot answer an admin request");
                        }
                    }
                    Ok(Some((other, _))) => {
                        warn!(message = ?other, "upgrade: unexpected message on the KILL line")
                    }
                    Err(e) => {
                        if e.kind() == ErrorKind::UnexpectedEof {
                            info!("upgrade: the other process closed the KILL line");
                        } else {
                            warn!(error = %e, "upgrade: the KILL line failed");
                        }
                        forget(&peer);
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "upgrade: cannot serve the KILL line; KILLs reach only this process's clients");
    }
}

fn reply(answer: &Channel, r: Result<(), Reply>) {
    let err = r.err().map(|r| (r.code, r.sql_state, r.message));
    if let Err(e) = answer.send(&Msg::Killed { err }, &[]) {
        debug!(error = %e, "upgrade: a KILL answer was not delivered");
    }
}

/// Shards of this process that have stopped: their mailboxes are read no more, and their
/// sessions are gone (the old process, stopping after its handover, stops each shard once its
/// last command is done, while others may still finish theirs).
static STOPPED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Shard `id` has stopped (see [`STOPPED`]).
pub fn shard_stopped(id: usize) {
    STOPPED.lock().unwrap_or_else(|p| p.into_inner()).push(id);
}

fn stopped(id: usize) -> bool {
    STOPPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&id)
}

/// KILL [QUERY] `conn_id` for the other process: in this process only (its shard waits for a
/// session on its way first), with `by`'s permissions here.
fn kill_here(
    shared: &Shared,
    conn_id: u32,
    kind: KillKind,
    by: Option<String>,
) -> Result<(), Reply> {
    let (worker, shard) = IdLayout::new(shared.workers, shared.shards).locate(conn_id);
    let shard = shard as usize;
    let mb = shared
        .mailboxes
        .get()
        .and_then(|m| m.get(shard))
        .filter(|_| worker == shared.worker && !stopped(shard))
        .ok_or_else(|| no_such_thread(conn_id))?;
    let answer = Reply1::default();
    mb.post(ShardMsg::PeerKill {
        conn_id,
        kind,
        by,
        reply: answer.clone(),
    });
    let until = Instant::now() + SERVE_WAIT;
    loop {
        if let Some(r) = answer.recv_blocking(Duration::from_millis(50)) {
            return r;
        }
        if stopped(shard) {
            // Stopped before it answered: whatever it held has ended.
            return Err(no_such_thread(conn_id));
        }
        if Instant::now() >= until {
            return Err(Reply::new(
                1105,
                b"HY000",
                format!("sluice: the shard holding {conn_id} did not answer the KILL in time"),
            ));
        }
    }
}

/// Asks the other process of the handover to KILL [QUERY] `conn_id` there, for the user named
/// `by` (`None`: the admin console). Blocks up to [`ASK_TIMEOUT`]: call it from a thread of its
/// own, never a shard's.
pub fn ask(conn_id: u32, kind: KillKind, by: Option<String>) -> Said {
    let Some(peer) = current() else {
        return Said::NoPeer;
    };
    let (mine, theirs) = match wire::pair() {
        Ok(p) => p,
        Err(e) => return Said::NoAnswer(format!("cannot make the answer channel: {e}")),
    };
    let question = Msg::Kill {
        conn_id,
        query: kind == KillKind::Query,
        by,
    };
    if let Err(e) = peer.line.send(&question, &[theirs.as_raw_fd()]) {
        return match e.kind() {
            // Its end is closed: the other process is gone.
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected => {
                forget(&peer);
                Said::NoPeer
            }
            _ => Said::NoAnswer(format!("the KILL line: {e}")),
        };
    }
    drop(theirs);
    match mine.recv(ASK_TIMEOUT) {
        Ok(Some((Msg::Killed { err: None }, _))) => Said::Found(Ok(())),
        Ok(Some((
            Msg::Killed {
                err: Some((1094, ..)),
            },
            _,
        ))) => Said::Unknown,
        Ok(Some((
            Msg::Killed {
                err: Some((code, state, message)),
            },
            _,
        ))) => Said::Found(Err(Reply::new(code, &state, message))),
        Ok(Some((other, _))) => Said::NoAnswer(format!("it answered {other:?}")),
        Ok(None) => Said::NoAnswer(format!("no answer within {} s", ASK_TIMEOUT.as_secs())),
        // Every question is answered while the other process lives; the channel closing
        // unanswered means it exited (with its sessions).
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Said::NoPeer,
        Err(e) => Said::NoAnswer(e.to_string()),
    }
}

/// Asks the other process of the handover for its answer to the admin request `line` (its
/// part alone): `None` when there is no other process to ask (no handover, or one that
/// predates admin requests on the line), else its answer or why there is none. Blocks up to
/// [`ASK_TIMEOUT`]: call it from a thread of its own, never a shard's.
pub fn ask_admin(line: &str) -> Option<Result<String, String>> {
    let peer = current()
        .filter(|p| p.asking.load(Ordering::Acquire) && p.admin.load(Ordering::Acquire))?;
    let (mine, theirs) = match wire::pair() {
        Ok(p) => p,
        Err(e) => return Some(Err(format!("cannot make the answer channel: {e}"))),
    };
    let question = Msg::Admin { line: line.into() };
    if let Err(e) = peer.line.send(&question, &[theirs.as_raw_fd()]) {
        return match e.kind() {
            // Its end is closed: the other process is gone, with its clients.
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected => {
                forget(&peer);
                None
            }
            _ => Some(Err(format!("the KILL line: {e}"))),
        };
    }
    drop(theirs);
    match mine.recv(ASK_TIMEOUT) {
        Ok(Some((Msg::AdminAnswer { text }, _))) => Some(Ok(text)),
        Ok(Some((other, _))) => Some(Err(format!("it answered {other:?}"))),
        Ok(None) => Some(Err(format!("no answer within {} s", ASK_TIMEOUT.as_secs()))),
        // The channel closing unanswered: the other process exited (with its clients).
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_looks_here_then_there_then_here_once_more() {
        let ok = Said::Found(Ok(()));
        let refused = Said::Found(Err(Reply::new(1095, b"HY000", "not yours")));
        let silent = Said::NoAnswer("timeout".into());
        let (old, new) = (Some(Side::Predecessor), Some(Side::Successor));
        use Place::*;
        /// (case, side, where it looked, what it said, where next).
        type Case<'a> = (&'a str, Option<Side>, Place, &'a Said, Option<Place>);
        #[rustfmt::skip]
        let table: &[Case] = &[
            ("no handover: found", None, Here, &ok, None),
            ("no handover: refused", None, Here, &refused, None),
            ("no handover: unknown is final", None, Here, &Said::Unknown, None),
            ("old: found here", old, Here, &ok, None),
            ("old: not yours here", old, Here, &refused, None),
            ("old: unknown here, ask the successor", old, Here, &Said::Unknown, Some(Peer)),
            ("old: the successor has it", old, Peer, &ok, None),
            ("old: the successor refuses", old, Peer, &refused, None),
            ("old: unknown in the successor too", old, Peer, &Said::Unknown, None),
            ("old: the successor is gone", old, Peer, &Said::NoPeer, None),
            ("old: the successor is silent", old, Peer, &silent, None),
            ("new: found here", new, Here, &ok, None),
            ("new: unknown here, ask the old process", new, Here, &Said::Unknown, Some(Peer)),
            ("new: the old process has it", new, Peer, &ok, None),
            ("new: the old process refuses", new, Peer, &refused, None),
            ("new: unknown there, it may have arrived here", new, Peer, &Said::Unknown, Some(HereAgain)),
            ("new: the old process is gone", new, Peer, &Said::NoPeer, Some(HereAgain)),
            ("new: the old process is silent", new, Peer, &silent, None),
            ("new: arrived meanwhile", new, HereAgain, &ok, None),
            ("new: unknown everywhere", new, HereAgain, &Said::Unknown, None),
        ];
        for (what, side, at, said, want) in table {
            assert_eq!(next(*side, *at, said), *want, "{what}");
        }
        // Every ladder stops, having looked in each place once at most.
        for side in [None, old, new] {
            for said in [&ok, &Said::Unknown, &Said::NoPeer, &silent] {
                let mut at = Here;
                let mut seen = vec![at];
                while let Some(p) = next(side, at, said) {
                    assert!(!seen.contains(&p), "{side:?} {said:?}: {seen:?} then {p:?}");
                    seen.push(p);
                    at = p;
                }
                assert!(seen.len() <= 3);
            }
        }
    }

    #[test]
    fn what_a_kill_answers_where_the_ladder_stops() {
        let refused = Reply::new(1095, b"HY000", "You are not owner of thread 7");
        assert_eq!(Said::Found(Ok(())).into_result(7), Ok(()));
        assert_eq!(
            Said::Found(Err(refused.clone())).into_result(7),
            Err(refused)
        );
        // Nowhere: the server's own answer, exactly.
        for s in [Said::Unknown, Said::NoPeer] {
            assert_eq!(
                s.into_result(7),
                Err(Reply::new(1094, b"HY000", "Unknown thread id: 7"))
            );
        }
        let silent = Said::NoAnswer("no answer within 10 s".into()).into_result(7);
        assert_eq!(silent.as_ref().map_err(|r| r.code), Err(1105));
        assert!(silent
            .unwrap_err()
            .message
            .contains("may not have happened"));
    }

    #[test]
    fn a_question_crosses_the_line_and_its_answer_comes_back() {
        // The two ends in one process: the far end answers as a process holding the session
        // would, on the channel that came with the question.
        let (near, far) = pair().unwrap();
        let server = std::thread::spawn(move || {
            let (m, fds) = far.recv(Duration::from_secs(5)).unwrap().unwrap();
            assert_eq!(
                m,
                Msg::Kill {
                    conn_id: 9,
                    query: true,
                    by: Some("app".into()),
                }
            );
            // SAFETY: a descriptor just received.
            let answer = unsafe {
                Channel::from_raw(std::os::fd::IntoRawFd::into_raw_fd(
                    fds.into_iter().next().unwrap(),
                ))
            };
            reply(&answer, Err(no_such_thread(9)));
            far
        });
        open(Side::Successor, near, true, false);
        assert_eq!(side(), Some(Side::Successor));
        assert_eq!(ask(9, KillKind::Query, Some("app".into())), Said::Unknown);
        // The far end closes (the other process exits): asking says there is no peer, and the
        // line is forgotten.
        drop(server.join().unwrap());
        assert_eq!(ask(9, KillKind::Connection, None), Said::NoPeer);
        assert_eq!(side(), None);
    }
}
