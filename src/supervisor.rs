//! `workers = N`: a supervisor process that starts N worker processes (this same binary, each
//! with its shards on the shared SO_REUSEPORT address, all sharing every pool's budget: see
//! [`crate::backend::budget`]), watches them,
//! restarts one that dies, forwards SIGTERM/SIGINT for a clean drain, and serves the metrics of
//! all of them.
//!
//! Before starting them, the supervisor makes the shared-memory region in which all workers count
//! failed logins and find the secret that keys unknown users' answers
//! ([`crate::auth::guard`]); each worker maps it from the descriptor it inherits.
//!
//! Several processes are how one host holds more clients than one process may have open files
//! (20,000 on the machine sluice was built on); on a host with a high fd limit, `workers = 1`
//! (no supervisor) does it all.

use crate::admin;
use crate::config::Config;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// A worker that dies this many times, each within `FLAP_WINDOW` of its start, is not restarted
/// again: the whole instance stops with an error.
const MAX_QUICK_DEATHS: u32 = 5;
const FLAP_WINDOW: Duration = Duration::from_secs(10);

struct Worker {
    child: Option<Child>,
    started: Instant,
    quick_deaths: u32,
    /// Predecessors handing their clients over to `child` after an upgrade: they stop on their
    /// own and are not restarted.
    retiring: Vec<Child>,
}

/// The shared-memory regions every worker maps, by the descriptors it inherits.
#[derive(Clone, Copy)]
struct Regions {
    /// Failed logins and the unknown-user secret ([`crate::auth::guard`]).
    guard: RawFd,
    /// Backend health ([`crate::backend::board`]).
    board: RawFd,
    /// The pool budget ([`crate::backend::budget`]).
    budget: RawFd,
    /// The pin budget's counts ([`crate::backend::budget::pins`]).
    pins: RawFd,
}

fn spawn_worker(
    args: &[String],
    i: usize,
    n: usize,
    me: u32,
    regions: Regions,
    upgrade_fd: Option<RawFd>,
) -> std::io::Result<Child> {
    let Regions {
        guard,
        board,
        budget,
        pins,
    } = regions;
    // The path this process started from: after a package replaced the file, /proc/self/exe
    // names it "(deleted)".
    let exe = match crate::upgrade::exe() {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    let mut cmd = Command::new(exe);
    if let Some(fd) = upgrade_fd {
        // An upgrade's successor of this worker (see crate::upgrade::supervise).
        crate::upgrade::as_successor(&mut cmd, fd);
    }
    cmd.args(args)
        .arg("--worker")
        .arg(format!("{i}/{n}/{me}"))
        .arg("--login-guard-fd")
        .arg(guard.to_string())
        .arg("--health-board-fd")
        .arg(board.to_string())
        .env(crate::backend::budget::FD_ENV, budget.to_string())
        .env(crate::backend::budget::pins::PIN_FD_ENV, pins.to_string())
        // Only the supervisor (systemd's main pid) notifies; it speaks for the workers.
        .env_remove(crate::notify::ENV)
        .spawn()
}

/// Runs the supervisor until every worker has stopped. `args` are this process's own command-line
/// arguments, passed on to each worker.
pub fn run(cfg: &Config, args: &[String]) -> Result<(), String> {
    let n = cfg.workers;
    let me = std::process::id();
    crate::server::raise_nofile();
    // The failed-login counts and the unknown-user secret every worker shares, made before the
    // first worker starts; its memfd stays open (and inheritable) here for restarted workers.
    let (_guard, guard_fd) = crate::auth::guard::LoginGuard::create_shared()
        .map_err(|e| format!("shared login region: {e}"))?;
    // The one view of backend health: worker 0 probes, the others follow.
    let (_board, board_fd) = crate::backend::board::Board::create_shared()
        .map_err(|e| format!("shared health board: {e}"))?;
    // `pool.size` and `pool.pin_budget` as budgets for all workers: the slots and pins each
    // holds (crate::backend::budget).
    let (budget_region, budget_fds) = crate::backend::budget::HostBudget::create_shared(n)
        .map_err(|e| format!("shared pool budget: {e}"))?;
    let regions = Regions {
        guard: guard_fd.as_raw_fd(),
        board: board_fd.as_raw_fd(),
        budget: budget_fds.slots.as_raw_fd(),
        pins: budget_fds.pins.as_raw_fd(),
    };
    let sigset = crate::server::block_signals();
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let child = spawn_worker(args, i, n, me, regions, None)
            .map_err(|e| format!("cannot start worker {i}: {e}"))?;
        workers.push(Worker {
            child: Some(child),
            started: Instant::now(),
            quick_deaths: 0,
            retiring: Vec::new(),
        });
    }
    info!(workers = n, listen = %cfg.listen, "supervisor started its workers");
    if !cfg.metrics_listen.is_empty() {
        let source: crate::metrics::Source = Box::new(move || {
            (0..n as u32)
                .filter_map(|w| admin::remote_stats(me, w).map(|s| (w, s)))
                .collect()
        });
        crate::metrics::spawn(source, &cfg.metrics_listen)
            .map_err(|e| format!("metrics_listen {}: {e}", cfg.metrics_listen))?;
    }
    if !cfg.admin.listen.is_empty() {
        crate::console::spawn(
            &cfg.admin.listen,
            crate::console::users(cfg),
            crate::console::Target::Workers {
                supervisor: me,
                workers: n as u32,
            },
        )?;
    }
    let mut stopping: Option<Instant> = None;
    // An upgrade of the workers under way: what its thread reports.
    let mut upgrade_events: Option<std::sync::mpsc::Receiver<crate::upgrade::WorkerEvent>> = None;
    let mut failure: Option<String> = None;
    // systemd hears READY=1 once every worker answers on its admin socket (see crate::notify).
    let mut ready = !crate::notify::enabled();
    let mut budget_swept = Instant::now();
    loop {
        if !ready && stopping.is_none() && workers_up(me, n) == n {
            ready = true;
            crate::notify::ready(&workers_status(me, n));
            crate::notify::spawn_status(move || workers_status(me, n));
        }
        if let Some(sig) = crate::server::wait_signal(&sigset, Duration::from_millis(200)) {
            if sig == libc::SIGUSR2 {
                // Upgrade the workers one at a time (see crate::upgrade::supervise).
                if upgrade_events.is_some() || stopping.is_some() {
                    warn!("SIGUSR2: an upgrade is under way or the instance is stopping; ignored");
                } else {
                    info!("SIGUSR2: upgrading the workers, one at a time");
                    let (tx, rx) = std::sync::mpsc::channel();
                    upgrade_events = Some(rx);
                    let args = args.to_vec();
                    let per_worker =
                        Duration::from_millis(cfg.shutdown_timeout_ms) + Duration::from_secs(15);
                    let _ = std::thread::Builder::new()
                        .name("sluice-upgrade".into())
                        .spawn(move || {
                            crate::upgrade::supervise(
                                me,
                                n,
                                per_worker,
                                |i, fd| spawn_worker(&args, i, n, me, regions, Some(fd)),
                                tx,
                            )
                        });
                }
            } else if sig == libc::SIGHUP {
                // Each worker reloads itself (each reads the file and logs what it did).
                crate::notify::reloading(|| {
                    let mut answers = Vec::with_capacity(n);
                    for w in 0..n as u32 {
                        match admin::request(me, w, "RELOAD") {
                            Ok(answer) => {
                                info!(worker = w, %answer, "SIGHUP: reload");
                                answers.push(format!("worker {w}: {answer}"));
                            }
                            Err(e) => {
                                warn!(worker = w, error = %e, "SIGHUP: worker did not answer");
                                answers.push(format!("worker {w}: did not answer: {e}"));
                            }
                        }
                    }
                    answers.join("; ")
                });
            } else if stopping.is_none() {
                crate::server::STOPPING.store(true, std::sync::atomic::Ordering::Release);
                info!(signal = sig, "supervisor: stopping workers");
                crate::notify::stopping("stopping: workers draining their clients");
                stopping = Some(Instant::now());
                signal_all(&workers, libc::SIGTERM);
            } else {
                warn!("second signal: killing workers");
                signal_all(&workers, libc::SIGKILL);
            }
        }
        if budget_swept.elapsed() >= Duration::from_secs(1) {
            // Leases of processes gone without this supervisor reaping them (crate::backend::budget).
            budget_swept = Instant::now();
            for (pid, freed) in budget_region.sweep_dead() {
                info!(
                    pid,
                    slots = freed.slots,
                    pins = freed.pins,
                    "pool budget: a gone process's lease is free"
                );
            }
        }
        // upgrade: a ready successor becomes the worker; its predecessor retires.
        while let Some(ev) = upgrade_events.as_ref().and_then(|rx| rx.try_recv().ok()) {
            match ev {
                crate::upgrade::WorkerEvent::Replaced { worker, child } => {
                    let w = &mut workers[worker];
                    if let Some(old) = w.child.replace(child) {
                        w.retiring.push(old);
                    }
                    w.started = Instant::now();
                    w.quick_deaths = 0;
                }
                crate::upgrade::WorkerEvent::Finished { upgraded, failure } => {
                    upgrade_events = None;
                    match failure {
                        None => info!(upgraded, "supervisor: upgrade done"),
                        Some(f) => warn!(upgraded, failure = %f, "supervisor: upgrade stopped"),
                    }
                }
            }
        }
        for (i, w) in workers.iter_mut().enumerate() {
            w.retiring.retain_mut(|c| match c.try_wait() {
                Ok(Some(status)) => {
                    info!(worker = i, pid = c.id(), %status, "supervisor: the upgraded worker's predecessor stopped");
                    // What it still held of the pool budget is free (its successor counts apart).
                    budget_region.release_pid(c.id());
                    false
                }
                _ => true,
            });
            let Some(child) = w.child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let pid = child.id();
            w.child = None;
            // Its sockets closed with it: the slots it held are free for the others, and so are
            // its clients' pins.
            let freed = budget_region.release_pid(pid);
            if freed.slots > 0 || freed.pins > 0 {
                info!(
                    worker = i,
                    pid,
                    slots = freed.slots,
                    pins = freed.pins,
                    "pool budget: a gone worker's slots and pins are free"
                );
            }
            if stopping.is_some() {
                continue;
            }
            w.quick_deaths = if w.started.elapsed() < FLAP_WINDOW {
                w.quick_deaths + 1
            } else {
                1
            };
            if w.quick_deaths >= MAX_QUICK_DEATHS {
                error!(worker = i, %status, "worker keeps dying at start; stopping the instance");
                failure = Some(format!(
                    "worker {i} died {} times in a row ({status})",
                    w.quick_deaths
                ));
                crate::notify::stopping(&format!("stopping: worker {i} keeps dying at start"));
                stopping = Some(Instant::now());
                break;
            }
            warn!(worker = i, %status, "worker exited; restarting it");
            std::thread::sleep(Duration::from_millis(100 * u64::from(w.quick_deaths)));
            match spawn_worker(args, i, n, me, regions, None) {
                Ok(c) => {
                    w.child = Some(c);
                    w.started = Instant::now();
                }
                Err(e) => error!(worker = i, error = %e, "cannot restart worker"),
            }
        }
        if let Some(since) = stopping {
            if failure.is_some() {
                signal_all(&workers, libc::SIGTERM);
            }
            if workers
                .iter()
                .all(|w| w.child.is_none() && w.retiring.is_empty())
            {
                break;
            }
            if since.elapsed()
                > Duration::from_millis(cfg.shutdown_timeout_ms) + Duration::from_secs(5)
            {
                warn!("workers did not stop in time; killing them");
                signal_all(&workers, libc::SIGKILL);
                for w in &mut workers {
                    if let Some(mut c) = w.child.take() {
                        let _ = c.wait();
                    }
                    for mut c in w.retiring.drain(..) {
                        let _ = c.wait();
                    }
                }
                break;
            }
        }
    }
    info!("supervisor stopped");
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// How many of the `n` workers answer on their admin socket.
fn workers_up(me: u32, n: usize) -> usize {
    (0..n as u32)
        .filter(|&w| matches!(admin::request(me, w, "PING").as_deref(), Ok("OK")))
        .count()
}

/// Workers up, their clients and the backends up (worker 0's view: health is one view per
/// host, see `crate::backend::board`), for systemd's `STATUS=`.
fn workers_status(me: u32, n: usize) -> String {
    let mut up = 0;
    let mut clients = 0;
    for w in 0..n as u32 {
        if let Some(snaps) = admin::remote_stats(me, w) {
            up += 1;
            clients += snaps.iter().map(|s| s.clients).sum::<u64>();
        }
    }
    let backends: Vec<crate::metrics::BackendSnapshot> = admin::request(me, 0, "BACKENDS")
        .ok()
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_default();
    let pairs: Vec<(&str, &str)> = backends
        .iter()
        .map(|b| (b.state.as_str(), b.health.as_str()))
        .collect();
    crate::notify::status_line(Some((up, n)), clients, &pairs)
}

fn signal_all(workers: &[Worker], sig: i32) {
    for w in workers {
        for c in w.child.iter().chain(&w.retiring) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }
}
