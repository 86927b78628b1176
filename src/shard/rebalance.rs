//! Session-mode sessions spread onto backends added while they run (rebalance after scale-out).
//!
//! A transaction-mode client is placed anew at every checkout, so a backend added under load
//! takes its share at once. A session-mode client keeps its backend for its whole session; left
//! alone, a backend added later would only ever see sessions that log in after it. So between
//! its commands, a session-mode session that could move (nothing of it lives only on its
//! backend: [`crate::frontend::session::Session::movable`], the same condition as a drain's
//! moves) asks whether another backend would now serve it with less load per unit of weight
//! ([`crate::backend::router::better_elsewhere`], on this shard's pools of the session's
//! account); if so it gives its backend back and its command's checkout takes the other, its
//! settings replayed there. Each move narrows the gap, so about half of the difference moves and
//! moves stop once loads are within one session: never everyone at once. Moves are also paced
//! per shard ([`MOVES_PER_SECOND`]), so a new backend warms up instead of taking a connection
//! storm. Parked sessions are not moved (an idle session loads nothing; it is weighed again at
//! its next command). Counted in `sluice_session_moves_total{reason="rebalance"}`.
//!
//! Moves off a backend that is leaving (drained, in maintenance, removed) are paced too
//! ([`LEAVING_MOVES_PER_SECOND`] per shard), so a drain of thousands of session-mode sessions
//! spreads their reconnects and settings replays over seconds instead of landing on the
//! other backends at once; within [`UNPACED_BEFORE_DEADLINE_MS`] of a drain's deadline they
//! are not paced (a session that could move must never be closed for want of budget).
//! Counted in `sluice_session_moves_total{reason="leaving"}`.

use super::Shard;

/// Moves for balance one shard makes per second at most: each may open a connection on the new
/// backend (a handshake the server pays for) and costs the session a settings replay there.
pub const MOVES_PER_SECOND: u32 = 50;

/// Moves off a leaving backend one shard makes per second at most: 10,000 sessions on two
/// shards move in 5 s (the drain target is 10 s plus the longest transaction).
pub const LEAVING_MOVES_PER_SECOND: u32 = 1000;

/// How close to a drain's deadline moves off it stop being paced.
pub const UNPACED_BEFORE_DEADLINE_MS: u64 = 1000;

/// A per-second budget of moves: `(second of the shard's clock, moves made in it)`.
pub type Budget = (u32, u32);

/// Is there a move left in second `now` of `budget` (at most `per_second`)?
pub fn budget_left(budget: Budget, now: u32, per_second: u32) -> bool {
    let (second, used) = budget;
    second != now || used < per_second
}

/// `budget` after one more move in second `now`.
pub fn spend(budget: Budget, now: u32) -> Budget {
    let (second, used) = budget;
    if second == now {
        (now, used.saturating_add(1))
    } else {
        (now, 1)
    }
}

impl Shard {
    /// Should a session of account `user` with `settings`, holding backend `current` for good,
    /// move now for balance? Counts the move against this second's budget when it should.
    pub fn rebalance(
        &self,
        user: u32,
        profile: crate::backend::conn::Profile,
        settings: &crate::session::state::Settings,
        current: u16,
    ) -> bool {
        self.refresh_backends();
        let backends = self.backends.borrow();
        if backends.len() < 2 {
            return false;
        }
        let now = self.clock();
        if !budget_left(self.rebalance_budget.get(), now, MOVES_PER_SECOND) {
            return false;
        }
        let all = self.pools.borrow();
        let pools = all.get(user as usize).map_or(&[][..], |r| r.as_slice());
        let cands = self.candidates(&backends, pools, user, profile, settings);
        if !crate::backend::router::better_elsewhere(&cands, current) {
            return false;
        }
        self.rebalance_budget
            .set(spend(self.rebalance_budget.get(), now));
        true
    }

    /// May a session move off leaving backend `backend` now (this second's budget, or its
    /// drain's deadline close)? Spend the move with [`Shard::moved_off`] once it happened.
    pub(crate) fn may_move_off(&self, backend: u16) -> bool {
        budget_left(
            self.leaving_budget.get(),
            self.clock(),
            LEAVING_MOVES_PER_SECOND,
        ) || self
            .backend(backend)
            .drain_due_within(UNPACED_BEFORE_DEADLINE_MS)
    }

    /// A session moved off a leaving backend: one move of this second's budget.
    pub(crate) fn moved_off(&self) {
        self.leaving_budget
            .set(spend(self.leaving_budget.get(), self.clock()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_so_many_moves_per_second() {
        // (budget, now, per second) -> a move left?
        #[rustfmt::skip]
        let table: &[(Budget, u32, u32, bool)] = &[
            ((0, 0), 0, 50, true),
            ((3, 49), 3, 50, true),
            ((3, 50), 3, 50, false),
            ((3, 50), 4, 50, true),
            ((3, 9999), 2, 50, true),
            ((7, 0), 7, 0, false),
        ];
        for &(b, now, per, want) in table {
            assert_eq!(budget_left(b, now, per), want, "{b:?} at {now}, {per}/s");
        }
        let mut b = (0, 0);
        let mut moves = 0;
        while budget_left(b, 5, 3) {
            b = spend(b, 5);
            moves += 1;
        }
        assert_eq!((moves, b), (3, (5, 3)));
        assert_eq!(spend(b, 6), (6, 1), "a new second starts a new budget");
    }
}
