//! A shard: one glommio executor pinned to one core, with its own SO_REUSEPORT listener, its
//! session table, its slice of every pool and its buffers. Nothing in here is `Send`; other
//! threads reach a shard only through its [`Mailbox`](poller::Mailbox).

mod budget;
pub mod kill;
pub mod pause;
pub mod poller;
mod probe;
pub mod rebalance;
pub mod table;

use crate::backend::conn::{BackendConn, ConnectSpec};
use crate::backend::pool::{Lent, Pool};
use crate::buf::BufPool;
use crate::error::{Error, Reply};
use crate::frontend::client::ClientIo;
use crate::frontend::session::{self, Session, User};
use crate::net;
use crate::session::state::{FreshCharset, Interner, Settings};
use crate::shared::{IdLayout, Shared};
pub use kill::KILL_CONNECTIONS;
use poller::{Poller, READABLE};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use table::{ActiveCtl, KillKind, SlotState, Table, Token};
use tracing::{debug, info, warn};

/// Token of the shard's listening socket in its poller.
pub(crate) const LISTENER: u64 = u64::MAX - 1;
/// An idle connection is lent to a starved shard only after this long unused: short imbalances
/// between busy shards resolve themselves; lending is for sustained skew.
const LEND_IDLE_MIN: Duration = Duration::from_millis(250);
/// How often a shard that ran out of descriptors says so in the log.
const FD_WARN_EVERY: Duration = Duration::from_secs(10);
/// A parked session keeps a backend only for its diagnostics this long (seconds) before the
/// janitor gives it back (see [`session::release_soft`]).
const SOFT_HOLD_SECS: u32 = 1;
/// Janitor ticks (seconds) between reloads of the server's stored functions.
const ROUTINES_EVERY: u64 = 10;
/// How long a verified schema name is trusted without asking a backend again.
const SCHEMA_TTL: Duration = Duration::from_secs(10);

/// A one-shot reply slot filled on one thread and awaited on another: by a glommio task
/// ([`Reply1::recv`]) or by a plain thread ([`Reply1::recv_blocking`]).
pub struct Reply1<T> {
    inner: Arc<(Mutex<Slot1<T>>, std::sync::Condvar)>,
}

/// The value, once sent, and the task waiting for it.
type Slot1<T> = (Option<T>, Option<Waker>);

impl<T> Clone for Reply1<T> {
    fn clone(&self) -> Self {
        Reply1 {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Reply1<T> {
    fn default() -> Self {
        Reply1 {
            inner: Arc::new((Mutex::new((None, None)), std::sync::Condvar::new())),
        }
    }
}

impl<T> Reply1<T> {
    pub fn send(&self, v: T) {
        let w = {
            let mut g = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
            g.0 = Some(v);
            g.1.take()
        };
        self.inner.1.notify_all();
        if let Some(w) = w {
            w.wake();
        }
    }

    pub async fn recv(&self) -> T {
        poll_fn(|cx| {
            let mut g = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
            match g.0.take() {
                Some(v) => Poll::Ready(v),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits on a plain thread, up to `timeout`.
    pub fn recv_blocking(&self, timeout: Duration) -> Option<T> {
        let g = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self
            .inner
            .1
            .wait_timeout_while(g, timeout, |v| v.0.is_none())
            .unwrap_or_else(|p| p.into_inner());
        g.0.take()
    }
}

/// Typed messages other threads send a shard.
pub enum ShardMsg {
    /// Stop accepting, let commands in flight finish, close everything.
    Shutdown,
    /// KILL a session of this shard; the reply says whether it was found and allowed.
    Kill {
        conn_id: u32,
        kind: KillKind,
        by_user: u32,
        reply: Reply1<Result<(), Reply>>,
    },
    /// Re-check the drain condition (the last session left, or the deadline passed).
    Wake,
    /// Lend pool `pool` one slot to shard `to`, or pass the request on (`hops` shards left).
    /// `retry`: this lender already deferred the request once (its idle connections were too
    /// recently used to give up).
    Lend {
        pool: usize,
        to: usize,
        hops: usize,
        retry: bool,
    },
    /// Shard `from` lent pool `pool` a slot.
    Granted { pool: usize, from: usize },
    /// A slot lent earlier for pool `pool` comes back.
    Return { pool: usize },
    /// A caching_sha2_password full authentication on another shard cached this double hash.
    Sha2Cached { user: u32, stage2: [u8; 32] },
    /// The users loaded from the database changed (with their ids).
    DbUsers(Arc<Vec<(u32, crate::bootstrap::DbUser)>>),
    /// Send a snapshot of this shard's counters (metrics scrape).
    Stats {
        reply: std::sync::mpsc::Sender<crate::metrics::ShardSnapshot>,
    },
    /// List this shard's clients (the console's SHOW CLIENTS).
    Clients {
        reply: std::sync::mpsc::Sender<Vec<crate::metrics::ClientRow>>,
    },
    /// RECONNECT (the backends' connection generation was bumped): close the idle connections
    /// of `backend` (every backend: `None`) now; reply, per backend, (id, closed now, out and
    /// closing as they come back).
    Reconnect {
        backend: Option<u16>,
        reply: std::sync::mpsc::Sender<Vec<(u16, usize, usize)>>,
    },
    /// PAUSE (`Some(true)`), RESUME (`Some(false)`) or neither (`None`: just the status);
    /// reply with what this shard's sessions are doing (see [`pause`]).
    Pause {
        set: Option<bool>,
        reply: std::sync::mpsc::Sender<pause::PauseStatus>,
    },
    /// SHUTDOWN WAIT_FOR_CLIENTS: close the listener (new clients are refused), keep serving
    /// the clients there are; reply with how many.
    StopAccepting { reply: std::sync::mpsc::Sender<u64> },
    /// An upgrade's request (hand sessions over, adopt one): see `upgrade::shard_side`.
    Upgrade(crate::upgrade::shard_side::ShardRequest),
}

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
/// ([`rebalance`]).
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

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub poller: Poller<ShardMsg>,
    pub table: RefCell<Table<Session>>,
    pub bufs: BufPool,
    pub interner: Interner<Settings>,
    /// Interned SQL texts of prepared statements.
    pub sql: Interner<[u8]>,
    /// A fresh backend connection's settings (interned, empty).
    pub fresh: Rc<Settings>,
    pub fresh_charset: FreshCharset,
    /// The server's default session trackers, and all of them (what a client that changed none
    /// follows, and what a backend running the client's own reports), shared by every command.
    pub default_trackers: Rc<crate::session::trackers::Trackers>,
    pub all_trackers: Rc<crate::session::trackers::Trackers>,
    pub stats: ShardStats,
    /// The users a client may log in as, by name (rebuilt when a reload changed them), and the
    /// snapshot they came from.
    users: RefCell<HashMap<Vec<u8>, Rc<User>>>,
    users_snap: RefCell<Arc<crate::users::Users>>,
    /// Users loaded from the database (looked up after the configured ones).
    db_users: RefCell<HashMap<Vec<u8>, Rc<User>>>,
    /// Every pool of this shard, by account id then backend id (a row per account, made when
    /// the shard first sees the account, with a pool for every backend; a backend added later
    /// gets a pool in every row). Messages name a pool by [`Shared::pool_index`].
    pools: RefCell<Vec<Vec<Rc<Pool>>>>,
    /// The backends as this shard last saw the registry, and the registry's generation then.
    backends: RefCell<Vec<Arc<crate::backend::registry::Backend>>>,
    backends_seen: Cell<u64>,
    /// The live configuration as this shard last saw it, and its generation.
    /// This shard's own copy (an `Rc`: reading it touches no cache line another core writes).
    live: RefCell<Rc<crate::config::Config>>,
    live_seen: Cell<u64>,
    /// The router's scratch lists (reused: ranking allocates nothing).
    route_cands: RefCell<Vec<crate::backend::router::Candidate>>,
    route_out: RefCell<Vec<u16>>,
    // pub(crate) for an upgrade's hand-over (`upgrade::shard_side`).
    pub(crate) listener: RefCell<Option<OwnedFd>>,
    ids: IdLayout,
    pub(crate) next_id: Cell<u32>,
    next_backend: Cell<usize>,
    /// Moves for balance made this second: (shard clock second, moves) (see [`rebalance`]).
    rebalance_budget: Cell<(u32, u32)>,
    draining: Cell<bool>,
    drain_deadline: Cell<Option<Instant>>,
    schemas: RefCell<HashMap<SchemaKey, Instant>>,
    /// Schema checks under way: logins for the same (user, schema) wait for the one running
    /// instead of each taking a backend (a reconnect storm of one application is one check).
    schema_checks: RefCell<HashMap<SchemaKey, Rc<Flight>>>,
    /// caching_sha2_password fast-path hashes learned from full authentications (users whose
    /// configured credential is a `$A$…` crypt hash).
    sha2_cache: RefCell<HashMap<u32, [u8; 32]>>,
    /// The shard's clock origin (session idle times are seconds since then).
    epoch: Instant,
    /// The shard's own backend connections for KILL QUERY.
    kill_lines: kill::KillLines,
    /// A descriptor held in reserve so that a client can still be accepted (and refused with
    /// ERR 1040) when the process has run out: closed, the client accepted and answered, then
    /// reopened.
    spare_fd: RefCell<Option<OwnedFd>>,
    /// When the shard last logged running out of descriptors.
    fd_warned: Cell<Option<Instant>>,
    /// Sessions kept hot between commands now (see `frontend::session::serve`).
    pub lingering: Cell<u32>,
    /// PAUSE is in effect: commands wait at the gate (see [`pause`]).
    pub paused: Cell<bool>,
}

impl Shard {
    fn new(
        shared: Arc<Shared>,
        id: usize,
        core: Option<core_affinity::CoreId>,
    ) -> std::io::Result<Shard> {
        let poller = Poller::new(&format!("sluice-{id}"), core)?;
        let interner: Interner<Settings> = Interner::default();
        let fresh = interner.intern(Settings::default());
        let fc = shared
            .server
            .collations
            .get(&u16::from(crate::bootstrap::BACKEND_COLLATION))
            .cloned()
            .unwrap_or(crate::bootstrap::Collation {
                charset: "utf8mb4".into(),
                name: "utf8mb4_general_ci".into(),
            });
        let fresh_charset = FreshCharset {
            charset: fc.charset,
            collation: fc.name,
        };
        let users_snap = shared.users();
        let users = login_map(&users_snap);
        let ids = IdLayout::new(shared.workers, shared.shards);
        Ok(Shard {
            id,
            poller,
            table: RefCell::new(Table::default()),
            bufs: BufPool::new(128),
            interner,
            sql: Interner::default(),
            fresh,
            fresh_charset,
            default_trackers: Rc::new(shared.server.default_trackers.clone()),
            all_trackers: Rc::new(crate::session::trackers::Trackers::everything()),
            stats: ShardStats::default(),
            users: RefCell::new(users),
            users_snap: RefCell::new(users_snap),
            db_users: RefCell::new(HashMap::new()),
            pools: RefCell::new(Vec::new()),
            backends: RefCell::new(Vec::new()),
            backends_seen: Cell::new(u64::MAX),
            live: RefCell::new(Rc::new((*shared.live()).clone())),
            live_seen: Cell::new(shared.live_generation()),
            route_cands: RefCell::new(Vec::new()),
            route_out: RefCell::new(Vec::new()),
            listener: RefCell::new(None),
            ids,
            next_id: Cell::new(0),
            next_backend: Cell::new(id),
            rebalance_budget: Cell::new((0, 0)),
            draining: Cell::new(false),
            lingering: Cell::new(0),
            paused: Cell::new(false),
            drain_deadline: Cell::new(None),
            schemas: RefCell::new(HashMap::new()),
            schema_checks: RefCell::new(HashMap::new()),
            sha2_cache: RefCell::new(HashMap::new()),
            epoch: Instant::now(),
            kill_lines: kill::KillLines::default(),
            spare_fd: RefCell::new(Some(net::spare_fd()?)),
            fd_warned: Cell::new(None),
            shared,
        })
    }

    /// Seconds since the shard started (a compact timestamp for parked sessions).
    pub fn clock(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Counts a failed login from `ip` towards `auth_failure_limit`: in the table every shard
    /// and every worker process of the instance shares (see [`crate::auth::guard`]).
    pub fn note_auth_failure(&self, ip: std::net::IpAddr) {
        self.stats
            .auth_failures
            .set(self.stats.auth_failures.get() + 1);
        self.shared.guard.note_failure(ip);
    }

    /// Is `ip` over the failed-login limit for the current minute?
    fn auth_blocked(&self, ip: std::net::IpAddr) -> Option<u32> {
        let limit = self.cfg().auth_failure_limit;
        if limit == 0 {
            return None;
        }
        let n = self.shared.guard.failures(ip);
        (n >= limit).then_some(n)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    pub fn user(&self, name: &[u8]) -> Option<Rc<User>> {
        // A login uses the users as reloaded at once.
        self.cfg();
        self.users
            .borrow()
            .get(name)
            .cloned()
            .or_else(|| self.db_users.borrow().get(name).cloned())
    }

    /// Replaces the users loaded from the database (sessions already open keep theirs).
    pub fn set_db_users(&self, list: &[(u32, crate::bootstrap::DbUser)]) {
        let Some(account) = self.shared.db_account else {
            return;
        };
        let users = self.shared.users();
        let Some(spec) = users.get(account).map(|a| a.spec.clone()) else {
            return;
        };
        let map = list
            .iter()
            .map(|(id, u)| {
                let credential = crate::auth::Credential {
                    plugin: crate::auth::Plugin::Native,
                    native: Some(u.native),
                    sha2: None,
                    crypt: None,
                    plaintext: false,
                    empty: false,
                };
                let user = User {
                    index: account,
                    id: *id,
                    name: u.name.clone().into(),
                    credential,
                    pool_mode: spec.pool_mode,
                    require_tls: false,
                    reads: spec.reads,
                    consistency: spec.consistency,
                };
                (u.name.as_bytes().to_vec(), Rc::new(user))
            })
            .collect();
        *self.db_users.borrow_mut() = map;
    }

    /// The pool of account `user` on backend `backend` (made now if this shard has none yet).
    pub fn pool(&self, user: u32, backend: u16) -> Rc<Pool> {
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

    fn pool_get(&self, user: u32, backend: u16) -> Option<Rc<Pool>> {
        self.pools
            .borrow()
            .get(user as usize)
            .and_then(|r| r.get(usize::from(backend)))
            .cloned()
    }

    /// Every pool of this shard (a snapshot: backends may be added meanwhile).
    pub fn pools(&self) -> Vec<Rc<Pool>> {
        self.refresh_backends();
        self.pools.borrow().iter().flatten().cloned().collect()
    }

    /// The pool at `index` if this shard has it (a lend request may name a pool of a backend
    /// or a user this shard has not seen yet).
    fn pool_at(&self, index: usize) -> Option<Rc<Pool>> {
        self.refresh_backends();
        let (user, backend) = self.shared.pool_of(index);
        self.pool_get(user, backend)
    }

    /// Backend `id` as this shard knows it.
    pub fn backend(&self, id: u16) -> Arc<crate::backend::registry::Backend> {
        self.refresh_backends();
        self.backends.borrow()[usize::from(id)].clone()
    }

    fn backend_or_first(&self, id: u16) -> Arc<crate::backend::registry::Backend> {
        let list = self.backends.borrow();
        list.get(usize::from(id))
            .or_else(|| list.first())
            .cloned()
            .unwrap_or_else(|| self.shared.backends.snapshot()[0].clone())
    }

    /// Picks up backends added since this shard last looked: makes their pools.
    fn refresh_backends(&self) {
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

    /// Makes account `user`'s pools, one per backend, unless it has them.
    fn make_row(&self, user: u32) {
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
    fn new_pool(
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
        pool.set_pin_budget(
            shared.pin_counter(index),
            shared.worker_share(cfg.pool.pin_budget()),
        );
        let link = shared.clone();
        let id = self.id;
        pool.set_starved_hook(Box::new(move || request_slot(&link, id, index)));
        *pool.stats.wait_hist.borrow_mut() =
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).ok();
        pool
    }

    /// Takes the users a reload published: logins look up the new list; every pool of an
    /// account whose backend account changed opens its next connections with the new one and
    /// retires the old (idle ones close now, busy ones as they come back, as RECONNECT does);
    /// caching_sha2 fast-path hashes learned for a changed password are forgotten.
    fn refresh_users(&self) {
        let new = self.shared.users();
        let old = self.users_snap.replace(new.clone());
        if Arc::ptr_eq(&old, &new) {
            return;
        }
        *self.users.borrow_mut() = login_map(&new);
        for a in new.all.iter().filter(|a| a.current) {
            self.make_row(a.spec.id);
        }
        let rows = self.pools.borrow().clone();
        for (id, row) in rows.iter().enumerate() {
            let (Some(n), Some(o)) = (new.get(id as u32), old.get(id as u32)) else {
                continue;
            };
            if (&n.spec.backend_user, &n.spec.backend_password)
                != (&o.spec.backend_user, &o.spec.backend_password)
            {
                for p in row {
                    p.set_account(&n.spec.backend_user, &n.spec.backend_password);
                }
            }
            if n.spec.credential != o.spec.credential {
                self.sha2_cache.borrow_mut().remove(&(id as u32));
            }
        }
    }

    /// The backends that may serve a checkout for `user` now, best first (see
    /// [`crate::backend::router`]); `settings`: the session's, to prefer a backend with a
    /// matching idle connection. The answer is this shard's scratch list: copy what you need.
    pub fn route(
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
    fn candidates(
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

    /// The live configuration: every setting a reload may change is read through this (one
    /// atomic load; the copy is refreshed when a reload published a new one).
    pub fn cfg(&self) -> Rc<crate::config::Config> {
        let g = self.shared.live_generation();
        if self.live_seen.get() != g {
            self.live_seen.set(g);
            *self.live.borrow_mut() = Rc::new((*self.shared.live()).clone());
            self.resize_pools();
            self.refresh_users();
        }
        self.live.borrow().clone()
    }

    /// Sets every pool's share from the live `pool.size` (after a reload changed it). Slots lent
    /// between shards are forgotten: every shard takes its fresh share at once, so the sum stays
    /// the bound; connections above a shrunk share close as they come back.
    fn resize_pools(&self) {
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

    /// Does backend `id` serve only routed reads (a read-only primary or replica)?
    pub fn reads_only(&self, id: u16) -> bool {
        self.backends
            .borrow()
            .get(usize::from(id))
            .is_some_and(|b| {
                b.role != crate::backend::router::Role::Any && b.writable() != Some(true)
            })
    }

    /// Is backend `id` leaving: draining, in maintenance or removed (no new checkouts)?
    pub fn leaving(&self, id: u16) -> bool {
        self.backends
            .borrow()
            .get(usize::from(id))
            .is_some_and(|b| b.admin() != crate::backend::router::Admin::Active)
    }

    /// Is backend `id` draining and past its deadline?
    pub fn drain_overdue(&self, id: u16) -> bool {
        self.backends
            .borrow()
            .get(usize::from(id))
            .is_some_and(|b| b.drain_overdue())
    }

    /// Each backend's state, for an error that says why nothing could serve.
    pub fn backends_summary(&self) -> String {
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

    /// The replicas that may serve a routed read for `user` now, best first.
    pub fn route_reads(
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
    pub fn pick_backend(&self) -> u16 {
        let fresh = self.fresh.clone();
        let r = self.route(0, crate::backend::conn::DEFAULT_PROFILE, &fresh);
        r.first().copied().unwrap_or(0)
    }

    fn next_conn_id(&self) -> u32 {
        let local_bits = self.ids.local_bits();
        let max = if local_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << local_bits) - 1
        };
        let mut n = self.next_id.get().wrapping_add(1) & max;
        if n == 0 {
            n = 1;
        }
        self.next_id.set(n);
        self.ids.compose(self.shared.worker, self.id as u32, n)
    }

    /// The settings a client has right after logging in with `collation` and `schema`.
    /// `caps`: the client's capabilities (an interactive client's `wait_timeout` starts at the
    /// server's `interactive_timeout`, as the server does at login).
    pub fn initial_settings(
        &self,
        collation: u8,
        schema: Option<Box<str>>,
        caps: u32,
    ) -> Rc<Settings> {
        let mut s = match self.shared.server.collations.get(&u16::from(collation)) {
            Some(c) => Settings::for_collation(
                &c.charset,
                &c.name,
                self.shared.server.default_collations.get(&c.charset)
                    == Some(&u16::from(collation)),
                &self.fresh_charset,
            ),
            None => Settings::default(),
        };
        s.schema = schema;
        let vars = &self.shared.server.vars;
        if caps & crate::codec::caps::cap::INTERACTIVE != 0 {
            if let (Some(i), Some(w)) = (
                vars.fresh_value("interactive_timeout"),
                vars.fresh_value("wait_timeout"),
            ) {
                if i != w {
                    s.set_var("wait_timeout", i);
                }
            }
        }
        self.interner.intern(s)
    }

    /// The cached caching_sha2 fast-path hash of `user`, if a full authentication filled it.
    pub fn sha2_cached(&self, user: u32) -> Option<[u8; 32]> {
        self.sha2_cache.borrow().get(&user).copied()
    }

    /// Caches a fast-path hash here and on every other shard of this process.
    pub fn sha2_cache_fill(&self, user: u32, stage2: [u8; 32]) {
        self.sha2_cache.borrow_mut().insert(user, stage2);
        if let Some(mbs) = self.shared.mailboxes.get() {
            for (i, mb) in mbs.iter().enumerate() {
                if i != self.id {
                    mb.post(ShardMsg::Sha2Cached { user, stage2 });
                }
            }
        }
    }

    pub fn count_error(&self, e: &Error) {
        *self.stats.errors.borrow_mut().entry(e.kind()).or_insert(0) += 1;
    }

    /// Puts an idle session back in the table and re-arms its socket.
    pub fn park(self: &Rc<Self>, token: Token, sess: Session) {
        if self.draining.get() {
            let shard = self.clone();
            glommio::spawn_local(async move { session::finish(&shard, token, sess).await })
                .detach();
            return;
        }
        let fd = sess.fd.as_raw_fd();
        if let Err(sess) = self.table.borrow_mut().park(token, sess) {
            warn!("park of a session whose slot is not active; closing it");
            drop(sess);
            return;
        }
        if let Err(e) = self.poller.rearm(fd, token.to_u64(), READABLE) {
            debug!(error = %e, "re-arming a parked client failed; closing it");
            if let Some(sess) = self.table.borrow_mut().remove(token) {
                self.drop_session(sess);
            }
        }
    }

    /// Gives a refused connection's place under `max_client_connections` back before the
    /// refusal is sent, so a client that retries at once finds it free.
    pub fn uncount_client(&self, ctl: &ActiveCtl) {
        if !ctl.uncounted.replace(true) {
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Frees a session's slot (the session itself was consumed by the caller).
    pub fn remove_session(&self, token: Token) {
        let counted = match self.table.borrow().get(token).map(|s| &s.state) {
            Some(SlotState::Active(ctl)) => !ctl.uncounted.get(),
            _ => true,
        };
        if let Some(sess) = self.table.borrow_mut().remove(token) {
            self.drop_session(sess);
        }
        if counted {
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        }
        if self.draining.get() && self.table.borrow().is_empty() {
            self.poller.mailbox().post(ShardMsg::Wake);
        }
    }

    fn drop_session(&self, sess: Session) {
        // A parked session with a lease (session mode) is dropped without a reset: the lease
        // discards its connection.
        drop(sess);
    }

    /// Verifies that `user` may use schema `db`, asking a backend unless it did recently.
    pub async fn check_schema(self: &Rc<Self>, user: u32, db: &str) -> Result<(), Reply> {
        let key = (user, Box::<str>::from(db));
        if self
            .schemas
            .borrow()
            .get(&key)
            .is_some_and(|t| t.elapsed() < SCHEMA_TTL)
        {
            return Ok(());
        }
        let running = self.schema_checks.borrow().get(&key).cloned();
        if let Some(flight) = running {
            if let Some(r) = flight.wait().await {
                return r;
            }
            // The check was abandoned (its login timed out): run one of our own.
        }
        let flight = Rc::new(Flight::default());
        self.schema_checks
            .borrow_mut()
            .insert(key.clone(), flight.clone());
        // Whatever ends the check (even this future being dropped) lands the flight.
        let landing = Landing {
            shard: self,
            key: &key,
            flight: &flight,
        };
        let r = self.check_schema_on_backend(user, db).await;
        if r.is_ok() {
            self.schemas
                .borrow_mut()
                .insert(key.clone(), Instant::now());
        }
        landing.land(r.clone());
        r
    }

    async fn check_schema_on_backend(self: &Rc<Self>, user: u32, db: &str) -> Result<(), Reply> {
        let pool = self.pool(user, self.pick_backend());
        let deadline = Instant::now() + Duration::from_millis(self.cfg().pool.queue_timeout_ms);
        let mut lease = pool
            .checkout(crate::backend::conn::DEFAULT_PROFILE, &self.fresh, deadline)
            .await
            .map_err(|e| {
                e.reply()
                    .unwrap_or_else(|| Reply::new(9002, b"HY000", "sluice: backend unavailable"))
            })?;
        let mut p = vec![crate::codec::command::com::INIT_DB];
        p.extend_from_slice(db.as_bytes());
        match lease
            .conn()
            .command_ok(&p, crate::codec::command::ResponseKind::OkErr)
            .await
        {
            Ok(_) => {
                let mut s = (*lease.get().settings).clone();
                s.schema = Some(db.into());
                lease.conn().settings = self.interner.intern(s);
                lease.release();
                Ok(())
            }
            Err(crate::backend::conn::BackendError::Server {
                code,
                sql_state,
                message,
            }) => {
                lease.release();
                Err(Reply::new(code, &sql_state, message))
            }
            Err(e) => Err(Reply::new(
                9002,
                b"HY000",
                format!("sluice: backend unavailable: {e}"),
            )),
        }
    }

    /// This shard's clients as the console lists them. A parked session is known whole; an
    /// active one (its session is with its task) by what its control block says.
    pub fn clients(&self) -> Vec<crate::metrics::ClientRow> {
        let now = self.clock();
        let table = self.table.borrow();
        // An active session's login name by its user id: a configured user's id is its account id;
        // users loaded from the database have ids of their own, after those.
        let db_names: std::collections::HashMap<u32, Rc<User>> = self
            .db_users
            .borrow()
            .values()
            .map(|u| (u.id, u.clone()))
            .collect();
        let users = self.shared.users();
        let name_of = |id: u32| match users.get(id) {
            Some(u) => u.spec.name.clone(),
            None => db_names
                .get(&id)
                .map(|u| u.name.to_string())
                .unwrap_or_default(),
        };
        let source = |fd: std::os::fd::RawFd| {
            crate::net::peer_addr(&fd).map(|a| (a.ip().to_canonical().to_string(), a.port()))
        };
        table
            .tokens()
            .into_iter()
            .filter_map(|t| {
                let slot = table.get(t)?;
                let mut row = crate::metrics::ClientRow {
                    id: slot.conn_id,
                    shard: self.id as u32,
                    ..Default::default()
                };
                match &slot.state {
                    SlotState::Parked(s) => {
                        row.user = s.user.name.to_string();
                        (row.source, row.port) = source(s.fd.as_raw_fd()).unzip();
                        row.state = if s.pinned() { "pinned" } else { "parked" }.into();
                        row.schema = s.settings.schema.as_deref().map(|x| x.to_string());
                        row.backend = s
                            .lease
                            .as_ref()
                            .map(|l| self.backend(l.get().backend).address.clone());
                        row.idle_s = u64::from(now.saturating_sub(s.last_active));
                        row.holds = session::held_by(s);
                    }
                    SlotState::Active(ctl) => {
                        if ctl.logged_in.get() {
                            row.user = name_of(ctl.user.get());
                        }
                        (row.source, row.port) = ctl.fd.get().and_then(source).unzip();
                        row.busy = ctl.serving.get();
                        row.command = row.busy.then(|| {
                            crate::codec::command::thread_command(ctl.command.get()).to_string()
                        });
                        row.state = if ctl.gated.get() {
                            "paused" // its command waits for RESUME
                        } else {
                            "active"
                        }
                        .into();
                        row.backend = ctl
                            .running()
                            .map(|r| self.backend(r.backend).address.clone());
                        if let Some(s) = ctl.seen.borrow().as_ref() {
                            row.schema = s.schema.as_deref().map(|x| x.to_string());
                        }
                        if !row.busy {
                            row.idle_s = u64::from(now.saturating_sub(ctl.last_active.get()));
                        }
                    }
                    SlotState::Free => return None,
                }
                Some(row)
            })
            .collect()
    }

    /// This shard's counters, for a metrics scrape.
    pub fn snapshot(&self) -> crate::metrics::ShardSnapshot {
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

    fn on_message(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Shutdown => self.begin_shutdown(),
            ShardMsg::Upgrade(req) => crate::upgrade::shard_side::on_request(self, req),
            ShardMsg::Wake => {}
            ShardMsg::DbUsers(list) => self.set_db_users(&list),
            ShardMsg::Sha2Cached { user, stage2 } => {
                self.sha2_cache.borrow_mut().insert(user, stage2);
            }
            ShardMsg::Lend {
                pool,
                to,
                hops,
                retry,
            } => {
                let Some(mailboxes) = self.shared.mailboxes.get() else {
                    return;
                };
                let Some(p) = self.pool_at(pool) else {
                    return;
                };
                if retry {
                    p.lend_retry_pending.set(false);
                }
                let granted = ShardMsg::Granted {
                    pool,
                    from: self.id,
                };
                match p.lend(LEND_IDLE_MIN) {
                    Lent::Now => mailboxes[to].post(granted),
                    Lent::Closing(conn) => self.close_then_post(p.clone(), conn, to, granted),
                    Lent::No if hops > 1 => {
                        let next = next_shard(self.id, to, mailboxes.len());
                        mailboxes[next].post(ShardMsg::Lend {
                            pool,
                            to,
                            hops: hops - 1,
                            retry: false,
                        });
                    }
                    Lent::No if !retry && p.idle_count() > 0 && !p.lend_retry_pending.get() => {
                        // Idle, but too recently used to give up: look again once it has aged
                        // (once per pool: a starved shard asks again while it keeps queueing).
                        p.lend_retry_pending.set(true);
                        let me = mailboxes[self.id].clone();
                        glommio::spawn_local(async move {
                            glommio::timer::sleep(LEND_IDLE_MIN).await;
                            me.post(ShardMsg::Lend {
                                pool,
                                to,
                                hops: 1,
                                retry: true,
                            });
                        })
                        .detach();
                    }
                    Lent::No => {}
                }
            }
            ShardMsg::Granted { pool, from } => {
                debug!(shard = self.id, pool, from, "slot lent");
                if let Some(p) = self.pool_at(pool) {
                    p.receive_slot(Some(from));
                }
            }
            ShardMsg::Return { pool } => {
                if let Some(p) = self.pool_at(pool) {
                    p.receive_slot(None);
                }
            }
            ShardMsg::Stats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            ShardMsg::Clients { reply } => {
                let _ = reply.send(self.clients());
            }
            ShardMsg::Reconnect { backend, reply } => {
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
                let _ = reply.send(out);
            }
            ShardMsg::Pause { set, reply } => {
                let _ = reply.send(self.pause(set));
            }
            ShardMsg::StopAccepting { reply } => {
                self.stop_accepting();
                let _ = reply.send(self.table.borrow().tokens().len() as u64);
            }
            ShardMsg::Kill {
                conn_id,
                kind,
                by_user,
                reply,
            } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    reply.send(shard.kill_local(conn_id, kind, by_user).await);
                })
                .detach();
            }
        }
    }

    /// Disconnects parked clients idle past their limit: `client_idle_timeout_ms` (with ERR 4031,
    /// as MySQL does), or their own `wait_timeout` (as the server does: MariaDB closes the
    /// connection without a word, MySQL 8 sends ERR 4031). Also gives back backends that idle
    /// sessions keep only for their diagnostics (see [`session::release_soft`]).
    fn expire_idle(self: &Rc<Self>) {
        let now = self.clock();
        let idle_ms = self.cfg().client_idle_timeout_ms;
        let configured = (idle_ms > 0).then(|| (idle_ms / 1000).max(1) as u32);
        let catalog = &self.shared.server.vars;
        let mut expired: Vec<(Token, bool)> = Vec::new();
        let mut soft: Vec<Token> = Vec::new();
        let mut drained: Vec<Token> = Vec::new();
        let mut moving: Vec<Token> = Vec::new();
        {
            let table = self.table.borrow();
            for t in table.tokens() {
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
                if s.mode() == crate::config::PoolMode::Session
                    && s.lease
                        .as_ref()
                        .is_some_and(|l| self.leaving(l.get().backend))
                {
                    moving.push(t);
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
                    _ if idle >= SOFT_HOLD_SECS && s.soft_held() => soft.push(t),
                    _ => {}
                }
            }
        }
        for t in moving {
            let lease = self
                .table
                .borrow_mut()
                .parked_mut(t)
                .and_then(|s| session::move_off_parked(self, s));
            if let Some(lease) = lease {
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
        let silent = self
            .shared
            .server
            .version
            .windows(7)
            .any(|w| w == b"MariaDB");
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

    /// Closes a connection given up for another shard, then tells that shard.
    fn close_then_post(&self, pool: Rc<Pool>, conn: Box<BackendConn>, to: usize, msg: ShardMsg) {
        let Some(mb) = self.shared.mailboxes.get().and_then(|m| m.get(to)).cloned() else {
            return;
        };
        glommio::spawn_local(async move {
            conn.quit().await;
            pool.lent_closed();
            mb.post(msg);
        })
        .detach();
    }

    /// Sets (or, with `None`, only reads) the pause; counts what the sessions are doing. On
    /// RESUME, wakes every session waiting at the gate.
    fn pause(&self, set: Option<bool>) -> pause::PauseStatus {
        use pause::Busy;
        if let Some(on) = set {
            if self.paused.replace(on) != on {
                info!(shard = self.id, paused = on, "pause changed");
            }
        }
        let mut st = pause::PauseStatus {
            paused: self.paused.get(),
            ..Default::default()
        };
        let table = self.table.borrow();
        for t in table.tokens() {
            let Some(slot) = table.get(t) else { continue };
            let busy = match &slot.state {
                SlotState::Parked(s) => pause::classify(
                    false,
                    s.status & crate::codec::caps::status::IN_TRANS != 0,
                    false,
                ),
                SlotState::Active(ctl) => {
                    if !self.paused.get() && ctl.gated.get() {
                        // Resumed: let it go.
                        if let Some(w) = ctl.waker.take() {
                            w.wake();
                        }
                    }
                    pause::classify(ctl.serving.get(), ctl.in_transaction.get(), ctl.gated.get())
                }
                SlotState::Free => Busy::Quiet,
            };
            match busy {
                Busy::Quiet => {}
                Busy::Running => st.running += 1,
                Busy::InTransaction => st.in_transaction += 1,
                Busy::Waiting => st.waiting += 1,
            }
            if matches!(busy, Busy::Running | Busy::InTransaction)
                && st.busy_ids.len() < pause::BUSY_IDS
            {
                st.busy_ids.push(slot.conn_id);
            }
        }
        st
    }

    /// Closes the listener: with SO_REUSEPORT, once every shard has, new connections are
    /// refused; the clients there are keep being served.
    fn stop_accepting(&self) {
        if let Some(l) = self.listener.borrow_mut().take() {
            self.poller.remove(l.as_raw_fd());
            info!(shard = self.id, "stopped accepting clients");
        }
    }

    fn begin_shutdown(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        let deadline = Duration::from_millis(self.shared.config.shutdown_timeout_ms);
        self.drain_deadline.set(Some(Instant::now() + deadline));
        let mailbox = self.poller.mailbox();
        glommio::spawn_local(async move {
            glommio::timer::sleep(deadline).await;
            mailbox.post(ShardMsg::Wake);
        })
        .detach();
        self.stop_accepting();
        // A pause ends with the process: waiting commands run, then their sessions close.
        self.pause(Some(false));
        // Idle clients are closed now; active ones after their current command.
        let tokens = self.table.borrow().tokens();
        for t in tokens {
            let sess = {
                let mut table = self.table.borrow_mut();
                let parked = matches!(table.get(t).map(|s| &s.state), Some(SlotState::Parked(_)));
                if parked {
                    table.unpark(t, Rc::new(ActiveCtl::default()))
                } else {
                    None
                }
            };
            if let Some(sess) = sess {
                let shard = self.clone();
                glommio::spawn_local(async move { session::finish(&shard, t, sess).await })
                    .detach();
            }
        }
        for p in &self.pools() {
            p.close_idle();
        }
        self.kill_lines.sweep(Duration::ZERO);
    }

    fn on_accept(self: &Rc<Self>) {
        let Some(lfd) = self.listener.borrow().as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        for _ in 0..128 {
            match net::accept(lfd) {
                Ok(Some((fd, peer))) => self.start_session(fd, peer),
                Ok(None) => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if self.refuse_with_spare(lfd) {
                        continue;
                    }
                    self.warn_fds("out of file descriptors (the spare one is taken): clients wait in the backlog until some leave");
                    // Leave the connection in the backlog; try again after a pause.
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        if shard.spare_fd.borrow().is_none() {
                            *shard.spare_fd.borrow_mut() = net::spare_fd().ok();
                        }
                        shard.rearm_listener();
                    })
                    .detach();
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    break;
                }
            }
        }
        self.rearm_listener();
    }

    /// The process is out of descriptors (a real EMFILE, past the admission limit): frees the
    /// spare one, accepts a waiting client into it, answers ERR 1040 and closes, then takes the
    /// spare back. Returns whether a client was answered.
    fn refuse_with_spare(&self, lfd: std::os::fd::RawFd) -> bool {
        let Some(spare) = self.spare_fd.borrow_mut().take() else {
            *self.spare_fd.borrow_mut() = net::spare_fd().ok();
            return false;
        };
        drop(spare);
        let answered = match net::accept(lfd) {
            Ok(Some((fd, peer))) => {
                self.warn_fds(
                    "out of file descriptors: refusing new clients with ERR 1040 until some leave",
                );
                debug!(%peer, "refused: out of file descriptors");
                self.refuse_too_many(&fd, true);
                true
            }
            _ => false,
        };
        *self.spare_fd.borrow_mut() = net::spare_fd().ok();
        answered
    }

    fn warn_fds(&self, what: &str) {
        let now = Instant::now();
        if self
            .fd_warned
            .get()
            .is_none_or(|t| now.duration_since(t) >= FD_WARN_EVERY)
        {
            self.fd_warned.set(Some(now));
            warn!(shard = self.id, "{what}");
        }
    }

    /// Answers a client accepted only to be refused: like the server, an ERR 1040 instead of the
    /// greeting (sequence id 0, pre-handshake format), then the close. The packet is tiny, so a
    /// non-blocking send on a fresh socket takes it whole. `fds`: refused for lack of file
    /// descriptors (counted as an error of kind `fd_limit`), not `max_client_connections`.
    fn refuse_too_many(&self, fd: &OwnedFd, fds: bool) {
        self.stats
            .refused_max_clients
            .set(self.stats.refused_max_clients.get() + 1);
        if fds {
            *self
                .stats
                .errors
                .borrow_mut()
                .entry("fd_limit")
                .or_insert(0) += 1;
        }
        let mut out = Vec::new();
        let mut p = Vec::new();
        Reply::new(1040, b"08004", "Too many connections").encode_before_handshake(&mut p);
        crate::codec::frame::encode_packet(&mut out, 0, &p);
        let _ = net::send(fd.as_raw_fd(), &out);
    }

    fn rearm_listener(&self) {
        if let Some(l) = self.listener.borrow().as_ref() {
            let _ = self.poller.rearm(l.as_raw_fd(), LISTENER, READABLE);
        }
    }

    fn start_session(self: &Rc<Self>, fd: OwnedFd, peer: std::net::SocketAddr) {
        self.stats.accepted.set(self.stats.accepted.get() + 1);
        if let Some(n) = self.auth_blocked(peer.ip()) {
            self.stats
                .auth_blocked
                .set(self.stats.auth_blocked.get() + 1);
            let mut out = Vec::new();
            let mut p = Vec::new();
            Reply::new(
                1129,
                b"HY000",
                format!("Host '{}' is blocked because of many connection errors (sluice: {n} failed logins in the last minute)", peer.ip()),
            )
            .encode_before_handshake(&mut p);
            crate::codec::frame::encode_packet(&mut out, 0, &p);
            let _ = net::send(fd.as_raw_fd(), &out);
            return;
        }
        let open = self.shared.clients.fetch_add(1, Ordering::Relaxed);
        let limit = self.shared.client_limit();
        if open >= limit {
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
            // The file-descriptor budget, not max_client_connections, is what ran out.
            let fds = limit == self.shared.fd_client_limit.load(Ordering::Relaxed)
                && (self.cfg().max_client_connections == 0
                    || limit < self.cfg().max_client_connections);
            if fds {
                self.warn_fds("clients reached what the file-descriptor limit allows (the rest is reserved for backends, KILL, admin and metrics); refusing new ones with ERR 1040");
            }
            self.refuse_too_many(&fd, fds);
            debug!(%peer, fds, "refused: too many connections");
            return;
        }
        let conn_id = self.next_conn_id();
        let ctl = Rc::new(ActiveCtl::default());
        ctl.fd.set(Some(fd.as_raw_fd()));
        let token = self.table.borrow_mut().insert(conn_id, ctl.clone());
        if let Err(e) = self.poller.add(fd.as_raw_fd(), token.to_u64(), 0) {
            warn!(error = %e, "cannot watch a new client socket");
            self.remove_session(token);
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let mut io = ClientIo::new(shard.clone(), fd.as_raw_fd(), token, ctl.clone());
            let r = crate::frontend::handshake::accept(&shard, &mut io, fd, conn_id, peer).await;
            drop(io);
            match r {
                Ok(sess) => {
                    ctl.user.set(sess.user.id);
                    ctl.pool_user.set(sess.user.index);
                    ctl.logged_in.set(true);
                    session::serve(shard, token, ctl, sess).await
                }
                Err(e) => {
                    debug!(error = %e, %peer, "handshake failed");
                    // A client that leaves during the handshake (a TCP health check, a port
                    // probe) is not an error of sluice's; failed logins have their own counter.
                    if !matches!(e, Error::ClientGone(_)) {
                        shard.count_error(&e);
                    }
                    shard.remove_session(token);
                }
            }
        })
        .detach();
    }

    fn on_event(self: &Rc<Self>, token: u64, events: u32) {
        if token == LISTENER {
            self.on_accept();
            return;
        }
        let token = Token::from_u64(token);
        let ctl = {
            let table = self.table.borrow();
            match table.get(token).map(|s| &s.state) {
                Some(SlotState::Active(ctl)) => Some(ctl.clone()),
                Some(SlotState::Parked(_)) => None,
                _ => return,
            }
        };
        if let Some(ctl) = ctl {
            ctl.notify(events);
            return;
        }
        let ctl = Rc::new(ActiveCtl::default());
        let Some(sess) = self.table.borrow_mut().unpark(token, ctl.clone()) else {
            return;
        };
        ctl.user.set(sess.user.id);
        ctl.pool_user.set(sess.user.index);
        ctl.logged_in.set(true);
        ctl.fd.set(Some(sess.fd.as_raw_fd()));
        glommio::spawn_local(session::serve(self.clone(), token, ctl, sess)).detach();
    }

    /// Turns poller events and mailbox messages into work, until the shard has drained.
    async fn dispatch(self: Rc<Self>) {
        let mut events = Vec::with_capacity(256);
        let mut messages = Vec::new();
        loop {
            if self.draining.get() {
                let left = self.table.borrow().len();
                if left == 0 {
                    return;
                }
                if self
                    .drain_deadline
                    .get()
                    .is_some_and(|d| Instant::now() >= d)
                {
                    warn!(
                        shard = self.id,
                        sessions = left,
                        "shutdown deadline passed; closing the rest"
                    );
                    return;
                }
            }
            events.clear();
            self.poller.heartbeat();
            self.poller.poll_now(&mut events);
            self.poller.try_take(&mut messages);
            if events.is_empty() && messages.is_empty() {
                self.poller.ready(&mut messages).await;
                self.poller.poll_now(&mut events);
            }
            for (t, ev) in events.drain(..) {
                self.on_event(t, ev);
            }
            for m in messages.drain(..) {
                self.on_message(m);
            }
            futures_lite::future::yield_now().await;
        }
    }

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
    async fn janitor(self: Rc<Self>) {
        let mut ticks = 0u64;
        let mut last_accepted = 0u64;
        while !self.draining.get() {
            glommio::timer::sleep(Duration::from_secs(1)).await;
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
                let index = self.shared.pool_index(pool.user, pool.backend);
                match pool.maybe_return() {
                    Some((lender, Lent::Now)) => {
                        if let Some(mb) = self.shared.mailboxes.get().and_then(|m| m.get(lender)) {
                            mb.post(ShardMsg::Return { pool: index });
                        }
                    }
                    Some((lender, Lent::Closing(conn))) => self.close_then_post(
                        pool.clone(),
                        conn,
                        lender,
                        ShardMsg::Return { pool: index },
                    ),
                    _ => {}
                }
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
            self.expire_idle();
            self.kill_lines.sweep(idle);
            if ticks % 10 == 0 {
                if self.id == 0 {
                    self.shared.guard.sweep();
                }
                self.interner.sweep();
                self.sql.sweep();
                self.schemas
                    .borrow_mut()
                    .retain(|_, t| t.elapsed() < SCHEMA_TTL);
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
}

/// (pool user, schema): what a schema check vouches for.
type SchemaKey = (u32, Box<str>);

/// The outcome of a check that other tasks of the shard wait for.
#[derive(Default)]
struct Flight {
    result: RefCell<Option<Result<(), Reply>>>,
    landed: Cell<bool>,
    wakers: RefCell<Vec<std::task::Waker>>,
}

impl Flight {
    /// The check's result, or `None` if it was abandoned.
    async fn wait(&self) -> Option<Result<(), Reply>> {
        std::future::poll_fn(|cx| {
            if self.landed.get() {
                return std::task::Poll::Ready(self.result.borrow().clone());
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

/// Lands a [`Flight`]: removes it from the shard's map and wakes its waiters with the result
/// (none if the check was abandoned: its task dropped mid-way).
struct Landing<'a> {
    shard: &'a Shard,
    key: &'a SchemaKey,
    flight: &'a Rc<Flight>,
}

impl Landing<'_> {
    fn land(self, r: Result<(), Reply>) {
        *self.flight.result.borrow_mut() = Some(r);
        // Drop does the rest.
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.shard.schema_checks.borrow_mut().remove(self.key);
        self.flight.landed.set(true);
        for w in self.flight.wakers.take() {
            w.wake();
        }
    }
}

/// Sends a parked client one ERR when given (unsolicited, as a server does before closing) and
/// ends its session.
async fn tell_and_finish(
    shard: Rc<Shard>,
    t: Token,
    ctl: Rc<ActiveCtl>,
    mut sess: Session,
    reply: Option<Reply>,
) {
    if let Some(reply) = reply {
        let mut io = ClientIo::new(shard.clone(), sess.fd.as_raw_fd(), t, ctl);
        io.tls = sess.tls.take();
        let mut p = Vec::new();
        reply.encode(&mut p);
        io.queue(0, &p);
        let _ = io.flush(Some(Duration::from_millis(200))).await;
    }
    session::finish(&shard, t, sess).await;
}

/// The shard after `from` in ring order, skipping `asker`.
fn next_shard(from: usize, asker: usize, n: usize) -> usize {
    let mut s = (from + 1) % n;
    if s == asker {
        s = (s + 1) % n;
    }
    s
}

/// The users a client may log in as in `users`, by name, as a shard keeps them.
fn login_map(users: &crate::users::Users) -> HashMap<Vec<u8>, Rc<User>> {
    users
        .logins()
        .map(|u| {
            (
                u.name.as_bytes().to_vec(),
                Rc::new(User {
                    index: u.id,
                    id: u.id,
                    name: u.name.clone().into(),
                    credential: u.credential.clone(),
                    pool_mode: u.pool_mode,
                    require_tls: u.require_tls,
                    reads: u.reads,
                    consistency: u.consistency,
                }),
            )
        })
        .collect()
}

/// A checkout on `shard` queued for pool `pool`: ask the other shards, one after another, to
/// lend a slot (cross-core traffic is messages only; the global bound never moves).
fn request_slot(shared: &Shared, shard: usize, pool: usize) {
    let Some(mailboxes) = shared.mailboxes.get() else {
        return;
    };
    let n = mailboxes.len();
    if n < 2 {
        return;
    }
    debug!(
        shard,
        pool, "queue backed up: asking another shard to lend a slot"
    );
    mailboxes[next_shard(shard, shard, n)].post(ShardMsg::Lend {
        pool,
        to: shard,
        hops: n - 1,
        retry: false,
    });
}

/// Runs shard `id` on the current (executor) thread until it has shut down.
pub async fn run(
    shared: Arc<Shared>,
    id: usize,
    core: Option<core_affinity::CoreId>,
    ready: std::sync::mpsc::Sender<Result<(usize, poller::Mailbox<ShardMsg>), String>>,
) {
    let addr: std::net::SocketAddr = match shared.config.listen.parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(format!("listen: {e}")));
            return;
        }
    };
    let shard = match Shard::new(shared.clone(), id, core) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id}: {e}")));
            return;
        }
    };
    // upgrade: a successor takes over its predecessor's listener and id counter.
    if let Some(last) = crate::upgrade::inherited_next_id(id) {
        shard.next_id.set(last);
    }
    let listener = match crate::upgrade::inherited_listener(id) {
        Some(l) => l,
        None => match net::reuseport_listener(addr, shared.config.listen_backlog) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("listen on {addr}: {e}")));
                return;
            }
        },
    };
    if let Err(e) = shard.poller.add(listener.as_raw_fd(), LISTENER, READABLE) {
        let _ = ready.send(Err(format!("watch listener: {e}")));
        return;
    }
    *shard.listener.borrow_mut() = Some(listener);
    shard.set_db_users(&shared.db_users_initial);
    let _ = ready.send(Ok((id, shard.poller.mailbox())));
    info!(shard = id, %addr, "shard listening");
    glommio::spawn_local(shard.clone().janitor()).detach();
    glommio::spawn_local(budget::tick(shard.clone())).detach();
    if id == 0 {
        glommio::spawn_local(probe::run(shard.clone())).detach();
    }
    shard.clone().dispatch().await;
    info!(shard = id, "shard stopped");
}
