//! One upstream budget per host (`workers = N`): `pool.size` bounds a pool's connections over
//! every worker process; a worker with all the load gets the whole pool, gives it back when
//! another worker needs a slot, and a worker killed outright leaves no slot behind. The same for
//! `pool.pin_budget`: a worker whose clients pin may pin the whole budget, the host never more,
//! and a killed worker's pins are free again.

mod common;

use common::{
    dedicated_backend_user, direct, free_port, metric, scrape, server_error, threads_of, wait_for,
    Config, Sluice,
};
use mysql::prelude::Queryable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Worker index of a connection id: 2 workers and 1 shard use the top one of the 31 id bits.
fn worker_of(c: &mysql::Conn) -> u32 {
    c.connection_id() >> 30
}

/// Two workers of one shard each, a pool of `size` for a backend account of the test's own.
fn config(account: &str, size: usize, queue_timeout_ms: u64, mport: u16) -> Config {
    let users = dedicated_backend_user(account);
    Config::default()
        .top(&format!(
            "shards = 1\nworkers = 2\nmetrics_listen = \"127.0.0.1:{mport}\""
        ))
        .pool(&format!(
            "mode = \"transaction\"\nsize = {size}\nqueue_timeout_ms = {queue_timeout_ms}"
        ))
        .users(&users)
}

/// [`config`] with a pin budget of `pins` and `pin_overflow` ("error" or "wait").
fn pin_config(account: &str, pins: usize, overflow: &str, mport: u16) -> Config {
    let c = config(account, 4, 10_000, mport);
    let pool = format!(
        "{}\npin_budget = {pins}\npin_overflow = \"{overflow}\"",
        c.pool
    );
    c.pool(&pool)
}

/// [`config`] with a pool of 4, started.
fn two_workers(account: &str, queue_timeout_ms: u64) -> (Sluice, u16) {
    let mport = free_port();
    let s = Sluice::with(config(account, 4, queue_timeout_ms, mport));
    (s, mport)
}

/// Clients until `want[w]` of them sit on worker `w` (SO_REUSEPORT places them; the others
/// are closed).
fn clients_on(s: &Sluice, want: [usize; 2]) -> [Vec<mysql::Conn>; 2] {
    let mut got: [Vec<mysql::Conn>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..400 {
        if got[0].len() >= want[0] && got[1].len() >= want[1] {
            return got;
        }
        let c = s.conn();
        let w = worker_of(&c) as usize;
        if got[w].len() < want[w] {
            got[w].push(c);
        }
    }
    panic!(
        "SO_REUSEPORT never gave {want:?}: {:?}",
        got.map(|v| v.len())
    );
}

/// The pid of worker `w` of `s` (found by its command line).
fn worker_pid(s: &Sluice, w: u32) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmd.contains(&format!("{w}/2/{}", s.pid()))
        })
        .unwrap_or_else(|| panic!("worker {w}'s process"))
}

/// Watches the server's connections for `account` until dropped; `peak()` is the most seen.
struct Watch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(account: &str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (st, pk, account) = (stop.clone(), peak.clone(), account.to_string());
        let thread = std::thread::spawn(move || {
            let mut d = direct();
            while !st.load(Ordering::Acquire) {
                pk.fetch_max(threads_of(&mut d, &account), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Watch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn budget_of(text: &str, family: &str, worker: u32) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{worker=\"{worker}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens a transaction that holds a backend connection; returns how long it took.
fn hold(c: &mut mysql::Conn) -> Duration {
    let t = Instant::now();
    c.query_drop("BEGIN").unwrap();
    let v: i64 = c.query_first("SELECT 1").unwrap().unwrap();
    assert_eq!(v, 1);
    t.elapsed()
}

#[test]
fn one_worker_with_all_the_load_gets_the_whole_pool_and_gives_it_back() {
    let account = "budget1";
    let (s, mport) = two_workers(account, 10_000);
    let [mut w0, mut w1] = clients_on(&s, [4, 1]);
    // Worker 1 has used its share of the pool once (so it holds it), then sits idle.
    let v: i64 = w1[0].query_first("SELECT 2").unwrap().unwrap();
    assert_eq!(v, 2);
    let watch = Watch::start(account);
    // Four transactions at once, all on worker 0: its own two slots, then worker 1's.
    for c in &mut w0 {
        let took = hold(c);
        eprintln!("transaction served after {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "a slot took {took:?} to come from the other worker"
        );
    }
    let text = scrape(mport);
    assert_eq!(
        budget_of(&text, "sluice_pool_budget_held", 0),
        4.0,
        "{text}"
    );
    assert_eq!(
        budget_of(&text, "sluice_pool_budget_held", 1),
        0.0,
        "{text}"
    );
    assert!(budget_of(&text, "sluice_pool_budget_given_total", 1) >= 1.0);
    let mut d = direct();
    assert_eq!(threads_of(&mut d, account), 4);
    // A fifth, on worker 1, waits: the budget is spent and worker 0's clients use all of it.
    let mut fifth = w1.remove(0);
    let waiter = std::thread::spawn(move || {
        let took = hold(&mut fifth);
        (took, fifth)
    });
    wait_for(
        "the fifth transaction to queue on worker 1",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_waiting{worker=\"1\"}") == 1.0).then_some(()),
    );
    assert!(!waiter.is_finished());
    // Worker 0 holds more than its share while worker 1 waits: the connection its client
    // releases closes and the slot goes to worker 1.
    let released = Instant::now();
    w0[0].query_drop("COMMIT").unwrap();
    let (_, mut fifth) = waiter.join().unwrap();
    eprintln!(
        "fifth served {:?} after worker 0 released",
        released.elapsed()
    );
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "worker 1 waited {:?} after worker 0 released",
        released.elapsed()
    );
    let text = wait_for("the budget to settle", Duration::from_secs(5), || {
        let text = scrape(mport);
        (budget_of(&text, "sluice_pool_budget_held", 1) == 1.0).then_some(text)
    });
    assert_eq!(
        budget_of(&text, "sluice_pool_budget_held", 0),
        3.0,
        "{text}"
    );
    for c in w0.iter_mut().skip(1).chain([&mut fifth]) {
        c.query_drop("COMMIT").unwrap();
    }
    assert!(
        watch.peak() <= 4,
        "the server saw {} connections of a pool of 4",
        watch.peak()
    );
    assert!(threads_of(&mut d, account) <= 4);
}

#[test]
fn with_the_budget_spent_a_checkout_gets_the_queue_timeout_error() {
    let account = "budget2";
    let (s, _mport) = two_workers(account, 1_000);
    let [mut w0, mut w1] = clients_on(&s, [4, 1]);
    for c in &mut w0 {
        hold(c);
    }
    let t = Instant::now();
    let e = w1[0]
        .query_drop("BEGIN")
        .and_then(|_| w1[0].query_drop("SELECT 1"));
    let e = e.expect_err("the pool of 4 is in use by worker 0");
    assert_eq!(server_error(&e).map(|x| x.0), Some(9001), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(950));
    let mut d = direct();
    assert_eq!(threads_of(&mut d, account), 4);
}

#[test]
fn a_killed_workers_slots_come_back() {
    let account = "budget3";
    let (s, mport) = two_workers(account, 10_000);
    let [mut w0, mut w1] = clients_on(&s, [4, 4]);
    // Worker 1 takes the whole pool, then is killed outright with its four transactions open.
    for c in &mut w1 {
        hold(c);
    }
    let text = scrape(mport);
    assert_eq!(
        budget_of(&text, "sluice_pool_budget_held", 1),
        4.0,
        "{text}"
    );
    let victim = worker_pid(&s, 1);
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    drop(w1);
    // The kernel closed its connections; the server ends their threads as it reads the close.
    let mut d = direct();
    wait_for(
        "the server to see worker 1's connections go",
        Duration::from_secs(10),
        || (threads_of(&mut d, account) == 0).then_some(()),
    );
    // The supervisor reaps it, frees its slots and starts another worker 1, whose start-up probe
    // logs in to the server as the same account: the server's count is watched only once that
    // worker is ready (a third "sluice ready") and its probe's connection is gone.
    wait_for(
        "the restarted worker 1 to be ready",
        Duration::from_secs(20),
        || (s.log_text().matches("sluice ready").count() >= 3).then_some(()),
    );
    wait_for(
        "the restarted worker's probe connection to go",
        Duration::from_secs(10),
        || (threads_of(&mut d, account) == 0).then_some(()),
    );
    // Worker 0 gets all four.
    let watch = Watch::start(account);
    for c in &mut w0 {
        let took = hold(c);
        assert!(took < Duration::from_secs(3), "a slot took {took:?}");
    }
    let text = scrape(mport);
    assert_eq!(
        budget_of(&text, "sluice_pool_budget_held", 0),
        4.0,
        "{text}"
    );
    assert!(
        budget_of(&text, "sluice_pool_budget_held_all", 0) <= 4.0,
        "{text}"
    );
    assert!(
        watch.peak() <= 4,
        "the server saw {} connections of a pool of 4",
        watch.peak()
    );
    assert!(
        s.log_text().contains("slots and pins are free"),
        "{}",
        s.log_text()
    );
}

/// `pool.size` reloaded with worker processes: a smaller budget is given back as its
/// connections are released (the server then sees no more than the new size), a larger one is
/// used at once.
#[test]
fn the_budget_follows_a_reload_of_the_pool_size() {
    let account = "budget4";
    let (s, mport) = two_workers(account, 10_000);
    let [mut w0, mut w1] = clients_on(&s, [4, 2]);
    for c in &mut w0 {
        hold(c);
    }
    let reload = |size: usize| {
        s.rewrite_config(&config(account, size, 10_000, mport));
        // SAFETY: kill(2) on our child's pid.
        unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
        wait_for(
            &format!("both workers to take pool.size = {size}"),
            Duration::from_secs(10),
            || {
                let text = scrape(mport);
                (0..2)
                    .all(|w| budget_of(&text, "sluice_pool_budget_limit", w) == size as f64)
                    .then_some(())
            },
        );
    };
    reload(2);
    // The four transactions keep their connections; as they end, worker 0 (above its new share
    // of 1) closes them until the budget is kept.
    for c in &mut w0 {
        c.query_drop("COMMIT").unwrap();
    }
    let mut d = direct();
    wait_for(
        "the server to see no more than the new size",
        Duration::from_secs(10),
        || {
            let text = scrape(mport);
            (threads_of(&mut d, account) <= 2
                && budget_of(&text, "sluice_pool_budget_held_all", 0) <= 2.0)
                .then_some(())
        },
    );
    reload(6);
    let watch = Watch::start(account);
    for c in w0.iter_mut().chain(w1.iter_mut()) {
        let took = hold(c);
        assert!(took < Duration::from_secs(2), "a slot took {took:?}");
    }
    assert_eq!(threads_of(&mut d, account), 6);
    assert!(
        watch.peak() <= 6,
        "the server saw {} connections of a pool of 6",
        watch.peak()
    );
}

/// Two shards per worker: a shard with all the load borrows from its sibling shard (messages
/// within the process) and from the other worker (the host budget) at once, and the pool stays
/// one budget of 4.
#[test]
fn shards_and_workers_lend_together() {
    let account = "budget5";
    let mport = free_port();
    let s = Sluice::with(config(account, 4, 10_000, mport).top("shards = 2\nworkers = 2"));
    // 2 workers × 2 shards: the id's top bit is the worker, the next the shard.
    let place = |c: &mysql::Conn| (c.connection_id() >> 30, (c.connection_id() >> 29) & 1);
    let mut hot = Vec::new();
    let mut others = Vec::new();
    for _ in 0..400 {
        if hot.len() == 4 && others.len() == 3 {
            break;
        }
        let c = s.conn();
        match place(&c) {
            (0, 0) if hot.len() < 4 => hot.push(c),
            (0, 0) => {}
            p if !others.iter().any(|o: &mysql::Conn| place(o) == p) => others.push(c),
            _ => {}
        }
    }
    assert_eq!((hot.len(), others.len()), (4, 3), "clients on every shard");
    // Every other shard has used the pool once (so each holds its share), then sits idle.
    for c in &mut others {
        let v: i64 = c.query_first("SELECT 2").unwrap().unwrap();
        assert_eq!(v, 2);
    }
    let watch = Watch::start(account);
    for c in &mut hot {
        let took = hold(c);
        assert!(took < Duration::from_secs(2), "a slot took {took:?}");
    }
    let text = scrape(mport);
    assert_eq!(
        budget_of(&text, "sluice_pool_budget_held", 0),
        4.0,
        "{text}"
    );
    let mut d = direct();
    assert_eq!(threads_of(&mut d, account), 4);
    for c in &mut hot {
        c.query_drop("COMMIT").unwrap();
    }
    assert!(
        watch.peak() <= 4,
        "the server saw {} connections of a pool of 4",
        watch.peak()
    );
}

/// Many clients on both workers, short transactions in a loop: every one is served (nobody
/// times out while slots move back and forth between the workers), and the server never sees
/// more than the pool's 4.
#[test]
fn many_clients_on_both_workers_share_four_connections() {
    let account = "budget6";
    let (s, mport) = two_workers(account, 10_000);
    let [w0, w1] = clients_on(&s, [8, 8]);
    let watch = Watch::start(account);
    let started = Instant::now();
    let threads: Vec<_> = w0
        .into_iter()
        .chain(w1)
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                for n in 0..25 {
                    c.query_drop("BEGIN").unwrap();
                    let v: i64 = c
                        .query_first(format!("SELECT {i} * 100 + {n}"))
                        .unwrap()
                        .unwrap();
                    assert_eq!(v, (i * 100 + n) as i64);
                    c.query_drop("COMMIT").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = scrape(mport);
    eprintln!(
        "400 transactions in {:?}; slots given by worker 0: {}, by worker 1: {}; peak {}",
        started.elapsed(),
        budget_of(&text, "sluice_pool_budget_given_total", 0),
        budget_of(&text, "sluice_pool_budget_given_total", 1),
        watch.peak()
    );
    assert_eq!(
        (0..2)
            .map(|w| metric(
                &text,
                &format!("sluice_pool_queue_timeouts_total{{worker=\"{w}\"")
            ))
            .sum::<f64>(),
        0.0
    );
    assert!(budget_of(&text, "sluice_pool_budget_held_all", 0) <= 4.0);
    assert!(
        watch.peak() <= 4,
        "the server saw {} connections of a pool of 4",
        watch.peak()
    );
}

/// Sessions pinned per worker, from the metrics (every pool, every shard).
fn pinned_on(mport: u16) -> [f64; 2] {
    let text = scrape(mport);
    [0, 1].map(|w| {
        common::metric_sum(
            &text,
            "sluice_pool_pinned_sessions{",
            &[&format!("worker=\"{w}\"")],
        )
    })
}

/// Pins the session (a user variable pins in transaction mode); the error if it was refused.
fn pin(c: &mut mysql::Conn) -> Result<(), (u16, String)> {
    c.query_drop("SET @pinned = 1").map_err(|e| {
        let (code, _, msg) = server_error(&e).unwrap_or_else(|| panic!("{e}"));
        (code, msg)
    })
}

/// The pin budget is one budget per host: with 2 workers and a pin budget of 2, a worker whose
/// clients pin gets both (before, each worker had 1); a third pin anywhere on the host is
/// refused with a message counting the host's pins; a pin that ends frees its unit for the
/// other worker.
#[test]
fn one_worker_may_pin_the_whole_pin_budget_and_the_host_no_more() {
    let account = "budget7";
    let mport = free_port();
    let s = Sluice::with(pin_config(account, 2, "error", mport));
    let [mut w0, mut w1] = clients_on(&s, [3, 1]);
    for (i, c) in w0.iter_mut().take(2).enumerate() {
        pin(c).unwrap_or_else(|e| panic!("pin {i} on worker 0: {e:?}"));
    }
    assert_eq!(pinned_on(mport), [2.0, 0.0]);
    // The host's budget is used up: a third pin is refused on either worker.
    for c in [&mut w0[2], &mut w1[0]] {
        let (code, msg) = pin(c).expect_err("a third pin on a host budget of 2");
        assert_eq!(code, 9003, "{msg}");
        assert!(msg.contains("and 2 sessions already are"), "{msg}");
    }
    assert_eq!(pinned_on(mport), [2.0, 0.0]);
    // A pin ends on worker 0 (the session is reset): worker 1 may pin now.
    w0[0].reset().unwrap();
    wait_for("worker 0's pin to end", Duration::from_secs(5), || {
        (pinned_on(mport) == [1.0, 0.0]).then_some(())
    });
    pin(&mut w1[0]).expect("the unit worker 0 gave back");
    let v: i64 = w1[0].query_first("SELECT @pinned").unwrap().unwrap();
    assert_eq!(v, 1, "its variable lives on its pinned backend");
    assert_eq!(pinned_on(mport), [1.0, 1.0]);
    let (code, _) = pin(&mut w0[0]).expect_err("the budget is used up again");
    assert_eq!(code, 9003);
    let text = scrape(mport);
    let refused: f64 = (0..2)
        .map(|w| {
            metric(
                &text,
                &format!("sluice_pin_refusals_total{{worker=\"{w}\"}}"),
            )
        })
        .sum();
    assert_eq!(refused, 3.0, "{text}");
}

/// `pin_overflow = "wait"` across workers: a pin on worker 1 waits while worker 0's sessions
/// hold the whole pin budget, and goes through as soon as one of them ends.
#[test]
fn a_pin_waits_for_a_unit_another_worker_gives_back() {
    let account = "budget8";
    let mport = free_port();
    let s = Sluice::with(pin_config(account, 2, "wait", mport));
    let [mut w0, mut w1] = clients_on(&s, [2, 1]);
    for c in &mut w0 {
        pin(c).unwrap();
    }
    let mut waiter = w1.remove(0);
    let h = std::thread::spawn(move || {
        let r = pin(&mut waiter);
        (r, waiter)
    });
    wait_for(
        "worker 1's pin to wait for the budget",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_active{worker=\"1\"}") == 1.0).then_some(()),
    );
    assert!(!h.is_finished(), "worker 1 pinned over the host's budget");
    assert_eq!(pinned_on(mport), [2.0, 0.0]);
    let ended = Instant::now();
    w0[1].reset().unwrap();
    let (r, _waiter) = h.join().unwrap();
    r.expect("the pin waited for a unit, it was not refused");
    assert!(
        ended.elapsed() < Duration::from_secs(2),
        "worker 1 pinned {:?} after worker 0's pin ended",
        ended.elapsed()
    );
    assert_eq!(pinned_on(mport), [1.0, 1.0]);
}

/// A worker killed while its sessions hold the whole pin budget leaves no pin behind: the
/// supervisor frees them with its slots, and the other worker may pin the whole budget.
#[test]
fn a_killed_workers_pins_come_back() {
    let account = "budget9";
    let mport = free_port();
    let s = Sluice::with(pin_config(account, 2, "error", mport));
    let [mut w0, mut w1] = clients_on(&s, [2, 2]);
    for c in &mut w1 {
        pin(c).unwrap();
    }
    let (code, msg) = pin(&mut w0[0]).expect_err("worker 1 holds the host's pins");
    assert_eq!(code, 9003, "{msg}");
    let victim = worker_pid(&s, 1);
    // SAFETY: kill(2) on a process of the test's own sluice.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    drop(w1);
    wait_for(
        "the supervisor to free the killed worker's pins",
        Duration::from_secs(10),
        || {
            // The log's fields may be coloured: keep the text between escape sequences.
            let text = s.log_text();
            let plain: String = text
                .split('\x1b')
                .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
                .collect();
            plain
                .lines()
                .any(|l| l.contains("slots and pins are free") && l.contains("pins=2"))
                .then_some(())
        },
    );
    for (i, c) in w0.iter_mut().enumerate() {
        pin(c).unwrap_or_else(|e| panic!("pin {i} on worker 0 after worker 1 died: {e:?}"));
    }
    wait_for("worker 1 to be back", Duration::from_secs(10), || {
        let text = scrape(mport);
        text.contains("sluice_pool_pinned_sessions{worker=\"1\"")
            .then_some(())
    });
    assert_eq!(pinned_on(mport), [2.0, 0.0]);
}
