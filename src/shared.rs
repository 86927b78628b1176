//! What every shard shares, built once at start from the validated configuration and what the
//! backends told us: read-only, `Send + Sync`, behind an `Arc`. Per-shard state derives its own
//! `Rc` copies from it, so nothing mutable crosses cores except typed messages.

use crate::auth::guard::LoginGuard;
use crate::auth::{Credential, Decoys};
use crate::bootstrap::ServerInfo;
use crate::config::{Config, PoolMode};
use crate::shard::poller::Mailbox;
use crate::shard::ShardMsg;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: String,
    pub credential: Credential,
    pub backend_user: String,
    pub backend_password: String,
    pub pool_mode: PoolMode,
    pub max_connections: usize,
    pub require_tls: bool,
    /// Where this user's reads go, and what they must have seen (`[routing]`, or the user's own).
    pub reads: crate::config::Reads,
    pub consistency: crate::config::Consistency,
}

pub struct Shared {
    /// The configuration the process started with (what needs a restart is read here).
    pub config: Config,
    /// The configuration as reloaded: what can change live is read here (shards keep a copy per
    /// generation: see `Shard::cfg`).
    live: std::sync::RwLock<Arc<Config>>,
    live_gen: std::sync::atomic::AtomicU64,
    pub users: Vec<UserSpec>,
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
    /// TLS towards clients, when enabled (built once at start).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Client connections open in this process (admission control).
    pub clients: AtomicUsize,
    /// Authenticated connections per user in this process.
    pub user_clients: Vec<AtomicUsize>,
    /// The pool account of users loaded from the database (`[auth_from_backend]`).
    pub db_account: Option<u32>,
    /// Users loaded from the database at start, with their ids (later loads come by message).
    pub db_users_initial: Vec<(u32, crate::bootstrap::DbUser)>,
    /// Pinned sessions per pool (see [`Shared::pool_index`]) in this process: the pin budget is
    /// a process-wide count, while connection slots are per shard and move by messages. Grows
    /// as backends are added.
    pinned: std::sync::Mutex<Vec<Arc<AtomicUsize>>>,
    /// Failed logins per address and the secret keying unknown users' answers: shared by every
    /// shard, and by every worker process of the instance (see [`crate::auth::guard`]).
    pub guard: LoginGuard,
    /// With worker processes: the instance's one view of backend health (worker 0 probes and
    /// publishes, the others follow; see [`crate::backend::board`]).
    pub board: Option<crate::backend::board::Board>,
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
        let users = config
            .users
            .iter()
            .map(|u| {
                Ok(UserSpec {
                    name: u.name.clone(),
                    credential: Credential::parse(&u.password, u.auth_plugin.as_deref())?,
                    backend_user: u.backend_user.clone(),
                    backend_password: u.backend_password.clone(),
                    pool_mode: u.pool_mode.unwrap_or(config.pool.mode),
                    max_connections: u.max_connections,
                    require_tls: u.require_tls,
                    reads: u.reads.unwrap_or(config.routing.reads),
                    consistency: u.consistency.unwrap_or(config.routing.consistency),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut users = users;
        // Users loaded from the database share one pool account, listed last under a name no
        // client can log in with.
        let db_account = config.auth_from_backend.as_ref().map(|a| {
            users.push(UserSpec {
                name: String::new(),
                credential: Credential::parse("*0000000000000000000000000000000000000000", None)
                    .expect("valid placeholder hash"),
                backend_user: a.backend_user.clone(),
                backend_password: a.backend_password.clone(),
                pool_mode: a.pool_mode.unwrap_or(config.pool.mode),
                max_connections: 0,
                require_tls: false,
                reads: config.routing.reads,
                consistency: config.routing.consistency,
            });
            (users.len() - 1) as u32
        });
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
        let decoys = Decoys::new(
            users
                .iter()
                .filter(|u| !u.name.is_empty())
                .map(|u| &u.credential),
            db_account.is_some(),
        );
        let guard = LoginGuard::private().map_err(|e| format!("login guard memory: {e}"))?;
        let user_clients = users.iter().map(|_| AtomicUsize::new(0)).collect();
        let pinned = std::sync::Mutex::new(Vec::new());
        Ok(Shared {
            live: std::sync::RwLock::new(Arc::new(config.clone())),
            live_gen: std::sync::atomic::AtomicU64::new(0),
            config,
            users,
            backends,
            server,
            shards,
            worker,
            workers,
            supervisor,
            mailboxes: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            tls,
            clients: AtomicUsize::new(0),
            user_clients,
            db_account,
            db_users_initial: Vec::new(),
            pinned,
            guard,
            board: None,
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

    /// Publishes a reloaded configuration.
    pub fn set_live(&self, c: Config) {
        *self.live.write().expect("live config") = Arc::new(c);
        self.live_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Where the pool of (`backend`, `user`) sits in every shard's list of pools: by backend id,
    /// then user (backends are only ever appended, so an index never changes).
    pub fn pool_index(&self, user: u32, backend: u16) -> usize {
        usize::from(backend) * self.users.len() + user as usize
    }

    /// The process-wide pinned-session counter of pool `index`.
    pub fn pin_counter(&self, index: usize) -> Arc<AtomicUsize> {
        let mut v = self.pinned.lock().expect("pin counters");
        while v.len() <= index {
            v.push(Arc::new(AtomicUsize::new(0)));
        }
        v[index].clone()
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

    /// Counts a login of `user`; at the user's limit, nothing is counted and the limit is
    /// returned as the error.
    pub fn admit_user(&self, user: u32) -> Result<(), usize> {
        let limit = self.users[user as usize].max_connections;
        let n = &self.user_clients[user as usize];
        if limit == 0 {
            n.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            (c < limit).then_some(c + 1)
        })
        .map(drop)
        .map_err(|_| limit)
    }

    pub fn leave_user(&self, user: u32) {
        let _ = self.user_clients[user as usize].fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |c| c.checked_sub(1),
        );
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
