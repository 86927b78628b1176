//! This shard's backends and pools: its copy of the process's backend registry (refreshed when
//! the registry's generation moves: a backend added while running gets a pool in every row), and
//! its slice of every pool, a row per account with a pool per backend (a row made when the
//! shard first sees the account). Messages name a pool by
//! [`Shared::pool_index`](crate::shared::Shared::pool_index).
//!
//! Owns the shard's `backends`, `backends_seen` and `pools`. A new pool gets this shard's share
//! of `pool.size` (resized when a reload changes it), its place in the host budget (worker
//! processes), its pin budget (host-wide with worker processes, see
//! [`crate::backend::budget::pins`]), and the starved hook that asks other shards to lend it a
//! slot ([`super::lend`]).

use super::lend;
use super::Shard;
use crate::backend::budget::pins::Scope;
use crate::backend::conn::ConnectSpec;
use crate::backend::pool::{PinCount, Pool};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

impl Shard {
    /// Backend `id` as this shard knows it.
    pub(crate) fn backend(&self, id: u16) -> Arc<crate::backend::registry::Backend> {
        self.refresh_backends();
        self.backends.borrow()[usize::from(id)].clone()
    }

    pub(super) fn backend_or_first(&self, id: u16) -> Arc<crate::backend::registry::Backend> {
        let list = self.backends.borrow();
        list.get(usize::from(id))
            .or_else(|| list.first())
            .cloned()
            .unwrap_or_else(|| self.shared.backends.snapshot()[0].clone())
    }

    /// Picks up backends added since this shard last looked: makes their pools.
    pub(super) fn refresh_backends(&self) {
        let generation = self.shared.backends.generation();
        if self.backends_seen.get() == generation {
            return;
        }
        self.backends_seen.set(generation);
        let all = self.shared.backends.snapshot();
        let known = self.backends.borrow().len();
        *self.backends.borrow_mut() = all.clone();
        let rows = self.pools.borrow().len();
        for b in &all[known..] {
            for user in 0..rows {
                let made = !self.pools.borrow()[user].is_empty();
                if made {
                    let pool = Rc::new(self.new_pool(user as u32, None, b));
                    self.pools.borrow_mut()[user].push(pool);
                }
            }
        }
        if known == 0 {
            // The first look: a row for every account listed now.
            let snap = self.users_snap.borrow().clone();
            for a in snap.all.iter().filter(|a| a.current) {
                self.make_row(a.spec.id);
            }
        }
    }

    /// Does backend `id` serve only routed reads (a read-only primary or replica)?
    pub(crate) fn reads_only(&self, id: u16) -> bool {
        self.backends
            .borrow()
            .get(usize::from(id))
            .is_some_and(|b| {
                b.role != crate::backend::router::Role::Any && b.writable() != Some(true)
            })
    }

    /// Is backend `id` leaving: draining, in maintenance or removed (no new checkouts)?
    pub(crate) fn leaving(&self, id: u16) -> bool {
        self.backends
            .borrow()
            .get(usize::from(id))
            .is_some_and(|b| b.admin() != crate::backend::router::Admin::Active)
    }

    /// Is backend `id` draining and past its deadline?
    pub(crate) fn drain_overdue(&self, id: u16) -> bool {
        self.backends
            .borrow()
            .get(usize::from(id))
            .is_some_and(|b| b.drain_overdue())
    }

    /// Each backend's state, for an error that says why nothing could serve.
    pub(crate) fn backends_summary(&self) -> String {
        self.refresh_backends();
        let list = self.backends.borrow();
        let mut out = String::new();
        for b in list.iter() {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let ro = if b.writable() == Some(false) {
                " read-only"
            } else {
                ""
            };
            out.push_str(&format!("{} {}{}", b.address, b.state_name(), ro));
            // A backend that is not up says why, as its last probe saw it.
            if b.health() != crate::backend::health::Health::Up {
                if let Some(e) = b.refusal().or_else(|| b.last_error()) {
                    out.push_str(&format!(": {e}"));
                }
            }
        }
        out
    }

    /// The pool of account `user` on backend `backend` (made now if this shard has none yet).
    pub(crate) fn pool(&self, user: u32, backend: u16) -> Rc<Pool> {
        self.refresh_backends();
        if let Some(p) = self.pool_get(user, backend) {
            return p;
        }
        self.make_row(user);
        match self.pool_get(user, backend) {
            Some(p) => p,
            // A backend id this shard does not know: the caller's connect fails clearly.
            None => Rc::new(self.new_pool(user, None, &self.backend_or_first(backend))),
        }
    }

    pub(super) fn pool_get(&self, user: u32, backend: u16) -> Option<Rc<Pool>> {
        self.pools
            .borrow()
            .get(user as usize)
            .and_then(|r| r.get(usize::from(backend)))
            .cloned()
    }

    /// Every pool of this shard (a snapshot: backends may be added meanwhile).
    pub(crate) fn pools(&self) -> Vec<Rc<Pool>> {
        self.refresh_backends();
        self.pools.borrow().iter().flatten().cloned().collect()
    }

    /// The pool at `index` if this shard has it (a lend request may name a pool of a backend
    /// or a user this shard has not seen yet).
    pub(super) fn pool_at(&self, index: usize) -> Option<Rc<Pool>> {
        self.refresh_backends();
        let (user, backend) = self.shared.pool_of(index);
        self.pool_get(user, backend)
    }

    /// Makes account `user`'s pools, one per backend, unless it has them.
    pub(super) fn make_row(&self, user: u32) {
        let u = user as usize;
        if self.pools.borrow().get(u).is_some_and(|r| !r.is_empty()) {
            return;
        }
        let backends = self.backends.borrow().clone();
        let snap = self.shared.users();
        let spec = snap.get(user).map(|a| a.spec.clone());
        let row: Vec<Rc<Pool>> = backends
            .iter()
            .map(|b| Rc::new(self.new_pool(user, spec.as_ref(), b)))
            .collect();
        let mut pools = self.pools.borrow_mut();
        if pools.len() <= u {
            pools.resize_with(u + 1, Vec::new);
        }
        pools[u] = row;
    }

    /// A pool of account `user` (whose settings are `spec`, or looked up) on backend `b`.
    pub(super) fn new_pool(
        &self,
        user: u32,
        spec: Option<&crate::users::UserSpec>,
        b: &Arc<crate::backend::registry::Backend>,
    ) -> Pool {
        let (shared, cfg) = (&self.shared, &self.shared.config);
        let looked_up;
        let spec = match spec {
            Some(s) => Some(s),
            None => {
                looked_up = shared.users().get(user).map(|a| a.spec.clone());
                looked_up.as_ref()
            }
        };
        let (backend_user, backend_password) = spec
            .map(|u| (u.backend_user.as_str(), u.backend_password.as_str()))
            .unwrap_or(("", ""));
        let spec = ConnectSpec {
            backend: b.id,
            address: b.addr().0,
            user: backend_user.as_bytes().to_vec(),
            password: backend_password.as_bytes().to_vec(),
            profile: crate::backend::conn::DEFAULT_PROFILE,
            timeout: Duration::from_millis(cfg.pool.connect_timeout_ms),
            query_timeout: (cfg.pool.query_timeout_ms > 0)
                .then(|| Duration::from_millis(cfg.pool.query_timeout_ms)),
            tls: b.tls.clone(),
        };
        let size = self.live.borrow().pool.size;
        let limit = shared.pool_share(size, self.id);
        let mut pool = Pool::new(spec, user, limit, self.fresh.clone());
        pool.set_backend(b.clone());
        let index = shared.pool_index(user, b.id);
        // Worker processes: the share above is taken from the host budget (crate::backend::budget).
        if let Some(link) = shared
            .budget
            .as_ref()
            .and_then(|h| crate::backend::budget::Link::new(h.clone(), index, size))
        {
            pool.set_host(link);
        }
        // The pin budget: host-wide when the host budget counts this pool's pins, else this
        // process's (all of it in a single process, 1/N with workers).
        let scope = crate::backend::budget::pins::scope(
            cfg.pool.pin_budget(),
            shared.workers as usize,
            shared.worker as usize,
            pool.host_counts_pins(),
        );
        pool.set_pin_budget(match scope {
            Scope::Host { limit } => PinCount::Host { limit },
            Scope::Process { limit } => PinCount::Process {
                count: shared.pin_counter(index),
                limit,
            },
        });
        let link = shared.clone();
        let id = self.id;
        pool.set_starved_hook(Box::new(move || lend::request_slot(&link, id, index)));
        *pool.stats.wait_hist.borrow_mut() =
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).ok();
        pool
    }

    /// Sets every pool's share from the live `pool.size` (after a reload changed it). Slots lent
    /// between shards are forgotten: every shard takes its fresh share at once, so the sum stays
    /// the bound; connections above a shrunk share close as they come back.
    pub(super) fn resize_pools(&self) {
        let size = self.live.borrow().pool.size;
        let limit = self.shared.pool_share(size, self.id);
        for p in self.pools.borrow().iter().flatten() {
            // With a host budget the workers settle the new size among themselves.
            if p.host_resize(size) {
                continue;
            }
            if p.limit() != limit {
                p.reset_share(limit);
            }
        }
    }

    /// RECONNECT ([`ShardMsg::Reconnect`](super::ShardMsg::Reconnect)): retires the idle
    /// connections of `backend` (every backend: `None`) now; per backend, (id, closed now, out
    /// and closing as they come back).
    pub(super) fn retire_idle(&self, backend: Option<u16>) -> Vec<(u16, usize, usize)> {
        let mut out: Vec<(u16, usize, usize)> = Vec::new();
        for p in self.pools() {
            if backend.is_some_and(|b| b != p.backend) {
                continue;
            }
            let (now, later) = p.retire_idle();
            match out.iter_mut().find(|o| o.0 == p.backend) {
                Some(o) => (o.1, o.2) = (o.1 + now, o.2 + later),
                None => out.push((p.backend, now, later)),
            }
        }
        out
    }
}
