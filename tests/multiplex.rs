//! Transaction and statement pooling against the real MariaDB: backends are shared between
//! clients, and no client can tell — nothing leaks, pins hold state where it lives, the answers
//! that depend on the backend (LAST_INSERT_ID(), CONNECTION_ID(), KILL) follow the client.

mod common;

use common::{
    dedicated_backend_user, direct, free_port, metric, metric_sum, scrape, server_error,
    threads_of, wait_for, Config, RawClient, Sluice,
};
use mysql::prelude::Queryable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn trx_pool(size: usize, extra: &str) -> String {
    let queue = if extra.contains("queue_timeout_ms") {
        ""
    } else {
        "queue_timeout_ms = 20000\n"
    };
    format!("mode = \"transaction\"\nsize = {size}\n{queue}{extra}")
}

#[test]
fn state_isolation_stress_many_clients_over_few_backends() {
    let s = Sluice::with(
        Config::default()
            .pool(&trx_pool(4, "pin_budget = 3\npin_overflow = \"wait\""))
            .top("metrics_listen = \"127.0.0.1:0\""),
    );
    {
        let mut d = direct();
        for i in 0..3 {
            d.query_drop(format!("CREATE DATABASE IF NOT EXISTS iso_{i}"))
                .unwrap();
        }
    }
    const CLIENTS: usize = 24;
    const ROUNDS: usize = 40;
    let checks = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let url_port = s.port;
            let checks = checks.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let opts = mysql::OptsBuilder::new()
                    .ip_or_hostname(Some("127.0.0.1"))
                    .tcp_port(url_port)
                    .user(Some("app"))
                    .pass(Some("app"))
                    .db_name(Some("app"))
                    .prefer_socket(false)
                    .read_timeout(Some(Duration::from_secs(60)));
                let mut c = mysql::Conn::new(opts).unwrap();
                start.wait();
                let check = |c: &mut mysql::Conn, sql: &str, want: &str| {
                    let got: Option<String> = c
                        .query_first(sql)
                        .unwrap_or_else(|e| panic!("client {k}: {sql}: {e}"));
                    assert_eq!(
                        got.as_deref(),
                        Some(want),
                        "client {k} saw another client's state via {sql}"
                    );
                    checks.fetch_add(1, Ordering::Relaxed);
                };
                for r in 0..ROUNDS {
                    // Replayable settings: schema, time zone, sql_mode, character set.
                    let db = format!("iso_{}", (k + r) % 3);
                    let tz = format!("+{:02}:{:02}", (k % 12) + 1, (r % 4) * 15);
                    let mode = if (k + r) % 2 == 0 {
                        "ANSI_QUOTES,STRICT_ALL_TABLES"
                    } else {
                        "NO_ZERO_DATE"
                    };
                    let cs = if (k + r) % 3 == 0 {
                        "latin1"
                    } else {
                        "utf8mb4"
                    };
                    c.query_drop(format!("USE {db}")).unwrap();
                    c.query_drop(format!("SET time_zone = '{tz}', sql_mode = '{mode}'"))
                        .unwrap();
                    c.query_drop(format!("SET NAMES {cs}")).unwrap();
                    check(&mut c, "SELECT DATABASE()", &db);
                    check(&mut c, "SELECT @@time_zone", &tz);
                    check(&mut c, "SELECT @@sql_mode", mode);
                    check(&mut c, "SELECT @@character_set_client", cs);
                    // A binary prepared statement sees the same settings wherever it runs.
                    let got: Option<String> = c
                        .exec_first(
                            "SELECT CONCAT(?, '|', @@time_zone, '|', DATABASE())",
                            (format!("c{k}"),),
                        )
                        .unwrap();
                    assert_eq!(
                        got,
                        Some(format!("c{k}|{tz}|{db}")),
                        "client {k}: prepared statement context"
                    );
                    checks.fetch_add(1, Ordering::Relaxed);
                    // State that pins: a user variable and a temporary table.
                    let mine = format!("client-{k}-round-{r}");
                    c.query_drop(format!("SET @mine = '{mine}'")).unwrap();
                    c.query_drop("CREATE TEMPORARY TABLE t_iso (v VARCHAR(40))")
                        .unwrap();
                    c.query_drop(format!("INSERT INTO t_iso VALUES ('{mine}')"))
                        .unwrap();
                    check(&mut c, "SELECT @mine", &mine);
                    check(&mut c, "SELECT v FROM t_iso", &mine);
                    check(&mut c, "SELECT @@time_zone", &tz);
                    c.query_drop("DROP TEMPORARY TABLE t_iso").unwrap();
                    // COM_RESET_CONNECTION ends the user variable's pin; the session is clean.
                    c.reset().unwrap();
                    let v: Option<Option<String>> = c.query_first("SELECT @mine").unwrap();
                    assert_eq!(v, Some(None), "client {k}: user variable survived a reset");
                    check(&mut c, "SELECT @@time_zone", "SYSTEM");
                    c.query_drop("USE app").unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client saw state that was not its own");
    }
    assert!(checks.load(Ordering::Relaxed) >= (CLIENTS * ROUNDS * 9) as u64);
    assert!(!s.log_text().contains("panicked"));
}

#[test]
fn two_thousand_clients_run_transactions_through_a_pool_of_sixteen() {
    let users = dedicated_backend_user("pool16");
    let s = Sluice::with(Config::default().pool(&trx_pool(16, "")).users(&users));
    let mut d = direct();
    d.query_drop("CREATE TABLE IF NOT EXISTS fanin (id INT PRIMARY KEY, n BIGINT NOT NULL)")
        .unwrap();
    d.query_drop("DELETE FROM fanin").unwrap();
    d.query_drop("INSERT INTO fanin SELECT seq, 0 FROM seq_0_to_99")
        .unwrap();
    d.query_drop(
        "CREATE TABLE IF NOT EXISTS fanin_log (client INT, round INT, PRIMARY KEY (client, round))",
    )
    .unwrap();
    d.query_drop("DELETE FROM fanin_log").unwrap();
    const CLIENTS: usize = 2000;
    const THREADS: usize = 40;
    const ROUNDS: usize = 3;
    let port = s.port;
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            let mut d = direct();
            // Samples the server's count until the clients are done (the sleep is the sampling
            // interval, not a wait for a condition).
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(threads_of(&mut d, "pool16"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let opened = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let opened = opened.clone();
            std::thread::spawn(move || {
                let mut conns: Vec<(usize, mysql::Conn)> = (t..CLIENTS)
                    .step_by(THREADS)
                    .map(|k| {
                        let opts = mysql::OptsBuilder::new()
                            .ip_or_hostname(Some("127.0.0.1"))
                            .tcp_port(port)
                            .user(Some("app"))
                            .pass(Some("app"))
                            .db_name(Some("app"))
                            .prefer_socket(false)
                            .read_timeout(Some(Duration::from_secs(60)));
                        (
                            k,
                            mysql::Conn::new(opts)
                                .unwrap_or_else(|e| panic!("client {k} connect: {e}")),
                        )
                    })
                    .collect();
                // Every client is connected before any transaction runs.
                opened.wait();
                for round in 0..ROUNDS {
                    for (k, c) in conns.iter_mut() {
                        let mut tx = c.start_transaction(mysql::TxOpts::default()).unwrap();
                        tx.exec_drop("UPDATE fanin SET n = n + 1 WHERE id = ?", (*k % 100,))
                            .unwrap();
                        tx.exec_drop("INSERT INTO fanin_log VALUES (?, ?)", (*k, round))
                            .unwrap();
                        let n: u64 = tx
                            .query_first(format!(
                                "SELECT COUNT(*) FROM fanin_log WHERE client = {k}"
                            ))
                            .unwrap()
                            .unwrap();
                        assert_eq!(
                            n,
                            round as u64 + 1,
                            "client {k} sees its own uncommitted row"
                        );
                        tx.commit().unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client failed");
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let total: u64 = d.query_first("SELECT SUM(n) FROM fanin").unwrap().unwrap();
    let logged: u64 = d
        .query_first("SELECT COUNT(*) FROM fanin_log")
        .unwrap()
        .unwrap();
    assert_eq!(total, (CLIENTS * ROUNDS) as u64);
    assert_eq!(logged, (CLIENTS * ROUNDS) as u64);
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=16).contains(&peak),
        "upstream connections peaked at {peak}"
    );
    assert!(threads_of(&mut d, "pool16") <= 16);
    drop(s);
}

#[test]
fn sysbench_prepared_statements_in_transaction_mode() {
    let users = dedicated_backend_user("sbtrx");
    let s = Sluice::with(Config::default().pool(&trx_pool(8, "")).users(&users));
    let secs: u64 = std::env::var("SLUICE_SYSBENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let base = [
        "--db-driver=mysql".to_string(),
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={}", s.port),
        "--mysql-user=app".into(),
        "--mysql-password=app".into(),
        "--mysql-db=app".into(),
        "--tables=4".into(),
        "--table-size=10000".into(),
        "--db-ps-mode=auto".into(),
    ];
    let run = |extra: &[&str]| {
        let child = std::process::Command::new("sysbench")
            .args(&base)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sysbench (scripts/test.sh installs it)");
        common::wait_output(child, Duration::from_secs(secs + 120))
    };
    // Its own tables: the session-mode sysbench test may run at the same time.
    let base_tables = "--mysql-db=sbtrx";
    direct()
        .query_drop("CREATE DATABASE IF NOT EXISTS sbtrx")
        .unwrap();
    let _ = run(&[base_tables, "oltp_read_write", "cleanup"]);
    let out = run(&[base_tables, "oltp_read_write", "prepare"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = direct();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            let mut d = direct();
            // Samples the server's count until sysbench is done (the sleep is the sampling
            // interval, not a wait for a condition).
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(threads_of(&mut d, "sbtrx"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t = format!("--time={secs}");
    let out = run(&[base_tables, "--threads=16", &t, "oltp_read_write", "run"]);
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |label: &str, idx: usize| -> u64 {
        let line = text
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"));
        line.split_whitespace().nth(idx).unwrap().parse().unwrap()
    };
    let txs = field("transactions:", 1);
    let retried = field("ignored errors:", 2);
    assert!(txs > 100, "{text}");
    assert!(
        retried * 200 <= txs,
        "{retried} deadlock retries in {txs} transactions"
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= 8,
        "upstream connections peaked at {peak} with a pool of 8"
    );
    let _ = run(&[base_tables, "oltp_read_write", "cleanup"]);
    assert!(threads_of(&mut d, "sbtrx") <= 8);
}

#[test]
fn a_transaction_holds_its_backend_and_others_wait_their_turn() {
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!(
                "shards = 1\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .pool(&trx_pool(1, "queue_timeout_ms = 10000")),
    );
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("CREATE TABLE IF NOT EXISTS turn_t (id INT PRIMARY KEY, v INT)")
        .unwrap();
    a.query_drop("REPLACE INTO turn_t VALUES (1, 0)").unwrap();
    // Outside transactions both share the single backend freely.
    for _ in 0..10 {
        let x: i64 = a.query_first("SELECT 1").unwrap().unwrap();
        let y: i64 = b.query_first("SELECT 2").unwrap().unwrap();
        assert_eq!((x, y), (1, 2));
    }
    a.query_drop("BEGIN").unwrap();
    a.query_drop("UPDATE turn_t SET v = 1 WHERE id = 1")
        .unwrap();
    let h = std::thread::spawn(move || {
        let v: i64 = b
            .query_first("SELECT v FROM turn_t WHERE id = 1")
            .unwrap()
            .unwrap();
        v
    });
    // b's statement is queued for the backend a's transaction holds...
    wait_for(
        "b's statement to queue for the backend",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_waiting{worker=\"0\"}") == 1.0).then_some(()),
    );
    assert!(
        !h.is_finished(),
        "b was served while a's transaction held the only backend"
    );
    // ...and runs once the transaction ends.
    a.query_drop("COMMIT").unwrap();
    let v = h.join().unwrap();
    // Run beside the open transaction (on another connection), b would have read the committed
    // value, 0.
    assert_eq!(
        v, 1,
        "the waiting client ran after the commit, on the released backend"
    );
}

#[test]
fn replayed_values_survive_a_backend_left_in_a_multibyte_charset() {
    // One backend for two clients. `b` leaves it with character_set_client = gbk; `a`'s value
    // ends in the bytes E4 B8 81 5C ("丁\"), which gbk would lex as two characters, the second
    // one swallowing the backslash: escaped with a backslash, the literal that replays `a`'s
    // value would end late (a syntax error at best, an injection at worst).
    let s = Sluice::with(Config::default().top("shards = 1").pool(&trx_pool(1, "")));
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop(r"SET @@SESSION.default_master_connection = 'it''s 丁\\'")
        .unwrap();
    let want: String = a
        .query_first("SELECT HEX(@@default_master_connection)")
        .unwrap()
        .unwrap();
    assert_eq!(want, "6974277320E4B8815C");
    for _ in 0..3 {
        b.query_drop("SET NAMES gbk").unwrap();
        let cs: String = b
            .query_first("SELECT @@character_set_client")
            .unwrap()
            .unwrap();
        assert_eq!(cs, "gbk");
        // `a` gets the backend back with its own settings replayed over b's gbk.
        let (hex, cs): (String, String) = a
            .query_first("SELECT HEX(@@default_master_connection), @@character_set_client")
            .unwrap()
            .unwrap();
        assert_eq!((hex.as_str(), cs.as_str()), (want.as_str(), "utf8mb4"));
        let dmc: String = b
            .query_first("SELECT HEX(@@default_master_connection)")
            .unwrap()
            .unwrap();
        assert_eq!(dmc, "", "b never set it");
    }
}

#[test]
fn last_insert_id_row_count_and_found_rows_follow_their_client() {
    let s = Sluice::with(Config::default().pool(&trx_pool(2, "")));
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("CREATE TABLE IF NOT EXISTS lid_t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .unwrap();
    a.query_drop("INSERT INTO lid_t (v) VALUES (1)").unwrap();
    let a_id = a.last_insert_id();
    b.query_drop("INSERT INTO lid_t (v) VALUES (2), (3)")
        .unwrap();
    let b_id = b.last_insert_id();
    assert_ne!(a_id, b_id);
    for _ in 0..5 {
        let got: u64 = a.query_first("SELECT LAST_INSERT_ID()").unwrap().unwrap();
        assert_eq!(got, a_id);
        let got: u64 = b
            .query_first("SELECT LAST_INSERT_ID() AS id")
            .unwrap()
            .unwrap();
        assert_eq!(got, b_id);
    }
    b.query_drop("UPDATE lid_t SET v = v + 10 WHERE v IN (2, 3)")
        .unwrap();
    a.query_drop("DELETE FROM lid_t WHERE id = -1").unwrap();
    let rc: i64 = b.query_first("SELECT ROW_COUNT()").unwrap().unwrap();
    assert_eq!(rc, 2);
    let rc: i64 = a.query_first("SELECT ROW_COUNT()").unwrap().unwrap();
    assert_eq!(rc, 0, "a's own DELETE matched nothing");
    let rc: i64 = a.query_first("SELECT ROW_COUNT()").unwrap().unwrap();
    assert_eq!(
        rc, -1,
        "the previous statement (SELECT ROW_COUNT()) returned rows"
    );
    let _: Vec<i64> = a
        .query("SELECT SQL_CALC_FOUND_ROWS id FROM lid_t LIMIT 1")
        .unwrap();
    let _: Vec<i64> = b.query("SELECT id FROM lid_t WHERE id < 0").unwrap();
    let total: u64 = direct()
        .query_first("SELECT COUNT(*) FROM lid_t")
        .unwrap()
        .unwrap();
    let fr: u64 = a.query_first("SELECT FOUND_ROWS()").unwrap().unwrap();
    assert_eq!(fr, total);
    let fr: u64 = b.query_first("SELECT FOUND_ROWS()").unwrap().unwrap();
    assert_eq!(fr, 0);
    // CONNECTION_ID() is the client's own id, also inside larger expressions.
    let id: u64 = a.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    assert_eq!(id, u64::from(a.connection_id()));
    let id2: u64 = a
        .query_first("SELECT CONNECTION_ID() + 0")
        .unwrap()
        .unwrap();
    assert_eq!(id2, id);
}

#[test]
fn kill_reaches_the_right_client_on_any_shard() {
    let s = Sluice::with(Config::default().pool(&trx_pool(8, "")));
    // Collect clients until some live on each shard (ids carry the shard in their high bits).
    // SO_REUSEPORT places them by a hash of the source port: a handful can all land on one
    // shard (8 did, once in CI), so keep connecting, within a bound, until both are seen.
    let shard_of = |c: &mysql::Conn| c.connection_id() >> 30;
    let mut clients: Vec<mysql::Conn> = Vec::new();
    for _ in 0..64 {
        clients.push(s.conn());
        if clients.iter().any(|c| shard_of(c) == 0) && clients.iter().any(|c| shard_of(c) == 1) {
            break;
        }
    }
    assert!(
        clients.iter().any(|c| shard_of(c) == 0) && clients.iter().any(|c| shard_of(c) == 1),
        "clients on both shards"
    );
    let killer_pos = clients.iter().position(|c| shard_of(c) == 0).unwrap();
    let mut killer = clients.remove(killer_pos);
    let victim_pos = clients.iter().position(|c| shard_of(c) == 1).unwrap();
    let mut victim = clients.remove(victim_pos);
    let victim_id = victim.connection_id();
    let sql = "SELECT SLEEP(20) AS killed_on_shard_1";
    let h = std::thread::spawn(move || (victim.query_first::<i64, _>(sql), victim));
    common::wait_for_statement(&mut direct(), sql);
    killer
        .query_drop(format!("KILL QUERY {victim_id}"))
        .unwrap();
    let (r, mut victim) = h.join().unwrap();
    // MariaDB answers SLEEP interrupted by KILL QUERY with 1 (or error 1317); 0 would be a
    // sleep that ran its 20 s.
    match r {
        Ok(v) => assert_eq!(v, Some(1), "the SLEEP was not interrupted"),
        Err(e) => assert_eq!(server_error(&e).map(|x| x.0), Some(1317), "{e}"),
    }
    let alive: i64 = victim.query_first("SELECT 7").unwrap().unwrap();
    assert_eq!(alive, 7, "KILL QUERY keeps the connection");
    // KILL CONNECTION of an idle client on the other shard closes it (before the KILL is
    // answered).
    killer.query_drop(format!("KILL {victim_id}")).unwrap();
    let e = victim
        .query_drop("SELECT 1")
        .expect_err("the killed client's connection is gone");
    assert!(
        server_error(&e).is_none(),
        "the killed client's connection should be closed, but it was answered: {e}"
    );
    let e = killer.query_drop("KILL 1234567").unwrap_err();
    assert_eq!(server_error(&e).map(|x| x.0), Some(1094));
    let e = killer.query_drop("KILL USER app").unwrap_err();
    assert_eq!(server_error(&e).map(|x| x.0), Some(1235));
}

#[test]
fn pins_keep_state_on_its_backend_and_end_when_the_state_goes() {
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .pool(&trx_pool(2, "pin_budget = 2"))
            .top(&format!("metrics_listen = \"127.0.0.1:{mport}\"")),
    );
    let pinned = |reason: &str| {
        metric(
            &scrape(mport),
            &format!("sluice_pinned_sessions{{worker=\"0\",reason=\"{reason}\"}}"),
        )
    };
    let mut a = s.conn();
    let mut other = s.conn();
    a.query_drop("CREATE TEMPORARY TABLE pin_t (x INT)")
        .unwrap();
    assert_eq!(pinned("temporary_table"), 1.0);
    for i in 0..5 {
        // Another client's traffic cannot take a's backend away from its temporary table.
        let _: i64 = other.query_first(format!("SELECT {i}")).unwrap().unwrap();
        a.query_drop(format!("INSERT INTO pin_t VALUES ({i})"))
            .unwrap();
    }
    let n: i64 = a
        .query_first("SELECT COUNT(*) FROM pin_t")
        .unwrap()
        .unwrap();
    assert_eq!(n, 5);
    a.query_drop("DROP TEMPORARY TABLE pin_t").unwrap();
    assert_eq!(pinned("temporary_table"), 0.0);
    let got: i64 = a
        .query_first("SELECT GET_LOCK('sluice-pin', 5)")
        .unwrap()
        .unwrap();
    assert_eq!(got, 1, "the named lock is taken");
    assert_eq!(pinned("named_lock"), 1.0);
    let held: i64 = other
        .query_first("SELECT IS_FREE_LOCK('sluice-pin')")
        .unwrap()
        .unwrap();
    assert_eq!(held, 0);
    a.query_drop("DO RELEASE_LOCK('sluice-pin')").unwrap();
    assert_eq!(pinned("named_lock"), 0.0);
    a.query_drop("PREPARE q FROM 'SELECT 41 + 1'").unwrap();
    let v: i64 = a.query_first("EXECUTE q").unwrap().unwrap();
    assert_eq!(v, 42);
    a.query_drop("DEALLOCATE PREPARE q").unwrap();
    a.query_drop("CREATE TABLE IF NOT EXISTS pin_lock_t (x INT)")
        .unwrap();
    a.query_drop("LOCK TABLES pin_lock_t READ").unwrap();
    assert_eq!(pinned("lock_tables"), 1.0);
    a.query_drop("UNLOCK TABLES").unwrap();
    let text = scrape(mport);
    for r in [
        "sql_prepare",
        "lock_tables",
        "temporary_table",
        "named_lock",
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("sluice_pinned_sessions{{worker=\"0\",reason=\"{r}\"}}")
            ),
            0.0,
            "{r}"
        );
        assert!(
            metric(
                &text,
                &format!("sluice_pins_total{{worker=\"0\",reason=\"{r}\"}}")
            ) >= 1.0,
            "{r} counted"
        );
    }
    a.query_drop("SET @u = 1").unwrap();
    assert_eq!(pinned("user_variable"), 1.0);
    a.reset().unwrap();
    assert_eq!(pinned("user_variable"), 0.0);
}

#[test]
fn the_pin_budget_refuses_or_waits() {
    let s = Sluice::with(Config::default().pool(&trx_pool(4, "pin_budget = 1")));
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("SET @a = 1").unwrap();
    let e = b.query_drop("SET @b = 1").unwrap_err();
    let (code, state, msg) = server_error(&e).unwrap();
    assert_eq!((code, state.as_str()), (9003, "HY000"));
    assert!(
        msg.contains("user_variable") && msg.contains("pin_budget"),
        "{msg}"
    );
    // b's statements that do not pin still work.
    let v: i64 = b.query_first("SELECT 5").unwrap().unwrap();
    assert_eq!(v, 5);
    drop(s);
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .pool(&trx_pool(4, "pin_budget = 1\npin_overflow = \"wait\""))
            .top(&format!("metrics_listen = \"127.0.0.1:{mport}\"")),
    );
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("SET @a = 1").unwrap();
    let h = std::thread::spawn(move || {
        b.query_drop("SET @b = 2").unwrap();
        let v: i64 = b.query_first("SELECT @b").unwrap().unwrap();
        v
    });
    // b's statement is in progress (a is idle: the only client being served is b)...
    wait_for(
        "b's statement to wait for the pin budget",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_active{worker=\"0\"}") == 1.0).then_some(()),
    );
    // ...and still waiting, since a holds the budget's only pin.
    assert!(!h.is_finished(), "b pinned while a held the whole budget");
    a.reset().unwrap();
    let v = h.join().unwrap();
    assert_eq!(v, 2);
    let m = scrape(mport);
    assert_eq!(
        metric(&m, "sluice_pin_refusals_total{worker=\"0\"}"),
        0.0,
        "b waited, it was not refused"
    );
}

#[test]
fn a_cursor_keeps_its_backend_until_closed_or_exhausted() {
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!(
                "shards = 1\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .pool(&trx_pool(1, "")),
    );
    let backends = |state: &str| {
        metric_sum(
            &scrape(mport),
            "sluice_backend_connections{",
            &[&format!("state=\"{state}\"")],
        )
    };
    let mut c = RawClient::login(s.port);
    let sql = b"SELECT seq FROM seq_1_to_5";
    let mut p = vec![0x16];
    p.extend_from_slice(sql);
    c.send(0, &p);
    let (_, ok) = c.read_packet().unwrap();
    assert_eq!(ok[0], 0);
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let cols = u16::from_le_bytes([ok[5], ok[6]]);
    for _ in 0..cols {
        c.read_packet().unwrap();
    }
    // Execute with a read-only cursor.
    let mut e = vec![0x17];
    e.extend_from_slice(&id.to_le_bytes());
    e.extend_from_slice(&[1, 1, 0, 0, 0]);
    c.send(0, &e);
    let (_, cc) = c.read_packet().unwrap();
    assert_eq!(cc, vec![1]);
    c.read_packet().unwrap();
    let (_, end) = c.read_packet().unwrap();
    assert_eq!(end[0], 0xFE);
    // Another client must wait: the only backend holds the cursor.
    let port = s.port;
    let h = std::thread::spawn(move || {
        let mut other = RawClient::login(port);
        other.query("SELECT 9")
    });
    wait_for(
        "the other client to queue for the backend",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_waiting{worker=\"0\"}") == 1.0).then_some(()),
    );
    // Four rows, one fetch each: the cursor stays open (row 5 is still on the server)...
    let mut rows = Vec::new();
    for _ in 0..4 {
        let mut f = vec![0x1c];
        f.extend_from_slice(&id.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        c.send(0, &f);
        loop {
            let (_, p) = c.read_packet().unwrap();
            if p[0] == 0xFE {
                break;
            }
            assert_eq!(p[0], 0, "binary row");
            // Header, NULL bitmap, then the BIGINT little-endian.
            rows.push(p[2]);
        }
    }
    assert_eq!(rows, vec![1, 2, 3, 4]);
    assert!(
        !h.is_finished(),
        "the other client was served while the cursor was open"
    );
    assert_eq!(backends("in_use"), 1.0, "the cursor holds the backend");
    // ...until the client closes the statement.
    let mut close = vec![0x19];
    close.extend_from_slice(&id.to_le_bytes());
    c.send(0, &close);
    let r = h.join().unwrap();
    assert_eq!(
        r.last().unwrap()[0],
        0xFE,
        "the other client got its result after the cursor closed"
    );
    // A cursor read to its end closes on the server (LAST_ROW_SENT), and releases the backend.
    c.send(0, &p);
    let (_, ok) = c.read_packet().unwrap();
    let id2 = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    c.read_packet().unwrap();
    let mut e2 = vec![0x17];
    e2.extend_from_slice(&id2.to_le_bytes());
    e2.extend_from_slice(&[1, 1, 0, 0, 0]);
    c.send(0, &e2);
    for _ in 0..3 {
        c.read_packet().unwrap();
    }
    let mut f = vec![0x1c];
    f.extend_from_slice(&id2.to_le_bytes());
    f.extend_from_slice(&10u32.to_le_bytes());
    c.send(0, &f);
    let mut n = 0;
    loop {
        let (_, p) = c.read_packet().expect("rows, then the end of the fetch");
        if p[0] == 0xFE {
            break;
        }
        assert_eq!(p[0], 0, "binary row");
        n += 1;
    }
    assert_eq!(n, 5);
    wait_for(
        "the exhausted cursor's backend to go back to the pool",
        Duration::from_secs(10),
        || (backends("in_use") == 0.0).then_some(()),
    );
    let mut other = RawClient::login(s.port);
    let r = other.query("SELECT 9");
    assert_eq!(r.last().unwrap()[0], 0xFE);
}

#[test]
fn admission_control_refuses_with_mysql_errors() {
    let users = "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\nmax_connections = 2\n\
                 [[users]]\nname = \"other\"\npassword = \"o\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n";
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!(
                "max_client_connections = 3\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .users(users)
            .pool(&trx_pool(4, "")),
    );
    let a = s.conn_as("app", "app", None);
    let b = s.conn_as("app", "app", None);
    let opts = |u: &str, p: &str| {
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(s.port)
            .user(Some(u))
            .pass(Some(p))
            .prefer_socket(false)
    };
    let e = mysql::Conn::new(opts("app", "app")).err().unwrap();
    assert_eq!(
        server_error(&e).map(|x| (x.0, x.1)),
        Some((1040, "08004".to_string()))
    );
    let c = s.conn_as("other", "o", None);
    // Refused before the greeting, like a server does: code 1040, in the pre-4.1 ERR format
    // (no SQLSTATE) since nothing has been negotiated yet.
    let e = mysql::Conn::new(opts("other", "o")).err().unwrap();
    let (code, _, msg) = server_error(&e).unwrap();
    assert_eq!((code, msg.as_str()), (1040, "Too many connections"));
    // Both refusals are counted: the user limit by kind, the global one as refused clients.
    let m = scrape(mport);
    assert_eq!(
        metric(
            &m,
            "sluice_errors_total{worker=\"0\",kind=\"connection_limit\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "sluice_clients_refused_total"), 1.0);
    drop((a, b, c));
    // Slots free up when clients leave (polled, bounded: sluice sees the clients go a little
    // after they close).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match mysql::Conn::new(opts("app", "app")) {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_login_storm_with_a_schema_checks_it_once_per_shard() {
    // 64 clients log in at once naming database `app`: sluice verifies the schema on a backend
    // once per shard (later logins wait for the check under way, then use its result), instead
    // of taking a backend connection per login.
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .pool(&trx_pool(2, ""))
            .top(&format!("metrics_listen = \"127.0.0.1:{mport}\"")),
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
    let port = s.port;
    let clients: Vec<RawClient> = (0..64)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                RawClient::login(port)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("login"))
        .collect();
    assert_eq!(clients.len(), 64);
    let m = scrape(mport);
    let checkouts = metric(&m, "sluice_pool_checkouts_total");
    assert!(
        (1.0..=2.0).contains(&checkouts),
        "{checkouts} backend checkouts for 64 logins"
    );
}

#[test]
fn metrics_endpoint_reports_clients_pools_and_multiplexing() {
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .pool(&trx_pool(4, ""))
            .top(&format!("metrics_listen = \"127.0.0.1:{mport}\"")),
    );
    let mut conns: Vec<mysql::Conn> = (0..20).map(|_| s.conn()).collect();
    for c in &mut conns {
        let _: i64 = c.query_first("SELECT 1").unwrap().unwrap();
    }
    let text = scrape(mport);
    assert_eq!(
        metric(&text, "sluice_clients_connected{worker=\"0\"}"),
        20.0
    );
    let open: f64 = text
        .lines()
        .filter(|l| l.starts_with("sluice_backend_connections{") && l.contains("state=\"open\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        (1.0..=4.0).contains(&open),
        "{open} backend connections open"
    );
    assert!(metric(&text, "sluice_multiplexing_ratio{worker=\"0\"}") >= 5.0);
    assert!(metric(&text, "sluice_commands_total{worker=\"0\"}") >= 20.0);
    assert!(
        metric(
            &text,
            "sluice_client_bytes_total{worker=\"0\",direction=\"in\"}"
        ) > 0.0
    );
    assert!(text.contains("sluice_pool_queue_wait_seconds_bucket{"));
}

#[test]
fn a_skewed_load_on_one_shard_still_gets_the_whole_pool() {
    let users = dedicated_backend_user("skew4");
    // Two shards, a pool of 4: each shard's own share is 2.
    let s = Sluice::with(Config::default().pool(&trx_pool(4, "")).users(&users));
    // Keep only clients the kernel put on shard 0 (the shard is in the id's high bits).
    let mut on_zero = Vec::new();
    for _ in 0..64 {
        let c = s.conn();
        if c.connection_id() >> 30 == 0 {
            on_zero.push(c);
        }
        if on_zero.len() == 4 {
            break;
        }
    }
    assert_eq!(on_zero.len(), 4, "four clients on shard 0");
    // The four statements wait for a table the test holds locked, so they stay on their
    // backends until the test lets them go.
    let mut d = direct();
    d.query_drop("CREATE TABLE IF NOT EXISTS skew_t (x INT)")
        .unwrap();
    d.query_drop("LOCK TABLES skew_t WRITE").unwrap();
    let sql = "SELECT COUNT(*) + 1 FROM skew_t";
    let hs: Vec<_> = on_zero
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.query_first::<i64, _>(sql).unwrap().unwrap()))
        .collect();
    // With only its own share, shard 0 would run two at a time and queue the others.
    wait_for(
        "all four statements on backends at once (shard 0 borrowing shard 1's slots)",
        Duration::from_secs(15),
        || (common::running(&mut d, sql) == 4).then_some(()),
    );
    // And no more backend connections than the pool's size (the server may still list for a
    // moment a connection the lending shard closed).
    wait_for(
        "exactly four backend connections of the pool",
        Duration::from_secs(10),
        || (threads_of(&mut d, "skew4") == 4).then_some(()),
    );
    d.query_drop("UNLOCK TABLES").unwrap();
    for h in hs {
        assert_eq!(h.join().unwrap(), 1);
    }
    assert!(threads_of(&mut d, "skew4") <= 4);
}

#[test]
fn change_user_resets_only_this_clients_state() {
    let users = "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
                 [[users]]\nname = \"other\"\npassword = \"o\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n";
    let s = Sluice::with(
        Config::default()
            .users(users)
            .pool(&trx_pool(2, "pin_budget = 2")),
    );
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("SET time_zone = '+04:00', @x = 1").unwrap();
    b.query_drop("SET time_zone = '+05:00', @y = 2").unwrap();
    a.change_user(
        mysql::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("o".into()))
            .with_db_name(Some("app".into())),
    )
    .unwrap();
    let (tz, x): (String, Option<i64>) = a.query_first("SELECT @@time_zone, @x").unwrap().unwrap();
    assert_eq!((tz.as_str(), x), ("SYSTEM", None));
    let (tz, y): (String, Option<i64>) = b.query_first("SELECT @@time_zone, @y").unwrap().unwrap();
    assert_eq!(
        (tz.as_str(), y),
        ("+05:00", Some(2)),
        "the other client kept its state"
    );
    let e = a
        .change_user(
            mysql::ChangeUserOpts::default()
                .with_user(Some("other".into()))
                .with_pass(Some("wrong".into())),
        )
        .unwrap_err();
    assert_eq!(server_error(&e).map(|x| x.0), Some(1045));
}

#[test]
fn table_locks_stay_with_their_client_when_it_changes_its_trackers() {
    // A client that turns transaction tracking on while it holds LOCK TABLES: the server's
    // tracker starts afresh and reports no lock. The connection went back to the pool with the
    // lock held, and the next client's statements failed with ERR 1100 (seed 1796610019).
    let users = dedicated_backend_user("locktrk");
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!(
                "shards = 1\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .pool(&trx_pool(1, "queue_timeout_ms = 20000"))
            .users(&users),
    );
    let mut d = direct();
    d.query_drop("CREATE TABLE IF NOT EXISTS lt_a (x INT)")
        .unwrap();
    d.query_drop("CREATE TABLE IF NOT EXISTS lt_b (x INT)")
        .unwrap();
    let mut a = s.conn();
    // (Connected first: the driver's login runs a query, which would wait for the connection.)
    let mut b = s.conn();
    a.query_drop("LOCK TABLES lt_a READ").unwrap();
    a.query_drop("SET session_track_transaction_info = 'STATE'")
        .unwrap();
    let _: Vec<i64> = a.query("SELECT x FROM lt_a").unwrap();
    // Another client waits for the pool's one connection (the locking client keeps it) and
    // gets it once the tables are unlocked.
    let other = std::thread::spawn(move || {
        let r = b.query_drop("INSERT INTO lt_b VALUES (1)");
        (b, r)
    });
    wait_for(
        "the other client to wait for the connection",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_waiting{worker=\"0\"}") == 1.0).then_some(()),
    );
    assert!(
        !other.is_finished(),
        "served while the locking client held the only connection"
    );
    a.query_drop("UNLOCK TABLES").unwrap();
    let (_, r) = other.join().unwrap();
    r.unwrap_or_else(|e| panic!("the other client's statement: {e}"));
}
