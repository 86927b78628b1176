//! The position follower: while this shard serves causal reads (`consistency = "session"`, reads
//! routed to replicas), one task per replica waits on that replica, with `MASTER_GTID_WAIT`, for
//! the newest GTID a causal user wrote through this shard, and records it applied
//! ([`Backend::note_applied`]) as soon as the replica says so. A causal read arriving after that
//! finds the replica's known position covering its write and sends no wait of its own (the
//! probe alone learns positions every `health.interval_ms`, 250 ms by default: nearly every read
//! right after a write waited on its replica, one more statement there; README, "Reads on
//! replicas").
//!
//! How it stays cheap and bounded:
//! - **Only while causal reads happen.** A causal read stamps the shard ([`Shard::causal_read`]);
//!   a write of a causal user ([`Shard::followed_write`]) raises the target (in place: no
//!   allocation unless a new replication domain appears) and wakes the followers only if a
//!   causal read came within [`FOLLOW_FOR`]. A follower with no causal read for that long ends
//!   and closes its connection: an idle or write-only workload, or users without read routing,
//!   pay nothing (not even a task).
//! - **One wait in flight per replica per shard, coalescing.** The follower is signalled (a
//!   flag and a waker), never awaited, by the session path. While its wait is in flight, newer
//!   writes only raise the target; when the wait answers, the follower looks again (see
//!   [`next`]) and waits for the newest target if the replica is not known to have it yet.
//! - **Every wait is bounded** ([`FOLLOW_WAIT`]); a failure drops the connection and backs off
//!   ([`backoff`]); a replica that may not serve reads now (lagging, down, leaving) is not
//!   followed; shutdown ends every follower, an in-flight wait included.
//!
//! **Its own connection, not a pooled one.** A follower's connection sits in `MASTER_GTID_WAIT`
//! most of the time: taken from the pool it would be a connection sessions cannot have (and
//! count against `pool.size`, the host budget and slot lending for nothing they asked for),
//! and a pool connection must come back in a known state, which a wait cut short at shutdown
//! does not leave. So each follower opens one of its own (as the probe and KILL do: with the
//! probe's account), at most one per replica per shard, and only while following; it is closed
//! when following stops.
//!
//! Per shard, not per process: the state is the shard's own (`!Send`, no lock); what followers
//! learn goes to the process's [`Backend`] (its position is shared), so one shard's follower
//! saves the other shards' reads their waits too. Turned down: one follower per process (it
//! would need a channel from every shard for each write, and a core of its own to run on).

use super::Shard;
use crate::backend::conn::BackendConn;
use crate::backend::gtid::Pos;
use crate::backend::registry::Backend;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tracing::debug;

/// Following stops when the shard served no causal read for this long.
pub const FOLLOW_FOR: Duration = Duration::from_secs(5);

/// The longest one `MASTER_GTID_WAIT` of a follower lasts (then it looks again): bounds how
/// long a shutdown or a drain waits for it, and how often a lagging replica is asked (once a
/// second at most).
pub const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// The first pause after a failed wait or connect; doubled per failure in a row up to
/// [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One GTID of the target: the newest written in a replication domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

/// Raises `target` by the GTIDs of `text` (`d-s-n[,…]`, what `last_gtid` reports): per domain,
/// the one with the highest sequence number (malformed parts are left out). True when any domain
/// rose. Allocates only for a domain `target` did not have.
pub fn raise(target: &mut Vec<Gtid>, text: &str) -> bool {
    let mut rose = false;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((domain, server, seq)) = crate::backend::gtid::split(part) else {
            continue;
        };
        let Ok(server) = server.parse() else {
            continue;
        };
        let g = Gtid {
            domain,
            server,
            seq,
        };
        match target.iter_mut().find(|t| t.domain == domain) {
            Some(t) if t.seq >= seq => {}
            Some(t) => {
                *t = g;
                rose = true;
            }
            None => {
                target.push(g);
                rose = true;
            }
        }
    }
    rose
}

/// `target` as a position (what [`Backend::note_applied`] takes).
pub fn pos_of(target: &[Gtid]) -> Pos {
    Pos::from_domains(target.iter().map(|g| (g.domain, g.seq)).collect())
}

/// The statement a follower sends for `target`.
pub fn wait_sql(target: &[Gtid], wait: Duration) -> String {
    let list: Vec<String> = target
        .iter()
        .map(|g| format!("{}-{}-{}", g.domain, g.server, g.seq))
        .collect();
    format!(
        "SELECT MASTER_GTID_WAIT('{}', {})",
        list.join(","),
        wait.as_secs_f64()
    )
}

/// What a follower knows when it decides what to do next.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The newest GTIDs written through this shard by causal users.
    pub target: &'a [Gtid],
    /// What sluice knows the replica has applied (the probe's position, raised by waits that
    /// answered "applied").
    pub known: Option<&'a Pos>,
    /// The replica may serve routed reads now (read-only, replicating, within the lag limit,
    /// up, active).
    pub eligible: bool,
    /// Since the shard's last causal read (`None`: none yet).
    pub since_read: Option<Duration>,
    /// The shard is shutting down, or the backend is leaving (draining, maintenance, removed).
    pub ending: bool,
}

/// What a follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait on the replica for the target.
    Wait,
    /// Nothing to wait for now: sleep until a write signals (or following times out).
    Idle,
    /// Stop following: close the connection, end the task.
    Stop,
}

/// The follower's decision (pure).
pub fn next(f: Facts<'_>) -> Next {
    if f.ending || f.since_read.is_none_or(|d| d >= FOLLOW_FOR) {
        return Next::Stop;
    }
    if !f.eligible || f.target.is_empty() {
        return Next::Idle;
    }
    let covered = f.known.is_some_and(|k| {
        f.target.iter().all(|g| {
            k.domains()
                .iter()
                .any(|&(d, n)| d == g.domain && n >= g.seq)
        })
    });
    if covered {
        Next::Idle
    } else {
        Next::Wait
    }
}

/// The pause after `failures` failed attempts in a row (at least one).
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * (1u32 << shift)).min(BACKOFF_MAX)
}

/// One followed replica on this shard: the signal its task sleeps on.
struct Line {
    backend: u16,
    /// A write raised the target since the task last looked.
    pending: Cell<bool>,
    /// The task must end now (shutdown).
    stop: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// The task is alive (a write after it ended starts another).
    running: Cell<bool>,
}

impl Line {
    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Ready once a write signalled (or `stop`); takes the signal.
    async fn signalled(&self) {
        std::future::poll_fn(|cx| {
            if self.pending.replace(false) || self.stop.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Ready once the task must end.
    async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.stop.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// The shard's follower state (see the module's doc).
#[derive(Default)]
pub struct Follow {
    /// The newest GTID per domain written through this shard by a causal user.
    target: RefCell<Vec<Gtid>>,
    /// When the shard last served a causal read.
    last_read: Cell<Option<Instant>>,
    /// One per replica ever followed on this shard (by backend id; few).
    lines: RefCell<Vec<Rc<Line>>>,
}

impl Shard {
    /// A causal read (one that needs a write applied) is being served: following is on for
    /// [`FOLLOW_FOR`].
    pub(crate) fn causal_read(&self) {
        self.follow.last_read.set(Some(Instant::now()));
    }

    /// A causal user's write committed with `gtid` (its `last_gtid`): raises the target and,
    /// while causal reads are being served, wakes (or starts) a follower per replica. Never
    /// waits.
    pub(crate) fn followed_write(self: &Rc<Self>, gtid: &str) {
        let f = &self.follow;
        if !raise(&mut f.target.borrow_mut(), gtid) {
            return;
        }
        let active = f.last_read.get().is_some_and(|t| t.elapsed() < FOLLOW_FOR);
        if !active || self.is_draining() {
            return;
        }
        self.refresh_backends();
        let backends = self.backends.borrow();
        for b in backends.iter().filter(|b| following_worth(b)) {
            let line = {
                let mut lines = f.lines.borrow_mut();
                match lines.iter().find(|l| l.backend == b.id) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Rc::new(Line {
                            backend: b.id,
                            pending: Cell::new(false),
                            stop: Cell::new(false),
                            waker: Cell::new(None),
                            running: Cell::new(false),
                        });
                        lines.push(l.clone());
                        l
                    }
                }
            };
            line.pending.set(true);
            if line.running.replace(true) {
                line.wake();
            } else {
                glommio::spawn_local(follow(self.clone(), line)).detach();
            }
        }
    }

    /// Shutdown: every follower ends now (a wait in flight is abandoned with its connection).
    pub(super) fn stop_following(&self) {
        for l in self.follow.lines.borrow().iter() {
            l.stop.set(true);
            l.wake();
        }
    }
}

/// Is `b` a replica a causal read may go to now?
fn following_worth(b: &Backend) -> bool {
    use crate::backend::router::{Admin, Role};
    b.role != Role::Any
        && b.writable() != Some(true)
        && b.admin() == Admin::Active
        && b.health().serves()
        && b.read_ok()
}

/// One replica's follower task (see the module's doc).
async fn follow(shard: Rc<Shard>, line: Rc<Line>) {
    let b = shard.backend(line.backend);
    let mut conn: Option<BackendConn> = None;
    let mut failures = 0u32;
    loop {
        line.pending.set(false);
        let target = shard.follow.target.borrow().clone();
        let known = b.pos();
        let ending = line.stop.get()
            || shard.is_draining()
            || b.admin() != crate::backend::router::Admin::Active;
        let since_read = shard.follow.last_read.get().map(|t| t.elapsed());
        let decided = next(Facts {
            target: &target,
            known: known.as_ref(),
            eligible: following_worth(&b),
            since_read,
            ending,
        });
        match decided {
            Next::Stop => break,
            Next::Idle => {
                // Until a write signals, or following would time out.
                let left = FOLLOW_FOR.saturating_sub(since_read.unwrap_or(FOLLOW_FOR));
                futures_lite::future::or(line.signalled(), async {
                    glommio::timer::sleep(left + Duration::from_millis(1)).await
                })
                .await;
            }
            Next::Wait => {
                let waited = futures_lite::future::or(
                    async { Some(wait_once(&shard, &b, &mut conn, &target).await) },
                    async {
                        line.stopped().await;
                        None
                    },
                )
                .await;
                let stats = &shard.stats;
                match waited {
                    // Shutdown: the connection is mid-statement.
                    None => {
                        conn = None;
                        break;
                    }
                    Some(Ok(applied)) => {
                        failures = 0;
                        if applied {
                            b.note_applied(&pos_of(&target));
                            stats.follow_applied.set(stats.follow_applied.get() + 1);
                        } else {
                            stats.follow_timeouts.set(stats.follow_timeouts.get() + 1);
                        }
                    }
                    Some(Err(e)) => {
                        debug!(backend = %b.address, error = %e, "position follower: wait failed");
                        conn = None;
                        failures += 1;
                        stats.follow_errors.set(stats.follow_errors.get() + 1);
                        futures_lite::future::or(line.stopped(), async {
                            glommio::timer::sleep(backoff(failures)).await
                        })
                        .await;
                    }
                }
            }
        }
    }
    line.running.set(false);
    if let Some(c) = conn {
        c.quit().await;
    }
}

/// Sends one `MASTER_GTID_WAIT` for `target` to replica `b` (connecting first if needed):
/// `Ok(true)` when it answered 0 (applied), `Ok(false)` when it ran out of time.
async fn wait_once(
    shard: &Rc<Shard>,
    b: &Backend,
    conn: &mut Option<BackendConn>,
    target: &[Gtid],
) -> Result<bool, String> {
    if conn.as_ref().is_some_and(|c| c.gen != b.conn_gen()) {
        *conn = None;
    }
    if conn.is_none() {
        let mut spec = shard
            .pool(shard.shared.users().first_current(), b.id)
            .spec()
            .clone();
        // The wait's own time, and as long again for the answer to come.
        spec.timeout = spec.timeout.max(FOLLOW_WAIT * 2);
        let gen;
        (spec.address, gen) = b.addr();
        let live = shard.cfg();
        if let Some(user) = &live.health.user {
            spec.user = user.as_bytes().to_vec();
            spec.password = live
                .health
                .password
                .clone()
                .unwrap_or_default()
                .into_bytes();
        }
        let mut c = BackendConn::connect(&spec, shard.fresh.clone())
            .await
            .map_err(|e| e.to_string())?;
        c.gen = gen;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    let stats = &shard.stats;
    stats.follow_waits.set(stats.follow_waits.get() + 1);
    let answer = c
        .query_value(&wait_sql(target, FOLLOW_WAIT))
        .await
        .map_err(|e| e.to_string())?;
    match answer.as_deref() {
        Some("0") => Ok(true),
        Some("-1") => Ok(false),
        other => Err(format!("MASTER_GTID_WAIT answered {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Vec<Gtid> {
        let mut t = Vec::new();
        raise(&mut t, s);
        t
    }

    #[test]
    fn writes_raise_the_target_per_domain() {
        // (target, written, rose, then)
        let cases = [
            ("", "0-1-5", true, "0-1-5"),
            ("0-1-5", "0-1-5", false, "0-1-5"),
            ("0-1-5", "0-1-4", false, "0-1-5"),
            ("0-1-5", "0-1-6", true, "0-1-6"),
            // Another server id in the same domain (after a failover): the sequence decides.
            ("0-1-5", "0-2-7", true, "0-2-7"),
            ("0-1-5", "1-3-2", true, "0-1-5,1-3-2"),
            ("0-1-5,1-3-2", "1-3-4, 0-1-3", true, "0-1-5,1-3-4"),
            ("0-1-5", "", false, "0-1-5"),
            ("0-1-5", "x,0-1,0-1-x,0-1-2-3", false, "0-1-5"),
        ];
        for (was, written, rose, then) in cases {
            let mut t = target(was);
            assert_eq!(raise(&mut t, written), rose, "{was} + {written}");
            assert_eq!(t, target(then), "{was} + {written}");
        }
    }

    #[test]
    fn the_wait_names_each_domains_newest_gtid() {
        assert_eq!(
            wait_sql(&target("0-1-5,1-3-9"), Duration::from_secs(1)),
            "SELECT MASTER_GTID_WAIT('0-1-5,1-3-9', 1)"
        );
        assert_eq!(
            wait_sql(&target("0-2-7"), Duration::from_millis(250)),
            "SELECT MASTER_GTID_WAIT('0-2-7', 0.25)"
        );
        assert_eq!(
            pos_of(&target("0-1-5,1-3-9")),
            Pos::parse("0-1-5,1-3-9").unwrap()
        );
    }

    /// (target, known, eligible, since the last causal read, ending, next)
    type Case = (
        &'static str,
        Option<Pos>,
        bool,
        Option<Duration>,
        bool,
        Next,
    );

    #[test]
    fn a_follower_waits_only_for_what_the_replica_is_not_known_to_have() {
        let p = |s: &str| Pos::parse(s).unwrap();
        let recent = Some(Duration::from_millis(10));
        let stale = Some(FOLLOW_FOR);
        // (target, known, eligible, since the last causal read, ending, next)
        let cases: [Case; 13] = [
            ("0-1-5", None, true, recent, false, Next::Wait),
            ("0-1-5", Some(p("0-1-4")), true, recent, false, Next::Wait),
            ("0-1-5", Some(p("0-1-5")), true, recent, false, Next::Idle),
            ("0-1-5", Some(p("0-2-9")), true, recent, false, Next::Idle),
            // A domain the replica is not known to have.
            (
                "0-1-5,1-3-2",
                Some(p("0-1-9")),
                true,
                recent,
                false,
                Next::Wait,
            ),
            (
                "0-1-5,1-3-2",
                Some(p("0-1-9,1-3-2")),
                true,
                recent,
                false,
                Next::Idle,
            ),
            // Nothing written yet.
            ("", None, true, recent, false, Next::Idle),
            // A replica reads may not go to now: not followed (until a write looks again).
            ("0-1-5", None, false, recent, false, Next::Idle),
            // No causal read for a while, or ever: following stops.
            ("0-1-5", None, true, stale, false, Next::Stop),
            ("0-1-5", None, true, None, false, Next::Stop),
            ("", None, false, None, false, Next::Stop),
            // Shutdown, or the replica is leaving.
            ("0-1-5", None, true, recent, true, Next::Stop),
            ("0-1-5", Some(p("0-1-5")), true, recent, true, Next::Stop),
        ];
        for (t, known, eligible, since_read, ending, want) in cases {
            let t = target(t);
            let got = next(Facts {
                target: &t,
                known: known.as_ref(),
                eligible,
                since_read,
                ending,
            });
            assert_eq!(
                got, want,
                "{t:?} known {known:?} eligible {eligible} read {since_read:?} ending {ending}"
            );
        }
    }

    #[test]
    fn failures_back_off_doubling_up_to_a_bound() {
        let ms = |n| Duration::from_millis(n);
        let cases = [
            (0, ms(50)),
            (1, ms(50)),
            (2, ms(100)),
            (3, ms(200)),
            (6, ms(1600)),
            (7, ms(2000)),
            (40, ms(2000)),
            (u32::MAX, ms(2000)),
        ];
        for (failures, want) in cases {
            assert_eq!(backoff(failures), want, "{failures}");
        }
    }
}
