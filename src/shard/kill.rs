//! KILL [QUERY]: finding the session wherever it lives, checking who may kill it, and
//! interrupting its statement on the backend without ever reaching another client's.
//!
//! Three rules:
//! 1. **The thread id a KILL carries is never another client's by the time it lands.** A KILL
//!    is counted in flight ([`ActiveCtl::kill_started`]) before it reads which backend thread
//!    runs the statement, and the session keeps that backend connection until every KILL in
//!    flight has been answered ([`ActiveCtl::kills_settled`], awaited in `run_on` right after
//!    the relay and before sluice's own statements or the release).
//! 2. **One KILL QUERY per statement** ([`step`]). A request for a statement whose KILL is in
//!    flight waits for that one; a request just after it was answered is answered at once.
//!    Another KILL QUERY against a statement the server is already interrupting adds nothing,
//!    and can cost two seconds: MariaDB's KILL, holding the victim's kill lock, try-locks the
//!    mutex of the condition the victim waits on until it gets it or two seconds have passed
//!    (`THD::abort_current_cond_wait`, `SECONDS_TO_WAIT_FOR_KILL`), and a KILL arriving while
//!    the victim is waking from the previous one apparently cannot get it. Measured directly
//!    against MariaDB 10.11 (no sluice): two clients looping `KILL QUERY` at a third looping
//!    `SELECT SLEEP(0.02)` stalled for two seconds at a time, nearly all the time (the KILLs
//!    "starting" in the process list, the victim still in "User sleep"); one such client
//!    stalled a few times in ten seconds. Through sluice, rule 1 made each stall a backend held
//!    for two seconds, and with a pool of one every other client waited. A request after
//!    [`DELIVERED_FOR`] sends again: the first KILL may have reached the server before the
//!    statement did (the server clears a KILL QUERY when the next command starts), or the
//!    statement may be slow to notice.
//! 3. **KILL QUERY goes over the shard's own connections, kept between KILLs** ([`KillLines`]):
//!    not over the pool (the statement being killed may hold its last connection) and not over a
//!    fresh connection per KILL (turned down: a connect and login, a server thread, a TIME_WAIT
//!    socket and an "Aborted connection" line in the server's log for every KILL, and slower
//!    to land).
//!
//! A KILL QUERY for a session with no statement on a backend (idle, or between statements)
//! does nothing, as the server does for an idle connection: its next statement runs normally.
//!
//! During an upgrade's handover a session may be in the old process, in its successor, or on
//! its way between them: [`Shard::kill_anywhere`] looks here, then asks the other process
//! (`upgrade::peer` has the why and the order), and [`Shard::kill_local`] waits for a session
//! on its way to arrive before it looks.

use super::table::{ActiveCtl, KillKind, Running, SentKill, SlotState};
use super::{Reply1, Shard, ShardMsg};
use crate::backend::conn::{BackendConn, BackendError};
use crate::error::{Error, Reply};
use crate::frontend::session;
use crate::upgrade::peer::{self, Place, Said};
use crate::upgrade::shard_side;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The `by_user` of a KILL from the admin console: allowed for any session.
pub const BY_ADMIN: u32 = u32::MAX;

/// The `by_user` of a KILL from the other process of an upgrade for a user this process does
/// not know: no session's user (ids of users loaded from the database count up from 2^24).
pub const NOBODY: u32 = u32::MAX - 1;

/// The server's code for a connection id that names no session.
pub const NO_SUCH_THREAD: u16 = 1094;

/// Connections a shard keeps for KILL QUERY, open at once (idle or busy; more KILLs wait their
/// turn): bounded, so a KILL storm cannot exhaust the backend's connections or the descriptors
/// reserved for them.
pub const KILL_CONNECTIONS: usize = 2;

/// A statement whose KILL QUERY the server answered this recently is taken as being interrupted:
/// another request for it is answered without a second KILL (see rule 2 above). Long beside the
/// microseconds a victim takes to notice a KILL, short beside a person or a watchdog asking again.
pub const DELIVERED_FOR: Duration = Duration::from_millis(100);

/// What a KILL QUERY request does about the session's statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No statement of the session runs on a backend: nothing to interrupt.
    Nothing,
    /// A KILL for this very statement is in flight: wait for its answer.
    Join,
    /// A KILL for this very statement was answered moments ago: it is being interrupted.
    Delivered,
    /// Send a KILL QUERY for this statement.
    Send(Running),
}

/// Decides what a KILL QUERY request does, from the statement the session runs now, the last
/// KILL sent for one of its statements and how many other KILLs are in flight against the
/// session (a KILL recorded as in flight with none left was given up half-way: its task was
/// dropped).
pub fn step(
    running: Option<Running>,
    last: Option<SentKill>,
    others_in_flight: u32,
    now: Instant,
) -> Step {
    let Some(r) = running else {
        return Step::Nothing;
    };
    match last {
        Some(k) if k.run == r.run => match k.answered {
            None if others_in_flight > 0 => Step::Join,
            None => Step::Send(r),
            Some(at) if now.saturating_duration_since(at) < DELIVERED_FOR => Step::Delivered,
            Some(_) => Step::Send(r),
        },
        _ => Step::Send(r),
    }
}

/// The shard's connections for KILL QUERY: at most [`KILL_CONNECTIONS`] open, idle ones kept
/// for the next KILL, each logged in as one account on one backend (a KILL goes out as the
/// account that owns the thread, so the server always allows it).
pub struct KillLines {
    permits: glommio::sync::Semaphore,
    idle: RefCell<Vec<KillLine>>,
}

struct KillLine {
    /// The pool user (account) and backend it is logged in to.
    user: u32,
    backend: u16,
    conn: BackendConn,
    idle_since: Instant,
}

impl Default for KillLines {
    fn default() -> Self {
        KillLines {
            permits: glommio::sync::Semaphore::new(KILL_CONNECTIONS as u64),
            idle: RefCell::new(Vec::new()),
        }
    }
}

impl KillLines {
    /// Sends `KILL QUERY thread` to `backend` as pool user `user`; returns once the server has
    /// answered (or it failed).
    async fn kill_query(
        &self,
        shard: &Shard,
        user: u32,
        backend: u16,
        thread: u32,
    ) -> Result<(), BackendError> {
        let _permit = self
            .permits
            .acquire_permit(1)
            .await
            .map_err(|e| BackendError::Broken(format!("KILL connections closed: {e}")))?;
        let sql = format!("KILL QUERY {thread}");
        let mut reused = self.take(user, backend).await;
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => {
                    let spec = shard.pool(user, backend).spec().clone();
                    BackendConn::connect(&spec, shard.fresh.clone()).await?
                }
            };
            match conn.query_ok(&sql).await {
                Ok(_) => {
                    self.put(user, backend, conn);
                    return Ok(());
                }
                // The server refused this KILL (the thread is gone, say); the connection is fine.
                Err(e @ BackendError::Server { .. }) => {
                    self.put(user, backend, conn);
                    return Err(e);
                }
                // A kept connection the server had closed meanwhile: once more on a new one.
                Err(e) if was_reused => {
                    debug!(error = %e, "a kept KILL connection had gone; opening another");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A kept connection for (`user`, `backend`); otherwise makes room for a new one (the
    /// caller holds a permit, so at most `KILL_CONNECTIONS - 1` others are in use): the oldest
    /// kept connection says COM_QUIT and closes before the new one opens.
    async fn take(&self, user: u32, backend: u16) -> Option<BackendConn> {
        let evicted = {
            let mut idle = self.idle.borrow_mut();
            if let Some(i) = idle
                .iter()
                .position(|l| l.user == user && l.backend == backend)
            {
                return Some(idle.swap_remove(i).conn);
            }
            if idle.is_empty() || self.open_with(idle.len()) < KILL_CONNECTIONS {
                return None;
            }
            let oldest = (0..idle.len())
                .min_by_key(|&i| idle[i].idle_since)
                .expect("not empty");
            idle.swap_remove(oldest)
        };
        evicted.conn.quit().await;
        None
    }

    fn open_with(&self, idle: usize) -> usize {
        idle + KILL_CONNECTIONS - self.permits.available() as usize
    }

    fn put(&self, user: u32, backend: u16, conn: BackendConn) {
        self.idle.borrow_mut().push(KillLine {
            user,
            backend,
            conn,
            idle_since: Instant::now(),
        });
    }

    /// Closes connections unused for `idle` (the pools' idle timeout, by the janitor; zero at
    /// shutdown).
    pub fn sweep(&self, idle: Duration) {
        let mut kept = self.idle.borrow_mut();
        let (old, young): (Vec<KillLine>, Vec<KillLine>) = std::mem::take(&mut *kept)
            .into_iter()
            .partition(|l| l.idle_since.elapsed() >= idle);
        *kept = young;
        for line in old {
            glommio::spawn_local(line.conn.quit()).detach();
        }
    }
}

/// The ERR for a connection id that names no session.
pub fn no_such_thread(id: u32) -> Reply {
    Reply::new(NO_SUCH_THREAD, b"HY000", format!("Unknown thread id: {id}"))
}

impl Shard {
    /// KILL [QUERY] `conn_id`, on whichever shard it lives.
    pub async fn kill(
        self: &Rc<Self>,
        conn_id: u32,
        kind: KillKind,
        by_user: u32,
    ) -> Result<(), Error> {
        let (worker, shard) = self.ids.locate(conn_id);
        let r = if worker != self.shared.worker {
            if worker >= self.shared.workers || self.shared.supervisor.is_none() {
                Err(no_such_thread(conn_id))
            } else {
                // Another worker process: ask it over its admin socket, from a helper thread so
                // this executor never blocks.
                let reply = Reply1::default();
                let r = reply.clone();
                let sup = self.shared.supervisor.unwrap_or(0);
                let spawned = std::thread::Builder::new()
                    .name("sluice-kill".into())
                    .spawn(move || {
                        r.send(crate::admin::remote_kill(
                            sup, worker, conn_id, kind, by_user,
                        ))
                    });
                match spawned {
                    Ok(_) => reply.recv().await,
                    // (The server's ER_CANT_CREATE_THREAD; a shard must not panic over it.)
                    Err(e) => Err(Reply::new(
                        1135,
                        b"HY000",
                        format!(
                            "Can't create a new thread (errno {}): sluice could not reach the worker holding {conn_id}",
                            e.raw_os_error().unwrap_or(0)
                        ),
                    )),
                }
            }
        } else if shard as usize >= self.shared.shards {
            Err(no_such_thread(conn_id))
        } else if shard as usize == self.id {
            self.kill_anywhere(conn_id, kind, by_user).await
        } else {
            let reply = Reply1::default();
            let Some(mb) = self
                .shared
                .mailboxes
                .get()
                .and_then(|m| m.get(shard as usize))
            else {
                return Err(Error::Refused(no_such_thread(conn_id)));
            };
            mb.post(ShardMsg::Kill {
                conn_id,
                kind,
                by_user,
                ask_peer: true,
                reply: reply.clone(),
            });
            reply.recv().await
        };
        r.map_err(Error::Refused)
    }

    /// KILL [QUERY] `conn_id`, an id of this shard: here, or during an upgrade's handover in
    /// the other process (the order is [`peer::next`]'s; `upgrade::peer` says why).
    pub(super) async fn kill_anywhere(
        self: &Rc<Self>,
        conn_id: u32,
        kind: KillKind,
        by_user: u32,
    ) -> Result<(), Reply> {
        let side = peer::side();
        let mut at = Place::Here;
        // (Three places at most: `next` never names one twice.)
        for _ in 0..3 {
            let said = match at {
                Place::Here | Place::HereAgain => {
                    match self.kill_local(conn_id, kind, by_user).await {
                        Err(r) if r.code == NO_SUCH_THREAD => Said::Unknown,
                        r => Said::Found(r),
                    }
                }
                Place::Peer => self.ask_peer(conn_id, kind, by_user).await,
            };
            match peer::next(side, at, &said) {
                Some(p) => at = p,
                None => return said.into_result(conn_id),
            }
        }
        Err(no_such_thread(conn_id))
    }

    /// Asks the other process of the handover to KILL `conn_id` there (from a helper thread:
    /// the question blocks), naming the user as that process knows it: by name.
    async fn ask_peer(&self, conn_id: u32, kind: KillKind, by_user: u32) -> Said {
        let by = if by_user == BY_ADMIN {
            None
        } else {
            match self.user_name(by_user) {
                Some(name) => Some(name),
                // A user this process no longer knows by name (a database user dropped since
                // it logged in) owns nothing the other process could name.
                None => return Said::Unknown,
            }
        };
        let reply = Reply1::default();
        let r = reply.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-kill".into())
            .spawn(move || r.send(peer::ask(conn_id, kind, by)));
        match spawned {
            Ok(_) => reply.recv().await,
            Err(e) => Said::NoAnswer(format!("cannot start a thread to ask: {e}")),
        }
    }

    /// KILL [QUERY] `conn_id`, a session of this shard (`by_user` [`BY_ADMIN`]: the admin
    /// console, which may kill any).
    pub(super) async fn kill_local(
        self: &Rc<Self>,
        conn_id: u32,
        kind: KillKind,
        by_user: u32,
    ) -> Result<(), Reply> {
        if shard_side::moving(conn_id) {
            // On its way to the successor (in neither table): wait until it arrives there or
            // is taken back here.
            debug!(
                conn_id,
                "KILL waits for a session on its way to the new process"
            );
            let arrived = glommio::timer::timeout(peer::TRANSIT_WAIT, async {
                shard_side::arrived(conn_id).await;
                Ok(())
            })
            .await;
            if arrived.is_err() {
                return Err(Reply::new(
                    1105,
                    b"HY000",
                    format!("sluice: connection {conn_id} is still being moved to the new process of an upgrade after {} s; KILL it again", peer::TRANSIT_WAIT.as_secs()),
                ));
            }
        }
        let token = self
            .table
            .borrow()
            .find_conn(conn_id)
            .ok_or_else(|| no_such_thread(conn_id))?;
        enum Target {
            Parked,
            Active(Rc<ActiveCtl>),
        }
        let target = {
            let table = self.table.borrow();
            let slot = table.get(token).ok_or_else(|| no_such_thread(conn_id))?;
            let owner = match &slot.state {
                SlotState::Parked(s) => s.user.id,
                SlotState::Active(c) => c.user.get(),
                SlotState::Free => return Err(no_such_thread(conn_id)),
            };
            if owner != by_user && by_user != BY_ADMIN {
                return Err(Reply::new(
                    1095,
                    b"HY000",
                    format!("You are not owner of thread {conn_id}"),
                ));
            }
            match &slot.state {
                SlotState::Active(c) => Target::Active(c.clone()),
                _ => Target::Parked,
            }
        };
        match target {
            Target::Parked => {
                if kind == KillKind::Connection {
                    let sess = self
                        .table
                        .borrow_mut()
                        .unpark(token, Rc::new(ActiveCtl::default()));
                    if let Some(sess) = sess {
                        session::finish(self, token, sess).await;
                    }
                }
                Ok(())
            }
            Target::Active(ctl) => {
                if kind == KillKind::Query && ctl.gated.get() {
                    // Its command waits for RESUME: it ends as an interrupted statement does.
                    ctl.gate_cancelled.set(true);
                    ctl.notify(0);
                }
                self.interrupt_statement(conn_id, &ctl).await;
                if kind == KillKind::Connection {
                    ctl.kill.set(Some(KillKind::Connection));
                    ctl.notify(0);
                }
                Ok(())
            }
        }
    }

    /// Interrupts the statement the session of `ctl` runs on a backend, if it runs one; returns
    /// once the server has answered the KILL QUERY that does it (or it failed).
    async fn interrupt_statement(&self, conn_id: u32, ctl: &Rc<ActiveCtl>) {
        // Counted before the statement is read: until the server has answered the KILL, the
        // session keeps the connection it names (see `ActiveCtl::kills_settled`).
        let in_flight = ctl.kill_started();
        let stats = &self.stats;
        let others = ctl.kills_in_flight() - 1;
        match step(ctl.running(), ctl.last_kill.get(), others, Instant::now()) {
            Step::Nothing => {}
            Step::Delivered => stats.kills_shared.set(stats.kills_shared.get() + 1),
            Step::Join => {
                stats.kills_shared.set(stats.kills_shared.get() + 1);
                drop(in_flight);
                ctl.kills_settled().await;
            }
            Step::Send(r) => {
                debug!(
                    conn_id,
                    thread = r.thread,
                    run = r.run,
                    "KILL QUERY on the backend"
                );
                stats.kills_sent.set(stats.kills_sent.get() + 1);
                ctl.last_kill.set(Some(SentKill {
                    run: r.run,
                    answered: None,
                }));
                let sent = self
                    .kill_lines
                    .kill_query(self, ctl.pool_user.get(), r.backend, r.thread)
                    .await;
                let answered = match sent {
                    Ok(()) => true,
                    Err(BackendError::Server { code, message, .. }) => {
                        debug!(code, message, thread = r.thread, "KILL QUERY refused");
                        true
                    }
                    Err(e) => {
                        warn!(error = %e, thread = r.thread, "KILL QUERY could not reach the backend");
                        false
                    }
                };
                // A KILL that never reached the server leaves the next request to send one.
                ctl.last_kill.set(answered.then(|| SentKill {
                    run: r.run,
                    answered: Some(Instant::now()),
                }));
                drop(in_flight);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kill_query_per_statement() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let run = |n: u64| Running {
            backend: 0,
            thread: 40 + n as u32,
            run: n,
        };
        let in_flight = |n: u64| SentKill {
            run: n,
            answered: None,
        };
        let answered = |n: u64, at: u64| SentKill {
            run: n,
            answered: Some(ms(at)),
        };
        let d = DELIVERED_FOR.as_millis() as u64;
        /// (case, statement running, last KILL sent, other KILLs in flight, now, step).
        type Case<'a> = (
            &'a str,
            Option<Running>,
            Option<SentKill>,
            u32,
            Instant,
            Step,
        );
        #[rustfmt::skip]
        let table: &[Case] = &[
            ("idle, never killed", None, None, 0, ms(0), Step::Nothing),
            ("idle, a KILL for the last statement in flight", None, Some(in_flight(3)), 1, ms(0), Step::Nothing),
            ("first KILL of the statement", Some(run(3)), None, 0, ms(0), Step::Send(run(3))),
            ("the last KILL was for an earlier statement", Some(run(4)), Some(answered(3, 0)), 0, ms(1), Step::Send(run(4))),
            ("a KILL for this statement in flight", Some(run(3)), Some(in_flight(3)), 1, ms(0), Step::Join),
            ("two in flight: one sending, one waiting", Some(run(3)), Some(in_flight(3)), 2, ms(0), Step::Join),
            ("recorded in flight, given up half-way", Some(run(3)), Some(in_flight(3)), 0, ms(0), Step::Send(run(3))),
            ("answered just now", Some(run(3)), Some(answered(3, 10)), 0, ms(10), Step::Delivered),
            ("answered a moment ago", Some(run(3)), Some(answered(3, 10)), 0, ms(10 + d - 1), Step::Delivered),
            ("still running long after", Some(run(3)), Some(answered(3, 10)), 0, ms(10 + d), Step::Send(run(3))),
            ("clock read before the answer", Some(run(3)), Some(answered(3, 10)), 0, ms(5), Step::Delivered),
        ];
        for (what, running, last, others, now, want) in table {
            assert_eq!(step(*running, *last, *others, *now), *want, "{what}");
        }
    }
}
