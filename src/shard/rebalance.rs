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

use super::Shard;

/// Moves for balance one shard makes per second at most: each may open a connection on the new
/// backend (a handshake the server pays for) and costs the session a settings replay there.
pub const MOVES_PER_SECOND: u32 = 50;

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
        let (second, used) = self.rebalance_budget.get();
        if second == now && used >= MOVES_PER_SECOND {
            return false;
        }
        let all = self.pools.borrow();
        let pools = all.get(user as usize).map_or(&[][..], |r| r.as_slice());
        let cands = self.candidates(&backends, pools, user, profile, settings);
        if !crate::backend::router::better_elsewhere(&cands, current) {
            return false;
        }
        self.rebalance_budget.set(if second == now {
            (now, used + 1)
        } else {
            (now, 1)
        });
        true
    }
}
