//! The janitor: the shard's once-a-second sweep (PgBouncer's janitor), as one task per shard
//! until it drains.
//!
//! Each tick: returns slots borrowed from other shards that are no longer needed
//! ([`super::lend`]); closes pooled connections idle or older than the pool's limits and
//! health-checks those due; disconnects parked clients idle past their limit and gives back
//! backends that parked sessions keep only for their diagnostics ([`Shard::expire_idle`]);
//! moves parked session-mode sessions off leaving backends and ends those on a backend whose
//! drain is overdue (with many parked sessions, a tenth of the table every tenth of a second:
//! see [`SLICED_FROM`]); closes the shard's KILL connections unused as long. Every ten ticks:
//! forgets what the interners and the schema checks no longer need (shard 0: and the
//! failed-login table). On shard 0, every [`ROUTINES_EVERY`] ticks: reloads the server's stored
//! functions. After a burst: gives pooled buffers and free heap back.
//!
//! Owns no shard field; reads the live configuration each tick (a reload may change the
//! limits).

use super::sessions::tell_and_finish;
use super::table::{ActiveCtl, SlotState, Token};
use super::Shard;
use crate::error::Reply;
use crate::frontend::session;
use std::rc::Rc;
use std::time::Duration;
use tracing::debug;

/// A parked session keeps a backend only for its diagnostics more than this long (seconds, on
/// the janitor's whole-second clock: at least one full second) while other sessions wait for
/// a connection, before the janitor gives it back (see [`session::release_soft`])...
const SOFT_HOLD_SECS: u32 = 1;
/// ... and more than this long whether or not anyone waits.
const SOFT_HOLD_IDLE_SECS: u32 = 10;
/// Janitor ticks (seconds) between reloads of the server's stored functions.
const ROUTINES_EVERY: u64 = 10;
/// With this many parked sessions or more, the sweep of parked sessions is cut into
/// [`SWEEP_SLICES`] slices, one every tenth of a second (each session still looked at once a
/// second): a whole sweep of 7,500 parked sessions held the shard 0.3–2.4 ms (median 0.56 ms,
/// release build, measured during `bench-million.sh 15000`), a pause every active client of
/// the shard waits through.
const SLICED_FROM: usize = 2048;
const SWEEP_SLICES: u32 = 10;

impl Shard {
    /// Reloads the server's stored functions on one of the pool's idle connections (functions
    /// created through sluice are seen at once; this catches the others). Only an idle
    /// connection is used: none is waited for, opened or borrowed for it.
    async fn refresh_routines(self: Rc<Self>) {
        let Some(pool) = self.pools().first().cloned() else {
            return;
        };
        let Some(mut lease) = pool.try_idle() else {
            return;
        };
        match lease
            .conn()
            .query_rows(crate::bootstrap::ROUTINES_QUERY)
            .await
        {
            Ok(rows) => {
                self.shared.server.routines.replace(
                    rows.into_iter()
                        .filter_map(|r| r.into_iter().next().flatten())
                        .map(String::into_bytes)
                        .collect(),
                );
                lease.release();
            }
            Err(e) => debug!(error = %e, "reloading stored functions failed"),
        }
    }

    /// Periodic pool maintenance: idle timeouts, lifetimes, health checks.
    pub(super) async fn janitor(self: Rc<Self>) {
        let mut ticks = 0u64;
        let mut last_accepted = 0u64;
        while !self.draining.get() {
            if self.table.borrow().parked() >= SLICED_FROM {
                for slice in 0..SWEEP_SLICES {
                    glommio::timer::sleep(Duration::from_secs(1) / SWEEP_SLICES).await;
                    if self.draining.get() {
                        return;
                    }
                    self.expire_idle(slice, SWEEP_SLICES);
                }
            } else {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                self.expire_idle(0, 1);
            }
            // Read each tick: a reload may change them (and resize the pools: see `cfg`).
            let live = self.cfg();
            let idle = Duration::from_millis(live.pool.idle_timeout_ms);
            let lifetime = Duration::from_millis(live.pool.max_lifetime_ms);
            let check = Duration::from_millis(live.pool.health_check_interval_ms);
            self.poller.heartbeat();
            ticks += 1;
            if self.id == 0 && ticks % ROUTINES_EVERY == 0 {
                glommio::spawn_local(self.clone().refresh_routines()).detach();
            }
            for pool in self.pools().iter() {
                self.return_lent(pool);
                pool.sweep(idle, lifetime);
                for mut conn in pool.take_for_check(check) {
                    let pool = pool.clone();
                    glommio::spawn_local(async move {
                        let ok = conn
                            .command_ok(
                                &[crate::codec::command::com::PING],
                                crate::codec::command::ResponseKind::OkErr,
                            )
                            .await
                            .is_ok();
                        pool.checked(ok.then_some(conn));
                    })
                    .detach();
                }
            }
            self.kill_lines.sweep(idle);
            if ticks % 10 == 0 {
                if self.id == 0 {
                    self.shared.guard.sweep();
                }
                self.interner.sweep();
                self.sql.sweep();
                self.forget_old_schemas();
            }
            // After a burst (a connection storm, a spike of active clients) give the memory back:
            // pooled buffers down to a small reserve, and glibc's free pages to the kernel.
            let active = {
                let table = self.table.borrow();
                table.len() - table.parked()
            };
            let accepted = self.stats.accepted.get();
            if active < 16 && (accepted != last_accepted || self.bufs.pooled() > 32) {
                self.bufs.trim(16);
                // SAFETY: malloc_trim only releases free memory.
                unsafe { libc::malloc_trim(0) };
                last_accepted = accepted;
            }
        }
    }

    /// Disconnects parked clients idle past their limit: `client_idle_timeout_ms` (with ERR 4031,
    /// as MySQL does), or their own `wait_timeout` (as the server does: MariaDB closes the
    /// connection without a word, MySQL 8 sends ERR 4031). Also gives back backends that idle
    /// sessions keep only for their diagnostics (see [`session::release_soft`]).
    /// Looks at slice `slice` of `of` of the session table (all of it: `0, 1`).
    fn expire_idle(self: &Rc<Self>, slice: u32, of: u32) {
        let now = self.clock();
        let idle_ms = self.cfg().client_idle_timeout_ms;
        let configured = (idle_ms > 0).then(|| (idle_ms / 1000).max(1) as u32);
        let catalog = &self.shared.server.vars;
        let mut expired: Vec<(Token, bool)> = Vec::new();
        let mut soft: Vec<Token> = Vec::new();
        let mut drained: Vec<Token> = Vec::new();
        let mut moving: Vec<(Token, u16)> = Vec::new();
        {
            let table = self.table.borrow();
            let slots = table.slots();
            let at = |k: u32| slots * k as usize / of.max(1) as usize;
            for t in table.tokens_in(at(slice)..at(slice + 1)) {
                let Some(SlotState::Parked(s)) = table.get(t).map(|s| &s.state) else {
                    continue;
                };
                if s.lease
                    .as_ref()
                    .is_some_and(|l| self.drain_overdue(l.get().backend))
                {
                    drained.push(t);
                    continue;
                }
                if s.mode() == crate::config::PoolMode::Session {
                    if let Some(b) = s.lease.as_ref().map(|l| l.get().backend) {
                        if self.leaving(b) {
                            moving.push((t, b));
                        }
                    }
                }
                // A session holding a backend (a transaction, a pin) is not idle in the pool's
                // sense; it still times out, since it holds a connection others wait for.
                let idle = now.saturating_sub(s.last_active);
                let own = s
                    .wait_timeout(catalog)
                    .map(|w| w.clamp(1, u64::from(u32::MAX)) as u32);
                match (configured, own) {
                    (Some(c), _) if idle >= c && own.is_none_or(|w| c <= w) => {
                        expired.push((t, true))
                    }
                    (_, Some(w)) if idle >= w => expired.push((t, false)),
                    _ if idle > SOFT_HOLD_SECS
                        && (idle > SOFT_HOLD_IDLE_SECS
                            || s.lease.as_ref().is_some_and(|l| l.pool().waiting() > 0))
                        && s.soft_held() =>
                    {
                        soft.push(t)
                    }
                    _ => {}
                }
            }
        }
        for (t, backend) in moving {
            // Paced (see `rebalance`): the rest move at a later sweep, or at their command.
            if !self.may_move_off(backend) {
                continue;
            }
            let lease = self
                .table
                .borrow_mut()
                .parked_mut(t)
                .and_then(|s| session::move_off_parked(self, s));
            if let Some(lease) = lease {
                self.moved_off();
                lease.release();
            }
        }
        for t in soft {
            let lease = self
                .table
                .borrow_mut()
                .parked_mut(t)
                .and_then(session::take_soft_lease);
            if let Some(lease) = lease {
                glommio::spawn_local(session::release_soft(self.clone(), lease)).detach();
            }
        }
        let silent = self.shared.server.is_mariadb();
        for t in drained {
            let ctl = Rc::new(ActiveCtl::default());
            let Some(sess) = self.table.borrow_mut().unpark(t, ctl.clone()) else {
                continue;
            };
            let reply = session::drained_out(self, &sess);
            glommio::spawn_local(tell_and_finish(self.clone(), t, ctl, sess, reply)).detach();
        }
        for (t, by_config) in expired {
            let ctl = Rc::new(ActiveCtl::default());
            let Some(sess) = self.table.borrow_mut().unpark(t, ctl.clone()) else {
                continue;
            };
            self.stats
                .idle_timeouts
                .set(self.stats.idle_timeouts.get() + 1);
            // MariaDB closes an idle connection without a word, MySQL 8 sends ERR 4031.
            let reply = (by_config || !silent).then(|| {
                Reply::new(
                    4031,
                    b"HY000",
                    "The client was disconnected by the server because of inactivity.",
                )
            });
            glommio::spawn_local(tell_and_finish(self.clone(), t, ctl, sess, reply)).detach();
        }
    }
}
