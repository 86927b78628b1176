//! A shard's slice of the upstream pool for one (backend, user): idle connections, a bound on how
//! many may be open, and a first-come first-served queue of commands waiting for one.
//!
//! Checkout returns a [`Lease`], an RAII guard: dropping it *discards* the connection (closes it
//! and frees its slot), so every early exit — an error, a timeout, a client that vanished mid
//! result set — can never return a connection in an unknown state. Only an explicit
//! [`Lease::release`] puts a connection back, after the caller has seen the server say it is
//! clean. A released connection goes straight to the oldest waiter when there is one.

use super::conn::{BackendConn, ConnectSpec, Profile};
use crate::error::Error;
use crate::session::state::Settings;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Counters for metrics.
#[derive(Default)]
pub struct PoolStats {
    pub checkouts: Cell<u64>,
    pub waits: Cell<u64>,
    pub timeouts: Cell<u64>,
    pub connects: Cell<u64>,
    pub connect_failures: Cell<u64>,
    pub discarded: Cell<u64>,
    /// Slots taken from and given back to the host budget (worker processes; see
    /// [`super::budget`]).
    pub budget_taken: Cell<u64>,
    pub budget_given: Cell<u64>,
    /// Wait times in microseconds (checkouts that queued).
    pub wait_hist: RefCell<Option<hdrhistogram::Histogram<u64>>>,
}

enum Grant {
    Conn(Box<BackendConn>),
    /// Permission to open a new connection within the bound.
    Slot,
}

struct Waiter {
    profile: Profile,
    grant: RefCell<Option<Grant>>,
    waker: Cell<Option<Waker>>,
    gone: Cell<bool>,
}

pub struct Pool {
    pub backend: u16,
    pub user: u32,
    /// How connections are opened; the account changes when a reload changed the user's
    /// `backend_user` / `backend_password` (see [`Pool::set_account`]).
    spec: RefCell<ConnectSpec>,
    /// Connections opened before this were opened with an account since replaced: they close
    /// instead of being reused.
    retired_before: Cell<Option<Instant>>,
    fresh: Rc<Settings>,
    /// Boxed: connections move between this list, leases and waiters without copying, and a
    /// lease (held by parked sessions) stays one pointer wide.
    #[allow(clippy::vec_box)]
    idle: RefCell<Vec<Box<BackendConn>>>,
    /// Connections counted against `limit`: idle, leased and being opened.
    open: Cell<usize>,
    limit: Cell<usize>,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
    /// Sessions pinned to connections of this pool on this shard (for metrics).
    pinned: Cell<usize>,
    /// Where this pool's pins count against `pool.pin_budget` (`None`: nowhere, tests).
    pin_budget: Option<PinCount>,
    /// Asks another shard to lend this pool a slot (set by the shard; see [`Pool::lend`]).
    starved: RefCell<Option<Box<dyn Fn()>>>,
    /// Shards that lent this pool the slots above its own share, most recent last.
    borrowed_from: RefCell<Vec<usize>>,
    /// Janitor ticks in a row with a borrowed slot and no checkout queued since the last one.
    spare_ticks: Cell<u32>,
    /// `stats.waits` at the last janitor tick.
    waits_at_tick: Cell<u64>,
    /// When this pool last asked another shard for a slot.
    asked_at: Cell<Option<Instant>>,
    /// A lend request this shard could not serve yet is scheduled to be looked at again.
    pub lend_retry_pending: Cell<bool>,
    pub stats: PoolStats,
    /// The backend as the process sees it: a connection released while the backend is out of
    /// service (draining, in maintenance, removed, down) is closed, not kept idle.
    backend_ref: Option<Arc<super::registry::Backend>>,
    /// The pool's entry in the host budget shared by the worker processes (see
    /// [`super::budget`]): this shard's `limit` counts in this worker's share of it.
    host: Option<super::budget::Link>,
    /// Set by the budget tick: the next released connection closes and its slot goes back to
    /// the host budget (another worker needs it).
    yielding: Cell<bool>,
    /// Connections closing to give their slot to the host budget.
    giving: Cell<usize>,
}

/// Where a pool's pins are counted (see [`super::budget::pins::scope`]).
pub enum PinCount {
    /// By this process: a counter shared by every shard's slice of this pool.
    Process {
        count: Arc<AtomicUsize>,
        limit: usize,
    },
    /// By every worker process of the host, under this process's lease in the host budget
    /// (the pool's [`super::budget::Link`]).
    Host { limit: usize },
}

/// A checkout that queues asks another shard for a slot at once and again after each such
/// interval it is still waiting, but a pool asks at most once per interval. Asking early costs little: a lender gives only headroom or a connection unused
/// for a while (spare by evidence), never one its own clients are using. Waiting before asking
/// (5 ms, as before) never asked at all under a steady skew: with more clients than connections
/// on a shard every wait ends within a query's time, while the other shard's connections sat
/// idle (39% of checkouts queued in a sysbench run with the pool's size equal to the clients).
const ASK_EVERY: Duration = Duration::from_millis(20);

/// Idle connections unused for longer than this are probed (MSG_PEEK, one syscall) before
/// reuse: a backend killed while they sat idle has closed them, and a statement sent on one
/// would fail with 2013 when any other connection would have served it. Connections reused
/// sooner (a busy pool) skip the check; one lost that way fails its statement, and a client
/// outside a transaction keeps its connection (see `frontend::command::lost_backend`).
const PROBE_AFTER: Duration = Duration::from_millis(2);

impl Pool {
    pub fn new(spec: ConnectSpec, user: u32, limit: usize, fresh: Rc<Settings>) -> Pool {
        Pool {
            backend: spec.backend,
            user,
            spec: RefCell::new(spec),
            retired_before: Cell::new(None),
            fresh,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            limit: Cell::new(limit),
            waiters: RefCell::new(VecDeque::new()),
            pinned: Cell::new(0),
            pin_budget: None,
            starved: RefCell::new(None),
            borrowed_from: RefCell::new(Vec::new()),
            spare_ticks: Cell::new(0),
            waits_at_tick: Cell::new(0),
            asked_at: Cell::new(None),
            lend_retry_pending: Cell::new(false),
            stats: PoolStats::default(),
            backend_ref: None,
            host: None,
            yielding: Cell::new(false),
            giving: Cell::new(0),
        }
    }

    /// Links the pool to the host budget: its share (`limit` so far) is taken from the host, as
    /// far as slots are free there.
    pub fn set_host(&mut self, link: super::budget::Link) {
        let want = self.limit.get();
        let mut got = 0;
        while got < want && link.take() {
            got += 1;
        }
        self.stats.budget_taken.set(got as u64);
        self.limit.set(got);
        self.host = Some(link);
    }

    /// The host budget's view: (this worker's slots, every worker's, the budget); `None` in a
    /// single process.
    pub fn host_numbers(&self) -> Option<(usize, usize, usize)> {
        self.host.as_ref().map(|l| {
            let v = l.view();
            (v.held, v.total, v.limit)
        })
    }

    /// A reload changed `pool.size`: the host budget follows (a larger one is taken as needed,
    /// a smaller one is given back by the workers above their new share; see
    /// [`super::budget::policy`]). `false` without a host budget.
    pub fn host_resize(&self, size: usize) -> bool {
        match &self.host {
            Some(l) => {
                l.set_limit(size);
                true
            }
            None => false,
        }
    }

    /// Takes a free slot of the host budget (this shard's bound grows by one). `false` without
    /// a host budget.
    fn host_grow(&self) -> bool {
        let Some(l) = &self.host else {
            return false;
        };
        if !l.take() {
            return false;
        }
        self.limit.set(self.limit.get() + 1);
        self.stats
            .budget_taken
            .set(self.stats.budget_taken.get() + 1);
        true
    }

    /// Gives what [`Pool::lend`] gave up back to the host budget: a slot of headroom at once, a
    /// connection once it is closed (COM_QUIT, and the server's close awaited).
    fn host_give(self: &Rc<Self>, lent: Lent) {
        if self.host.is_none() {
            return;
        }
        match lent {
            Lent::No => {}
            Lent::Now => self.host_gave(),
            Lent::Closing(conn) => {
                let pool = self.clone();
                self.giving.set(self.giving.get() + 1);
                glommio::spawn_local(async move {
                    conn.quit().await;
                    pool.lent_closed();
                    pool.giving.set(pool.giving.get() - 1);
                    pool.host_gave();
                })
                .detach();
            }
        }
    }

    fn host_gave(&self) {
        if let Some(l) = &self.host {
            l.give();
            self.stats
                .budget_given
                .set(self.stats.budget_given.get() + 1);
        }
    }

    /// The budget tick (every [`super::budget::TICK`] on each shard): when another worker
    /// waits, or the budget is overspent, gives up one slot as the policy says, and arms the
    /// next release to give one.
    pub fn host_tick(self: &Rc<Self>) {
        use super::budget::policy;
        let Some(l) = &self.host else {
            return;
        };
        if self.waiting() > 0 && self.host_grow() {
            // A slot another worker gave up: the oldest waiter has it now, not at its next
            // look (every ASK_EVERY).
            while self.open.get() < self.limit.get() && self.hand_slot() {}
        }
        if self.giving.get() > 0 || l.surely_keeps() {
            // A slot given up is still closing (what the others need is read again after), or
            // nobody else waits and this worker is within its share.
            self.yielding.set(false);
            return;
        }
        let stance = policy::stance(&l.view());
        self.yielding.set(policy::yield_on_release(stance));
        if let Some(min_idle) = policy::give_idle_min(stance) {
            let lent = self.lend(min_idle);
            self.host_give(lent);
        }
    }

    /// Says where this pool's pins count. [`PinCount::Host`] needs the pool's link to a host
    /// budget that counts pins (see [`Pool::host_counts_pins`]); without one, its pins are
    /// counted nowhere.
    pub fn set_pin_budget(&mut self, count: PinCount) {
        self.pin_budget = Some(count);
    }

    /// Can this pool's pins be counted host-wide (it has an entry in a host budget with the
    /// pin region)?
    pub fn host_counts_pins(&self) -> bool {
        self.host.as_ref().is_some_and(|l| l.counts_pins())
    }

    /// Links the pool to its backend's shared state (see `backend_ref`).
    pub fn set_backend(&mut self, b: Arc<super::registry::Backend>) {
        self.backend_ref = Some(b);
    }

    /// Was `c` opened to an address its backend's name no longer resolves to, or before a
    /// RECONNECT? (see `Backend::conn_gen`)
    fn stale(&self, c: &BackendConn) -> bool {
        self.backend_ref
            .as_ref()
            .is_some_and(|b| b.conn_gen() != c.gen)
            || self.retired_before.get().is_some_and(|t| c.created <= t)
    }

    /// A reload changed the account this pool logs in with: new connections use it, idle ones
    /// close now and busy ones as they come back (as RECONNECT does). Returns (closed now, out).
    pub fn set_account(&self, user: &str, password: &str) -> (usize, usize) {
        {
            let mut spec = self.spec.borrow_mut();
            spec.user = user.as_bytes().to_vec();
            spec.password = password.as_bytes().to_vec();
        }
        self.retired_before.set(Some(Instant::now()));
        self.retire_idle()
    }

    /// May connections of this pool be kept idle for reuse?
    fn in_service(&self) -> bool {
        self.backend_ref
            .as_ref()
            .is_none_or(|b| b.admin() == super::router::Admin::Active && b.health().serves())
    }

    /// Called when a checkout has to queue: asks another shard for a slot.
    pub fn set_starved_hook(&self, f: Box<dyn Fn()>) {
        *self.starved.borrow_mut() = Some(f);
    }

    pub fn pinned(&self) -> usize {
        self.pinned.get()
    }

    /// Sessions pinned to this pool's connections as the pin budget counts them: in the whole
    /// process, or on the whole host when the worker processes count pins together.
    pub fn pinned_counted(&self) -> usize {
        match (&self.pin_budget, &self.host) {
            (Some(PinCount::Process { count, .. }), _) => count.load(Ordering::Acquire),
            (Some(PinCount::Host { .. }), Some(l)) => l.pinned(),
            _ => self.pinned.get(),
        }
    }

    /// Takes a unit of the pin budget if one is free.
    pub fn pin_try_acquire(&self) -> bool {
        let ok = match (&self.pin_budget, &self.host) {
            (Some(PinCount::Process { count, limit }), _) => count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    (c < *limit).then_some(c + 1)
                })
                .is_ok(),
            (Some(PinCount::Host { limit }), Some(l)) => l.pin_take(*limit),
            _ => true,
        };
        if ok {
            self.pinned.set(self.pinned.get() + 1);
        }
        ok
    }

    /// Counts a pin the server reported and sluice could not refuse (over budget or not).
    pub fn pin_force(&self) {
        match (&self.pin_budget, &self.host) {
            (Some(PinCount::Process { count, .. }), _) => {
                count.fetch_add(1, Ordering::AcqRel);
            }
            (Some(PinCount::Host { .. }), Some(l)) => l.pin_force(),
            _ => {}
        }
        self.pinned.set(self.pinned.get() + 1);
    }

    pub fn pin_release(&self) {
        match (&self.pin_budget, &self.host) {
            (Some(PinCount::Process { count, .. }), _) => {
                let _ =
                    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
            }
            (Some(PinCount::Host { .. }), Some(l)) => l.pin_give(),
            _ => {}
        }
        self.pinned.set(self.pinned.get().saturating_sub(1));
    }

    /// Waits until a unit of the pin budget is free and takes it; `false` at the deadline. The
    /// budget is shared with other shards (and worker processes), whose releases this shard
    /// cannot be woken by, so the wait re-checks every 10 ms.
    pub async fn pin_wait(&self, deadline: Instant) -> bool {
        loop {
            if self.pin_try_acquire() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn spec(&self) -> std::cell::Ref<'_, ConnectSpec> {
        self.spec.borrow()
    }

    pub fn fresh(&self) -> Rc<Settings> {
        self.fresh.clone()
    }

    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Could a checkout be served now without queueing (an idle connection, or room to open one)?
    pub fn can_serve_now(&self) -> bool {
        !self.idle.borrow().is_empty()
            || self.open.get() < self.limit.get()
            || self
                .host
                .as_ref()
                .is_some_and(|l| super::budget::policy::may_take(&l.view()))
    }

    /// Are idle connections of `profile` waiting, none with exactly `wanted` settings?
    pub fn idle_mismatch(&self, profile: Profile, wanted: &Settings) -> bool {
        let idle = self.idle.borrow();
        let mut same_profile = idle.iter().filter(|c| c.profile == profile).peekable();
        same_profile.peek().is_some() && !same_profile.any(|c| *c.settings == *wanted)
    }

    pub fn limit(&self) -> usize {
        self.limit.get()
    }

    pub fn waiting(&self) -> usize {
        self.waiters
            .borrow()
            .iter()
            .filter(|w| !w.gone.get())
            .count()
    }

    /// Takes a fresh share after `pool.size` was reloaded: slots borrowed from other shards are
    /// forgotten (every shard resets to its own share).
    pub fn reset_share(&self, limit: usize) {
        self.borrowed_from.borrow_mut().clear();
        self.spare_ticks.set(0);
        self.set_limit(limit);
    }

    /// Changes this shard's share; excess idle connections are closed.
    pub fn set_limit(&self, limit: usize) {
        self.limit.set(limit);
        while self.open.get() > limit {
            let Some(c) = self.idle.borrow_mut().pop() else {
                break;
            };
            drop(c);
            self.open.set(self.open.get() - 1);
        }
        while self.open.get() < limit && self.hand_slot() {}
    }

    /// Gets a connection for a client with `profile` and `wanted` settings, waiting until
    /// `deadline` when the bound is reached.
    pub async fn checkout(
        self: &Rc<Self>,
        profile: Profile,
        wanted: &Settings,
        deadline: Instant,
    ) -> Result<Lease, Error> {
        self.stats.checkouts.set(self.stats.checkouts.get() + 1);
        if let Some(conn) = self.take_idle(profile, wanted) {
            return Ok(self.lease(conn));
        }
        if self.open.get() < self.limit.get() || self.host_grow() {
            self.open.set(self.open.get() + 1);
            return self.connect(profile).await;
        }
        // At the bound: an idle connection of another profile makes room (its slot is reused).
        let other = self.idle.borrow_mut().pop();
        if let Some(c) = other {
            drop(c);
            self.stats.discarded.set(self.stats.discarded.get() + 1);
            return self.connect(profile).await;
        }
        self.wait(profile, deadline).await
    }

    /// Takes in a connection another process opened and handed over with its session (an
    /// upgrade: see `crate::upgrade`), as checked out by that session: counted against this
    /// shard's bound like any connection (taking a slot of the host budget when the bound is
    /// reached, as a checkout does). At the bound with no slot to take it is given back: the
    /// caller refuses the session (dropping the connection closes only this process's
    /// descriptor of the socket; the other process still has it).
    pub fn adopt(self: &Rc<Self>, conn: Box<BackendConn>) -> Result<Lease, Box<BackendConn>> {
        if self.open.get() < self.limit.get() || self.host_grow() {
            self.open.set(self.open.get() + 1);
            Ok(self.lease(conn))
        } else {
            Err(conn)
        }
    }

    /// A leased connection is about to be handed to a successor process (an upgrade): with a
    /// host budget, its slot is given to the host now, so the successor (another holder of
    /// the same budget) can count it when it adopts it; the connection stays counted in `open`
    /// until [`Lease::moved`] (or [`Pool::move_back`]). Returns whether a slot was given.
    pub fn move_out(&self) -> bool {
        // (A share already given away, lent or yielded, has no slot left to give.)
        if self.host.is_none() || self.limit.get() == 0 {
            return false;
        }
        self.limit.set(self.limit.get().saturating_sub(1));
        self.host_gave();
        true
    }

    /// The successor refused a connection [`Pool::move_out`] prepared to move (`gave`: a slot
    /// went to the host): the slot is taken back when the host has one free; otherwise the
    /// connection is over this shard's bound and closes at its release.
    pub fn move_back(&self, gave: bool) {
        if gave {
            self.host_grow();
        }
    }

    /// Hands out `conn` (counted in `open` already).
    fn lease(self: &Rc<Self>, conn: Box<BackendConn>) -> Lease {
        Lease {
            pool: self.clone(),
            conn: Some(conn),
        }
    }

    /// An idle connection, if there is one now (never waits, never opens one, never asks
    /// another shard): for sluice's own occasional queries.
    pub fn try_idle(self: &Rc<Self>) -> Option<Lease> {
        let conn = self.idle.borrow_mut().pop()?;
        Some(self.lease(conn))
    }

    fn take_idle(&self, profile: Profile, wanted: &Settings) -> Option<Box<BackendConn>> {
        let mut idle = self.idle.borrow_mut();
        loop {
            // Prefer a connection whose settings already match, then the most recently used.
            let pos = idle
                .iter()
                .rposition(|c| c.profile == profile && *c.settings == *wanted)
                .or_else(|| idle.iter().rposition(|c| c.profile == profile))?;
            let conn = idle.remove(pos);
            if self.stale(&conn) || conn.last_used.elapsed() > PROBE_AFTER && !conn.is_healthy() {
                drop(conn);
                self.open.set(self.open.get() - 1);
                self.stats.discarded.set(self.stats.discarded.get() + 1);
                continue;
            }
            return Some(conn);
        }
    }

    /// Opens a connection under a slot already counted in `open`.
    async fn connect(self: &Rc<Self>, profile: Profile) -> Result<Lease, Error> {
        let mut spec = self.spec.borrow().clone();
        spec.profile = profile;
        let started = Instant::now();
        let mut gen = 0;
        if let Some(b) = &self.backend_ref {
            (spec.address, gen) = b.addr();
        }
        self.stats.connects.set(self.stats.connects.get() + 1);
        match BackendConn::connect(&spec, self.fresh.clone()).await {
            Ok(mut conn) => {
                conn.gen = gen;
                if self.retired_before.get().is_some_and(|t| t >= started) {
                    // Opened with the account replaced meanwhile: it will not be reused.
                    conn.created = started;
                }
                Ok(self.lease(Box::new(conn)))
            }
            Err(e) => {
                self.stats
                    .connect_failures
                    .set(self.stats.connect_failures.get() + 1);
                self.free_slot();
                Err(Error::BackendConnect {
                    backend: spec.address.to_string(),
                    detail: e.to_string(),
                    refused: e.is_refused(),
                })
            }
        }
    }

    async fn wait(self: &Rc<Self>, profile: Profile, deadline: Instant) -> Result<Lease, Error> {
        let started = Instant::now();
        self.stats.waits.set(self.stats.waits.get() + 1);
        let w = Rc::new(Waiter {
            profile,
            grant: RefCell::new(None),
            waker: Cell::new(None),
            gone: Cell::new(false),
        });
        self.waiters.borrow_mut().push_back(w.clone());
        if let Some(l) = &self.host {
            // Other workers see this queue and give a slot up (see `budget::policy`).
            l.waiting(true);
        }
        let guard = WaitGuard {
            pool: self.clone(),
            waiter: w.clone(),
        };
        let wait_until = |until: Instant| {
            let left = until.saturating_duration_since(Instant::now());
            glommio::timer::timeout(left, async { Ok(WaitFor { waiter: &w }.await) })
        };
        // Ask another shard for a slot now, and again every ASK_EVERY while still waiting (one
        // answer may bring one slot, and a lender may have nothing to give yet).
        let got = loop {
            let now = Instant::now();
            // A free slot of the host budget first (no message, no wait).
            if self.host_grow() {
                while self.open.get() < self.limit.get() && self.hand_slot() {}
            }
            if self
                .asked_at
                .get()
                .is_none_or(|at| now.duration_since(at) >= ASK_EVERY)
            {
                if let Some(f) = self.starved.borrow().as_ref() {
                    self.asked_at.set(Some(now));
                    f();
                }
            }
            let got = wait_until(deadline.min(now + ASK_EVERY)).await;
            if got.is_ok() || Instant::now() >= deadline {
                break got;
            }
        };
        drop(guard);
        let waited = started.elapsed();
        if let Some(h) = self.stats.wait_hist.borrow_mut().as_mut() {
            let _ = h.record(waited.as_micros() as u64);
        }
        match got {
            Ok(Grant::Conn(conn)) => Ok(self.lease(conn)),
            Ok(Grant::Slot) => self.connect(profile).await,
            Err(_) => {
                self.stats.timeouts.set(self.stats.timeouts.get() + 1);
                Err(Error::PoolTimeout {
                    waited_ms: waited.as_millis() as u64,
                })
            }
        }
    }

    fn first_live_waiter(waiters: &mut VecDeque<Rc<Waiter>>) {
        while waiters.front().is_some_and(|w| w.gone.get()) {
            waiters.pop_front();
        }
    }

    fn grant(w: &Waiter, g: Grant) {
        *w.grant.borrow_mut() = Some(g);
        if let Some(wk) = w.waker.take() {
            wk.wake();
        }
    }

    /// Hands `conn` to the oldest live waiter of its profile. When only waiters for other
    /// profiles wait, the connection is closed and its slot goes to the oldest of them. Returns
    /// the connection when nobody waits.
    fn hand_conn(&self, conn: Box<BackendConn>) -> Option<Box<BackendConn>> {
        let mut waiters = self.waiters.borrow_mut();
        Self::first_live_waiter(&mut waiters);
        if waiters.is_empty() {
            return Some(conn);
        }
        let idx = waiters
            .iter()
            .position(|w| !w.gone.get() && w.profile == conn.profile);
        let w = waiters.remove(idx.unwrap_or(0)).expect("index in range");
        drop(waiters);
        if idx.is_some() {
            Self::grant(&w, Grant::Conn(conn));
        } else {
            drop(conn);
            self.stats.discarded.set(self.stats.discarded.get() + 1);
            Self::grant(&w, Grant::Slot);
        }
        None
    }

    /// Gives a new slot (counted now) to the oldest live waiter; `false` when nobody waits.
    fn hand_slot(&self) -> bool {
        let mut waiters = self.waiters.borrow_mut();
        Self::first_live_waiter(&mut waiters);
        let Some(w) = waiters.pop_front() else {
            return false;
        };
        drop(waiters);
        self.open.set(self.open.get() + 1);
        Self::grant(&w, Grant::Slot);
        true
    }

    /// A counted connection is gone: its slot goes to a waiter, or back under the bound.
    fn free_slot(&self) {
        self.open.set(self.open.get() - 1);
        if self.open.get() < self.limit.get() {
            self.hand_slot();
        }
    }

    fn release_conn(self: &Rc<Self>, mut conn: Box<BackendConn>) {
        conn.last_used = Instant::now();
        if self.open.get() > self.limit.get() || !self.in_service() || self.stale(&conn) {
            // The share shrank while this connection was out, or the backend is being drained
            // or is down: the connection closes (a waiter gets its slot).
            drop(conn);
            self.stats.discarded.set(self.stats.discarded.get() + 1);
            self.free_slot();
            return;
        }
        if self.yielding.replace(false) {
            // Another worker waits and this one holds more than its share of the host budget:
            // the connection closes and its slot goes to the host, not to this shard's queue.
            self.limit.set(self.limit.get() - 1);
            self.stats.discarded.set(self.stats.discarded.get() + 1);
            self.host_give(Lent::Closing(conn));
            return;
        }
        if let Some(c) = self.hand_conn(conn) {
            self.idle.borrow_mut().push(c);
        }
    }

    /// Gives up one slot of this shard's share to a starved shard: unused headroom at once, or
    /// an idle connection unused for at least `min_idle` (which the caller must close with
    /// [`BackendConn::quit`] and then report with [`Pool::lent_closed`] before the slot is
    /// handed over, so the server never sees more connections than the bound).
    pub fn lend(&self, min_idle: Duration) -> Lent {
        if self.open.get() < self.limit.get() {
            self.limit.set(self.limit.get() - 1);
            return Lent::Now;
        }
        let pos = self
            .idle
            .borrow()
            .iter()
            .position(|c| c.last_used.elapsed() >= min_idle);
        match pos {
            Some(i) => {
                let c = self.idle.borrow_mut().remove(i);
                self.stats.discarded.set(self.stats.discarded.get() + 1);
                // `open` still counts the connection until it is closed.
                self.limit.set(self.limit.get() - 1);
                Lent::Closing(c)
            }
            None => Lent::No,
        }
    }

    /// A connection given up by [`Pool::lend`] is closed.
    pub fn lent_closed(&self) {
        self.open.set(self.open.get() - 1);
    }

    /// A slot lent by shard `from` (or returned to us, with `from` = `None`): the share grows and
    /// a waiter gets the slot at once.
    pub fn receive_slot(&self, from: Option<usize>) {
        self.limit.set(self.limit.get() + 1);
        if let Some(f) = from {
            self.borrowed_from.borrow_mut().push(f);
        }
        while self.open.get() < self.limit.get() && self.hand_slot() {}
    }

    /// Janitor: after two ticks with a borrowed slot and no checkout queued meanwhile, gives one
    /// back; returns the lender to notify. (Nobody waiting at the tick is not enough: a shard with
    /// exactly as many busy clients as connections rarely has a waiter at any instant, and
    /// returning the slot then starts the skew over.)
    pub fn maybe_return(&self) -> Option<(usize, Lent)> {
        let waits = self.stats.waits.get();
        let queued = waits != self.waits_at_tick.replace(waits);
        if self.borrowed_from.borrow().is_empty() || queued || self.waiting() > 0 {
            self.spare_ticks.set(0);
            return None;
        }
        self.spare_ticks.set(self.spare_ticks.get() + 1);
        if self.spare_ticks.get() < 2 {
            return None;
        }
        match self.lend(Duration::ZERO) {
            Lent::No => None,
            lent => self
                .borrowed_from
                .borrow_mut()
                .pop()
                .map(|from| (from, lent)),
        }
    }

    /// Connections idle longer than `idle`, older than `lifetime`, or found closed are dropped;
    /// returns how many were closed.
    pub fn sweep(&self, idle: Duration, lifetime: Duration) -> usize {
        let mut closed = 0;
        let in_service = self.in_service();
        let mut list = self.idle.borrow_mut();
        list.retain(|c| {
            let keep = in_service
                && !self.stale(c)
                && c.last_used.elapsed() < idle
                && c.created.elapsed() < lifetime
                && c.is_healthy();
            if !keep {
                closed += 1;
            }
            keep
        });
        drop(list);
        for _ in 0..closed {
            self.free_slot();
        }
        self.stats
            .discarded
            .set(self.stats.discarded.get() + closed as u64);
        closed
    }

    /// RECONNECT (after `Backend::retire_connections`): closes the idle connections opened
    /// before it now; returns how many, and how many connections are out (leased, or being
    /// opened), which close as they come back (those being opened since are counted too).
    pub fn retire_idle(&self) -> (usize, usize) {
        let closed = {
            let mut list = self.idle.borrow_mut();
            let before = list.len();
            list.retain(|c| !self.stale(c));
            before - list.len()
        };
        for _ in 0..closed {
            self.free_slot();
        }
        self.stats
            .discarded
            .set(self.stats.discarded.get() + closed as u64);
        (closed, self.open.get().saturating_sub(self.idle_count()))
    }

    /// Takes idle connections unused for `after` out for a health check.
    pub fn take_for_check(&self, after: Duration) -> Vec<Box<BackendConn>> {
        let mut list = self.idle.borrow_mut();
        let (stale, fresh): (Vec<_>, Vec<_>) =
            list.drain(..).partition(|c| c.last_used.elapsed() >= after);
        *list = fresh;
        stale
    }

    /// Lends a connection taken with [`Pool::take_for_check`] back, healthy or not.
    pub fn checked(self: &Rc<Self>, conn: Option<Box<BackendConn>>) {
        match conn {
            Some(c) => self.release_conn(c),
            None => {
                self.stats.discarded.set(self.stats.discarded.get() + 1);
                self.free_slot();
            }
        }
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        let n = {
            let mut list = self.idle.borrow_mut();
            let n = list.len();
            list.clear();
            n
        };
        for _ in 0..n {
            self.free_slot();
        }
    }
}

struct WaitGuard {
    pool: Rc<Pool>,
    waiter: Rc<Waiter>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.waiter.gone.set(true);
        if let Some(l) = &self.pool.host {
            l.waiting(false);
        }
        // A grant that arrived after the deadline fired must not be lost.
        if let Some(g) = self.waiter.grant.borrow_mut().take() {
            match g {
                Grant::Conn(c) => self.pool.release_conn(c),
                Grant::Slot => self.pool.free_slot(),
            }
        }
    }
}

struct WaitFor<'a> {
    waiter: &'a Rc<Waiter>,
}

impl Future for WaitFor<'_> {
    type Output = Grant;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        if let Some(g) = self.waiter.grant.borrow_mut().take() {
            return Poll::Ready(g);
        }
        self.waiter.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// What [`Pool::lend`] gave up.
pub enum Lent {
    /// Unused headroom: the slot can be handed over now.
    Now,
    /// An idle connection that must be closed first.
    Closing(Box<BackendConn>),
    /// Nothing to give.
    No,
}

/// A checked-out connection. Dropping it discards the connection; [`Lease::release`] returns it.
pub struct Lease {
    pool: Rc<Pool>,
    conn: Option<Box<BackendConn>>,
}

impl Lease {
    pub fn conn(&mut self) -> &mut BackendConn {
        self.conn
            .as_mut()
            .expect("lease holds a connection until released")
    }

    pub fn get(&self) -> &BackendConn {
        self.conn
            .as_ref()
            .expect("lease holds a connection until released")
    }

    pub fn pool(&self) -> &Rc<Pool> {
        &self.pool
    }

    /// Returns the connection to the pool (or to the oldest waiter). Call only when the server
    /// reported it clean: no transaction, no pending result, no cursor.
    pub fn release(mut self) {
        if self.conn.as_ref().is_some_and(|c| c.ahead.is_some()) {
            // An answer is still on its way: the connection is not fit for another session.
            return;
        }
        let conn = self.conn.take().expect("lease holds a connection");
        self.pool.release_conn(conn);
    }

    /// Discards the connection explicitly (same as dropping the lease).
    pub fn discard(self) {}

    /// The connection went to a successor process with its session (an upgrade): this
    /// process's descriptor of the socket closes (no shutdown: the successor's keeps it open)
    /// and its slot is free here.
    pub fn moved(mut self) {
        if let Some(c) = self.conn.take() {
            drop(c);
            self.pool.free_slot();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            drop(c);
            self.pool
                .stats
                .discarded
                .set(self.pool.stats.discarded.get() + 1);
            self.pool.free_slot();
        }
    }
}
