//! The router's inputs on this shard: for a checkout (or a routed read) of an account, what this
//! shard knows of every backend (role, weight, health, admin state, its own pool's load and
//! whether an idle connection matches the session's settings), ranked by
//! [`crate::backend::router`] into a best-first list of backend ids.
//!
//! Owns the shard's scratch lists `route_cands` and `route_out` (reused: ranking allocates
//! nothing) and the round-robin turn `next_backend`. The answer borrows the scratch list: copy
//! what you need before asking again.

use super::Shard;
use crate::backend::pool::Pool;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// The backends that may serve a checkout for `user` now, best first (see
    /// [`crate::backend::router`]); `settings`: the session's, to prefer a backend with a
    /// matching idle connection. The answer is this shard's scratch list: copy what you need.
    pub(crate) fn route(
        &self,
        user: u32,
        profile: crate::backend::conn::Profile,
        settings: &crate::session::state::Settings,
    ) -> std::cell::Ref<'_, Vec<u16>> {
        self.refresh_backends();
        {
            let backends = self.backends.borrow();
            self.make_row(user);
            let all = self.pools.borrow();
            let pools: &[Rc<Pool>] = all.get(user as usize).map_or(&[], |r| r.as_slice());
            if let [b] = backends.as_slice() {
                // One backend: nothing to rank (the common deployment's hot path).
                let mut out = self.route_out.borrow_mut();
                out.clear();
                let c = crate::backend::router::Candidate {
                    id: b.id,
                    role: b.role,
                    weight: 1,
                    admin: b.admin(),
                    health: b.health(),
                    writable: b.writable(),
                    busy: 0,
                    mismatch: false,
                    read_ok: false,
                    lag_ms: 0,
                };
                if crate::backend::router::eligible(&c) {
                    out.push(b.id);
                }
            } else {
                self.rank_now(
                    &backends,
                    pools,
                    user,
                    profile,
                    settings,
                    crate::backend::router::rank,
                );
            }
        }
        self.route_out.borrow()
    }

    /// The replicas that may serve a routed read for `user` now, best first.
    pub(crate) fn route_reads(
        &self,
        user: u32,
        profile: crate::backend::conn::Profile,
        settings: &crate::session::state::Settings,
    ) -> std::cell::Ref<'_, Vec<u16>> {
        self.refresh_backends();
        {
            let backends = self.backends.borrow();
            self.make_row(user);
            let all = self.pools.borrow();
            let pools: &[Rc<Pool>] = all.get(user as usize).map_or(&[], |r| r.as_slice());
            self.rank_now(
                &backends,
                pools,
                user,
                profile,
                settings,
                crate::backend::router::rank_reads,
            );
        }
        self.route_out.borrow()
    }

    /// The backend a login or sluice's own query uses: the router's first choice (any
    /// backend when none is eligible now: the caller's connect then fails clearly).
    pub(crate) fn pick_backend(&self) -> u16 {
        let fresh = self.fresh.clone();
        let r = self.route(0, crate::backend::conn::DEFAULT_PROFILE, &fresh);
        r.first().copied().unwrap_or(0)
    }

    /// Ranks every backend into the scratch list with `rank` (the router's order for a
    /// checkout, or for a routed read).
    fn rank_now(
        &self,
        backends: &[Arc<crate::backend::registry::Backend>],
        pools: &[Rc<Pool>],
        user: u32,
        profile: crate::backend::conn::Profile,
        settings: &crate::session::state::Settings,
        rank: fn(&[crate::backend::router::Candidate], usize, &mut Vec<u16>),
    ) {
        let mut out = self.route_out.borrow_mut();
        let cands = self.candidates(backends, pools, user, profile, settings);
        let turn = self.next_backend.get();
        self.next_backend.set(turn.wrapping_add(1));
        rank(&cands, turn, &mut out);
    }

    /// What the router knows of every backend for a checkout of `user` now, in this shard's
    /// scratch list.
    pub(super) fn candidates(
        &self,
        backends: &[Arc<crate::backend::registry::Backend>],
        pools: &[Rc<Pool>],
        user: u32,
        profile: crate::backend::conn::Profile,
        settings: &crate::session::state::Settings,
    ) -> std::cell::RefMut<'_, Vec<crate::backend::router::Candidate>> {
        let mut cands = self.route_cands.borrow_mut();
        cands.clear();
        cands.extend(
            backends
                .iter()
                .map(|b| self.candidate(b, pools, user, profile, settings)),
        );
        cands
    }

    fn candidate(
        &self,
        b: &crate::backend::registry::Backend,
        pools: &[Rc<Pool>],
        user: u32,
        profile: crate::backend::conn::Profile,
        settings: &crate::session::state::Settings,
    ) -> crate::backend::router::Candidate {
        let _ = user;
        let pool = pools.get(usize::from(b.id));
        crate::backend::router::Candidate {
            id: b.id,
            role: b.role,
            weight: b.weight(),
            admin: b.admin(),
            health: b.health(),
            writable: b.writable(),
            busy: pool.map_or(0, |p| p.open() - p.idle_count()),
            mismatch: pool.is_some_and(|p| p.idle_mismatch(profile, settings)),
            read_ok: b.read_ok(),
            lag_ms: b.lag_ms(),
        }
    }
}
