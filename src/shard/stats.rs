//! The shard's counters: [`ShardStats`] (plain `Cell`s, bumped where things happen, never
//! shared with another core), the reason indexes some of them are split by, and the
//! [`snapshot`](Shard::snapshot) a metrics scrape asks every shard for (summed over shards and
//! rendered in [`crate::metrics`]).

use super::table::SlotState;
use super::Shard;
use crate::error::Error;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Why a routed read went to the primary: no replica could take it now; the replica had not
/// applied the session's writes within `causal_wait_ms`; `global` consistency.
pub const FALLBACK_NO_REPLICA: usize = 0;
pub const FALLBACK_BEHIND: usize = 1;
pub const FALLBACK_GLOBAL: usize = 2;

/// The replica answered with an error the primary may not give (a table it lacks): the read
/// ran again on the primary, the replica's error never sent.
pub const FALLBACK_REPLICA_ERROR: usize = 3;
pub const FALLBACK_REASONS: [&str; 4] = ["no_replica", "behind", "global", "replica_error"];

/// Why a session-mode session moved to another backend between its commands: its backend was
/// leaving (draining, in maintenance, removed), or another served it with less load
/// ([`rebalance`](super::rebalance)).
pub const MOVE_LEAVING: usize = 0;
pub const MOVE_REBALANCE: usize = 1;
pub const MOVE_REASONS: [&str; 2] = ["leaving", "rebalance"];

/// Per-shard counters (summed over shards for metrics).
#[derive(Default)]
pub struct ShardStats {
    pub accepted: Cell<u64>,
    /// Checkouts that found no usable backend and waited for one.
    pub no_backend_waits: Cell<u64>,
    /// Routed reads served by a replica, and those the primary served instead, by reason
    /// ([`FALLBACK_REASONS`]).
    pub reads_to_replicas: Cell<u64>,
    pub read_fallbacks: [Cell<u64>; 4],
    /// Causal reads that waited on their replica (MASTER_GTID_WAIT), and the total time.
    pub causal_waits: Cell<u64>,
    pub causal_wait_us: Cell<u64>,
    /// The position follower's `MASTER_GTID_WAIT`s sent, those answered "applied" (the
    /// replica's known position raised), those that ran out of time, and the waits or
    /// connects that failed (see [`super::follow`]).
    pub follow_waits: Cell<u64>,
    pub follow_applied: Cell<u64>,
    pub follow_timeouts: Cell<u64>,
    pub follow_errors: Cell<u64>,
    /// Sessions closed at a drain's deadline (they held state that could not move).
    pub drain_closes: Cell<u64>,
    /// Session-mode sessions moved off a backend that is leaving (draining, in maintenance,
    /// removed) between their commands.
    pub session_moves: [Cell<u64>; 2],
    pub commands: Cell<u64>,
    pub auth_failures: Cell<u64>,
    pub refused_max_clients: Cell<u64>,
    pub errors: RefCell<HashMap<&'static str, u64>>,
    /// Times a session became pinned, by reason.
    pub pins_total: [Cell<u64>; crate::session::pins::PIN_REASONS],
    /// Sessions pinned now, by reason.
    pub pinned_now: [Cell<i64>; crate::session::pins::PIN_REASONS],
    /// Statements refused because the pin budget was used up.
    pub pin_refusals: Cell<u64>,
    /// Settings applied to a backend before a command (a session moved between backends).
    pub syncs: Cell<u64>,
    /// Statements prepared on a backend on demand (not by the client's COM_STMT_PREPARE).
    pub lazy_prepares: Cell<u64>,
    /// Backends given back although their session's diagnostics lived there (pool pressure, or
    /// an idle session): those sessions' SHOW WARNINGS reads empty afterwards.
    pub diagnostics_released: Cell<u64>,
    /// Routed reads run again on the next backend to make the conditions a session left on a
    /// replica (`command::get_backend`).
    pub replica_conditions_rerun: Cell<u64>,
    /// KILL QUERYs sent to backends.
    pub kills_sent: Cell<u64>,
    /// KILL [QUERY] requests served by the KILL QUERY already sent for the same statement.
    pub kills_shared: Cell<u64>,
    /// Statements that ended with a KILL aimed at them still in flight: their backend waited
    /// for the server's answer before it could serve anyone else.
    pub kill_holds: Cell<u64>,
    /// Clients that upgraded to TLS.
    pub tls_clients: Cell<u64>,
    /// Connections refused because their address failed to log in too often.
    pub auth_blocked: Cell<u64>,
    /// Idle clients disconnected by `client_idle_timeout_ms`.
    pub idle_timeouts: Cell<u64>,
    /// Bytes read from and written to clients.
    pub client_bytes_in: Cell<u64>,
    pub client_bytes_out: Cell<u64>,
}

impl ShardStats {
    /// A routed read the primary served instead, for reason `why` (`FALLBACK_*`).
    pub fn read_fallback(&self, why: usize) {
        self.read_fallbacks[why].set(self.read_fallbacks[why].get() + 1);
    }

    /// A causal wait on a replica, answered after `took`.
    pub fn causal_wait(&self, took: std::time::Duration) {
        self.causal_waits.set(self.causal_waits.get() + 1);
        self.causal_wait_us
            .set(self.causal_wait_us.get() + took.as_micros() as u64);
    }

    /// Accounts for a session's pin reasons going from `before` to `after` (bit sets).
    pub fn pin_transition(&self, before: u16, after: u16) {
        for r in crate::session::pins::PinReason::ALL {
            let (b, a) = (before & r.bit() != 0, after & r.bit() != 0);
            let i = r as usize;
            if a && !b {
                self.pins_total[i].set(self.pins_total[i].get() + 1);
                self.pinned_now[i].set(self.pinned_now[i].get() + 1);
            } else if b && !a {
                self.pinned_now[i].set(self.pinned_now[i].get() - 1);
            }
        }
    }
}

impl Shard {
    /// Counts an error by its kind (the `errors` map of the snapshot).
    pub(crate) fn count_error(&self, e: &Error) {
        *self.stats.errors.borrow_mut().entry(e.kind()).or_insert(0) += 1;
    }

    /// This shard's counters, for a metrics scrape.
    pub(crate) fn snapshot(&self) -> crate::metrics::ShardSnapshot {
        use crate::metrics::{PoolSnapshot, ShardSnapshot, WAIT_BUCKETS};
        let s = &self.stats;
        let table = self.table.borrow();
        let mut snap = ShardSnapshot {
            clients: table.len() as u64,
            parked: table.parked() as u64,
            paused: u64::from(self.paused.get()),
            // Counted only while paused (a scan of the table; none otherwise).
            clients_paused: if self.paused.get() {
                table
                    .tokens()
                    .into_iter()
                    .filter(|t| {
                        matches!(table.get(*t).map(|s| &s.state),
                            Some(SlotState::Active(c)) if c.gated.get())
                    })
                    .count() as u64
            } else {
                0
            },
            accepted: s.accepted.get(),
            commands: s.commands.get(),
            auth_failures: s.auth_failures.get(),
            refused_max_clients: s.refused_max_clients.get(),
            pin_refusals: s.pin_refusals.get(),
            syncs: s.syncs.get(),
            lazy_prepares: s.lazy_prepares.get(),
            diagnostics_released: s.diagnostics_released.get(),
            replica_conditions_rerun: s.replica_conditions_rerun.get(),
            kills_sent: s.kills_sent.get(),
            kills_shared: s.kills_shared.get(),
            kill_holds: s.kill_holds.get(),
            client_bytes_in: s.client_bytes_in.get(),
            client_bytes_out: s.client_bytes_out.get(),
            tls_clients: s.tls_clients.get(),
            auth_blocked: s.auth_blocked.get(),
            idle_timeouts: s.idle_timeouts.get(),
            kicks: self.poller.kicks(),
            allocations: if self.id == 0 {
                crate::alloc_count::allocations().unwrap_or(0)
            } else {
                0
            },
            no_backend_waits: s.no_backend_waits.get(),
            drain_closes: s.drain_closes.get(),
            session_moves: std::array::from_fn(|i| s.session_moves[i].get()),
            reads_to_replicas: s.reads_to_replicas.get(),
            read_fallbacks: std::array::from_fn(|i| s.read_fallbacks[i].get()),
            causal_waits: s.causal_waits.get(),
            causal_wait_us: s.causal_wait_us.get(),
            follow_waits: s.follow_waits.get(),
            follow_applied: s.follow_applied.get(),
            follow_timeouts: s.follow_timeouts.get(),
            follow_errors: s.follow_errors.get(),
            backends: if self.id == 0 {
                self.shared
                    .backends
                    .snapshot()
                    .iter()
                    .map(|b| b.snapshot())
                    .collect()
            } else {
                Vec::new()
            },
            errors: s
                .errors
                .borrow()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            ..ShardSnapshot::default()
        };
        for i in 0..crate::session::pins::PIN_REASONS {
            snap.pins_total[i] = s.pins_total[i].get();
            snap.pinned_now[i] = s.pinned_now[i].get();
        }
        let users = self.shared.users();
        for p in &self.pools() {
            let st = &p.stats;
            let mut ps = PoolSnapshot {
                backend: self.backend(p.backend).address.clone(),
                user: users
                    .get(p.user)
                    .map(|a| a.spec.name.clone())
                    .unwrap_or_default(),
                open: p.open() as u64,
                idle: p.idle_count() as u64,
                limit: p.limit() as u64,
                waiting: p.waiting() as u64,
                pinned: p.pinned() as u64,
                checkouts: st.checkouts.get(),
                waits: st.waits.get(),
                timeouts: st.timeouts.get(),
                connects: st.connects.get(),
                connect_failures: st.connect_failures.get(),
                discarded: st.discarded.get(),
                budget_taken: st.budget_taken.get(),
                budget_given: st.budget_given.get(),
                ..PoolSnapshot::default()
            };
            if let Some((held, total, limit)) = p.host_numbers() {
                (ps.budget, ps.budget_held, ps.budget_total) = (true, held as u64, total as u64);
                ps.budget_limit = limit as u64;
            }
            if let Some(h) = st.wait_hist.borrow().as_ref() {
                for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
                    ps.wait_buckets[i] = h.count_between(0, (bound * 1e6) as u64);
                }
                ps.wait_count = h.len();
                ps.wait_sum_s = h.mean() * h.len() as f64 / 1e6;
            }
            snap.pools.push(ps);
        }
        snap
    }
}
