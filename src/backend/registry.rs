//! The process's backends: stable ids, each backend's role and weight, and one view of its health
//! and the operator's intent, shared by every shard (atomics: the prober and the admin API write,
//! checkouts read).
//!
//! Ids are indexes into the list and are never reused: a removed backend stays listed as
//! `Removed` (its pools, keyed by id, empty out as their connections come back). Adding a backend
//! bumps the generation; each shard notices at its next checkout and makes its pools for it.

use super::conn::BackendAddr;
use super::health::Health;
use super::router::{Admin, Role};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Backends one process may list over its life (ids are not reused).
pub const MAX_BACKENDS: usize = 64;

pub type BackendTlsConfig = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// One backend as every shard sees it.
pub struct Backend {
    pub id: u16,
    /// As configured (`host:port` or `unix:/path`).
    pub address: String,
    /// Where the address points now (a name may move: see `backend::dns`).
    resolved: std::sync::Mutex<BackendAddr>,
    /// Bumped each time `resolved` changes (the probe starts over with the new address).
    addr_gen: AtomicU64,
    /// The connections' generation: bumped when `resolved` changes and by the console's
    /// RECONNECT. A connection remembers the one it was opened at; pools close one of an older
    /// generation instead of keeping it idle (see `Pool::stale`).
    conn_gen: AtomicU64,
    /// A connect failed: resolve the name again at once.
    pub evict: std::sync::atomic::AtomicBool,
    pub role: Role,
    pub weight: AtomicU32,
    pub tls: Option<BackendTlsConfig>,
    health: AtomicU8,
    admin: AtomicU8,
    /// `read_only` as last probed: 0 not known, 1 writable, 2 read-only.
    writable: AtomicU8,
    /// Failures live traffic saw since the prober last looked (see [`Backend::note_failure`]).
    passive: AtomicU32,
    passive_refused: std::sync::atomic::AtomicBool,
    /// When a drain gives up on the sessions still holding this backend (milliseconds of
    /// [`monotonic_ms`]; 0: no deadline).
    drain_deadline_ms: AtomicU64,
    /// Replication as probed (see [`Repl`]).
    repl: std::sync::Mutex<Repl>,
    /// May this backend answer routed reads now: a read-only replica, replicating, within
    /// `routing.max_replication_lag_ms` of every writable backend (set by the probe).
    read_ok: std::sync::atomic::AtomicBool,
    /// How far behind the writable backends this replica was at the last probe, in
    /// milliseconds (0 for a writable backend; `u32::MAX` not known): reads go to the freshest
    /// replica first, which is the one most likely to have applied a session's last write.
    lag_ms: AtomicU32,
    /// Why the prober keeps this backend out although it answers (its catalog differs from the
    /// instance's: see `backend::compat`); shown beside the `incompatible` state.
    refusal: std::sync::Mutex<Option<Arc<str>>>,
    /// Why the last probe failed (None after a probe that got through): told to a client whose
    /// command found no backend, and shown by `SHOW BACKENDS`, so a certificate or password
    /// problem is named where it is seen, not only in the log.
    last_error: std::sync::Mutex<Option<Arc<str>>>,
    /// Health changes (for metrics).
    pub transitions: AtomicU64,
    pub probes: AtomicU64,
    pub probe_failures: AtomicU64,
}

impl Backend {
    pub fn new(
        id: u16,
        address: String,
        resolved: BackendAddr,
        role: Role,
        weight: u32,
        tls: Option<BackendTlsConfig>,
        health: Health,
    ) -> Backend {
        Backend {
            id,
            address,
            resolved: std::sync::Mutex::new(resolved),
            addr_gen: AtomicU64::new(0),
            conn_gen: AtomicU64::new(0),
            evict: std::sync::atomic::AtomicBool::new(false),
            role,
            weight: AtomicU32::new(weight),
            tls,
            health: AtomicU8::new(health as u8),
            admin: AtomicU8::new(Admin::Active as u8),
            writable: AtomicU8::new(0),
            passive: AtomicU32::new(0),
            passive_refused: std::sync::atomic::AtomicBool::new(false),
            drain_deadline_ms: AtomicU64::new(0),
            repl: std::sync::Mutex::new(Repl::default()),
            read_ok: std::sync::atomic::AtomicBool::new(false),
            lag_ms: AtomicU32::new(u32::MAX),
            refusal: std::sync::Mutex::new(None),
            last_error: std::sync::Mutex::new(None),
            transitions: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
        }
    }

    /// Where to connect now, and the connections' generation (see `conn_gen`).
    pub fn addr(&self) -> (BackendAddr, u64) {
        let a = self.resolved.lock().expect("backend address");
        (a.clone(), self.conn_gen.load(Ordering::Acquire))
    }

    /// The generation a connection must have been opened at to be kept for reuse.
    pub fn conn_gen(&self) -> u64 {
        self.conn_gen.load(Ordering::Acquire)
    }

    /// RECONNECT: every connection open now is retired, idle ones at the next look (the
    /// shards close them at once when asked: `Pool::retire_idle`), busy ones when they come
    /// back; new ones are opened as needed.
    pub fn retire_connections(&self) {
        self.conn_gen.fetch_add(1, Ordering::AcqRel);
    }

    pub fn addr_gen(&self) -> u64 {
        self.addr_gen.load(Ordering::Acquire)
    }

    /// The name now resolves to `to` (not among the old answers): new connections go there,
    /// pooled ones to the old address are retired as they come back.
    pub fn move_to(&self, to: BackendAddr) {
        let mut a = self.resolved.lock().expect("backend address");
        if *a != to {
            *a = to;
            self.addr_gen.fetch_add(1, Ordering::AcqRel);
            self.conn_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub fn set_health(&self, h: Health) {
        if self.health.swap(h as u8, Ordering::Relaxed) != h as u8 {
            self.transitions.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin(&self, a: Admin) {
        self.admin.store(a as u8, Ordering::Relaxed);
    }

    /// Drains the backend: no new checkouts; sessions that still hold it after `timeout` (when
    /// given) are closed with an error naming what kept them (see `Shard::expire_idle`).
    pub fn drain(&self, timeout: Option<std::time::Duration>) {
        let deadline = timeout.map_or(0, |t| monotonic_ms() + t.as_millis() as u64);
        self.drain_deadline_ms.store(deadline, Ordering::Relaxed);
        self.set_admin(Admin::Draining);
    }

    /// Is the backend draining and its deadline passed?
    /// Is this backend draining with a deadline at most `ms` away (or past)?
    pub fn drain_due_within(&self, ms: u64) -> bool {
        let d = self.drain_deadline_ms.load(Ordering::Relaxed);
        self.admin() == Admin::Draining && d != 0 && monotonic_ms().saturating_add(ms) >= d
    }

    pub fn drain_overdue(&self) -> bool {
        let d = self.drain_deadline_ms.load(Ordering::Relaxed);
        self.admin() == Admin::Draining && d != 0 && monotonic_ms() >= d
    }

    pub fn writable(&self) -> Option<bool> {
        match self.writable.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    pub fn set_writable(&self, w: bool) {
        self.writable
            .store(if w { 1 } else { 2 }, Ordering::Relaxed);
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Live traffic failed to reach this backend: `refused` (nothing listens) is certain. The
    /// prober takes it as evidence at its next turn; a refusal also takes the backend out of the
    /// router's candidates at once, so the other shards stop trying it before the prober looks.
    pub fn note_failure(&self, refused: bool) {
        self.passive.fetch_add(1, Ordering::Relaxed);
        self.evict.store(true, Ordering::Relaxed);
        if refused {
            self.passive_refused.store(true, Ordering::Relaxed);
            self.set_health(Health::Down);
        } else if self.health() == Health::Up {
            self.set_health(Health::Suspect);
        }
    }

    /// Takes the passive failures counted since the last call, and whether one was a refusal.
    pub fn take_passive(&self) -> (u32, bool) {
        (
            self.passive.swap(0, Ordering::Relaxed),
            self.passive_refused.swap(false, Ordering::Relaxed),
        )
    }

    pub fn snapshot(&self) -> crate::metrics::BackendSnapshot {
        crate::metrics::BackendSnapshot {
            id: self.id,
            address: self.address.clone(),
            role: self.role.name().into(),
            weight: self.weight(),
            state: self.state_name().into(),
            health: self.health().name().into(),
            writable: self.writable(),
            probes: self.probes.load(Ordering::Relaxed),
            probe_failures: self.probe_failures.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            reason: self
                .refusal()
                .or_else(|| {
                    (self.health() != Health::Up)
                        .then(|| self.last_error())
                        .flatten()
                })
                .map(|r| r.to_string()),
        }
    }

    /// Why the backend is refused although it answers (None: it is not).
    pub fn refusal(&self) -> Option<Arc<str>> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_refusal(&self, r: Option<Arc<str>>) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// Why the last probe failed, if it did.
    pub fn last_error(&self) -> Option<Arc<str>> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_last_error(&self, e: Option<Arc<str>>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// What `SHOW BACKENDS`-like views print: the operator's intent when it is not active, else
    /// the health.
    pub fn state_name(&self) -> &'static str {
        match self.admin() {
            Admin::Active => self.health().name(),
            Admin::Draining => "draining",
            Admin::Maintenance => "maintenance",
            Admin::Removed => "removed",
        }
    }
}

/// Milliseconds of CLOCK_MONOTONIC: the same clock in every process of the host (deadlines and
/// heartbeats shared between worker processes).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// What the probe saw of a backend's replication.
#[derive(Debug, Default)]
pub struct Repl {
    /// `@@gtid_current_pos` at the last probe.
    pub pos: Option<super::gtid::Pos>,
    /// A writable backend's positions over the last seconds (oldest first): a replica's lag is
    /// how far back the newest of these it has applied lies.
    pub history: std::collections::VecDeque<(std::time::Instant, super::gtid::Pos)>,
}

/// Positions a writable backend keeps for lag measurement.
const POS_HISTORY: usize = 256;

impl Backend {
    /// Records the backend's position (and, when writable, its history).
    pub fn set_pos(&self, pos: super::gtid::Pos, writable: bool, now: std::time::Instant) {
        let mut r = self.repl.lock().expect("repl state");
        if writable {
            if r.history.len() >= POS_HISTORY {
                r.history.pop_front();
            }
            r.history.push_back((now, pos.clone()));
        } else {
            r.history.clear();
        }
        r.pos = Some(pos);
    }

    /// This (read-only) backend answered a `MASTER_GTID_WAIT(reached)` with 0: it has applied
    /// `reached`, which its known position now covers until the next probe reads a newer one.
    /// A causal read for a write it covers then needs no wait (a session reading many times
    /// after one write waits once, and so do sessions after writes older than the newest
    /// awaited).
    pub fn note_applied(&self, reached: &super::gtid::Pos) {
        let mut r = self.repl.lock().expect("repl state");
        if !r.history.is_empty() {
            // A writable backend: its own commits are its position (the probe's).
            return;
        }
        match &mut r.pos {
            Some(p) => p.merge(reached),
            None => r.pos = Some(reached.clone()),
        }
    }

    /// The position at the last probe.
    pub fn pos(&self) -> Option<super::gtid::Pos> {
        self.repl.lock().expect("repl state").pos.clone()
    }

    /// The newest position this (writable) backend had at least `age` ago.
    pub fn pos_as_of(
        &self,
        age: std::time::Duration,
        now: std::time::Instant,
    ) -> Option<super::gtid::Pos> {
        let r = self.repl.lock().expect("repl state");
        r.history
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= age)
            .map(|(_, p)| p.clone())
    }

    /// How long ago this (writable) backend was last at a position `pos` covers (zero when
    /// `pos` covers its newest known one); `None` when it covers none of those kept.
    pub fn applied_age(
        &self,
        pos: &super::gtid::Pos,
        now: std::time::Instant,
    ) -> Option<std::time::Duration> {
        let r = self.repl.lock().expect("repl state");
        let mut newer_uncovered = false;
        for (t, p) in r.history.iter().rev() {
            if pos.covers(p) {
                // Behind since the first position after this one it has not applied.
                return Some(if newer_uncovered {
                    now.saturating_duration_since(*t)
                } else {
                    std::time::Duration::ZERO
                });
            }
            newer_uncovered = true;
        }
        None
    }

    pub fn lag_ms(&self) -> u32 {
        self.lag_ms.load(Ordering::Relaxed)
    }

    pub fn set_lag_ms(&self, ms: u32) {
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    pub fn read_ok(&self) -> bool {
        self.read_ok.load(Ordering::Relaxed)
    }

    pub fn set_read_ok(&self, ok: bool) {
        self.read_ok.store(ok, Ordering::Relaxed);
    }
}

/// Every backend of the process, by id.
#[derive(Default)]
pub struct Registry {
    list: RwLock<Vec<Arc<Backend>>>,
    generation: AtomicU64,
}

impl Registry {
    /// A snapshot of the list (a shard keeps its own copy between generations).
    pub fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.list.read().expect("registry lock").clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, id: u16) -> Option<Arc<Backend>> {
        self.list
            .read()
            .expect("registry lock")
            .get(usize::from(id))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.list.read().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a backend; `make` builds it from its new id. Refuses an address already listed (and
    /// not removed) and a full list.
    pub fn add(
        &self,
        address: &str,
        make: impl FnOnce(u16) -> Result<Backend, String>,
    ) -> Result<u16, String> {
        let mut list = self.list.write().expect("registry lock");
        if list
            .iter()
            .any(|b| b.address == address && b.admin() != Admin::Removed)
        {
            return Err(format!("backend {address} is already listed"));
        }
        if list.len() >= MAX_BACKENDS {
            return Err(format!(
                "a process lists at most {MAX_BACKENDS} backends over its life (ids are not reused); restart to start over"
            ));
        }
        let id = list.len() as u16;
        list.push(Arc::new(make(id)?));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(id)
    }

    /// The backend listed at `address` (not removed), or with id `key` when it is a number.
    pub fn find(&self, key: &str) -> Option<Arc<Backend>> {
        let list = self.list.read().expect("registry lock");
        if let Ok(id) = key.parse::<usize>() {
            return list.get(id).cloned();
        }
        list.iter()
            .find(|b| b.address == key && b.admin() != Admin::Removed)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gtid::Pos;
    use std::time::{Duration, Instant};

    #[test]
    fn a_replica_is_as_far_behind_as_the_newest_primary_position_it_has_applied() {
        let primary = Backend::new(
            0,
            "p".into(),
            BackendAddr::Tcp("127.0.0.1:1".parse().unwrap()),
            Role::Primary,
            1,
            None,
            Health::Up,
        );
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let pos = |s: &str| Pos::parse(s).unwrap();
        primary.set_pos(pos("0-1-10"), true, at(0));
        primary.set_pos(pos("0-1-20"), true, at(250));
        primary.set_pos(pos("0-1-30"), true, at(500));
        let now = at(600);
        let cases = [
            ("0-1-30", Some(0)),
            ("0-1-35", Some(0)),
            ("0-1-25", Some(350)),
            ("0-1-10", Some(600)),
            ("0-1-5", None),
        ];
        for (replica, want) in cases {
            assert_eq!(
                primary.applied_age(&pos(replica), now),
                want.map(Duration::from_millis),
                "{replica}"
            );
        }
    }
}
