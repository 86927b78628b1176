//! Several worker processes on one listen address (`workers = N`): clients spread over them,
//! KILL crosses processes, the pool budget is split, metrics are summed by the supervisor, and a
//! worker that dies is restarted while the others carry on.

mod common;

use common::{
    dedicated_backend_user, direct, free_port, metric, scrape, server_error, threads_of, wait_for,
    wait_for_statement, Config, Sluice,
};
use mysql::prelude::Queryable;
use std::time::{Duration, Instant};

/// Worker index of a connection id: 3 workers and 1 shard use the top 2 of the 31 id bits.
fn worker_of(c: &mysql::Conn) -> u32 {
    c.connection_id() >> 29
}

fn children(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .arg("-P")
        .arg(pid.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn three_worker_processes_share_one_port_and_one_pool_budget() {
    let users = dedicated_backend_user("workers6");
    let mport = free_port();
    let mut s = Sluice::with(
        Config::default()
            .top(&format!(
                "shards = 1\nworkers = 3\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .pool("mode = \"transaction\"\nsize = 6\nqueue_timeout_ms = 10000")
            .users(&users),
    );
    let mut conns: Vec<mysql::Conn> = (0..30).map(|_| s.conn()).collect();
    let mut seen = [0usize; 3];
    for c in &conns {
        seen[worker_of(c) as usize] += 1;
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "clients on every worker: {seen:?}"
    );
    for c in &mut conns {
        let v: i64 = c.query_first("SELECT 1").unwrap().unwrap();
        assert_eq!(v, 1);
    }
    let mut d = direct();
    assert!(
        threads_of(&mut d, "workers6") <= 6,
        "the pool budget is split, not multiplied"
    );
    // KILL QUERY across processes.
    let victim_pos = conns.iter().position(|c| worker_of(c) == 2).unwrap();
    let mut victim = conns.remove(victim_pos);
    let killer_pos = conns.iter().position(|c| worker_of(c) == 0).unwrap();
    let mut killer = conns.remove(killer_pos);
    let vid = victim.connection_id();
    let sql = "SELECT SLEEP(20) AS killed_across_workers";
    let h = std::thread::spawn(move || (victim.query_first::<i64, _>(sql), victim));
    wait_for_statement(&mut d, sql);
    killer.query_drop(format!("KILL QUERY {vid}")).unwrap();
    let (r, victim) = h.join().unwrap();
    // An interrupted SLEEP answers 1 (or error 1317); 0 would be one that ran its 20 s.
    match r {
        Ok(v) => assert_eq!(v, Some(1), "the SLEEP was not interrupted"),
        Err(e) => assert_eq!(server_error(&e).map(|x| x.0), Some(1317), "{e}"),
    }
    drop(victim);
    // Metrics: one family, one series per worker, summing to the clients connected (the victim's
    // worker sees it leave a little after it closes).
    let connected = |text: &str| -> f64 {
        (0..3)
            .map(|w| metric(text, &format!("sluice_clients_connected{{worker=\"{w}\"}}")))
            .sum()
    };
    let text = wait_for(
        "29 clients connected in the metrics",
        Duration::from_secs(10),
        || {
            let text = scrape(mport);
            (connected(&text) == 29.0).then_some(text)
        },
    );
    assert_eq!(
        text.matches("# TYPE sluice_clients_connected gauge")
            .count(),
        1
    );
    // A worker killed outright is restarted; clients of the other workers carry on.
    let workers_before = children(s.pid());
    assert_eq!(workers_before.len(), 3, "{workers_before:?}");
    let on_other: Vec<&mut mysql::Conn> = conns.iter_mut().filter(|c| worker_of(c) != 1).collect();
    // Worker 1's process: its command line carries `--worker 1/3/<supervisor pid>`.
    let victim_pid = workers_before
        .iter()
        .copied()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .contains("1/3/")
        })
        .expect("worker 1's process");
    unsafe { libc::kill(victim_pid as i32, libc::SIGKILL) };
    // Polled, bounded: the supervisor notices the death and starts a new worker.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = children(s.pid());
        if now.len() == 3 && !now.contains(&victim_pid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker 1 was not restarted: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in on_other {
        let v: i64 = c.query_first("SELECT 2").unwrap().unwrap();
        assert_eq!(v, 2);
    }
    let mut fresh = s.conn();
    let v: i64 = fresh.query_first("SELECT 3").unwrap().unwrap();
    assert_eq!(v, 3);
    assert!(s.terminate().success());
}

/// With worker processes, one of them probes the backends and the others follow its view (the
/// health board): a backend costs one probe connection however many workers there are, and
/// every worker sees it go down and come back.
#[test]
fn workers_share_one_view_of_backend_health() {
    use common::servers::Cluster;
    let mut cl = Cluster::start(2);
    for srv in &cl.servers {
        let mut r = srv.root();
        r.query_drop("CREATE USER IF NOT EXISTS 'probe3'@'%' IDENTIFIED BY 'pw'")
            .unwrap();
    }
    let s = Sluice::with(
        Config::default()
            .top("shards = 1\nworkers = 3")
            .pool("mode = \"transaction\"\nsize = 6\nqueue_timeout_ms = 10000")
            .backends(cl.addrs())
            .health("user = \"probe3\"\npassword = \"pw\"\ninterval_ms = 100"),
    );
    let pid = s.pid();
    // Each worker's view (None while a worker's admin socket is not up yet).
    let states = |addr: &str| -> Option<Vec<String>> {
        (0..3)
            .map(|w| {
                let line = sluice::admin::request(pid, w, "BACKENDS").ok()?;
                let rows: serde_json::Value = serde_json::from_str(&line).unwrap();
                let b = rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["address"] == addr)?
                    .clone();
                Some(b["state"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let a1 = cl.servers[1].addr();
    wait_for(
        "every worker sees both backends up",
        Duration::from_secs(10),
        || (states(&a1)? == ["up", "up", "up"]).then_some(()),
    );
    // One probe connection per backend, not one per worker.
    let mut d = cl.servers[0].root();
    wait_for("the probe's connection", Duration::from_secs(5), || {
        (threads_of(&mut d, "probe3") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        threads_of(&mut d, "probe3"),
        1,
        "one probe for three workers"
    );
    cl.kill9(1);
    wait_for(
        "every worker sees backend 2 down",
        Duration::from_secs(10),
        || (states(&a1)? == ["down", "down", "down"]).then_some(()),
    );
    cl.restart(1);
    wait_for(
        "every worker sees backend 2 up again",
        Duration::from_secs(15),
        || (states(&a1)? == ["up", "up", "up"]).then_some(()),
    );
}
