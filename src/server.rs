//! Process start-up and shutdown: learn the backends' identity, start one pinned glommio
//! executor per shard, wait for signals, drain.

use crate::bootstrap::{self, ServerInfo};
use crate::config::{Config, LogFormat};
use crate::shard::{self, ShardMsg};
use crate::shared::Shared;
use glommio::{LocalExecutorBuilder, Placement};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// Descriptors kept for KILL's short-lived backend connections, per shard (a shard runs at most
/// this many at once; see `shard::KILL_CONNECTIONS`).
const KILL_FDS_PER_SHARD: usize = crate::shard::KILL_CONNECTIONS;
/// Descriptors kept for the worker admin link: requests served (one thread each) and sent.
const ADMIN_FDS: usize = 8;
/// Descriptors kept for the metrics endpoint (it serves one scrape at a time).
const METRICS_FDS: usize = 2;
/// Descriptors kept for the database-user refresher's connection.
const DB_USERS_FDS: usize = 2;
/// Descriptors kept for everything not counted above (log rotation, a probe, glommio growing).
const FD_MARGIN: usize = 16;

/// io_uring buffer memory per executor: sluice does no file I/O, and memlock may be small.
const IO_MEMORY: usize = 256 << 10;
/// glommio's ring depth; 4096 is the largest useful value (the kernel caps its hash at 256
/// buckets, see ARCHITECTURE).
const RING_DEPTH: usize = 4096;

pub fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// A backend's address for sluice's start-up queries: a name resolved as the backends will be
/// (through `dns.nameserver` when configured), as it is when that fails or there is nothing to
/// resolve.
fn bootstrap_address(cfg: &Config, address: &str) -> String {
    if crate::backend::dns::name_of(address).is_none() || cfg.dns.nameserver.is_empty() {
        return address.to_string();
    }
    match crate::backend::dns::resolve(address, &cfg.dns) {
        Ok((addrs, _)) => addrs[0].to_string(),
        Err(_) => address.to_string(),
    }
}

/// Asks each backend in turn who it is; falls back to defaults when none answers.
pub fn learn_server(cfg: &Config) -> ServerInfo {
    let timeout = Duration::from_millis(cfg.pool.connect_timeout_ms);
    // Every account sluice may log in with: the configured users' and the database users' pool.
    let mut accounts: Vec<(&str, &str)> = cfg
        .users
        .iter()
        .map(|u| (u.backend_user.as_str(), u.backend_password.as_str()))
        .collect();
    if let Some(a) = &cfg.auth_from_backend {
        accounts.push((&a.backend_user, &a.backend_password));
    }
    for b in &cfg.backends {
        for (backend_user, backend_password) in &accounts {
            let tls = match crate::tls::blocking_tls(b) {
                Ok(t) => t,
                Err(e) => {
                    warn!(backend = %b.address, error = %e, "backend TLS settings");
                    continue;
                }
            };
            match bootstrap::probe(
                &bootstrap_address(cfg, &b.address),
                backend_user,
                backend_password,
                timeout,
                &tls,
            ) {
                Ok(mut info) => {
                    info!(
                        backend = %b.address,
                        version = %String::from_utf8_lossy(&info.version),
                        collations = info.collations.len(),
                        "learned server identity"
                    );
                    intersect_variables(cfg, &mut info, &accounts, timeout);
                    return info;
                }
                Err(e) => {
                    warn!(backend = %b.address, user = %backend_user, error = %e, "backend probe failed")
                }
            }
        }
    }
    warn!("no backend answered at start; presenting a default server identity until restart");
    ServerInfo::fallback()
}

/// Every backend must accept what sluice replays: a variable counts as session-settable only if
/// each backend that answers says so.
fn intersect_variables(
    cfg: &Config,
    info: &mut ServerInfo,
    accounts: &[(&str, &str)],
    timeout: Duration,
) {
    for b in cfg.backends.iter().filter(|b| b.address != info.source) {
        let Ok(tls) = crate::tls::blocking_tls(b) else {
            continue;
        };
        for (user, password) in accounts {
            if let Ok(other) = bootstrap::probe(
                &bootstrap_address(cfg, &b.address),
                user,
                password,
                timeout,
                &tls,
            ) {
                info.vars.intersect(&other.vars);
                break;
            }
        }
    }
}

/// Stable ids for users loaded from the database (KILL permissions compare ids, and sessions on
/// other shards or workers must agree on them across reloads).
pub struct DbUserIds {
    ids: std::collections::HashMap<String, u32>,
    next: u32,
}

impl DbUserIds {
    pub fn new(first: u32) -> DbUserIds {
        DbUserIds {
            ids: Default::default(),
            next: first,
        }
    }

    pub fn assign(&mut self, users: Vec<bootstrap::DbUser>) -> Vec<(u32, bootstrap::DbUser)> {
        users
            .into_iter()
            .map(|u| {
                let id = *self.ids.entry(u.name.clone()).or_insert_with(|| {
                    self.next += 1;
                    self.next
                });
                (id, u)
            })
            .collect()
    }
}

/// Reads the users from the first backend that answers.
fn load_db_users(cfg: &Config) -> Result<Vec<bootstrap::DbUser>, String> {
    let a = cfg
        .auth_from_backend
        .as_ref()
        .ok_or("no [auth_from_backend]")?;
    let timeout = Duration::from_millis(cfg.pool.connect_timeout_ms);
    let mut last = String::from("no backends");
    for b in &cfg.backends {
        let tls = crate::tls::blocking_tls(b)?;
        match bootstrap::load_db_users(
            &bootstrap_address(cfg, &b.address),
            &a.user,
            &a.password,
            timeout,
            &tls,
        ) {
            Ok(u) => return Ok(u),
            Err(e) => last = format!("{}: {e}", b.address),
        }
    }
    Err(last)
}

/// Reloads the database users every `refresh_ms` and sends each shard the new list when it
/// changed.
fn spawn_db_user_refresher(
    shared: Arc<Shared>,
    mut ids: DbUserIds,
    mailboxes: Vec<crate::shard::poller::Mailbox<ShardMsg>>,
) {
    let every = Duration::from_millis(
        shared
            .config
            .auth_from_backend
            .as_ref()
            .map(|a| a.refresh_ms)
            .unwrap_or(60_000),
    );
    let _ = std::thread::Builder::new().name("sluice-users".into()).spawn(move || {
        let mut current: Vec<(u32, bootstrap::DbUser)> = shared.db_users_initial.clone();
        loop {
            let until = std::time::Instant::now() + every;
            while std::time::Instant::now() < until {
                if shared.is_shutting_down() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            match load_db_users(&shared.config) {
                Ok(users) => {
                    let next = ids.assign(users);
                    if next != current {
                        info!(users = next.len(), "users from the backend changed");
                        let list = Arc::new(next.clone());
                        for mb in &mailboxes {
                            mb.post(ShardMsg::DbUsers(list.clone()));
                        }
                        current = next;
                    }
                }
                Err(e) => warn!(error = %e, "reloading users from the backend failed; keeping the previous list"),
            }
        }
    });
}

/// This process is stopping (a SIGTERM or SIGINT was taken, or the console's SHUTDOWN raised
/// one): a SHUTDOWN WAIT_FOR_CLIENTS still waiting must not raise another, which would count as
/// the "second signal" that exits at once.
pub static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        // An upgrade (see crate::upgrade).
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of the blocked signals.
pub fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Raises the soft limit on open files to the hard limit (what the process is allowed anyway);
/// returns the limit in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// Descriptors this process has open now.
pub fn open_fds() -> usize {
    // The directory's own descriptor is among the entries while it is read.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// How this process's file descriptors are shared out (see [`fd_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// RLIMIT_NOFILE.
    pub limit: usize,
    /// Open at the end of start-up: listeners, pollers, rings, the shards' spare descriptors,
    /// the admin and metrics listeners, standard streams.
    pub open: usize,
    /// Kept for what sluice must always be able to open later.
    pub reserve: usize,
    /// Clients admitted before new ones are refused with ERR 1040.
    pub clients: usize,
}

/// What sluice must always be able to open, beyond what it holds at the end of start-up: this
/// process's share of every pool (pool size × backends × accounts), KILL's short-lived backend
/// connections, the admin link, the metrics endpoint, the database-user refresher, one
/// descriptor per shard for accepting a client only to refuse it, and a margin. Clients get the
/// rest: at that point new ones are answered with ERR 1040 rather than left in the backlog, and
/// backends, KILL and metrics still work.
pub fn fd_budget(shared: &Shared, limit: usize, open: usize) -> FdBudget {
    let cfg = &shared.config;
    let pool =
        shared.worker_share(cfg.pool.size) * shared.backends.len() * shared.users().current_count();
    let mut reserve = pool + shared.shards * (KILL_FDS_PER_SHARD + 1) + FD_MARGIN;
    if shared.supervisor.is_some() {
        reserve += ADMIN_FDS;
    } else if !cfg.metrics_listen.is_empty() {
        reserve += METRICS_FDS;
    }
    if cfg.auth_from_backend.is_some() {
        reserve += DB_USERS_FDS;
    }
    FdBudget {
        limit,
        open,
        reserve,
        clients: limit.saturating_sub(open + reserve),
    }
}

/// This process's clients and backends up, for systemd's `STATUS=` ([`crate::notify`]).
fn local_status(shared: &Shared) -> String {
    let backends: Vec<_> = shared
        .backends
        .snapshot()
        .iter()
        .map(|b| b.snapshot())
        .collect();
    let pairs: Vec<(&str, &str)> = backends
        .iter()
        .map(|b| (b.state.as_str(), b.health.as_str()))
        .collect();
    crate::notify::status_line(None, shared.clients.load(Ordering::Relaxed) as u64, &pairs)
}

/// Runs the proxy until SIGTERM/SIGINT. `worker`/`workers` place this process among the worker
/// processes sharing the listen address; `supervisor` is their supervisor's pid; `guard_fd` the
/// shared login region the supervisor made for its workers ([`crate::auth::guard`]); `board_fd`
/// its health board ([`crate::backend::board`]).
pub fn run(
    cfg: Config,
    worker: u32,
    workers: u32,
    supervisor: Option<u32>,
    guard_fd: Option<i32>,
    board_fd: Option<i32>,
) -> Result<(), String> {
    let nofile = raise_nofile();
    for u in &cfg.users {
        if !crate::auth::looks_like_hash(&u.password) {
            warn!(user = %u.name, "password configured in plaintext; use `sluice hash-password` in production");
        }
    }
    let server = learn_server(&cfg);
    let mut shared = Shared::new(cfg, server, worker, workers, supervisor)?;
    if let Some(fd) = guard_fd {
        shared.guard = crate::auth::guard::LoginGuard::attach(fd)?;
    }
    if let Some(fd) = board_fd {
        shared.board = Some(crate::backend::board::Board::attach(fd)?);
    }
    if supervisor.is_some() {
        shared.budget =
            crate::backend::budget::HostBudget::from_env(workers as usize, worker as usize)?
                .map(Arc::new);
    }
    let mut db_ids = DbUserIds::new(crate::users::DB_USER_IDS_FROM);
    if shared.config.auth_from_backend.is_some() {
        match load_db_users(&shared.config) {
            Ok(users) => {
                info!(users = users.len(), "loaded users from the backend");
                shared.db_users_initial = db_ids.assign(users);
            }
            Err(e) => {
                warn!(error = %e, "cannot load users from the backend yet; retrying every refresh")
            }
        }
    }
    // upgrade: a successor reads its predecessor's hello (listeners, id counters) first.
    crate::upgrade::successor_init(shared.workers, shared.shards)?;
    let shared = Arc::new(shared);
    let sigset = block_signals();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for id in 0..shared.shards {
        // Workers spread over the cores too: worker w's shard s goes to core (w·shards + s).
        let slot = worker as usize * shared.shards + id;
        let core = (!cores.is_empty()).then(|| cores[slot % cores.len()]);
        let placement = match core {
            Some(c) => Placement::Fixed(c.id),
            None => Placement::Unbound,
        };
        let shared = shared.clone();
        let tx = tx.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("sluice-shard-{id}"))
            .ring_depth(RING_DEPTH)
            .io_memory(IO_MEMORY)
            .spawn(move || async move { shard::run(shared, id, core, tx).await })
            .map_err(|e| format!("cannot start shard {id}: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    let mut mailboxes = Vec::with_capacity(shared.shards);
    for _ in 0..shared.shards {
        match rx.recv() {
            Ok(Ok(mb)) => mailboxes.push(mb),
            Ok(Err(e)) => {
                error!("{e}");
                return Err(e);
            }
            Err(_) => return Err("a shard exited during start-up".into()),
        }
    }
    mailboxes.sort_by_key(|(id, _)| *id);
    let mailboxes: Vec<_> = mailboxes.into_iter().map(|(_, mb)| mb).collect();
    let _ = shared.mailboxes.set(mailboxes.clone());
    if shared.config.auth_from_backend.is_some() {
        spawn_db_user_refresher(shared.clone(), db_ids, mailboxes.clone());
    }
    crate::backend::dns::spawn_refresher(shared.clone());
    // The SQL console: here without workers; the supervisor serves it for all of them.
    if supervisor.is_none() && !shared.config.admin.listen.is_empty() {
        crate::console::spawn(
            &shared.config.admin.listen,
            crate::console::users(&shared.config),
            crate::console::Target::Local(shared.clone()),
        )?;
    }
    // The admin socket: named after the supervisor with workers, after this process without.
    crate::admin::spawn(shared.clone(), supervisor.unwrap_or_else(std::process::id))
        .map_err(|e| format!("admin socket: {e}"))?;
    if supervisor.is_none() && !shared.config.metrics_listen.is_empty() {
        crate::metrics::spawn(
            crate::metrics::local_source(shared.clone()),
            &shared.config.metrics_listen,
        )
        .map_err(|e| format!("metrics_listen {}: {e}", shared.config.metrics_listen))?;
    }
    let budget = fd_budget(
        &shared,
        usize::try_from(nofile).unwrap_or(usize::MAX),
        open_fds(),
    );
    shared
        .fd_client_limit
        .store(budget.clients, Ordering::Relaxed);
    if budget.clients < 100 {
        warn!(
            limit = budget.limit,
            open = budget.open,
            reserve = budget.reserve,
            clients = budget.clients,
            "few file descriptors left for clients: raise the open-files limit (ulimit -n)"
        );
    }
    info!(
        fd_limit = budget.limit,
        fd_reserve = budget.reserve,
        clients_by_fd = budget.clients,
        "file descriptors shared out"
    );
    info!(
        listen = %shared.config.listen,
        shards = shared.shards,
        pool_mode = %shared.config.pool.mode,
        pool_size = shared.config.pool.size,
        "sluice ready"
    );
    // systemd (Type=notify): a worker's supervisor speaks for it; a successor speaks once its
    // predecessor handed over (which sends MAINPID= for it first).
    if crate::upgrade::is_successor() {
        let status_of = shared.clone();
        crate::upgrade::successor_ready(shared.clone(), mailboxes.clone(), move || {
            local_status(&status_of)
        });
        let status_of = shared.clone();
        crate::notify::spawn_status(move || local_status(&status_of));
    } else if supervisor.is_none() {
        crate::notify::ready(&local_status(&shared));
        let status_of = shared.clone();
        crate::notify::spawn_status(move || local_status(&status_of));
    }
    loop {
        match wait_signal(&sigset, Duration::from_millis(500)) {
            Some(libc::SIGHUP) => {
                // Logged by the reload itself.
                let _ = crate::notify::reloading(|| crate::reload::run(&shared));
            }
            Some(libc::SIGUSR2) => {
                info!("SIGUSR2: upgrading to the binary at this path");
                if let Err(e) = crate::upgrade::start(shared.clone()) {
                    warn!(error = %e, "upgrade not started");
                }
            }
            Some(sig) => {
                STOPPING.store(true, Ordering::Release);
                info!(
                    signal = sig,
                    "shutting down: no new clients; commands in flight may finish"
                );
                if supervisor.is_none() {
                    crate::notify::stopping(&format!(
                        "stopping: draining {} clients",
                        shared.clients.load(Ordering::Relaxed)
                    ));
                }
                break;
            }
            None => {}
        }
    }
    shared.shutting_down.store(true, Ordering::Release);
    for mb in &mailboxes {
        mb.post(ShardMsg::Shutdown);
    }
    let joiner = std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
        }
    });
    let limit = Duration::from_millis(shared.config.shutdown_timeout_ms) + Duration::from_secs(2);
    let started = std::time::Instant::now();
    while !joiner.is_finished() {
        if wait_signal(&sigset, Duration::from_millis(100)).is_some() {
            warn!("second signal: exiting now");
            std::process::exit(1);
        }
        if started.elapsed() > limit {
            warn!("shards did not stop in time; exiting");
            std::process::exit(1);
        }
    }
    info!("sluice stopped");
    Ok(())
}
