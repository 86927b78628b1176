//! A shard: one glommio executor pinned to one core, with its own SO_REUSEPORT listener, its
//! session table, its slice of every pool and its buffers. Nothing in here is `Send`; other
//! threads reach a shard only through its [`Mailbox`](poller::Mailbox).
//!
//! # Map
//!
//! One idea per file; [`Shard`] (below) is the state they share, each field listed under the
//! module that owns it.
//!
//! - [`dispatch`]: [`run`] (start a shard) and the loop turning poller events and mailbox
//!   messages into calls to the modules below.
//! - [`msg`]: [`ShardMsg`], every message another thread may send a shard; [`reply`]:
//!   [`Reply1`], the one-shot answer some of them carry.
//! - [`poller`]: readiness for parked sockets (epoll outside glommio's ring), the mailbox, the
//!   watchdog. [`table`]: the session table (parked records, active control blocks, tokens).
//! - [`admission`]: the accept loop and who gets in (failed-login block, client and descriptor
//!   limits, ERR before the greeting). [`ids`]: connection ids.
//! - [`sessions`]: the runtime's side of a session's life (start, park, wake, remove, the
//!   linger count).
//! - [`directory`]: the users a client may log in as, and the caching_sha2 fast-path cache.
//!   [`schemas`]: a login's schema check (cached, single flight).
//! - [`pools`]: this shard's view of the backends and its pools. [`route`]: the router's
//!   inputs. [`rebalance`]: moves for balance. [`lend`]: slot lending between shards.
//!   [`budget`]: the shard's side of the host budget (worker processes). [`probe`]: health
//!   probes (shard 0). [`follow`]: replicas' positions followed for causal reads.
//! - [`kill`]: KILL [QUERY]. [`pause`]: PAUSE / RESUME. [`shutdown`]: draining.
//! - [`janitor`]: the once-a-second sweep (pools, idle clients, soft holds, stored functions).
//! - [`stats`]: the counters and the metrics snapshot. [`clients`]: SHOW CLIENTS.
//!
//! # A session's life
//!
//! 1. **accept**: the listener is readable ([`dispatch`]); [`admission`] accepts, counts and
//!    admits or refuses the client.
//! 2. **handshake**: [`sessions`] gives it an id ([`ids`]) and a slot in the [`table`] (an
//!    active control block), and spawns its task: `frontend::handshake::accept`, which asks
//!    the [`directory`] for the user, [`schemas`] for the schema, and `Shard::initial_settings`.
//! 3. **serve**: `frontend::session::serve` runs commands: checkouts through [`route`] and
//!    [`pools`], the [`pause`] gate, [`kill`], counters in [`stats`]. Between commands it
//!    lingers a while ([`Shard::linger`]) so a busy client pays no park.
//! 4. **park**: a quiet client's session is handed back ([`Shard::park`]): a compact record in
//!    the table, its socket re-armed in the [`poller`]; the task ends.
//! 5. **wake**: readiness on that socket ([`dispatch`] → `Shard::on_client_event` in
//!    [`sessions`]) unparks it into a new task running `serve` (back to 3).
//! 6. **finish**: `frontend::session::finish` returns its backend and calls
//!    [`Shard::remove_session`]. A parked session may also be ended by the runtime: the
//!    [`janitor`] (idle timeout, overdue drain), [`shutdown`], a KILL ([`kill`]).
//!
//! # What `frontend/` still reaches in `shard/`, and why
//!
//! The runtime drives sessions; a session task holds an `Rc<Shard>` only as its handle on its
//! core's resources and for the calls of its life above. Specifically:
//! - services: pools and routing (`pool`, `route`, `route_reads`, `backend`, `reads_only`,
//!   `leaving`, `drain_overdue`, `rebalance`), the live configuration (`cfg`), the interners
//!   and fresh settings, `stats`, `clock`, the directory and sha2 cache, `check_schema`,
//!   `kill`: a session may use only its own shard's, and these are them;
//! - its life: `park`, `remove_session` (through `session::finish`), `linger`,
//!   `is_draining`, `is_paused` with [`pause`]'s gate, `uncount_client` (a refused login);
//! - [`table::ActiveCtl`] (and `Token`, `KillKind`): the control block the runtime and the
//!   running task share (readiness and KILL reach the task through it; SHOW CLIENTS and
//!   PAUSE read it);
//! - `frontend::client::ClientIo` keeps the shard for its buffer pool and byte counters, and
//!   uses [`poller`]'s interest bits.
//!
//! No session code touches the table, the poller or the listener itself: parking, waking and
//! removing are the runtime's (an upgrade's `upgrade::shard_side`, which moves parked
//! sessions between processes, is the one other module that does).

mod admission;
mod budget;
mod clients;
mod directory;
mod dispatch;
pub(crate) mod follow;
mod ids;
mod janitor;
pub mod kill;
mod lend;
mod msg;
pub mod pause;
pub mod poller;
mod pools;
mod probe;
pub mod rebalance;
mod reply;
mod route;
mod schemas;
mod sessions;
mod shutdown;
mod stats;
pub mod table;

use crate::backend::pool::Pool;
use crate::buf::BufPool;
use crate::frontend::session::{Session, User};
use crate::net;
use crate::session::state::{FreshCharset, Interner, Settings};
use crate::shared::{IdLayout, Shared};
pub use dispatch::run;
pub use kill::KILL_CONNECTIONS;
pub use msg::ShardMsg;
use poller::Poller;
pub use reply::Reply1;
pub use stats::{
    ShardStats, FALLBACK_BEHIND, FALLBACK_GLOBAL, FALLBACK_NO_REPLICA, FALLBACK_REASONS,
    FALLBACK_REPLICA_ERROR, MOVE_LEAVING, MOVE_REASONS, MOVE_REBALANCE,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use table::Table;

/// Token of the shard's listening socket in its poller.
pub(crate) const LISTENER: u64 = u64::MAX - 1;

/// One shard's state. Fields are grouped by the module that owns them (see the map above);
/// the `pub(crate)` ones are what session tasks and an upgrade's hand-over read.
pub struct Shard {
    // Identity and the process.
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    /// The shard's clock origin (session idle times are seconds since then).
    epoch: Instant,

    // The runtime: `poller`, `table`, `dispatch`, `sessions`.
    pub(crate) poller: Poller<ShardMsg>,
    pub(crate) table: RefCell<Table<Session>>,
    /// Sessions kept hot between commands now (`sessions`: see [`Shard::linger`]).
    lingering: Cell<u32>,

    // `admission`. The listener is pub(crate) for an upgrade's hand-over (`upgrade::shard_side`).
    pub(crate) listener: RefCell<Option<OwnedFd>>,
    /// A descriptor held in reserve so that a client can still be accepted (and refused with
    /// ERR 1040) when the process has run out: closed, the client accepted and answered, then
    /// reopened.
    spare_fd: RefCell<Option<OwnedFd>>,
    /// When the shard last logged running out of descriptors.
    fd_warned: Cell<Option<Instant>>,

    // `ids`. The counter is pub(crate) for an upgrade's hand-over (the successor continues it).
    ids: IdLayout,
    pub(crate) next_id: Cell<u32>,

    // What every session uses: buffers, interned settings and SQL, counters.
    pub(crate) bufs: BufPool,
    pub(crate) interner: Interner<Settings>,
    /// Interned SQL texts of prepared statements.
    pub(crate) sql: Interner<[u8]>,
    /// A fresh backend connection's settings (interned, empty).
    pub(crate) fresh: Rc<Settings>,
    pub(crate) fresh_charset: FreshCharset,
    /// The server's default session trackers, and all of them (what a client that changed none
    /// follows, and what a backend running the client's own reports), shared by every command.
    pub(crate) default_trackers: Rc<crate::session::trackers::Trackers>,
    pub(crate) all_trackers: Rc<crate::session::trackers::Trackers>,
    /// `stats`.
    pub(crate) stats: ShardStats,

    // The live configuration (`Shard::cfg`, below).
    /// The live configuration as this shard last saw it, and its generation.
    /// This shard's own copy (an `Rc`: reading it touches no cache line another core writes).
    live: RefCell<Rc<crate::config::Config>>,
    live_seen: Cell<u64>,

    // `directory`.
    /// The users a client may log in as, by name (rebuilt when a reload changed them), and the
    /// snapshot they came from.
    users: RefCell<HashMap<Vec<u8>, Rc<User>>>,
    users_snap: RefCell<Arc<crate::users::Users>>,
    /// Users loaded from the database (looked up after the configured ones).
    db_users: RefCell<HashMap<Vec<u8>, Rc<User>>>,
    /// caching_sha2_password fast-path hashes learned from full authentications (users whose
    /// configured credential is a `$A$…` crypt hash).
    sha2_cache: RefCell<HashMap<u32, [u8; 32]>>,

    // `schemas`.
    /// (account, schema) pairs verified, and when.
    schemas: RefCell<HashMap<schemas::SchemaKey, Instant>>,
    /// Schema checks under way: logins for the same (user, schema) wait for the one running
    /// instead of each taking a backend (a reconnect storm of one application is one check).
    schema_checks: RefCell<HashMap<schemas::SchemaKey, Rc<schemas::Flight>>>,

    // `pools`.
    /// Every pool of this shard, by account id then backend id (a row per account, made when
    /// the shard first sees the account, with a pool for every backend; a backend added later
    /// gets a pool in every row). Messages name a pool by [`Shared::pool_index`].
    pools: RefCell<Vec<Vec<Rc<Pool>>>>,
    /// The backends as this shard last saw the registry, and the registry's generation then.
    backends: RefCell<Vec<Arc<crate::backend::registry::Backend>>>,
    backends_seen: Cell<u64>,

    // `route`.
    /// The router's scratch lists (reused: ranking allocates nothing).
    route_cands: RefCell<Vec<crate::backend::router::Candidate>>,
    route_out: RefCell<Vec<u16>>,
    /// The round-robin turn among equally good backends.
    next_backend: Cell<usize>,

    // `rebalance`.
    /// Moves for balance made this second: (shard clock second, moves) (see [`rebalance`]).
    rebalance_budget: Cell<(u32, u32)>,
    /// Moves off leaving backends made this second (see [`rebalance`]).
    leaving_budget: Cell<(u32, u32)>,

    // `kill`.
    /// The shard's own backend connections for KILL QUERY.
    kill_lines: kill::KillLines,

    // `follow`.
    /// The replicas' positions followed while causal reads are served (see [`follow`]).
    follow: follow::Follow,

    // `pause`.
    /// PAUSE is in effect: commands wait at the gate (see [`pause`]).
    paused: Cell<bool>,

    // `shutdown`.
    draining: Cell<bool>,
    drain_deadline: Cell<Option<Instant>>,
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
        let users = directory::login_map(&users_snap);
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
            leaving_budget: Cell::new((0, 0)),
            draining: Cell::new(false),
            lingering: Cell::new(0),
            paused: Cell::new(false),
            drain_deadline: Cell::new(None),
            schemas: RefCell::new(HashMap::new()),
            schema_checks: RefCell::new(HashMap::new()),
            sha2_cache: RefCell::new(HashMap::new()),
            epoch: Instant::now(),
            kill_lines: kill::KillLines::default(),
            follow: follow::Follow::default(),
            spare_fd: RefCell::new(Some(net::spare_fd()?)),
            fd_warned: Cell::new(None),
            shared,
        })
    }

    /// Seconds since the shard started (a compact timestamp for parked sessions).
    pub(crate) fn clock(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Is the shard shutting down (see [`shutdown`])?
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// The live configuration: every setting a reload may change is read through this (one
    /// atomic load; the copy is refreshed when a reload published a new one).
    pub(crate) fn cfg(&self) -> Rc<crate::config::Config> {
        let g = self.shared.live_generation();
        if self.live_seen.get() != g {
            self.live_seen.set(g);
            *self.live.borrow_mut() = Rc::new((*self.shared.live()).clone());
            self.resize_pools();
            self.refresh_users();
        }
        self.live.borrow().clone()
    }

    /// The settings a client has right after logging in with `collation` and `schema`.
    /// `caps`: the client's capabilities (an interactive client's `wait_timeout` starts at the
    /// server's `interactive_timeout`, as the server does at login).
    pub(crate) fn initial_settings(
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
}
