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

/// Asks each backend in turn who it is; falls back to defaults when none answers.
pub fn learn_server(cfg: &Config) -> ServerInfo {
    let timeout = Duration::from_millis(cfg.pool.connect_timeout_ms);
    for b in &cfg.backends {
        for u in &cfg.users {
            match bootstrap::probe(&b.address, &u.backend_user, &u.backend_password, timeout) {
                Ok(info) => {
                    info!(
                        backend = %b.address,
                        version = %String::from_utf8_lossy(&info.version),
                        collations = info.collations.len(),
                        "learned server identity"
                    );
                    return info;
                }
                Err(e) => {
                    warn!(backend = %b.address, user = %u.backend_user, error = %e, "backend probe failed")
                }
            }
        }
    }
    warn!("no backend answered at start; presenting a default server identity until restart");
    ServerInfo::fallback()
}

pub fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
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

/// Runs the proxy until SIGTERM/SIGINT. `worker`/`workers` place this process among the worker
/// processes sharing the listen address; `supervisor` is their supervisor's pid.
pub fn run(cfg: Config, worker: u32, workers: u32, supervisor: Option<u32>) -> Result<(), String> {
    for u in &cfg.users {
        if !crate::auth::looks_like_hash(&u.password) {
            warn!(user = %u.name, "password configured in plaintext; use `sluice hash-password` in production");
        }
    }
    let server = learn_server(&cfg);
    let shared = Arc::new(Shared::new(cfg, server, worker, workers, supervisor)?);
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
    if let Some(sup) = supervisor {
        crate::admin::spawn(shared.clone(), sup).map_err(|e| format!("admin socket: {e}"))?;
    } else if !shared.config.metrics_listen.is_empty() {
        crate::metrics::spawn(
            crate::metrics::local_source(shared.clone()),
            &shared.config.metrics_listen,
        )
        .map_err(|e| format!("metrics_listen {}: {e}", shared.config.metrics_listen))?;
    }
    info!(
        listen = %shared.config.listen,
        shards = shared.shards,
        pool_mode = %shared.config.pool.mode,
        pool_size = shared.config.pool.size,
        "sluice ready"
    );
    loop {
        match wait_signal(&sigset, Duration::from_millis(500)) {
            Some(libc::SIGHUP) => {
                info!("SIGHUP: configuration reload is not supported; restart to apply changes")
            }
            Some(sig) => {
                info!(
                    signal = sig,
                    "shutting down: no new clients; commands in flight may finish"
                );
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
