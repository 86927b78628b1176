//! Backends that come and go, on real MariaDB servers of the test's own
//! (`scripts/mariadb-cluster.sh`): a killed backend, a frozen one, a drain, a backend added
//! while sluice runs, a replica promoted after the primary died. Driven through sluice's admin
//! socket (`BACKENDS`, `BACKEND …`), the internal API the admin console will call.

mod common;

use common::servers::Cluster;
use common::{server_error, wait_for, Config, Sluice};
use mysql::prelude::Queryable;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A transaction-mode pool for these tests (commands wait up to 10 s for a usable backend).
const POOL: &str = "mode = \"transaction\"\nsize = 8\nqueue_timeout_ms = 10000\n";

fn admin(s: &Sluice, line: &str) -> String {
    sluice::admin::request(s.pid(), 0, line)
        .unwrap_or_else(|e| panic!("admin request {line:?}: {e}\n{}", s.log_text()))
}

/// The state sluice shows for the backend at `addr` (up, suspect, down, draining, …).
fn state(s: &Sluice, addr: &str) -> (String, u64) {
    let rows: serde_json::Value = serde_json::from_str(&admin(s, "BACKENDS")).unwrap();
    let b = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr)
        .unwrap_or_else(|| panic!("no backend {addr} in {rows}"));
    (
        b["state"].as_str().unwrap().to_string(),
        b["open"].as_u64().unwrap(),
    )
}

fn wait_state(s: &Sluice, addr: &str, want: &str) -> Duration {
    let t0 = Instant::now();
    wait_for(
        &format!("backend {addr} {want}"),
        Duration::from_secs(15),
        || (state(s, addr).0 == want).then_some(()),
    );
    t0.elapsed()
}

fn server_id(c: &mut mysql::Conn) -> u32 {
    c.query_first("SELECT @@server_id").unwrap().unwrap()
}

/// Every client runs `rounds` statements; the server ids that answered.
fn run_all(clients: &mut [mysql::Conn], rounds: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for _ in 0..rounds {
        for c in clients.iter_mut() {
            seen.insert(server_id(c));
        }
    }
    seen
}

/// Runs statements until one is answered by server `id` (bounded).
fn wait_served_by(clients: &mut [mysql::Conn], id: u32) {
    wait_for(
        &format!("a statement served by server {id}"),
        Duration::from_secs(15),
        || run_all(clients, 1).contains(&id).then_some(()),
    );
}

#[test]
fn a_killed_backend_is_taken_out_fast_and_idle_clients_never_see_it() {
    let mut cl = Cluster::start(2);
    let (a0, a1) = (cl.servers[0].addr(), cl.servers[1].addr());
    let s = Sluice::with(Config::default().pool(POOL).backends(cl.addrs()));
    let mut clients: Vec<mysql::Conn> = (0..12).map(|_| s.conn()).collect();
    // Equivalent peers share the load.
    assert_eq!(run_all(&mut clients, 4), BTreeSet::from([1, 2]));

    let t0 = Instant::now();
    cl.kill9(1);
    wait_state(&s, &a1, "down");
    eprintln!("killed backend marked down after {:?}", t0.elapsed());
    // Clients that held nothing notice nothing: every statement is served, by the survivor.
    assert_eq!(run_all(&mut clients, 5), BTreeSet::from([1]));
    assert_eq!(state(&s, &a0).0, "up");

    // Restarted, it is taken back (after its good probes) and serves again.
    cl.restart(1);
    wait_state(&s, &a1, "up");
    wait_served_by(&mut clients, 2);
    assert!(s.log_text().contains("backend up"));
}

#[test]
fn a_statement_in_flight_on_a_killed_backend_gets_2013_once_and_is_never_resent() {
    let mut cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let s = Sluice::with(Config::default().pool(POOL).backends(cl.addrs()));
    for srv in &cl.servers {
        srv.conn()
            .query_drop("CREATE TABLE IF NOT EXISTS ledger (k INT PRIMARY KEY, srv INT)")
            .unwrap();
    }
    // Eight clients each insert a row and sleep in one statement, outside a transaction: some
    // land on server 2, which is killed while they sleep.
    let handles: Vec<_> = (0..8)
        .map(|k| {
            let mut c = s.conn();
            std::thread::spawn(move || {
                let r = c.query_drop(format!(
                    "INSERT INTO ledger SELECT {k}, @@server_id FROM DUAL WHERE SLEEP(3) = 0"
                ));
                // The same connection goes on afterwards (on the survivor).
                let after = server_id(&mut c);
                (k, r.err().map(|e| server_error(&e)), after)
            })
        })
        .collect();
    let mut d1 = cl.servers[1].conn();
    wait_for(
        "statements sleeping on server 2",
        Duration::from_secs(10),
        || {
            let n: u64 = d1
            .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO ledger%'")
            .unwrap()
            .unwrap();
            (n > 0).then_some(())
        },
    );
    drop(d1);
    cl.kill9(1);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut lost = 0;
    for (k, err, after) in &results {
        match err {
            None => {}
            Some(Some((code, _, msg))) => {
                assert_eq!(*code, 2013, "client {k}: {msg}");
                assert!(msg.contains(&a1), "names the backend: {msg}");
                lost += 1;
            }
            Some(None) => panic!("client {k}: not a server error"),
        }
        // A client whose statement was lost goes on, on the survivor. (One whose statement
        // ended before the kill — a slow machine can start it seconds before the others — may
        // have asked server 2 before it died.)
        if err.is_some() {
            assert_eq!(*after, 1, "client {k} goes on, on the survivor");
        }
    }
    assert!(lost > 0, "some statements were on the killed backend");
    // Never sent again: the survivor holds exactly the rows it acknowledged.
    let mut d0 = cl.servers[0].conn();
    let rows: Vec<(i32, u32)> = d0.query("SELECT k, srv FROM ledger").unwrap();
    let acked = results.iter().filter(|r| r.1.is_none()).count();
    assert_eq!(rows.len(), acked, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == 1));
}

#[test]
fn a_frozen_backend_is_marked_down_and_clients_go_on() {
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let s = Sluice::with(Config::default().pool(POOL).backends(cl.addrs()));
    let mut clients: Vec<mysql::Conn> = (0..8).map(|_| s.conn()).collect();
    assert_eq!(run_all(&mut clients, 4), BTreeSet::from([1, 2]));
    let t0 = Instant::now();
    cl.sigstop(1);
    wait_state(&s, &a1, "down");
    eprintln!("frozen backend marked down after {:?}", t0.elapsed());
    assert_eq!(run_all(&mut clients, 5), BTreeSet::from([1]));
    cl.sigcont(1);
    wait_state(&s, &a1, "up");
    wait_served_by(&mut clients, 2);
}

#[test]
fn a_drained_backend_gets_no_new_work_and_empties() {
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let s = Sluice::with(Config::default().pool(POOL).backends(cl.addrs()));
    let mut clients: Vec<mysql::Conn> = (0..8).map(|_| s.conn()).collect();
    assert_eq!(run_all(&mut clients, 4), BTreeSet::from([1, 2]));
    assert!(state(&s, &a1).1 > 0, "backend 2 has pooled connections");
    assert_eq!(admin(&s, &format!("BACKEND DRAIN {a1}")), "OK");
    assert_eq!(state(&s, &a1).0, "draining");
    // Transaction-mode clients simply move.
    assert_eq!(run_all(&mut clients, 5), BTreeSet::from([1]));
    // Its idle connections close; nothing holds it any more.
    wait_for("backend 2 empty", Duration::from_secs(10), || {
        (state(&s, &a1).1 == 0).then_some(())
    });
    assert_eq!(admin(&s, &format!("BACKEND UNDRAIN {a1}")), "OK");
    wait_served_by(&mut clients, 2);
    // Unknown backends and verbs are refused clearly.
    assert!(admin(&s, "BACKEND DRAIN 127.0.0.1:1").starts_with("ERR 1210"));
    assert!(admin(&s, "BACKEND FLY 0").starts_with("ERR 1064"));
}

#[test]
fn a_backend_added_while_running_takes_load() {
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let s = Sluice::with(
        Config::default()
            .pool(POOL)
            .backends(vec![cl.servers[0].addr()]),
    );
    let mut clients: Vec<mysql::Conn> = (0..8).map(|_| s.conn()).collect();
    assert_eq!(run_all(&mut clients, 3), BTreeSet::from([1]));
    assert_eq!(admin(&s, &format!("BACKEND ADD {a1} any 1")), "OK 1");
    assert!(admin(&s, &format!("BACKEND ADD {a1}")).starts_with("ERR 1210"));
    wait_state(&s, &a1, "up");
    wait_served_by(&mut clients, 2);
    // Removed, it serves no more.
    assert_eq!(admin(&s, "BACKEND REMOVE 1"), "OK");
    assert_eq!(run_all(&mut clients, 4), BTreeSet::from([1]));
}

/// A session's observable state, compared before and after it moves: the variables it set
/// (session values that differ from the server's global ones), its schema, LAST_INSERT_ID(),
/// and its user variables with their types.
fn session_state(c: &mut mysql::Conn) -> Vec<String> {
    let mut out: Vec<String> = c
        .query_map(
            "SELECT s.VARIABLE_NAME, s.VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES s \
             JOIN information_schema.GLOBAL_VARIABLES g USING (VARIABLE_NAME) \
             WHERE NOT (s.VARIABLE_VALUE <=> g.VARIABLE_VALUE) ORDER BY 1",
            |(n, v): (String, Option<String>)| format!("{n}={v:?}"),
        )
        .unwrap();
    let (db, lid): (Option<String>, u64) = c
        .query_first("SELECT DATABASE(), LAST_INSERT_ID()")
        .unwrap()
        .unwrap();
    out.push(format!("schema={db:?} last_insert_id={lid}"));
    out.extend(
        c.query_map(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME \
             FROM information_schema.USER_VARIABLES ORDER BY 1",
            |(n, v, t, cs): (String, Option<Vec<u8>>, String, Option<String>)| {
                format!("@{n}={v:?} {t} {cs:?}")
            },
        )
        .unwrap(),
    );
    out
}

/// A session-mode sluice on `backends`, and its metrics port.
fn session_mode_sluice(backends: Vec<String>) -> (Sluice, u16) {
    let mport = common::free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!("metrics_listen = \"127.0.0.1:{mport}\""))
            .pool("mode = \"session\"\nsize = 32\nqueue_timeout_ms = 10000\n")
            .backends(backends),
    );
    (s, mport)
}

/// Session-mode clients (each holding its backend for its whole session) spread onto a backend
/// added while they run: about half of them move, at their next commands, keeping their
/// settings and LAST_INSERT_ID(); then placements hold still (no moving back and forth).
#[test]
fn session_mode_clients_spread_onto_a_backend_added_while_running() {
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let (s, mport) = session_mode_sluice(vec![cl.servers[0].addr()]);
    let n = 12;
    let mut clients: Vec<mysql::Conn> = (0..n).map(|_| s.conn()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.query_drop("SET time_zone = '+03:00'").unwrap();
        c.query_drop(format!("SELECT LAST_INSERT_ID({})", 100 + i))
            .unwrap();
    }
    assert_eq!(run_all(&mut clients, 1), BTreeSet::from([1]));
    let states: Vec<Vec<String>> = clients.iter_mut().map(session_state).collect();
    assert_eq!(admin(&s, &format!("BACKEND ADD {a1} any 1")), "OK 1");
    wait_state(&s, &a1, "up");
    let placed =
        |clients: &mut [mysql::Conn]| -> Vec<u32> { clients.iter_mut().map(server_id).collect() };
    // Each shard evens its own sessions out (to within one), so about half move.
    let spread = wait_for(
        "sessions spread over both servers",
        Duration::from_secs(15),
        || {
            let p = placed(&mut clients);
            let on2 = p.iter().filter(|id| **id == 2).count();
            (on2 >= n / 2 - 2).then_some(p)
        },
    );
    let on2 = spread.iter().filter(|id| **id == 2).count();
    assert!(on2 <= n / 2 + 2, "not everyone moves: {spread:?}");
    for (i, c) in clients.iter_mut().enumerate() {
        let (tz, lid): (String, u64) = c
            .query_first("SELECT @@time_zone, LAST_INSERT_ID()")
            .unwrap()
            .unwrap();
        assert_eq!((tz.as_str(), lid), ("+03:00", 100 + i as u64), "client {i}");
    }
    let after: Vec<Vec<String>> = clients.iter_mut().map(session_state).collect();
    assert_eq!(after, states);
    // Balanced: more commands move nobody.
    let settled = placed(&mut clients);
    for _ in 0..3 {
        assert_eq!(placed(&mut clients), settled);
    }
    let m = common::scrape(mport);
    assert_eq!(
        common::metric_sum(&m, "sluice_session_moves_total", &["reason=\"rebalance\""]),
        settled.iter().filter(|id| **id == 2).count() as f64,
        "{m}"
    );
}

/// Why sluice refuses the backend at `addr` (`reason` in `BACKENDS`), if it does.
fn reason(s: &Sluice, addr: &str) -> Option<String> {
    let rows: serde_json::Value = serde_json::from_str(&admin(s, "BACKENDS")).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr)
        .and_then(|b| b["reason"].as_str().map(str::to_string))
}

/// A MariaDB 10.11 started without InnoDB: its `information_schema.SYSTEM_VARIABLES` lacks
/// InnoDB's session variables (`innodb_lock_wait_timeout`, `innodb_strict_mode`, …), which sluice
/// replays when a client sets them. Server id 9 tells its answers apart.
const NO_INNODB: &str =
    "--innodb=OFF --default-storage-engine=Aria --default-tmp-storage-engine=Aria --server-id=9";

#[test]
fn a_backend_of_another_kind_is_refused_until_it_restarts_compatible() {
    // The instance learns a stock server's catalog, InnoDB's session variables among them.
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let mut odd = Cluster::start_with_args(1, NO_INNODB);
    let ao = odd.servers[0].addr();
    let s = Sluice::with(
        Config::default()
            .pool(POOL)
            .backends(vec![cl.servers[0].addr()]),
    );
    let mut clients: Vec<mysql::Conn> = (0..8).map(|_| s.conn()).collect();
    // A backend of the same kind is checked and admitted as before.
    assert_eq!(admin(&s, &format!("BACKEND ADD {a1} any 1")), "OK 1");
    wait_state(&s, &a1, "up");
    assert_eq!(reason(&s, &a1), None);
    wait_served_by(&mut clients, 2);

    // Another kind answers its probes but is refused, with the differences named.
    assert_eq!(admin(&s, &format!("BACKEND ADD {ao} any 1")), "OK 2");
    wait_state(&s, &ao, "incompatible");
    let why = reason(&s, &ao).expect("a refusal names its reason");
    eprintln!("refused: {why}");
    assert!(why.starts_with("no session variable innodb_"), "{why}");
    // It serves nothing, however long it answers.
    for _ in 0..5 {
        assert!(!run_all(&mut clients, 2).contains(&9));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state(&s, &ao), ("incompatible".to_string(), 0));
    let log = s.log_text();
    assert_eq!(
        log.matches("backend incompatible").count(),
        1,
        "logged once at WARN:\n{log}"
    );
    assert!(log.contains(&why), "{log}");

    // Restarted as a stock server (a restart may change what a server is), it is checked
    // again at the reconnect and admitted.
    odd.set_extra_args(0, "--server-id=9");
    odd.restart(0);
    wait_state(&s, &ao, "up");
    assert_eq!(reason(&s, &ao), None);
    wait_served_by(&mut clients, 9);
}

#[test]
fn writes_follow_a_promoted_replica_and_no_acknowledged_write_is_lost() {
    let mut cl = Cluster::start_replicated(2);
    let (a0, a1) = (cl.servers[0].addr(), cl.servers[1].addr());
    let s = Sluice::with(Config::default().pool(POOL).backends_toml(&format!(
        "[[backends]]\naddress = \"{a0}\"\nrole = \"primary\"\n\
         [[backends]]\naddress = \"{a1}\"\nrole = \"replica\"\n"
    )));
    let mut c = s.conn();
    c.query_drop("CREATE TABLE ledger (k INT PRIMARY KEY, srv INT)")
        .unwrap();
    // Writes go to the primary only (the replica is read-only).
    for k in 0..20 {
        c.query_drop(format!("INSERT INTO ledger VALUES ({k}, @@server_id)"))
            .unwrap();
    }
    cl.wait_replicated(&[1]);
    cl.kill9(0);
    wait_state(&s, &a0, "down");
    // A write sent now waits in sluice (nothing sent: no writable backend) ...
    let writer = std::thread::spawn(move || {
        let t = Instant::now();
        let r = c.query_drop("INSERT INTO ledger VALUES (100, @@server_id)");
        (r.map_err(|e| e.to_string()), t.elapsed(), c)
    });
    std::thread::sleep(Duration::from_millis(300));
    // ... until an operator promotes the replica: sluice follows at its next probe.
    let promoted = Instant::now();
    cl.promote(1);
    let (r, waited, mut c) = writer.join().unwrap();
    r.expect("the queued write runs on the new primary");
    eprintln!(
        "write waited {waited:?}; served {:?} after the promotion",
        promoted.elapsed()
    );
    for k in 101..110 {
        c.query_drop(format!("INSERT INTO ledger VALUES ({k}, @@server_id)"))
            .unwrap();
    }
    let mut d1 = cl.servers[1].conn();
    let rows: Vec<(i32, u32)> = d1.query("SELECT k, srv FROM ledger ORDER BY k").unwrap();
    assert_eq!(rows.len(), 30, "every acknowledged write, once: {rows:?}");
    assert!(rows[..20].iter().all(|r| r.1 == 1));
    assert!(rows[20..].iter().all(|r| r.1 == 2));
}

/// Waits (bounded) until a drain's deadline ends `c`'s connection: ERR 1053 whose message names
/// every one of `words` (why it could not move, the backend).
fn closed_at_deadline(c: &mut mysql::Conn, words: &[&str]) {
    let e = wait_for(
        "the drain's deadline closes the pinned client",
        Duration::from_secs(10),
        || c.query_drop("SELECT 1").err(),
    );
    let (code, _, msg) = server_error(&e).unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(code, 1053, "{msg}");
    for w in words {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
}

#[test]
fn a_drain_deadline_closes_what_cannot_move_with_an_error_naming_why() {
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let s = Sluice::with(Config::default().pool(POOL).backends(cl.addrs()));
    // A client holding a temporary table is pinned to its backend; find one on server 2.
    let mut pinned = None;
    for _ in 0..20 {
        let mut c = s.conn();
        c.query_drop("CREATE TEMPORARY TABLE t_keep (x INT)")
            .unwrap();
        if server_id(&mut c) == 2 {
            pinned = Some(c);
            break;
        }
    }
    let mut pinned = pinned.expect("a pinned client on server 2 within 20 tries");
    // One pinned by user variables alone: they can go with it.
    let mut vars = None;
    for _ in 0..20 {
        let mut c = s.conn();
        c.query_drop("SET @v = 42, @s = 'kept'").unwrap();
        if server_id(&mut c) == 2 {
            vars = Some(c);
            break;
        }
    }
    let mut vars = vars.expect("a client pinned by variables on server 2 within 20 tries");
    let thread = |c: &mut mysql::Conn| -> u64 {
        c.query_first("SELECT @@pseudo_thread_id").unwrap().unwrap()
    };
    let mut free: Vec<mysql::Conn> = (0..4).map(|_| s.conn()).collect();
    // A deadline a loaded machine cannot pass before the checks that must come before it.
    assert_eq!(admin(&s, &format!("BACKEND DRAIN {a1} TIMEOUT 3000")), "OK");
    // The pinned client keeps its backend until the deadline.
    assert_eq!(
        server_id(&mut pinned),
        2,
        "before the deadline it is served"
    );
    // The one pinned by variables moves at its next command, its variables made again there, and stays pinned there
    // (the same server connection from statement to statement).
    assert_eq!(server_id(&mut vars), 1);
    let (v, kept): (i64, String) = vars.query_first("SELECT @v, @s").unwrap().unwrap();
    assert_eq!((v, kept.as_str()), (42, "kept"));
    let t = thread(&mut vars);
    run_all(&mut free, 2);
    assert_eq!(thread(&mut vars), t);
    // Clients holding nothing move at once.
    assert_eq!(run_all(&mut free, 3), BTreeSet::from([1]));
    // After it, the pinned client is told why and its connection ends.
    closed_at_deadline(&mut pinned, &["temporary_table", &a1]);
    wait_for("backend 2 drained", Duration::from_secs(10), || {
        (state(&s, &a1).0 == "drained").then_some(())
    });
    assert!(
        s.log_text().contains("could not move") && s.log_text().contains("temporary_table"),
        "the log names the reason"
    );
    assert!(admin(&s, &format!("BACKEND DRAIN {a1} TIMEOUT x")).starts_with("ERR 1064"));
}

/// Session-mode clients on a drained backend move to another between their commands, with
/// their settings and history values; idle ones that hold nothing only the backend knows give it
/// up without a command; a pinned one is closed at the deadline, naming why.
#[test]
fn session_mode_clients_move_off_a_drained_backend_keeping_their_state() {
    let cl = Cluster::start(2);
    let a1 = cl.servers[1].addr();
    let (s, mport) = session_mode_sluice(cl.addrs());
    // Clients on server 2: one pinned by a temporary table, one by a DOUBLE user variable (its
    // text is not exact: not carried), one by user variables sluice carries by value, the others
    // with settings, half of them with a LAST_INSERT_ID only the backend knows.
    let mut on2: Vec<(mysql::Conn, bool)> = Vec::new();
    let mut pinned = None;
    let mut double = None;
    let mut vars = None;
    // One with a forced insert_id that no insert has used yet (MariaDB keeps it until one does).
    let mut forced = None;
    // (Kept open: session-mode clients are placed on the least busy backend.)
    let mut on1: Vec<mysql::Conn> = Vec::new();
    const VARS: &str = "SELECT @i, @u, @d, @n, HEX(@s), COLLATION(@s), @b";
    type Vars = (i64, u64, String, Option<String>, String, String, Vec<u8>);
    for _ in 0..120 {
        if on2.len() >= 4
            && pinned.is_some()
            && forced.is_some()
            && double.is_some()
            && vars.is_some()
        {
            break;
        }
        let mut c = s.conn();
        c.query_drop("SET time_zone = '+03:00'").unwrap();
        if server_id(&mut c) != 2 {
            on1.push(c);
            continue;
        }
        if pinned.is_none() {
            c.query_drop("CREATE TEMPORARY TABLE keep (a INT)").unwrap();
            pinned = Some(c);
            continue;
        }
        if double.is_none() {
            c.query_drop("SET @f = 1e3").unwrap();
            double = Some(c);
            continue;
        }
        if vars.is_none() {
            c.query_drop(
                "SET @i = -5, @u = CAST(7 AS UNSIGNED), @d = 2.50, @n = NULL, \
                 @s = _latin1 X'68E96C6C6F' COLLATE latin1_bin, @b = X'00FF'",
            )
            .unwrap();
            let before: Vars = c.query_first(VARS).unwrap().unwrap();
            vars = Some((c, before));
            continue;
        }
        if forced.is_none() {
            c.query_drop("SET insert_id = 9000").unwrap();
            c.query_drop("SELECT 1").unwrap();
            forced = Some(c);
            continue;
        }
        let lid = on2.len() % 2 == 1;
        if lid {
            c.query_drop("SELECT LAST_INSERT_ID(42)").unwrap();
        }
        on2.push((c, lid));
    }
    let mut double = double.expect("a client on server 2 within 120 tries");
    let (mut vars, before) = vars.expect("a client on server 2 within 120 tries");
    let mut pinned = pinned.expect("a client on server 2 within 120 tries");
    let mut forced = forced.expect("a client on server 2 within 120 tries");
    assert!(on2.len() >= 4, "{} clients on server 2", on2.len());
    // What each moving session looks like from the inside, to compare after its move.
    let states: Vec<Vec<String>> = on2.iter_mut().map(|(c, _)| session_state(c)).collect();
    let vars_state = session_state(&mut vars);
    let waiting = 3 + on2.iter().filter(|c| c.1).count() as u64;
    // A deadline long enough for what must happen before it on a loaded machine.
    assert_eq!(admin(&s, &format!("BACKEND DRAIN {a1} TIMEOUT 8000")), "OK");
    // The pinned ones stay until the deadline.
    assert_eq!(server_id(&mut pinned), 2);
    assert_eq!(server_id(&mut double), 2);
    // Idle clients that hold nothing only server 2 knows give it up without a command.
    wait_for(
        "idle session-mode clients moved",
        Duration::from_secs(10),
        || (state(&s, &a1).1 <= 1 + waiting).then_some(()),
    );
    // Every one goes on on server 1 with its settings and its LAST_INSERT_ID: the same session
    // seen from the inside.
    for ((c, lid), state) in on2.iter_mut().zip(&states) {
        assert_eq!(server_id(c), 1);
        assert_eq!(&session_state(c), state);
        let tz: String = c.query_first("SELECT @@time_zone").unwrap().unwrap();
        assert_eq!(tz, "+03:00");
        if *lid {
            let v: u64 = c.query_first("SELECT LAST_INSERT_ID()").unwrap().unwrap();
            assert_eq!(v, 42);
        }
    }
    let m = common::scrape(mport);
    assert!(
        common::metric_sum(&m, "sluice_session_moves_total", &["reason=\"leaving\""])
            >= on2.len() as f64,
        "{m}"
    );
    // The one pinned by user variables alone moves at its next command, its variables made
    // again on server 1 with their types and collations.
    assert_eq!(server_id(&mut vars), 1);
    let after: Vars = vars.query_first(VARS).unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(session_state(&mut vars), vars_state);
    // The pinned ones are told why at the deadline.
    closed_at_deadline(&mut pinned, &["temporary_table", &a1]);
    closed_at_deadline(&mut double, &["user_variable", &a1]);
    closed_at_deadline(&mut forced, &["insert_id", &a1]);
    wait_state(&s, &a1, "drained");
    // The moved clients keep working, and so do those that were on server 1.
    for (c, _) in on2.iter_mut() {
        assert_eq!(server_id(c), 1);
    }
    for c in on1.iter_mut() {
        assert_eq!(server_id(c), 1);
    }
}

/// A name server of the test's own (UDP on loopback): answers A queries for every name with
/// the address and TTL it is set to, AAAA queries with nothing.
struct TestDns {
    addr: std::net::SocketAddr,
    answer: std::sync::Arc<std::sync::Mutex<([u8; 4], u32)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestDns {
    fn start(ip: [u8; 4], ttl: u32) -> TestDns {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((ip, ttl)));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (answer.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let q = &buf[..n];
                // The question: labels from byte 12, then type and class.
                let mut end = 12;
                while end < n && q[end] != 0 {
                    end += 1 + q[end] as usize;
                }
                if end + 5 > n {
                    continue;
                }
                let qtype = u16::from_be_bytes([q[end + 1], q[end + 2]]);
                let mut r = q[..end + 5].to_vec();
                r[2] = 0x81;
                r[3] = 0x80;
                let (ip, ttl) = *a.lock().unwrap();
                if qtype == 1 {
                    r[7] = 1;
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                    r.extend_from_slice(&ttl.to_be_bytes());
                    r.extend_from_slice(&[0, 4]);
                    r.extend_from_slice(&ip);
                }
                let _ = sock.send_to(&r, from);
            }
        });
        TestDns { addr, answer, stop }
    }

    fn set(&self, ip: [u8; 4], ttl: u32) {
        *self.answer.lock().unwrap() = (ip, ttl);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A MariaDB of the test's own on `ip:port` (stopped when dropped).
struct ServerAt(std::path::PathBuf);

impl ServerAt {
    fn start(ip: &str, port: u16, server_id: u32) -> ServerAt {
        let dir = std::env::temp_dir().join(format!(
            "sluice-test-dns-{}-{server_id}-{port}",
            std::process::id()
        ));
        let out = std::process::Command::new("bash")
            .arg(common::repo_root().join("scripts/mariadb.sh"))
            .arg("start")
            .arg(&dir)
            .env("MARIADB_PORT", port.to_string())
            .env("MARIADB_SERVER_ID", server_id.to_string())
            .env("MARIADB_EXTRA_ARGS", format!("--bind-address={ip}"))
            .output()
            .unwrap();
        let s = ServerAt(dir);
        assert!(
            out.status.success(),
            "mariadb.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }
}

impl Drop for ServerAt {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(common::repo_root().join("scripts/mariadb.sh"))
            .arg("stop")
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_backend_name_that_moves_is_followed() {
    let port = common::free_port();
    let _a = ServerAt::start("127.0.0.2", port, 11);
    let b = ServerAt::start("127.0.0.3", port, 12);
    // The name first points at server 11, with a 1 s TTL.
    let dns = TestDns::start([127, 0, 0, 2], 1);
    let name = format!("db.sluice.test:{port}");
    let s = Sluice::with(
        Config::default()
            .pool(POOL)
            .backends(vec![name.clone()])
            .tables(&format!(
                "[dns]\nnameserver = \"{}\"\nttl_ms = 60000\n",
                dns.addr
            )),
    );
    let mut clients: Vec<mysql::Conn> = (0..4).map(|_| s.conn()).collect();
    assert_eq!(run_all(&mut clients, 3), BTreeSet::from([11]));
    // The name moves (an RDS-style failover): sluice follows when the TTL is up.
    dns.set([127, 0, 0, 3], 3600);
    wait_served_by(&mut clients, 12);
    assert_eq!(run_all(&mut clients, 3), BTreeSet::from([12]));
    assert!(s.log_text().contains("backend name moved"));
    // Now the TTL is an hour; the name moves back and the server it pointed at goes away: the
    // failed connect evicts the cached address at once, and no client sees an error.
    dns.set([127, 0, 0, 2], 3600);
    drop(b);
    let t = Instant::now();
    assert_eq!(run_all(&mut clients, 3), BTreeSet::from([11]));
    eprintln!(
        "followed the name back {:?} after its server went away",
        t.elapsed()
    );
}
