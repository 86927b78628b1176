//! One upstream budget per host: with `workers = N`, `pool.size` bounds the connections of a
//! pool (backend, user) summed over every worker process, not each worker's. A worker that has
//! all the load can hold the whole pool while the others are idle; when another worker needs a
//! slot, the one holding more than its fair share gives it back (see [`policy`]).
//!
//! **Where the count lives.** A region of [`crate::shm`] the supervisor makes before it starts the
//! workers (each maps it from the descriptor it inherits, named by [`FD_ENV`]): a header, a table
//! of leases, then a fixed table of [`ENTRIES`] pools found by open addressing on the pool's
//! index (a word per entry holds index + 1, claimed with compare-and-swap; indexes are never
//! reused). Each entry holds the budget (`pool.size` as the workers' live configuration says: a
//! reload writes it), then per lease the slots its process holds and how many of its checkouts
//! are queued for a slot (a queued checkout counts itself in and out: see `Pool::wait`). Atomics
//! only: no lock a dead worker could hold.
//!
//! **Leases, not worker numbers.** A process claims a lease at start (compare-and-swap of a free
//! lease word to its pid and worker index) and counts under it; there are `2N + 2` of them, so a
//! worker and a successor of the same index (an upgrade handing over) count apart. The fair
//! share still follows the worker index.
//!
//! **A process that dies** holds nothing afterwards: the supervisor, when it reaps a worker,
//! zeroes the counts of the lease that pid held and frees it ([`HostBudget::release_pid`]);
//! and every second it frees the leases of pids that no longer exist
//! ([`HostBudget::sweep_dead`]: a process it did not start itself, such as an upgrade's). The
//! kernel closed the dead process's sockets; MariaDB sees those connections go as soon as it next
//! reads them, at once for idle ones.
//!
//! **Taking without a lock.** A process adds one to its own count, then sums every lease's: over
//! the budget, it takes the one back and has nothing. All of these are sequentially consistent,
//! so of two processes racing for the last slot the later one sees both increments (at worst
//! both back off and retry within 20 ms; neither overshoots). A count can be one above what its
//! process holds for the instant between the add and the back-off; the slots actually held never
//! add up to more than the budget.
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
//!   never sees more than the budget. The same tick hands a slot another worker gave up to the
//!   shard's oldest waiter.
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
/// How often a shard looks at what other workers wait for while any checkout of the host waits
/// for a slot.
pub const TICK: Duration = Duration::from_millis(10);
/// How often it looks while none does: a worker that starts waiting is answered within this
/// (its own checkout takes a free slot at once; only giving waits for the others' ticks). Idle
/// workers would otherwise wake every shard 100 times a second for nothing (measured: idle CPU
/// of two workers × two shards went from 0.5% to 3–4% of a core with a 10 ms tick; 53 workers
/// would pay it 53 times).
pub const IDLE_TICK: Duration = Duration::from_millis(100);

const MAGIC: u64 = u64::from_le_bytes(*b"sluiceB2");
const HEADER_WORDS: usize = 8;

/// Leases for `workers` workers: each worker and a successor, and two to spare.
fn lease_count(workers: usize) -> usize {
    2 * workers + 2
}

/// An entry: key, budget, queued checkouts of every lease (a quick filter, see
/// [`HostBudget::surely_keeps`]), then per lease the slots held and the checkouts queued.
fn entry_words(workers: usize) -> usize {
    3 + 2 * lease_count(workers)
}

/// Bytes of the region for `workers` workers.
pub fn size(workers: usize) -> usize {
    (HEADER_WORDS + lease_count(workers) + ENTRIES * entry_words(workers)) * 8
}

/// A pool's entry in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(usize);

/// Who counts: a process's lease, and its worker index (for the fair share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub lease: usize,
    pub worker: usize,
}

pub struct HostBudget {
    region: Region,
    workers: usize,
    leases: usize,
    /// This process's lease (a worker's; the supervisor has none).
    me: Option<Holder>,
}

impl HostBudget {
    fn init(region: Region, workers: usize) -> HostBudget {
        region.word(1).store(workers as u64, Ordering::Relaxed);
        region.word(0).store(MAGIC, Ordering::Release);
        HostBudget {
            region,
            workers,
            leases: lease_count(workers),
            me: None,
        }
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
        Ok(HostBudget {
            region,
            workers,
            leases: lease_count(workers),
            me: None,
        })
    }

    /// The region named by [`FD_ENV`], if the supervisor passed one, with a lease claimed for
    /// this process as worker `worker` of `workers`.
    pub fn from_env(workers: usize, worker: usize) -> Result<Option<HostBudget>, String> {
        let Ok(v) = std::env::var(FD_ENV) else {
            return Ok(None);
        };
        let fd: RawFd = v
            .parse()
            .map_err(|_| format!("{FD_ENV}={v}: not a descriptor"))?;
        let mut b = HostBudget::attach(fd, workers)?;
        b.me = Some(
            b.claim(std::process::id(), worker)
                .ok_or("pool budget: no free lease (too many worker processes alive)")?,
        );
        Ok(Some(b))
    }

    /// This process's lease.
    pub fn me(&self) -> Option<Holder> {
        self.me
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    fn lease_word(&self, lease: usize) -> &AtomicU64 {
        self.region.word(HEADER_WORDS + lease)
    }

    fn words(&self, e: Entry) -> &[AtomicU64] {
        let n = entry_words(self.workers);
        self.region.words(HEADER_WORDS + self.leases + e.0 * n, n)
    }

    fn waiting_sum(&self, e: Entry) -> &AtomicU64 {
        &self.words(e)[2]
    }

    /// Checkouts queued for a slot in every pool of the host (header word 2).
    fn waiting_host(&self) -> &AtomicU64 {
        self.region.word(2)
    }

    /// Does any checkout of the host wait for a slot now? (What picks a shard's tick.)
    pub fn anyone_waiting(&self) -> bool {
        self.waiting_host().load(Ordering::SeqCst) > 0
    }

    fn held_word(&self, e: Entry, lease: usize) -> &AtomicU64 {
        &self.words(e)[3 + lease]
    }

    fn waiting_word(&self, e: Entry, lease: usize) -> &AtomicU64 {
        &self.words(e)[3 + self.leases + lease]
    }

    /// Claims a free lease for process `pid` as worker `worker`; `None` when all are taken.
    pub fn claim(&self, pid: u32, worker: usize) -> Option<Holder> {
        if worker >= self.workers || pid == 0 {
            return None;
        }
        let word = u64::from(pid) << 32 | worker as u64;
        let lease = (0..self.leases).find(|&i| {
            self.lease_word(i)
                .compare_exchange(0, word, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        // Freed leases are zeroed before they are freed; zeroed again in case a process freed
        // one some other way.
        self.zero(lease);
        Some(Holder { lease, worker })
    }

    /// Zeroes lease `lease`'s counts in every pool; returns the slots it held.
    fn zero(&self, lease: usize) -> usize {
        let mut freed = 0;
        for i in 0..ENTRIES {
            let e = Entry(i);
            if self.words(e)[0].load(Ordering::Acquire) == 0 {
                continue;
            }
            freed += self.held_word(e, lease).swap(0, Ordering::SeqCst) as usize;
            let queued = self.waiting_word(e, lease).swap(0, Ordering::SeqCst);
            for sum in [self.waiting_sum(e), self.waiting_host()] {
                let _ = sum.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(queued))
                });
            }
        }
        freed
    }

    /// The process `pid` is gone (the supervisor reaped it): what its lease held is free again
    /// and the lease with it. Returns the slots freed.
    pub fn release_pid(&self, pid: u32) -> usize {
        let mut freed = 0;
        for i in 0..self.leases {
            let w = self.lease_word(i).load(Ordering::SeqCst);
            if w != 0 && (w >> 32) as u32 == pid {
                freed += self.zero(i);
                let _ =
                    self.lease_word(i)
                        .compare_exchange(w, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
        freed
    }

    /// Frees the leases of processes that no longer exist; returns (pid, slots freed) of each.
    pub fn sweep_dead(&self) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        for i in 0..self.leases {
            let w = self.lease_word(i).load(Ordering::SeqCst);
            let pid = (w >> 32) as u32;
            if w == 0 || pid_alive(pid) {
                continue;
            }
            out.push((pid, self.release_pid(pid)));
        }
        out
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

    /// Slots of `e` counted under `lease`.
    pub fn held(&self, e: Entry, lease: usize) -> usize {
        self.held_word(e, lease).load(Ordering::SeqCst) as usize
    }

    /// Slots of `e` held by every process.
    pub fn total(&self, e: Entry) -> usize {
        (0..self.leases).map(|l| self.held(e, l)).sum()
    }

    /// What `h` sees of `e`.
    pub fn view(&self, e: Entry, h: Holder) -> View {
        let limit = self.limit(e);
        let waiting_elsewhere = (0..self.leases)
            .filter(|&l| l != h.lease)
            .map(|l| self.waiting_word(e, l).load(Ordering::SeqCst) as usize)
            .sum();
        View {
            limit,
            total: self.total(e),
            held: self.held(e, h.lease),
            fair: policy::fair_share(limit, self.workers, h.worker),
            waiting_elsewhere,
        }
    }

    /// Is `h`'s stance on `e` surely [`Keep`](policy::Stance::Keep)? Four loads instead of a
    /// [`view`](Self::view)'s two per lease, for the shards' tick: nobody else has a checkout
    /// queued and `h` holds no more than its fair share. The sum of queued checkouts is
    /// raised before and lowered after a lease's own count, so a process dying between the two
    /// leaves it too high (the full view is read then), never too low.
    pub fn surely_keeps(&self, e: Entry, h: Holder) -> bool {
        let limit = self.limit(e);
        let all = self.waiting_sum(e).load(Ordering::SeqCst);
        let own = self.waiting_word(e, h.lease).load(Ordering::SeqCst);
        all <= own && self.held(e, h.lease) <= policy::fair_share(limit, self.workers, h.worker)
    }

    /// Takes one slot of `e` for `h` if the policy allows and one is free.
    pub fn take(&self, e: Entry, h: Holder) -> bool {
        if h.lease >= self.leases || !policy::may_take(&self.view(e, h)) {
            return false;
        }
        let mine = self.held_word(e, h.lease);
        mine.fetch_add(1, Ordering::SeqCst);
        if self.total(e) > self.limit(e) {
            mine.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// `h` gives one slot of `e` back (its connection, if it had one, is closed).
    pub fn give(&self, e: Entry, h: Holder) {
        if h.lease < self.leases {
            let _ =
                self.held_word(e, h.lease)
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// A checkout of `e` under `h` starts (`true`) or stops (`false`) waiting for a slot.
    pub fn waiting(&self, e: Entry, h: Holder, start: bool) {
        if h.lease < self.leases {
            let w = self.waiting_word(e, h.lease);
            let dec = |a: &AtomicU64| {
                a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            };
            if start {
                self.waiting_host().fetch_add(1, Ordering::SeqCst);
                self.waiting_sum(e).fetch_add(1, Ordering::SeqCst);
                w.fetch_add(1, Ordering::SeqCst);
            } else if dec(w) {
                dec(self.waiting_sum(e));
                dec(self.waiting_host());
            }
        }
    }
}

/// Does process `pid` exist (a zombie not reaped yet does)?
fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A shard's pool linked to its entry in the host budget.
pub struct Link {
    pub budget: std::sync::Arc<HostBudget>,
    pub entry: Entry,
    pub me: Holder,
}

impl Link {
    /// The link of pool `index` for this process, with the budget set to `limit`; `None` when
    /// the process holds no lease or the table is full.
    pub fn new(budget: std::sync::Arc<HostBudget>, index: usize, limit: usize) -> Option<Link> {
        let me = budget.me()?;
        let entry = budget.entry(index)?;
        budget.set_limit(entry, limit);
        Some(Link { budget, entry, me })
    }

    pub fn take(&self) -> bool {
        self.budget.take(self.entry, self.me)
    }

    pub fn give(&self) {
        self.budget.give(self.entry, self.me)
    }

    /// A checkout of this pool starts (`true`) or stops waiting for a slot.
    pub fn waiting(&self, start: bool) {
        self.budget.waiting(self.entry, self.me, start)
    }

    pub fn view(&self) -> View {
        self.budget.view(self.entry, self.me)
    }

    pub fn surely_keeps(&self) -> bool {
        self.budget.surely_keeps(self.entry, self.me)
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

    /// Leases for made-up pids (never 0, one per worker).
    fn holders(b: &HostBudget) -> Vec<Holder> {
        (0..b.workers())
            .map(|w| b.claim(1_000_000 + w as u32, w).unwrap())
            .collect()
    }

    #[test]
    fn a_busy_worker_takes_the_whole_budget_and_gives_it_back_when_another_waits() {
        let b = HostBudget::private(2).unwrap();
        let h = holders(&b);
        let e = b.entry(7).unwrap();
        assert_eq!(b.entry(7), Some(e), "the same pool finds its entry again");
        assert_ne!(b.entry(8), Some(e));
        b.set_limit(e, 4);
        for _ in 0..4 {
            assert!(b.take(e, h[0]));
        }
        assert!(!b.take(e, h[0]), "spent");
        assert!(!b.take(e, h[1]), "spent");
        assert_eq!((b.held(e, h[0].lease), b.total(e)), (4, 4));
        b.waiting(e, h[1], true);
        let v = b.view(e, h[0]);
        assert_eq!(v.waiting_elsewhere, 1);
        assert_eq!(policy::stance(&v), policy::Stance::Yield);
        assert_eq!(
            b.view(e, h[1]).waiting_elsewhere,
            0,
            "its own queue is not elsewhere"
        );
        b.give(e, h[0]);
        // The free slot covers worker 1's queue: worker 0 gives no more, and does not take it.
        assert_eq!(policy::stance(&b.view(e, h[0])), policy::Stance::Keep);
        assert!(!b.take(e, h[0]));
        assert!(b.take(e, h[1]));
        b.waiting(e, h[1], false);
        b.waiting(e, h[1], false);
        assert_eq!(b.view(e, h[0]).waiting_elsewhere, 0, "never below zero");
    }

    /// The tick's quick filter never says Keep where the full view would not.
    #[test]
    fn the_quick_filter_agrees_with_the_policy() {
        let mut checked = 0;
        for limit in 1..5usize {
            for held0 in 0..=limit {
                for held1 in 0..=limit - held0 {
                    for (wait0, wait1) in [(0, 0), (1, 0), (0, 1), (2, 3)] {
                        let b = HostBudget::private(2).unwrap();
                        let h = holders(&b);
                        let e = b.entry(1).unwrap();
                        b.set_limit(e, limit);
                        for (me, held) in [(h[0], held0), (h[1], held1)] {
                            (0..held).for_each(|_| assert!(b.take(e, me)));
                        }
                        for (me, wait) in [(h[0], wait0), (h[1], wait1)] {
                            (0..wait).for_each(|_| b.waiting(e, me, true));
                        }
                        // A shrink after the fact: overspent.
                        b.set_limit(e, limit - 1);
                        for me in &h {
                            if b.surely_keeps(e, *me) {
                                let v = b.view(e, *me);
                                assert_eq!(policy::stance(&v), policy::Stance::Keep, "{v:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 20, "{checked}");
        // A dead process's queue leaves the sum.
        let b = HostBudget::private(2).unwrap();
        let h = holders(&b);
        let e = b.entry(1).unwrap();
        b.set_limit(e, 2);
        b.waiting(e, h[1], true);
        assert!(!b.surely_keeps(e, h[0]));
        b.release_pid(1_000_001);
        assert!(b.surely_keeps(e, h[0]));
    }

    #[test]
    fn a_reaped_worker_holds_nothing_and_its_lease_is_free_again() {
        let b = HostBudget::private(3).unwrap();
        let h = holders(&b);
        let e = b.entry(1).unwrap();
        let f = b.entry(2).unwrap();
        b.set_limit(e, 4);
        b.set_limit(f, 4);
        assert!(b.take(e, h[1]) && b.take(e, h[1]) && b.take(f, h[1]) && b.take(e, h[2]));
        b.waiting(e, h[1], true);
        assert_eq!(b.release_pid(1_000_001), 3);
        assert_eq!((b.total(e), b.total(f)), (1, 0));
        assert_eq!(b.view(e, h[0]).waiting_elsewhere, 0);
        assert_eq!(b.release_pid(42), 0, "not a holder");
        // Its successor gets a lease (perhaps the same one) starting from nothing.
        let next = b.claim(1_000_009, 1).unwrap();
        assert_eq!(b.view(e, next).held, 0);
        assert_eq!(b.view(e, next).fair, 1);
    }

    #[test]
    fn a_worker_and_its_successor_count_apart() {
        let b = HostBudget::private(2).unwrap();
        let old = b.claim(1_000_001, 1).unwrap();
        let new = b.claim(1_000_002, 1).unwrap();
        assert_ne!(old.lease, new.lease);
        let e = b.entry(3).unwrap();
        b.set_limit(e, 4);
        assert!(b.take(e, old) && b.take(e, new) && b.take(e, new));
        assert_eq!(b.release_pid(1_000_001), 1, "the old one's slot only");
        assert_eq!(b.total(e), 2);
    }

    #[test]
    fn leases_run_out_and_dead_pids_give_theirs_back() {
        let b = HostBudget::private(1).unwrap();
        // A pid that cannot exist (above pid_max) stands for a process that is gone.
        let gone = 0x7fff_fff0;
        let first = b.claim(gone, 0).unwrap();
        for i in 1..lease_count(1) {
            assert!(b.claim(std::process::id(), 0).is_some(), "lease {i}");
        }
        assert_eq!(b.claim(std::process::id(), 0), None, "all taken");
        assert_eq!(b.claim(std::process::id(), 1), None, "no worker 1 of 1");
        let e = b.entry(9).unwrap();
        b.set_limit(e, 2);
        assert!(b.take(e, first));
        assert_eq!(b.sweep_dead(), vec![(gone, 1)]);
        assert_eq!(b.total(e), 0);
        assert!(
            b.claim(std::process::id(), 0).is_some(),
            "its lease is free"
        );
        assert!(b.sweep_dead().is_empty(), "this process is alive");
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
        let me = w.claim(1_000_001, 1).unwrap();
        let e = w.entry(5).unwrap();
        w.set_limit(e, 2);
        assert!(w.take(e, me));
        let e2 = sup.entry(5).unwrap();
        assert_eq!(sup.held(e2, me.lease), 1);
        assert_eq!(sup.release_pid(1_000_001), 1);
        assert_eq!(w.total(e), 0);
        // SAFETY: as above.
        let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&fd)) };
        assert!(HostBudget::attach(dup, 3).is_err(), "another worker count");
    }

    /// Workers racing for slots never hold more than the budget together.
    #[test]
    fn racing_takes_never_overshoot() {
        let b = Arc::new(HostBudget::private(4).unwrap());
        let h = holders(&b);
        let e = b.entry(1).unwrap();
        b.set_limit(e, 3);
        let holding = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = h
            .into_iter()
            .map(|me| {
                let (b, holding, peak) = (b.clone(), holding.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut mine = 0;
                    for i in 0..20_000u32 {
                        if (i + me.worker as u32) % 3 != 0 && b.take(e, me) {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            mine += 1;
                        } else if mine > 0 {
                            holding.fetch_sub(1, Ordering::SeqCst);
                            b.give(e, me);
                            mine -= 1;
                        }
                    }
                    for _ in 0..mine {
                        holding.fetch_sub(1, Ordering::SeqCst);
                        b.give(e, me);
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
