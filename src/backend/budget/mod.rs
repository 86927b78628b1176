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
//! **Pins.** `pool.pin_budget` is a host budget too: a second region counts each lease's
//! pinned sessions per entry of this table, and the supervisor's zeroing of a lease gives its
//! pins back with its slots (see [`pins`]).
//!
//! Turned down: a descriptor on the worker's command line as the other regions have. The
//! variable keeps `server::run` and the worker's arguments (which the upgrade work changes)
//! untouched.

pub mod pins;
pub mod policy;

use crate::shm::Region;
use pins::PinTable;
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
    /// The pinned sessions of each lease per entry; `None` for a worker whose supervisor made
    /// no such region (an older one: see [`pins`]).
    pins: Option<PinTable>,
}

/// The descriptors of the supervisor's regions, for its workers to inherit.
pub struct Fds {
    /// The slots' table ([`FD_ENV`]).
    pub slots: OwnedFd,
    /// The pins' counts ([`pins::PIN_FD_ENV`]).
    pub pins: OwnedFd,
}

/// What a gone process's lease held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    pub slots: usize,
    pub pins: usize,
}

impl HostBudget {
    fn init(region: Region, workers: usize, pins: Option<PinTable>) -> HostBudget {
        region.word(1).store(workers as u64, Ordering::Relaxed);
        region.word(0).store(MAGIC, Ordering::Release);
        HostBudget {
            region,
            workers,
            leases: lease_count(workers),
            me: None,
            pins,
        }
    }

    /// The regions the supervisor makes for its `workers` workers (their memfds are inherited).
    pub fn create_shared(workers: usize) -> std::io::Result<(HostBudget, Fds)> {
        let (region, slots) = Region::create_shared(c"sluice-pool-budget", size(workers))?;
        let (table, pins) = PinTable::create_shared(workers, lease_count(workers))?;
        Ok((
            HostBudget::init(region, workers, Some(table)),
            Fds { slots, pins },
        ))
    }

    /// Regions for this process alone (tests).
    pub fn private(workers: usize) -> std::io::Result<HostBudget> {
        let pins = PinTable::private(workers, lease_count(workers))?;
        Ok(HostBudget::init(
            Region::private(size(workers))?,
            workers,
            Some(pins),
        ))
    }

    /// A region for this process alone without the pins' (tests: a worker under an older
    /// supervisor).
    pub fn private_without_pins(workers: usize) -> std::io::Result<HostBudget> {
        Ok(HostBudget::init(
            Region::private(size(workers))?,
            workers,
            None,
        ))
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
            pins: None,
        })
    }

    /// Maps the supervisor's pin region from the descriptor this worker inherited.
    pub fn attach_pins(&mut self, fd: RawFd) -> Result<(), String> {
        self.pins = Some(PinTable::attach(fd, self.workers, self.leases)?);
        Ok(())
    }

    /// The regions named by [`FD_ENV`] and [`pins::PIN_FD_ENV`], if the supervisor passed
    /// them, with a lease claimed for this process as worker `worker` of `workers`. An older
    /// supervisor passes no pin region: pins are then counted per process (see [`pins`]).
    pub fn from_env(workers: usize, worker: usize) -> Result<Option<HostBudget>, String> {
        let fd_of = |name: &str| -> Result<Option<RawFd>, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}={v}: not a descriptor")),
                Err(_) => Ok(None),
            }
        };
        let Some(fd) = fd_of(FD_ENV)? else {
            return Ok(None);
        };
        let mut b = HostBudget::attach(fd, workers)?;
        if let Some(fd) = fd_of(pins::PIN_FD_ENV)? {
            b.attach_pins(fd)?;
        }
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

    /// Zeroes lease `lease`'s counts in every pool; returns what it held.
    fn zero(&self, lease: usize) -> Freed {
        let mut freed = Freed::default();
        for i in 0..ENTRIES {
            let e = Entry(i);
            if self.words(e)[0].load(Ordering::Acquire) == 0 {
                continue;
            }
            freed.slots += self.held_word(e, lease).swap(0, Ordering::SeqCst) as usize;
            if let Some(p) = &self.pins {
                freed.pins += p.zero(e, lease);
            }
            let queued = self.waiting_word(e, lease).swap(0, Ordering::SeqCst);
            for sum in [self.waiting_sum(e), self.waiting_host()] {
                let _ = sum.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(queued))
                });
            }
        }
        freed
    }

    /// The process `pid` is gone (the supervisor reaped it): what its lease held (slots and
    /// pins) is free again and the lease with it. Returns what was freed.
    pub fn release_pid(&self, pid: u32) -> Freed {
        let mut freed = Freed::default();
        for i in 0..self.leases {
            let w = self.lease_word(i).load(Ordering::SeqCst);
            if w != 0 && (w >> 32) as u32 == pid {
                let f = self.zero(i);
                freed.slots += f.slots;
                freed.pins += f.pins;
                let _ =
                    self.lease_word(i)
                        .compare_exchange(w, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
        freed
    }

    /// Frees the leases of processes that no longer exist; returns (pid, what was freed) of each.
    pub fn sweep_dead(&self) -> Vec<(u32, Freed)> {
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

    /// Does the host count pins (the supervisor made the pin region)?
    pub fn counts_pins(&self) -> bool {
        self.pins.is_some()
    }

    /// Counts a pin of `e` for `h` if the host has fewer than `limit` pinned; `false` without
    /// the pin region.
    pub fn pin_take(&self, e: Entry, h: Holder, limit: usize) -> bool {
        self.pins
            .as_ref()
            .is_some_and(|p| p.take(e, h.lease, limit))
    }

    /// Counts a pin of `e` for `h` whatever the sum (one the server reported unasked).
    pub fn pin_force(&self, e: Entry, h: Holder) {
        if let Some(p) = &self.pins {
            p.force(e, h.lease)
        }
    }

    /// A pin of `e` counted for `h` ends.
    pub fn pin_give(&self, e: Entry, h: Holder) {
        if let Some(p) = &self.pins {
            p.give(e, h.lease)
        }
    }

    /// Sessions pinned to `e`'s connections on the whole host.
    pub fn pinned(&self, e: Entry) -> usize {
        self.pins.as_ref().map_or(0, |p| p.total(e))
    }

    /// Sessions pinned to `e`'s connections under lease `lease`.
    pub fn pinned_by(&self, e: Entry, lease: usize) -> usize {
        self.pins.as_ref().map_or(0, |p| p.held(e, lease))
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

    /// Does the host count this pool's pins?
    pub fn counts_pins(&self) -> bool {
        self.budget.counts_pins()
    }

    pub fn pin_take(&self, limit: usize) -> bool {
        self.budget.pin_take(self.entry, self.me, limit)
    }

    pub fn pin_force(&self) {
        self.budget.pin_force(self.entry, self.me)
    }

    pub fn pin_give(&self) {
        self.budget.pin_give(self.entry, self.me)
    }

    /// Sessions pinned to this pool's connections on the whole host.
    pub fn pinned(&self) -> usize {
        self.budget.pinned(self.entry)
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
        assert_eq!(b.release_pid(1_000_001).slots, 3);
        assert_eq!((b.total(e), b.total(f)), (1, 0));
        assert_eq!(b.view(e, h[0]).waiting_elsewhere, 0);
        assert_eq!(b.release_pid(42), Freed::default(), "not a holder");
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
        assert_eq!(b.release_pid(1_000_001).slots, 1, "the old one's slot only");
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
        assert_eq!(b.sweep_dead(), vec![(gone, Freed { slots: 1, pins: 0 })]);
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
        let (sup, fds) = HostBudget::create_shared(2).unwrap();
        // SAFETY: dup of a descriptor we own.
        let dup = |fd: &OwnedFd| unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(fd)) };
        let mut w = HostBudget::attach(dup(&fds.slots), 2).unwrap();
        assert!(!w.counts_pins(), "no pin region mapped yet");
        w.attach_pins(dup(&fds.pins)).unwrap();
        assert!(w.counts_pins());
        let me = w.claim(1_000_001, 1).unwrap();
        let e = w.entry(5).unwrap();
        w.set_limit(e, 2);
        assert!(w.take(e, me));
        assert!(w.pin_take(e, me, 2));
        let e2 = sup.entry(5).unwrap();
        assert_eq!(sup.held(e2, me.lease), 1);
        assert_eq!(sup.pinned_by(e2, me.lease), 1);
        assert_eq!(sup.release_pid(1_000_001), Freed { slots: 1, pins: 1 });
        assert_eq!((w.total(e), w.pinned(e)), (0, 0));
        assert!(
            HostBudget::attach(dup(&fds.slots), 3).is_err(),
            "another worker count"
        );
        assert!(
            w.attach_pins(dup(&fds.slots)).is_err(),
            "the slots' region is not the pins'"
        );
    }

    /// Each holder takes and gives units of `e` from 4 threads at once (two of three tries a
    /// take, the rest a give of one it holds), then gives back what it holds; returns the most
    /// units held at once.
    fn race(
        b: &Arc<HostBudget>,
        h: Vec<Holder>,
        e: Entry,
        take: fn(&HostBudget, Entry, Holder) -> bool,
        give: fn(&HostBudget, Entry, Holder),
    ) -> usize {
        let holding = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = h
            .into_iter()
            .map(|me| {
                let (b, holding, peak) = (b.clone(), holding.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut mine = 0;
                    for i in 0..20_000u32 {
                        if (i + me.worker as u32) % 3 != 0 && take(&b, e, me) {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            mine += 1;
                        } else if mine > 0 {
                            holding.fetch_sub(1, Ordering::SeqCst);
                            give(&b, e, me);
                            mine -= 1;
                        }
                    }
                    for _ in 0..mine {
                        holding.fetch_sub(1, Ordering::SeqCst);
                        give(&b, e, me);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        peak.load(Ordering::SeqCst)
    }

    /// Workers racing for slots never hold more than the budget together.
    #[test]
    fn racing_takes_never_overshoot() {
        let b = Arc::new(HostBudget::private(4).unwrap());
        let h = holders(&b);
        let e = b.entry(1).unwrap();
        b.set_limit(e, 3);
        let peak = race(&b, h, e, HostBudget::take, HostBudget::give);
        assert!(peak <= 3, "{peak:?}");
        assert_eq!(b.total(e), 0);
    }

    #[test]
    fn one_worker_may_pin_the_whole_budget_of_the_host_and_no_more() {
        let b = HostBudget::private(2).unwrap();
        let h = holders(&b);
        let e = b.entry(4).unwrap();
        assert!(b.counts_pins());
        assert!(b.pin_take(e, h[0], 2) && b.pin_take(e, h[0], 2));
        assert!(!b.pin_take(e, h[0], 2), "the host's budget is used up");
        assert!(!b.pin_take(e, h[1], 2), "for the other worker too");
        assert_eq!((b.pinned_by(e, h[0].lease), b.pinned(e)), (2, 2));
        b.pin_give(e, h[0]);
        assert!(b.pin_take(e, h[1], 2), "a pin ended: its unit is anyone's");
        // A pin the server reported unasked is counted over the budget; new ones wait for
        // the sum to come back under.
        b.pin_force(e, h[1]);
        assert_eq!(b.pinned(e), 3);
        b.pin_give(e, h[0]);
        assert!(!b.pin_take(e, h[0], 2));
        b.pin_give(e, h[1]);
        assert!(b.pin_take(e, h[0], 2));
        // Another pool counts apart; giving never goes below zero.
        let f = b.entry(5).unwrap();
        b.pin_give(f, h[0]);
        assert_eq!(b.pinned(f), 0);
        // A worker killed while holding pins: its lease's pins are free again.
        assert_eq!(b.release_pid(1_000_000), Freed { slots: 0, pins: 1 });
        assert_eq!(b.pinned(e), 1);
        assert!(b.pin_take(e, h[1], 2));
    }

    #[test]
    fn without_the_pin_region_nothing_is_counted_for_the_host() {
        let b = HostBudget::private_without_pins(2).unwrap();
        let h = holders(&b);
        let e = b.entry(4).unwrap();
        assert!(!b.counts_pins());
        assert!(!b.pin_take(e, h[0], 2));
        b.pin_force(e, h[0]);
        b.pin_give(e, h[0]);
        assert_eq!(b.pinned(e), 0);
    }

    /// Workers racing for pins never count more than the budget together.
    #[test]
    fn racing_pins_never_overshoot() {
        let b = Arc::new(HostBudget::private(4).unwrap());
        let h = holders(&b);
        let e = b.entry(1).unwrap();
        let peak = race(
            &b,
            h,
            e,
            |b, e, h| b.pin_take(e, h, 3),
            HostBudget::pin_give,
        );
        assert!(peak <= 3, "{peak:?}");
        assert_eq!(peak, 3, "the whole budget was used");
        assert_eq!(b.pinned(e), 0);
    }
}
