//! What every shard shares, built once at start from the validated configuration and what the
//! backends told us: `Send + Sync`, behind an `Arc`. Per-shard state derives its own `Rc` copies
//! from it, so nothing mutable crosses cores except typed messages. What a reload may replace
//! (the live configuration, the users, the TLS configuration for new handshakes) sits behind a
//! lock taken only to copy an `Arc` out, under one generation shards compare on their hot path.

use crate::auth::guard::LoginGuard;
use crate::auth::Decoys;
use crate::bootstrap::ServerInfo;
use crate::config::Config;
use crate::shard::poller::Mailbox;
use crate::shard::ShardMsg;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

pub use crate::users::UserSpec;

pub struct Shared {
    /// The configuration the process started with (what needs a restart is read here).
    pub config: Config,
    /// The configuration as reloaded: what can change live is read here (shards keep a copy per
    /// generation: see `Shard::cfg`).
    live: std::sync::RwLock<Arc<Config>>,
    live_gen: std::sync::atomic::AtomicU64,
    /// The users as reloaded (published with the live configuration, under its generation):
    /// every account by stable id (see [`crate::users`]).
    users: std::sync::RwLock<Arc<crate::users::Users>>,
    /// Every backend, by stable id, with the process's one view of its health.
    pub backends: crate::backend::registry::Registry,
    pub server: ServerInfo,
    pub shards: usize,
    /// This process's index among the worker processes (0 with a single process).
    pub worker: u32,
    pub workers: u32,
    /// The supervisor's pid when this process is one of several workers (names admin sockets).
    pub supervisor: Option<u32>,
    /// Every shard's mailbox, indexed by shard id (set once all shards started).
    pub mailboxes: OnceLock<Vec<Mailbox<ShardMsg>>>,
    pub shutting_down: AtomicBool,
    /// TLS towards clients, when enabled (built at start; a reload reads the certificate and
    /// key files again and replaces it: new handshakes take the new one, sessions keep theirs).
    tls: std::sync::RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// Client connections open in this process (admission control).
    pub clients: AtomicUsize,
    /// The pool account of users loaded from the database (`[auth_from_backend]`).
    pub db_account: Option<u32>,
    /// Users loaded from the database at start, with their ids (later loads come by message).
    pub db_users_initial: Vec<(u32, crate::bootstrap::DbUser)>,
    /// Pinned sessions per pool (see [`Shared::pool_index`]) in this process: the pin budget is
    /// a process-wide count, while connection slots are per shard and move by messages. Grows
    /// as backends and users are added. With worker processes the host budget counts pins
    /// instead, host-wide (see [`crate::backend::budget::pins`]); this count serves a pool it
    /// has no entry for.
    pinned: std::sync::Mutex<std::collections::HashMap<usize, Arc<AtomicUsize>>>,
    /// Failed logins per address and the secret keying unknown users' answers: shared by every
    /// shard, and by every worker process of the instance (see [`crate::auth::guard`]).
    pub guard: LoginGuard,
    /// With worker processes: the instance's one view of backend health (worker 0 probes and
    /// publishes, the others follow; see [`crate::backend::board`]).
    pub board: Option<crate::backend::board::Board>,
    /// With worker processes: `pool.size` as one budget for the whole instance (see
    /// [`crate::backend::budget`]); `None` in a single process.
    pub budget: Option<Arc<crate::backend::budget::HostBudget>>,
    /// The exchanges unknown user names get (see [`crate::auth::Decoys`]).
    pub decoys: Decoys,
    /// Clients this process admits before its file descriptors would run short (see
    /// [`crate::server::fd_budget`]); `usize::MAX` until measured at start.
    pub fd_client_limit: AtomicUsize,
}

impl Shared {
    pub fn new(
        config: Config,
        server: ServerInfo,
        worker: u32,
        workers: u32,
        supervisor: Option<u32>,
    ) -> Result<Shared, String> {
        let users = crate::users::Users::build(&config, None)?;
        let db_account = users.db_account;
        let backends = crate::backend::registry::Registry::default();
        for b in &config.backends {
            add_backend(
                &backends,
                b,
                crate::backend::health::Health::Up,
                &config.dns,
            )?;
        }
        let tls = if config.tls.enabled {
            let (c, generated) = crate::tls::server_config(&config.tls)?;
            if generated {
                tracing::info!(
                    "TLS: no certificate configured; using a self-signed one made at start"
                );
            }
            Some(c)
        } else {
            None
        };

        let shards = config.shard_count();
        if !config.pool.shard_weights.is_empty() && config.pool.shard_weights.len() != shards {
            return Err(format!(
                "pool.shard_weights has {} entries but there are {shards} shards",
                config.pool.shard_weights.len()
            ));
        }
        let decoys = Decoys::new(users.logins().map(|u| &u.credential), db_account.is_some());
        let guard = LoginGuard::private().map_err(|e| format!("login guard memory: {e}"))?;
        let pinned = std::sync::Mutex::new(std::collections::HashMap::new());
        Ok(Shared {
            live: std::sync::RwLock::new(Arc::new(config.clone())),
            live_gen: std::sync::atomic::AtomicU64::new(0),
            config,
            users: std::sync::RwLock::new(Arc::new(users)),
            backends,
            server,
            shards,
            worker,
            workers,
            supervisor,
            mailboxes: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            tls: std::sync::RwLock::new(tls),
            clients: AtomicUsize::new(0),
            db_account,
            db_users_initial: Vec::new(),
            pinned,
            guard,
            board: None,
            budget: None,
            decoys,
            fd_client_limit: AtomicUsize::new(usize::MAX),
        })
    }

    /// The live configuration (reloadable settings).
    pub fn live(&self) -> Arc<Config> {
        self.live.read().expect("live config").clone()
    }

    /// Its generation (bumped by every reload that changed it).
    pub fn live_generation(&self) -> u64 {
        self.live_gen.load(Ordering::Acquire)
    }

    /// Publishes a reloaded configuration and the users built from it (one generation: a
    /// shard that sees the new configuration sees the new users).
    pub fn set_live(&self, c: Config, users: Option<crate::users::Users>) {
        if let Some(u) = users {
            *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(u);
        }
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
        self.live_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The users as they are now (every account by stable id).
    pub fn users(&self) -> Arc<crate::users::Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// TLS towards clients now (what a new handshake uses).
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the TLS configuration new handshakes use.
    pub fn set_tls(&self, c: Arc<rustls::ServerConfig>) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    /// Where the pool of (`backend`, account `user`) sits in every shard's list of pools, and
    /// what names it in messages between shards: from the user's stable id and the backend's
    /// (neither is ever reused, so an index never changes or passes to another pool).
    pub fn pool_index(&self, user: u32, backend: u16) -> usize {
        user as usize * crate::backend::registry::MAX_BACKENDS + usize::from(backend)
    }

    /// The (account, backend) of a pool index.
    pub fn pool_of(&self, index: usize) -> (u32, u16) {
        let m = crate::backend::registry::MAX_BACKENDS;
        ((index / m) as u32, (index % m) as u16)
    }

    /// The process-wide pinned-session counter of pool `index`.
    pub fn pin_counter(&self, index: usize) -> Arc<AtomicUsize> {
        let mut v = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        v.entry(index)
            .or_insert_with(|| Arc::new(AtomicUsize::new(0)))
            .clone()
    }

    /// This shard's share of a pool of `total` connections: first this process's share (an even
    /// split between worker processes), then split between its shards evenly or by
    /// `pool.shard_weights` (largest remainders to the lowest shards).
    pub fn pool_share(&self, total: usize, shard: usize) -> usize {
        let mine = self.worker_share(total);
        let weights: Vec<usize> = if self.config.pool.shard_weights.is_empty() {
            vec![1; self.shards]
        } else {
            self.config.pool.shard_weights.clone()
        };
        split(mine, &weights).get(shard).copied().unwrap_or(0)
    }

    /// This process's share of a budget of `total` split evenly between worker processes.
    pub fn worker_share(&self, total: usize) -> usize {
        let w = self.workers as usize;
        total / w + usize::from((self.worker as usize) < total % w)
    }

    /// Counts a login of account `user`; at the user's limit, nothing is counted and the limit
    /// is returned as the error.
    pub fn admit_user(&self, user: u32) -> Result<(), usize> {
        self.users().admit(user)
    }

    pub fn leave_user(&self, user: u32) {
        self.users().leave(user)
    }

    /// How many clients this process may have open: `max_client_connections` (0 = no limit)
    /// and what its file descriptors allow, whichever is lower.
    pub fn client_limit(&self) -> usize {
        let fds = self.fd_client_limit.load(Ordering::Relaxed);
        match self.config.max_client_connections {
            0 => fds,
            m => m.min(fds),
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Splits `total` in proportion to `weights`, handing the remainder out by largest fractional
/// part (ties to the lowest index); the parts always add up to `total`.
pub fn split(total: usize, weights: &[usize]) -> Vec<usize> {
    let sum: usize = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts: Vec<usize> = weights.iter().map(|w| total * w / sum).collect();
    let mut rest = total - parts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((total * weights[i]) % sum));
    for i in order {
        if rest == 0 {
            break;
        }
        parts[i] += 1;
        rest -= 1;
    }
    parts
}

/// Connection ids encode where a session lives: worker process, shard, then a per-shard counter.
#[derive(Debug, Clone, Copy)]
pub struct IdLayout {
    pub worker_bits: u32,
    pub shard_bits: u32,
}

impl IdLayout {
    pub fn new(workers: u32, shards: usize) -> IdLayout {
        let bits = |n: u64| {
            if n <= 1 {
                0
            } else {
                64 - (n - 1).leading_zeros()
            }
        };
        IdLayout {
            worker_bits: bits(u64::from(workers)),
            shard_bits: bits(shards as u64),
        }
    }

    /// Bits of the per-shard counter. Ids stay below 2^31: several drivers (Connector/J among
    /// them) read the handshake's thread id as a signed 32-bit integer.
    pub fn local_bits(&self) -> u32 {
        31 - self.worker_bits - self.shard_bits
    }

    pub fn compose(&self, worker: u32, shard: u32, local: u32) -> u32 {
        let lb = u64::from(self.local_bits());
        let local = u64::from(local) & ((1u64 << lb) - 1);
        ((u64::from(worker) << (lb + u64::from(self.shard_bits)))
            | (u64::from(shard) << lb)
            | local) as u32
    }

    /// (worker, shard) of a connection id.
    pub fn locate(&self, id: u32) -> (u32, u32) {
        let lb = u64::from(self.local_bits());
        let id = u64::from(id);
        let shard = (id >> lb) & ((1u64 << self.shard_bits) - 1);
        let worker = id >> (lb + u64::from(self.shard_bits));
        (worker as u32, shard as u32)
    }
}

/// Lists backend `b` (from the configuration, or added while running) in `reg`.
pub fn add_backend(
    reg: &crate::backend::registry::Registry,
    b: &crate::config::BackendConfig,
    health: crate::backend::health::Health,
    dns: &crate::config::DnsConfig,
) -> Result<u16, String> {
    reg.add(&b.address, |id| {
        let resolved = crate::backend::dns::resolve(&b.address, dns)
            .map_err(|e| format!("backends: {e}"))?
            .0
            .remove(0);
        let tls = match &b.tls {
            Some(t) => Some((
                crate::tls::backend_config(t)?,
                crate::tls::backend_server_name(b),
            )),
            None => None,
        };
        Ok(crate::backend::registry::Backend::new(
            id,
            b.address.clone(),
            resolved,
            b.role,
            b.weight,
            tls,
            health,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_add_up_and_follow_weights() {
        assert_eq!(split(64, &[1, 1]), vec![32, 32]);
        assert_eq!(split(5, &[1, 1]), vec![3, 2]);
        assert_eq!(split(64, &[3, 1]), vec![48, 16]);
        assert_eq!(split(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(split(7, &[0, 2, 1]), vec![0, 5, 2]);
        for total in 0..50 {
            assert_eq!(split(total, &[5, 3, 1, 1]).iter().sum::<usize>(), total);
        }
    }

    #[test]
    fn ids_round_trip_their_location() {
        for (workers, shards) in [(1, 1), (1, 2), (52, 2), (64, 64), (3, 5)] {
            let l = IdLayout::new(workers, shards);
            for w in [0, workers - 1] {
                for s in [0, shards as u32 - 1] {
                    let id = l.compose(w, s, 12345);
                    assert_eq!(l.locate(id), (w, s), "{workers}x{shards}");
                    assert_ne!(id, 0);
                }
            }
        }
        assert_eq!(IdLayout::new(1, 1).local_bits(), 31);
        assert_eq!(IdLayout::new(52, 2).local_bits(), 24);
        let l = IdLayout::new(64, 64);
        assert!(l.compose(63, 63, u32::MAX) < 1 << 31);
    }
}
