//! One upstream budget per host: with `workers = N`, `pool.size` bounds the connections of a
//! pool (backend, user) summed over every worker process, not each worker's. A worker that has
//! all the load can hold the whole pool while the others are idle; when another worker needs a
//! slot, the one holding more than its fair share gives it back (see [`policy`]).
//!
//! **Where the count lives.** A region of [`crate::shm`] the supervisor makes before it starts the
//! workers (each maps it from the descriptor it inherits, named by [`FD_ENV`]): a header, then a
//! fixed table of [`ENTRIES`] pools found by open addressing on the pool's index (a word per
//! entry holds index + 1, claimed with compare-and-swap; indexes are never reused). Each entry
//! holds the budget (`pool.size` as the workers' live configuration says: a reload writes it),
//! then per worker the slots it holds and how many of its checkouts are queued for a slot (a
//! queued checkout counts itself in and out: see `Pool::wait`). Atomics only: no lock a dead
//! worker could hold.
//!
//! **Taking without a lock.** A worker adds one to its own count, then sums every worker's: over
//! the budget, it takes the one back and has nothing. All of these are sequentially consistent,
//! so of two workers racing for the last slot the later one sees both increments (at worst both
//! back off and retry 20 ms later; neither overshoots). The sum is never above the budget for
//! longer than that back-off, and no slot is held that a worker's count does not show.
//!
//! **A worker that dies** holds nothing afterwards: its counts are its own words, which the
//! supervisor zeroes when it reaps it and before it starts the replacement (the kernel closed its
//! sockets; MariaDB sees the connections go as soon as it next reads them, at once for idle ones).
//!
//! **Shards and processes compose in two levels.** A worker's count is the sum of its shards'
//! limits for the pool (each shard's [`Pool`](super::pool::Pool) bound, lent slots included):
//! - a shard's pool starts by taking its share of the worker's fair share from the host (as much
//!   as is free: a worker started late, or restarted, may get less or nothing);
//! - a checkout that would queue first takes a free slot from the host (no message, no wait),
//!   and only then asks its sibling shards to lend one, as before; slots lent between shards of
//!   one worker move its shards' limits, not its count;
//! - a shard gives slots back to the host itself, from a tick every [`TICK`]: its own headroom
//!   or idle connections, or its next released connection, as the policy says. A connection is
//!   closed (COM_QUIT, and the server's close awaited) before its slot is given, so the server
//!   never sees more than the budget.
//!
//! A single process (`workers = 1`) has no region and keeps the static per-shard split with
//! lending. When the table is full (more than [`ENTRIES`] pools in the instance) a new pool
//! falls back to the static split: 1/N of `pool.size` per worker, never lent between workers.
//!
//! Turned down: a descriptor on the worker's command line as the other regions have. The
//! variable keeps `server::run` and the worker's arguments (which the upgrade work changes)
//! untouched.

pub mod policy;

use crate::shm::Region;
use policy::View;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable through which a worker learns its budget region's descriptor.
pub const FD_ENV: &str = "SLUICE_POOL_BUDGET_FD";
/// Pools the table holds.
pub const ENTRIES: usize = 1024;
/// How often a shard looks at what other workers wait for.
pub const TICK: Duration = Duration::from_millis(10);

const MAGIC: u64 = u64::from_le_bytes(*b"sluiceB1");
const HEADER_WORDS: usize = 8;

fn entry_words(workers: usize) -> usize {
    2 + 2 * workers
}

/// Bytes of the region for `workers` workers.
pub fn size(workers: usize) -> usize {
    (HEADER_WORDS + ENTRIES * entry_words(workers)) * 8
}

/// A pool's entry in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(usize);

pub struct HostBudget {
    region: Region,
    workers: usize,
}

impl HostBudget {
    fn init(region: Region, workers: usize) -> HostBudget {
        region.word(1).store(workers as u64, Ordering::Relaxed);
        region.word(0).store(MAGIC, Ordering::Release);
        HostBudget { region, workers }
    }

    /// The region the supervisor makes for its `workers` workers (its memfd is inherited).
    pub fn create_shared(workers: usize) -> std::io::Result<(HostBudget, OwnedFd)> {
        let (region, fd) = Region::create_shared(c"sluice-pool-budget", size(workers))?;
        Ok((HostBudget::init(region, workers), fd))
    }

    /// A region for this process alone (tests).
    pub fn private(workers: usize) -> std::io::Result<HostBudget> {
        Ok(HostBudget::init(Region::private(size(workers))?, workers))
    }

    /// Maps the supervisor's region from the descriptor this worker inherited.
    pub fn attach(fd: RawFd, workers: usize) -> Result<HostBudget, String> {
        let region = Region::attach(fd, size(workers), "pool budget")?;
        if region.word(0).load(Ordering::Acquire) != MAGIC
            || region.word(1).load(Ordering::Relaxed) != workers as u64
        {
            return Err("pool budget fd: not a sluice pool budget for this many workers".into());
        }
        Ok(HostBudget { region, workers })
    }

    /// The region named by [`FD_ENV`], if the supervisor passed one.
    pub fn from_env(workers: usize) -> Result<Option<HostBudget>, String> {
        match std::env::var(FD_ENV) {
            Ok(v) => {
                let fd: RawFd = v
                    .parse()
                    .map_err(|_| format!("{FD_ENV}={v}: not a descriptor"))?;
                HostBudget::attach(fd, workers).map(Some)
            }
            Err(_) => Ok(None),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    fn words(&self, e: Entry) -> &[AtomicU64] {
        let n = entry_words(self.workers);
        self.region.words(HEADER_WORDS + e.0 * n, n)
    }

    fn held_word(&self, e: Entry, worker: usize) -> &AtomicU64 {
        &self.words(e)[2 + worker]
    }

    fn waiting_word(&self, e: Entry, worker: usize) -> &AtomicU64 {
        &self.words(e)[2 + self.workers + worker]
    }

    /// The entry of pool `index` (claimed when new); `None` when the table is full.
    pub fn entry(&self, index: usize) -> Option<Entry> {
        let key = index as u64 + 1;
        // Fibonacci hashing: indexes are user * MAX_BACKENDS + backend, far from uniform.
        let start = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % ENTRIES;
        for i in 0..ENTRIES {
            let e = Entry((start + i) % ENTRIES);
            match self.words(e)[0].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(e),
                Err(k) if k == key => return Some(e),
                Err(_) => {}
            }
        }
        None
    }

    /// Writes the budget of `e` (`pool.size`, at the pool's creation and after a reload).
    pub fn set_limit(&self, e: Entry, limit: usize) {
        self.words(e)[1].store(limit as u64, Ordering::SeqCst);
    }

    pub fn limit(&self, e: Entry) -> usize {
        self.words(e)[1].load(Ordering::SeqCst) as usize
    }

    /// Slots of `e` held by `worker`.
    pub fn held(&self, e: Entry, worker: usize) -> usize {
        self.held_word(e, worker).load(Ordering::SeqCst) as usize
    }

    /// Slots of `e` held by every worker.
    pub fn total(&self, e: Entry) -> usize {
        (0..self.workers).map(|w| self.held(e, w)).sum()
    }

    /// What `worker` sees of `e`.
    pub fn view(&self, e: Entry, worker: usize) -> View {
        let limit = self.limit(e);
        let waiting_elsewhere = (0..self.workers)
            .filter(|&w| w != worker)
            .map(|w| self.waiting_word(e, w).load(Ordering::SeqCst) as usize)
            .sum();
        View {
            limit,
            total: self.total(e),
            held: self.held(e, worker),
            fair: policy::fair_share(limit, self.workers, worker),
            waiting_elsewhere,
        }
    }

    /// Takes one slot of `e` for `worker` if the policy allows and one is free.
    pub fn take(&self, e: Entry, worker: usize) -> bool {
        if worker >= self.workers || !policy::may_take(&self.view(e, worker)) {
            return false;
        }
        let mine = self.held_word(e, worker);
        mine.fetch_add(1, Ordering::SeqCst);
        if self.total(e) > self.limit(e) {
            mine.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// `worker` gives one slot of `e` back (its connection, if it had one, is closed).
    pub fn give(&self, e: Entry, worker: usize) {
        if worker < self.workers {
            let _ =
                self.held_word(e, worker)
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1));
        }
    }

    /// A checkout of `e` in `worker` starts (`true`) or stops (`false`) waiting for a slot.
    pub fn waiting(&self, e: Entry, worker: usize, start: bool) {
        if worker < self.workers {
            let w = self.waiting_word(e, worker);
            if start {
                w.fetch_add(1, Ordering::SeqCst);
            } else {
                let _ = w.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
        }
    }

    /// The supervisor reaped `worker`: whatever it held is free again. Returns the slots freed.
    pub fn reset_worker(&self, worker: usize) -> usize {
        if worker >= self.workers {
            return 0;
        }
        let mut freed = 0;
        for i in 0..ENTRIES {
            let e = Entry(i);
            if self.words(e)[0].load(Ordering::Acquire) == 0 {
                continue;
            }
            freed += self.held_word(e, worker).swap(0, Ordering::SeqCst) as usize;
            self.waiting_word(e, worker).store(0, Ordering::SeqCst);
        }
        freed
    }
}

/// A shard's pool linked to its entry in the host budget.
pub struct Link {
    pub budget: std::sync::Arc<HostBudget>,
    pub entry: Entry,
    pub worker: usize,
}

impl Link {
    /// The link of pool `index` for `worker`, with the budget set to `limit`; `None` when the
    /// table is full.
    pub fn new(
        budget: std::sync::Arc<HostBudget>,
        index: usize,
        worker: usize,
        limit: usize,
    ) -> Option<Link> {
        let entry = budget.entry(index)?;
        budget.set_limit(entry, limit);
        Some(Link {
            budget,
            entry,
            worker,
        })
    }

    pub fn take(&self) -> bool {
        self.budget.take(self.entry, self.worker)
    }

    pub fn give(&self) {
        self.budget.give(self.entry, self.worker)
    }

    /// A checkout of this pool starts (`true`) or stops waiting for a slot.
    pub fn waiting(&self, start: bool) {
        self.budget.waiting(self.entry, self.worker, start)
    }

    pub fn view(&self) -> View {
        self.budget.view(self.entry, self.worker)
    }

    pub fn set_limit(&self, limit: usize) {
        self.budget.set_limit(self.entry, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn a_busy_worker_takes_the_whole_budget_and_gives_it_back_when_another_waits() {
        let b = HostBudget::private(2).unwrap();
        let e = b.entry(7).unwrap();
        assert_eq!(b.entry(7), Some(e), "the same pool finds its entry again");
        assert_ne!(b.entry(8), Some(e));
        b.set_limit(e, 4);
        for _ in 0..4 {
            assert!(b.take(e, 0));
        }
        assert!(!b.take(e, 0), "spent");
        assert!(!b.take(e, 1), "spent");
        assert_eq!((b.held(e, 0), b.total(e)), (4, 4));
        b.waiting(e, 1, true);
        let v = b.view(e, 0);
        assert_eq!(v.waiting_elsewhere, 1);
        assert_eq!(policy::stance(&v), policy::Stance::Yield);
        assert_eq!(
            b.view(e, 1).waiting_elsewhere,
            0,
            "its own queue is not elsewhere"
        );
        b.give(e, 0);
        // The free slot covers worker 1's queue: worker 0 gives no more, and does not take it.
        assert_eq!(policy::stance(&b.view(e, 0)), policy::Stance::Keep);
        assert!(!b.take(e, 0));
        assert!(b.take(e, 1));
        b.waiting(e, 1, false);
        b.waiting(e, 1, false);
        assert_eq!(b.view(e, 0).waiting_elsewhere, 0, "never below zero");
    }

    #[test]
    fn a_reaped_worker_holds_nothing() {
        let b = HostBudget::private(3).unwrap();
        let e = b.entry(1).unwrap();
        let f = b.entry(2).unwrap();
        b.set_limit(e, 4);
        b.set_limit(f, 4);
        assert!(b.take(e, 1) && b.take(e, 1) && b.take(f, 1) && b.take(e, 2));
        b.waiting(e, 1, true);
        assert_eq!(b.reset_worker(1), 3);
        assert_eq!((b.total(e), b.total(f)), (1, 0));
        assert_eq!(b.view(e, 0).waiting_elsewhere, 0);
        assert_eq!(b.reset_worker(9), 0);
    }

    #[test]
    fn the_table_fills_and_says_so() {
        let b = HostBudget::private(1).unwrap();
        for i in 0..ENTRIES {
            assert!(b.entry(i * 64 + 3).is_some());
        }
        assert!(b.entry(ENTRIES * 64 + 3).is_none());
        assert!(b.entry(3).is_some(), "known pools still find theirs");
    }

    #[test]
    fn a_worker_maps_the_supervisors_region() {
        let (sup, fd) = HostBudget::create_shared(2).unwrap();
        // SAFETY: dup of a descriptor we own.
        let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&fd)) };
        let w = HostBudget::attach(dup, 2).unwrap();
        let e = w.entry(5).unwrap();
        w.set_limit(e, 2);
        assert!(w.take(e, 1));
        let e2 = sup.entry(5).unwrap();
        assert_eq!(sup.held(e2, 1), 1);
        assert_eq!(sup.reset_worker(1), 1);
        assert_eq!(w.total(e), 0);
        // SAFETY: as above.
        let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&fd)) };
        assert!(HostBudget::attach(dup, 3).is_err(), "another worker count");
    }

    /// Workers racing for slots never hold more than the budget together.
    #[test]
    fn racing_takes_never_overshoot() {
        let b = Arc::new(HostBudget::private(4).unwrap());
        let e = b.entry(1).unwrap();
        b.set_limit(e, 3);
        let holding = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let (b, holding, peak) = (b.clone(), holding.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut mine = 0;
                    for i in 0..20_000u32 {
                        if (i + w as u32) % 3 != 0 && b.take(e, w) {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            mine += 1;
                        } else if mine > 0 {
                            holding.fetch_sub(1, Ordering::SeqCst);
                            b.give(e, w);
                            mine -= 1;
                        }
                    }
                    for _ in 0..mine {
                        holding.fetch_sub(1, Ordering::SeqCst);
                        b.give(e, w);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3, "{peak:?}");
        assert_eq!(b.total(e), 0);
    }
}
