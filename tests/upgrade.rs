//! Upgrading without dropping a client (`crate::upgrade`): SIGUSR2 makes sluice start the binary
//! at its path as a successor, which takes the listeners and every idle client, with its state;
//! a successor that cannot start leaves the old process with everything.

mod common;

use common::{Config, Sluice};
use mysql::prelude::Queryable;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A client with state sluice must carry: a session variable, a schema chosen with USE, a
/// prepared statement, LAST_INSERT_ID.
struct Client {
    conn: mysql::Conn,
    id: u64,
    wait_timeout: u64,
    stmt: mysql::Statement,
    last_insert_id: u64,
}

fn client(s: &Sluice, i: u64) -> Client {
    let mut conn = s.conn_as("app", "app", None);
    let wait_timeout = 1000 + i;
    conn.query_drop(format!("SET SESSION wait_timeout = {wait_timeout}"))
        .unwrap();
    conn.query_drop("USE app").unwrap();
    let last_insert_id = 42 + i;
    let _: Option<u64> = conn
        .query_first(format!("SELECT LAST_INSERT_ID({last_insert_id})"))
        .unwrap();
    let stmt = conn
        .prep("SELECT ? + 1, @@SESSION.wait_timeout, DATABASE()")
        .unwrap();
    let id: u64 = conn.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    Client {
        conn,
        id,
        wait_timeout,
        stmt,
        last_insert_id,
    }
}

/// The client's state is what it set, on its own connection.
fn check(c: &mut Client, what: &str) {
    let row: (u64, u64, Option<String>, u64) = c
        .conn
        .query_first("SELECT CONNECTION_ID(), @@SESSION.wait_timeout, DATABASE(), LAST_INSERT_ID()")
        .unwrap_or_else(|e| panic!("{what}: client {} query: {e}", c.id))
        .unwrap();
    assert_eq!(
        row,
        (c.id, c.wait_timeout, Some("app".into()), c.last_insert_id),
        "{what}: client {}",
        c.id
    );
    let stmt = c.stmt.clone();
    let (n, w, db): (u64, u64, Option<String>) = c
        .conn
        .exec_first(&stmt, (41,))
        .unwrap_or_else(|e| panic!("{what}: client {} execute: {e}", c.id))
        .unwrap();
    assert_eq!(
        (n, w, db),
        (42, c.wait_timeout, Some("app".into())),
        "{what}: client {}",
        c.id
    );
}

/// `text` without terminal colour sequences (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The successor's pid, from the old process's log line (the latest upgrade's).
fn successor_pid(s: &Sluice) -> Option<u32> {
    let log = plain(&s.log_text());
    let line = log.lines().rfind(|l| l.contains("successor ready"))?;
    let at = line.find(" pid=")? + 5;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Stops the successor (not our child: the old process started it) at the end of a test.
struct Successor(u32);

/// Is process `pid` running (not gone, not a zombie waiting to be reaped)?
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let state = st
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

impl Successor {
    fn alive(&self) -> bool {
        running(self.0)
    }
}

/// The handover channels (`SOCK_SEQPACKET` Unix sockets) process `pid` holds.
fn seqpacket_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; type 0005 = SEQPACKET.
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 6 && f[4] == "0005" && inodes.iter().any(|i| i == f[6])
        })
        .count()
}

impl Drop for Successor {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        // SAFETY: plain signals to a pid this test learned from the log.
        unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        let limit = std::time::Instant::now() + Duration::from_secs(10);
        while self.alive() && std::time::Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// Waits until the successor reports ready; it is stopped when dropped.
fn ready_successor(s: &Sluice) -> Successor {
    Successor(common::wait_for("the successor to be ready", LIMIT, || {
        successor_pid(s)
    }))
}

/// Waits until the successor has adopted `n` sessions, refusing none.
fn wait_adopted(s: &Sluice, n: usize) {
    let want = format!("adopted={n} refused=0");
    common::wait_for(&format!("the successor to adopt {n}"), LIMIT, || {
        plain(&s.log_text()).contains(&want).then_some(())
    });
}

/// A new client gets a connection id none of `ids` has (moved clients keep theirs).
fn assert_fresh_id(s: &Sluice, ids: &[u64]) {
    let mut fresh = s.conn();
    let id: u64 = fresh
        .query_first("SELECT CONNECTION_ID()")
        .unwrap()
        .unwrap();
    assert!(!ids.contains(&id), "id {id} handed out twice ({ids:?})");
}

/// Waits until each of `n` workers answers on its admin socket: the port answers once the
/// first worker listens, and a SIGUSR2 before the others are up stops at the first that is not
/// (seen once in CI).
fn workers_up(s: &Sluice, n: u32) {
    common::wait_for(&format!("{n} workers up"), LIMIT, || {
        (0..n)
            .all(|w| sluice::admin::request(s.pid(), w, "PING").is_ok_and(|a| a == "OK"))
            .then_some(())
    });
}

fn upgrade(s: &Sluice) {
    // SAFETY: a signal to the sluice this test started.
    assert_eq!(unsafe { libc::kill(s.pid() as i32, libc::SIGUSR2) }, 0);
}

#[test]
fn idle_clients_move_with_their_state() {
    let dir = std::env::temp_dir().join(format!("sluice-upgrade-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut s = Sluice::with_env(
        Config::default(),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let mut clients: Vec<Client> = (0..8).map(|i| client(&s, i)).collect();
    for c in clients.iter_mut() {
        check(c, "before the upgrade");
    }
    let old = s.pid();
    upgrade(&s);
    let succ = ready_successor(&s);
    assert_ne!(succ.0, old);
    // Every client moves (they are idle), then the old process stops on its own.
    let st = s.wait_exit(LIMIT);
    assert!(st.success(), "the old process exited with {st}");
    wait_adopted(&s, 8);
    let log = s.log_text();
    assert!(log.contains("upgrade: every session moved"), "{log}");
    assert!(!log.contains("kept here"), "{log}");
    assert!(succ.alive());
    // Same connections, same state, served by the successor.
    for c in clients.iter_mut() {
        check(c, "after the upgrade");
    }
    // The successor's admin socket is its own (`sluice ctl --pid <successor>`).
    assert_eq!(
        sluice::admin::request(succ.0, 0, "PING").ok().as_deref(),
        Some("OK")
    );
    // New clients reach the successor, and get ids no moved client has.
    let ids: Vec<u64> = clients.iter().map(|c| c.id).collect();
    assert_fresh_id(&s, &ids);
    // systemd heard the old process name the successor its main process, and the successor
    // say it is ready.
    let mut seen = String::new();
    common::wait_for("MAINPID= and READY=1 from the successor", LIMIT, || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
        let main = format!("MAINPID={}", succ.0);
        let at = seen.find(&main)?;
        // READY=1 again after the switch (from the successor, once it adopted everyone).
        seen[at + main.len()..].contains("READY=1").then_some(())
    });
    drop(clients);
    drop(succ);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn successor_that_fails_rolls_back() {
    let mut s = Sluice::start();
    let mut clients: Vec<Client> = (0..4).map(|i| client(&s, i)).collect();
    let pid = s.pid();
    let fds = move || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    // The successor reads the file as any start does: an invalid one makes it fail.
    std::fs::write(s.dir_path().join("sluice.toml"), "listen = \n").unwrap();
    upgrade(&s);
    common::wait_for("the rollback", LIMIT, || {
        s.log_text().contains("upgrade rolled back").then_some(())
    });
    assert!(s.alive(), "the old process must go on");
    // Nothing the attempt opened stays open (channel, listener duplicates). (At most as many as
    // before: an idle pooled connection may close meanwhile.)
    common::wait_for("the descriptors of the attempt to close", LIMIT, || {
        (fds() <= before).then_some(())
    });
    for c in clients.iter_mut() {
        check(c, "after the rollback");
    }
    // Still accepting.
    let mut fresh = s.conn();
    let _: Option<u64> = fresh.query_first("SELECT 1").unwrap();
    // A second try works once the file is good again.
    let good = Config::default();
    s.rewrite_config(&good);
    // This time with the command-line client of the upgrade.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["upgrade", "--pid", &s.pid().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let succ = ready_successor(&s);
    let st = s.wait_exit(LIMIT);
    assert!(st.success(), "the old process exited with {st}");
    for c in clients.iter_mut() {
        check(c, "after the second upgrade");
    }
    let _: Option<u64> = fresh.query_first("SELECT 1").unwrap();
    drop(succ);
}

#[test]
fn sessions_in_a_transaction_or_pinned_move_with_their_backend_at_their_safe_point() {
    // (Before backend connections moved, these two stayed and the pinned one was told why at
    // the deadline: `tls_clients_stay_and_end_with_the_old_process` and
    // `refused_sessions_stay_in_the_old_process_with_their_backend` cover that now.)
    let mut s = Sluice::with(Config::default().top("shutdown_timeout_ms = 3000"));
    let mut idle = client(&s, 0);
    let mut in_tx = client(&s, 1);
    in_tx.conn.query_drop("BEGIN").unwrap();
    let mut pinned = client(&s, 2);
    pinned.conn.query_drop("SET @v = 1").unwrap();
    upgrade(&s);
    let succ = ready_successor(&s);
    let st = s.wait_exit(LIMIT);
    assert!(st.success(), "the old process exited with {st}");
    wait_adopted(&s, 3);
    let log = plain(&s.log_text());
    assert!(log.contains("upgrade: every session moved"), "{log}");
    check(&mut idle, "idle, after the upgrade");
    // Still in its transaction (the server says so through sluice's status flags).
    let in_trans: u64 = in_tx
        .conn
        .query_first("SELECT @@in_transaction")
        .unwrap()
        .unwrap();
    assert_eq!(in_trans, 1);
    in_tx.conn.query_drop("COMMIT").unwrap();
    check(&mut in_tx, "after its transaction, after the upgrade");
    let v: Option<i64> = pinned.conn.query_first("SELECT @v").unwrap().unwrap();
    assert_eq!(v, Some(1));
    check(&mut pinned, "pinned, after the upgrade");
    drop(succ);
}

/// The server connection (thread) id a session's statements run on.
fn backend_thread(c: &mut Client) -> u64 {
    c.conn
        .query_first("SELECT @@SESSION.pseudo_thread_id")
        .unwrap()
        .unwrap()
}

/// The server's connection ids of account `name`, sorted.
fn threads_ids(d: &mut mysql::Conn, name: &str) -> Vec<u64> {
    d.query(format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{name}' ORDER BY ID"
    ))
    .unwrap()
}

/// Samples the server's count of `account`'s connections until sluice's process `s` exits (the
/// old process, at the end of its handover); returns the most seen.
fn most_threads_until_exit(s: &mut Sluice, d: &mut mysql::Conn, account: &str) -> u64 {
    let limit = std::time::Instant::now() + LIMIT;
    let mut most = 0;
    while s.alive() {
        assert!(
            std::time::Instant::now() < limit,
            "the old process did not stop"
        );
        most = most.max(common::threads_of(d, account));
        std::thread::sleep(Duration::from_millis(5));
    }
    most.max(common::threads_of(d, account))
}

#[test]
fn sessions_with_backend_state_move_with_their_backend_connection() {
    let account = "upg_carry";
    let users = common::dedicated_backend_user(account);
    let mut s = Sluice::with(Config::default().users(&users).pool(
        "mode = \"transaction\"\nsize = 8\nqueue_timeout_ms = 3000\nidle_timeout_ms = 1000\n",
    ));
    let mut d = common::direct();
    d.query_drop("CREATE TABLE IF NOT EXISTS app.upg_carry (id BIGINT PRIMARY KEY, v INT)")
        .unwrap();
    let base = u64::from(std::process::id()) * 10;
    d.query_drop(format!(
        "DELETE FROM app.upg_carry WHERE id IN ({base}, {})",
        base + 1
    ))
    .unwrap();
    let lock = format!("upg_lock_{}", std::process::id());
    let mut idle = client(&s, 0);
    let mut temp = client(&s, 1);
    temp.conn
        .query_drop("CREATE TEMPORARY TABLE t_upg (x INT)")
        .unwrap();
    temp.conn
        .query_drop("INSERT INTO t_upg VALUES (7), (8)")
        .unwrap();
    let mut commit = client(&s, 2);
    commit.conn.query_drop("BEGIN").unwrap();
    commit
        .conn
        .query_drop(format!("INSERT INTO app.upg_carry VALUES ({base}, 1)"))
        .unwrap();
    let mut rollback = client(&s, 3);
    rollback.conn.query_drop("BEGIN").unwrap();
    rollback
        .conn
        .query_drop(format!(
            "INSERT INTO app.upg_carry VALUES ({}, 2)",
            base + 1
        ))
        .unwrap();
    let mut locker = client(&s, 4);
    let got: Option<i64> = locker
        .conn
        .query_first(format!("SELECT GET_LOCK('{lock}', 0)"))
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(1));
    let held: Vec<u64> = [&mut temp, &mut commit, &mut rollback, &mut locker]
        .into_iter()
        .map(backend_thread)
        .collect();
    let server_side = threads_ids(&mut d, account);
    assert!(
        held.iter().all(|t| server_side.contains(t)),
        "{held:?} {server_side:?}"
    );
    let user: Option<u64> = d
        .query_first(format!("SELECT IS_USED_LOCK('{lock}')"))
        .unwrap()
        .unwrap();
    assert_eq!(user, Some(held[3]));
    // Conditions not read yet: they are the connection's (its diagnostics area), and move too.
    let n: Option<i64> = temp
        .conn
        .query_first("SELECT CAST('x' AS SIGNED)")
        .unwrap()
        .unwrap();
    assert_eq!(n, Some(0));

    upgrade(&s);
    let succ = ready_successor(&s);
    // The connections move, they are not opened again: the server never sees more than
    // `pool.size` of sluice's account across the handover.
    let most = most_threads_until_exit(&mut s, &mut d, account);
    assert!(
        most <= 8,
        "{most} connections of {account} during the handover"
    );
    wait_adopted(&s, 5);
    let log = plain(&s.log_text());
    assert!(log.contains("upgrade: every session moved"), "{log}");
    assert!(log.contains("carry_backends=true"), "{log}");

    // Same server connections, with what lives on them.
    let warnings: Vec<(String, u16, String)> = temp.conn.query("SHOW WARNINGS").unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].1, 1292, "{warnings:?}");
    let after: Vec<u64> = [&mut temp, &mut commit, &mut rollback, &mut locker]
        .into_iter()
        .map(backend_thread)
        .collect();
    assert_eq!(after, held);
    let rows: Vec<i64> = temp.conn.query("SELECT x FROM t_upg ORDER BY x").unwrap();
    assert_eq!(rows, vec![7, 8]);
    let user: Option<u64> = d
        .query_first(format!("SELECT IS_USED_LOCK('{lock}')"))
        .unwrap()
        .unwrap();
    assert_eq!(user, Some(held[3]), "the lock is still held by its session");
    // Another connection does not see the uncommitted rows yet; then one commits, one rolls back.
    let seen: u64 = d
        .query_first(format!(
            "SELECT COUNT(*) FROM app.upg_carry WHERE id IN ({base}, {})",
            base + 1
        ))
        .unwrap()
        .unwrap();
    assert_eq!(seen, 0);
    commit.conn.query_drop("COMMIT").unwrap();
    rollback.conn.query_drop("ROLLBACK").unwrap();
    let rows: Vec<(u64, i64)> = d
        .query(format!(
            "SELECT id, v FROM app.upg_carry WHERE id IN ({base}, {}) ORDER BY id",
            base + 1
        ))
        .unwrap();
    assert_eq!(rows, vec![(base, 1)]);
    let released: Option<i64> = locker
        .conn
        .query_first(format!("SELECT RELEASE_LOCK('{lock}')"))
        .unwrap()
        .unwrap();
    assert_eq!(released, Some(1));
    let free: Option<i64> = d
        .query_first(format!("SELECT IS_FREE_LOCK('{lock}')"))
        .unwrap()
        .unwrap();
    assert_eq!(free, Some(1));
    for c in [
        &mut idle,
        &mut temp,
        &mut commit,
        &mut rollback,
        &mut locker,
    ] {
        check(c, "after the upgrade with its backend");
    }
    // The successor's pool counts them: once the clients leave, their connections go back to
    // it and close after `idle_timeout_ms`; none is left open outside a pool.
    drop((idle, temp, commit, rollback, locker));
    common::wait_for("sluice's connections to close", LIMIT, || {
        (common::threads_of(&mut d, account) == 0).then_some(())
    });
    drop(succ);
}

#[test]
fn refused_sessions_stay_in_the_old_process_with_their_backend() {
    let account = "upg_refused";
    let users = common::dedicated_backend_user(account);
    let cfg = Config::default()
        .users(&users)
        .top("shutdown_timeout_ms = 4000");
    let mut s = Sluice::with(cfg.clone());
    let mut d = common::direct();
    let mut idle = client(&s, 0);
    let mut temp = client(&s, 1);
    temp.conn
        .query_drop("CREATE TEMPORARY TABLE t_upg (x INT)")
        .unwrap();
    temp.conn
        .query_drop("INSERT INTO t_upg VALUES (5)")
        .unwrap();
    let thread = backend_thread(&mut temp);
    // The successor's pool for this user logs in as another account: it cannot take the
    // connection (opened as `upg_refused`) and refuses the session.
    let other = common::dedicated_backend_user("upg_refused_other");
    s.rewrite_config(&cfg.users(&other));
    upgrade(&s);
    let succ = ready_successor(&s);
    common::wait_for("the successor to refuse the pinned session", LIMIT, || {
        plain(&s.log_text())
            .contains("logs in as another account here")
            .then_some(())
    });
    // Served by the old process meanwhile, on the same server connection.
    let rows: Vec<i64> = temp.conn.query("SELECT x FROM t_upg").unwrap();
    assert_eq!(rows, vec![5]);
    assert_eq!(backend_thread(&mut temp), thread);
    let st = s.wait_exit(LIMIT);
    assert!(st.success(), "the old process exited with {st}");
    let log = plain(&s.log_text());
    assert!(log.contains("upgrade: handover over adopted=1"), "{log}");
    check(&mut idle, "idle, after the upgrade");
    // At the deadline the old process told it why and closed it, and its server connection
    // ended with it: no copy of the socket was left open in either process.
    let e = temp
        .conn
        .query_drop("SELECT x FROM t_upg")
        .expect_err("the refused session ended with the old process");
    let (code, _, message) = common::server_error(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(code, 1053, "{message}");
    assert!(message.contains("pinned"), "{message}");
    common::wait_thread_gone(&mut d, thread);
    assert_eq!(threads_ids(&mut d, account), Vec::<u64>::new());
    drop(succ);
}

#[test]
fn workers_move_sessions_with_their_backend_within_the_host_budget() {
    let account = "upg_carry_workers";
    let users = common::dedicated_backend_user(account);
    let mut s = Sluice::with(
        Config::default()
            .top("workers = 2\nshards = 1")
            .users(&users)
            // (The pin budget is one for the host: 6 covers the 3 pinned sessions wherever
            // they land, counted in both processes for the moment a session is handed over.)
            .pool("mode = \"transaction\"\nsize = 6\npin_budget = 6\nqueue_timeout_ms = 3000\n"),
    );
    workers_up(&s, 2);
    let mut d = common::direct();
    let mut temps: Vec<(Client, u64)> = (0..3)
        .map(|i| {
            let mut c = client(&s, i);
            c.conn
                .query_drop("CREATE TEMPORARY TABLE t_upg (x INT)")
                .unwrap();
            c.conn
                .query_drop(format!("INSERT INTO t_upg VALUES ({i})"))
                .unwrap();
            let t = backend_thread(&mut c);
            (c, t)
        })
        .collect();
    let mut in_tx = client(&s, 3);
    in_tx.conn.query_drop("BEGIN").unwrap();
    let tx_thread = backend_thread(&mut in_tx);
    upgrade(&s);
    let limit = std::time::Instant::now() + LIMIT;
    let mut most = 0;
    loop {
        most = most.max(common::threads_of(&mut d, account));
        if plain(&s.log_text()).contains("supervisor: every worker upgraded") {
            break;
        }
        assert!(std::time::Instant::now() < limit, "{}", s.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        most <= 6,
        "{most} connections of {account} during the upgrade"
    );
    common::wait_for("both old workers to stop", LIMIT, || {
        (plain(&s.log_text())
            .matches("the upgraded worker's predecessor stopped")
            .count()
            == 2)
            .then_some(())
    });
    for (i, (c, t)) in temps.iter_mut().enumerate() {
        assert_eq!(backend_thread(c), *t);
        let rows: Vec<i64> = c.conn.query("SELECT x FROM t_upg").unwrap();
        assert_eq!(rows, vec![i as i64]);
        check(c, "a pinned session, after the workers' upgrade");
    }
    assert_eq!(backend_thread(&mut in_tx), tx_thread);
    in_tx.conn.query_drop("COMMIT").unwrap();
    check(
        &mut in_tx,
        "after its transaction, after the workers' upgrade",
    );
    assert!(common::threads_of(&mut d, account) <= 6);
    assert!(s.terminate().success());
}

#[test]
fn busy_clients_move_between_commands_without_an_error() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut s = Sluice::start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut counts = Vec::new();
    for i in 0..4u64 {
        let mut c = client(&s, i);
        let done = Arc::new(AtomicU64::new(0));
        counts.push(done.clone());
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            // Commands back to back: every error is counted, the loop goes on.
            let mut errors = Vec::new();
            let stmt = c.stmt.clone();
            while !stop.load(Ordering::Relaxed) {
                let n = done.load(Ordering::Relaxed);
                let r: Result<Option<(u64, u64, Option<String>)>, _> =
                    c.conn.exec_first(&stmt, (n,));
                match r {
                    Ok(Some((m, w, db)))
                        if m == n + 1 && w == c.wait_timeout && db.as_deref() == Some("app") => {}
                    other => errors.push(format!("{other:?}")),
                }
                let id: Result<Option<u64>, _> = c.conn.query_first("SELECT CONNECTION_ID()");
                if id.as_ref().ok() != Some(&Some(c.id)) {
                    errors.push(format!("connection id {id:?}, was {}", c.id));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            errors
        }));
    }
    let at = |counts: &[Arc<AtomicU64>]| -> Vec<u64> {
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    };
    common::wait_for("every client to be busy", LIMIT, || {
        at(&counts).iter().all(|&n| n >= 20).then_some(())
    });
    upgrade(&s);
    let succ = ready_successor(&s);
    let st = s.wait_exit(LIMIT);
    assert!(st.success(), "the old process exited with {st}");
    let after = at(&counts);
    common::wait_for("every client to go on on the successor", LIMIT, || {
        at(&counts)
            .iter()
            .zip(&after)
            .all(|(n, a)| *n >= a + 20)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{}", s.log_text());
    let log = plain(&s.log_text());
    assert!(log.contains("upgrade: every session moved"), "{log}");
    drop(succ);
}

#[test]
fn console_upgrade_takes_the_console_and_metrics_listeners_too() {
    let admin = common::free_port();
    let metrics = common::free_port();
    let mut s = Sluice::with(
        Config::default()
            .top(&format!("metrics_listen = \"127.0.0.1:{metrics}\""))
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
    );
    let mut clients: Vec<Client> = (0..3).map(|i| client(&s, i)).collect();
    let (ok, out, err) = common::mariadb_cli(admin, &["-uadmin", "-psecret"], "UPGRADE");
    assert!(ok && out.contains("started"), "{out}\n{err}");
    // The successor binds neither again (the old process still listens on both): it starts.
    let succ = ready_successor(&s);
    let st = s.wait_exit(LIMIT);
    assert!(st.success(), "the old process exited with {st}");
    for c in clients.iter_mut() {
        check(c, "after UPGRADE");
    }
    // The console and the metrics endpoint now answer from the successor.
    let (ok, out, err) = common::mariadb_cli(admin, &["-uadmin", "-psecret"], "SHOW CLIENTS");
    assert!(ok, "{err}");
    for c in &clients {
        assert!(out.contains(&c.id.to_string()), "client {} in\n{out}", c.id);
    }
    assert!(common::scrape(metrics).contains("sluice_"));
    drop(succ);
}

#[test]
fn successor_dying_during_the_handover_rolls_back_the_rest() {
    // The successor exits right after adopting its second session (a test hook it inherits).
    let mut s = Sluice::with_env(
        Config::default().top("shards = 1"),
        &[("SLUICE_UPGRADE_FAULT", "exit-after:2")],
    );
    let mut clients: Vec<Client> = (0..6).map(|i| client(&s, i)).collect();
    // All parked first (a session lingers hot a moment after its command; parked ones are sent
    // at once, so the successor takes two of them before it exits).
    let ids: Vec<u64> = clients.iter().map(|c| c.id).collect();
    wait_parked(s.pid(), &ids);
    upgrade(&s);
    common::wait_for("the late rollback", LIMIT, || {
        plain(&s.log_text())
            .contains("upgrade rolled back late")
            .then_some(())
    });
    assert!(s.alive(), "the old process must go on");
    // The two the successor took are gone with it; the other four are served here as before.
    let mut alive = 0;
    for c in clients.iter_mut() {
        let r: Result<Option<u64>, _> = c.conn.query_first("SELECT CONNECTION_ID()");
        if r.is_ok() {
            alive += 1;
            check(c, "after the late rollback");
        }
    }
    assert_eq!(alive, 4, "{}", s.log_text());
    // The old process accepts again.
    let mut fresh = s.conn();
    let _: Option<u64> = fresh.query_first("SELECT 1").unwrap();
}

#[test]
fn two_upgrades_in_a_row_keep_clients_and_ids_unique() {
    let mut s = Sluice::start();
    let mut clients: Vec<Client> = (0..4).map(|i| client(&s, i)).collect();
    upgrade(&s);
    let first = Successor(common::wait_for("the first successor", LIMIT, || {
        successor_pid(&s)
    }));
    assert!(s.wait_exit(LIMIT).success());
    // The first handover to end.
    wait_adopted(&s, 4);
    // The handover channel is closed once the handover is over, and the KILL line once the
    // old process is gone (its end closing is what tells the successor, a moment later).
    common::wait_for("the first successor's channels to close", LIMIT, || {
        (seqpacket_sockets(first.0) == 0).then_some(())
    });
    for c in clients.iter_mut() {
        check(c, "after the first upgrade");
    }
    // A client of the first successor, then the second upgrade (SIGUSR2 to the successor).
    clients.push(client(&s, 4));
    // SAFETY: a signal to the successor this test learned from the log.
    assert_eq!(unsafe { libc::kill(first.0 as i32, libc::SIGUSR2) }, 0);
    let second = Successor(common::wait_for("the second successor", LIMIT, || {
        successor_pid(&s).filter(|&p| p != first.0)
    }));
    common::wait_for("the first successor to exit", LIMIT, || {
        (!first.alive()).then_some(())
    });
    wait_adopted(&s, 5); // the second handover to end
    common::wait_for("the second successor's channels to close", LIMIT, || {
        (seqpacket_sockets(second.0) == 0).then_some(())
    });
    for c in clients.iter_mut() {
        check(c, "after the second upgrade");
    }
    let ids: Vec<u64> = clients.iter().map(|c| c.id).collect();
    for _ in 0..4 {
        assert_fresh_id(&s, &ids);
    }
    drop(second);
    drop(first);
}

#[test]
fn workers_are_upgraded_one_at_a_time() {
    let admin = common::free_port();
    let mut s = Sluice::with(
        Config::default()
            .top("workers = 2\nshards = 1")
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
    );
    workers_up(&s, 2);
    let sup = s.pid();
    let mut clients: Vec<Client> = (0..8).map(|i| client(&s, i)).collect();
    // The console (the supervisor serves it) starts the upgrade.
    let (ok, out, err) = common::mariadb_cli(admin, &["-uadmin", "-psecret"], "UPGRADE");
    assert!(ok && out.contains("one at a time"), "{out}\n{err}");
    common::wait_for("both workers upgraded", LIMIT, || {
        plain(&s.log_text())
            .contains("supervisor: every worker upgraded")
            .then_some(())
    });
    let log = plain(&s.log_text());
    let new_pids: Vec<u32> = log
        .lines()
        .filter(|l| l.contains("supervisor: worker upgraded"))
        .filter_map(|l| {
            let at = l.find(" pid=")? + 5;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(new_pids.len(), 2, "{log}");
    // Each successor is the supervisor's own child (it restarts and stops them).
    for p in &new_pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        let ppid: u32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, sup, "worker {p}");
    }
    common::wait_for("both old workers to stop", LIMIT, || {
        (plain(&s.log_text())
            .matches("the upgraded worker's predecessor stopped")
            .count()
            == 2)
            .then_some(())
    });
    assert!(s.alive(), "the supervisor goes on");
    // Every client moved, in whichever worker it was.
    let adopted: u64 = common::wait_for("both successors' handovers to end", LIMIT, || {
        let log = plain(&s.log_text());
        let counts: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("upgrade: handover over"))
            .filter_map(|l| {
                let at = l.find("adopted=")? + 8;
                l[at..].split(' ').next()?.parse().ok()
            })
            .collect();
        (counts.len() == 2).then(|| counts.iter().sum())
    });
    assert_eq!(adopted, 8, "{}", s.log_text());
    for c in clients.iter_mut() {
        check(c, "after the workers' upgrade");
    }
    let ids: Vec<u64> = clients.iter().map(|c| c.id).collect();
    assert_fresh_id(&s, &ids);
    // The supervisor stops its new workers as it stopped the old ones.
    assert!(s.terminate().success());
    for p in &new_pids {
        assert!(!running(*p), "worker {p} still runs");
    }
}

#[test]
fn workers_upgrade_stops_at_a_failing_successor_and_keeps_everything() {
    let mut s = Sluice::with(Config::default().top("workers = 2\nshards = 1"));
    workers_up(&s, 2);
    let mut clients: Vec<Client> = (0..4).map(|i| client(&s, i)).collect();
    std::fs::write(s.dir_path().join("sluice.toml"), "listen = \n").unwrap();
    upgrade(&s);
    // (The worker's own line and the supervisor's come from two processes: both are waited
    // for; in CI the supervisor's came first once.)
    common::wait_for("the upgrade to stop and roll back", LIMIT, || {
        let log = plain(&s.log_text());
        (log.contains("supervisor: upgrade stopped") && log.contains("upgrade rolled back"))
            .then_some(())
    });
    let log = plain(&s.log_text());
    assert!(!log.contains("restarting it"), "{log}");
    assert!(s.alive());
    for c in clients.iter_mut() {
        check(c, "after the failed upgrade");
    }
    let mut fresh = s.conn();
    let _: Option<u64> = fresh.query_first("SELECT 1").unwrap();
}

#[test]
fn tls_clients_stay_and_end_with_the_old_process() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let mut s = Sluice::with(Config::default().top("shutdown_timeout_ms = 2000"));
    let mut plain_client = client(&s, 0);
    // A TLS client that stays connected: the mariadb CLI reading statements from a pipe.
    let mut cli = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", s.port),
            "-uapp",
            "-papp",
            "--ssl",
            "--ssl-verify-server-cert=0",
            "--skip-reconnect",
            "--unbuffered",
            "-N",
            "app",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mariadb client");
    let mut stdin = cli.stdin.take().unwrap();
    let stdout = cli.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    writeln!(stdin, "SELECT CONCAT('cipher:', VARIABLE_VALUE <> '') FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher';").unwrap();
    writeln!(stdin, "SELECT 'ready';").unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "ready") {
        seen.push(rx.recv_timeout(LIMIT).expect("the TLS client's answer"));
    }
    upgrade(&s);
    let succ = ready_successor(&s);
    common::wait_for("the TLS client to stay", LIMIT, || {
        plain(&s.log_text()).contains("staying=tls=1").then_some(())
    });
    // The deadline passes; the old process closes it and stops.
    assert!(s.wait_exit(LIMIT).success());
    check(&mut plain_client, "the plaintext client, after the upgrade");
    // The TLS client finds its connection closed at its next statement, and why.
    writeln!(stdin, "SELECT 'after';").unwrap();
    drop(stdin);
    let out = common::wait_output(cli, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // Told why, through its TLS session.
    assert!(
        err.contains("ERROR 1053") && err.contains("its TLS state cannot move"),
        "{err}"
    );
    drop(succ);
}

#[test]
fn many_idle_clients_move_in_windows() {
    // More clients than one sweep takes from a shard (64): several windows, back to back.
    let mut s = Sluice::with(Config::default().top("shards = 1"));
    let mut clients: Vec<(common::RawClient, Vec<Vec<u8>>)> = (0..150)
        .map(|_| {
            let mut c = common::RawClient::login(s.port);
            let answer = c.query("SELECT CONNECTION_ID(), @@SESSION.wait_timeout");
            (c, answer)
        })
        .collect();
    upgrade(&s);
    let succ = ready_successor(&s);
    assert!(s.wait_exit(LIMIT).success());
    wait_adopted(&s, 150);
    for (c, before) in clients.iter_mut() {
        // The same answer, byte for byte: the same connection id, on the same connection.
        assert_eq!(
            &c.query("SELECT CONNECTION_ID(), @@SESSION.wait_timeout"),
            before
        );
    }
    drop(succ);
}

#[test]
fn successor_that_reaches_no_backend_rolls_back() {
    let mut s = Sluice::start();
    let mut clients: Vec<Client> = (0..2).map(|i| client(&s, i)).collect();
    // The file now names a backend nothing listens on: the successor starts, but on a default
    // server identity; the health check refuses it.
    s.rewrite_config(&Config::default().backends(vec!["127.0.0.1:1".into()]));
    upgrade(&s);
    common::wait_for("the rollback", LIMIT, || {
        plain(&s.log_text())
            .contains("upgrade rolled back")
            .then_some(())
    });
    assert!(
        plain(&s.log_text()).contains("reached no backend"),
        "{}",
        s.log_text()
    );
    assert!(s.alive());
    for c in clients.iter_mut() {
        check(c, "after the rollback");
    }
}

#[test]
fn session_mode_clients_give_up_their_backend_and_move() {
    let mut s = Sluice::with(
        Config::default().pool("mode = \"session\"\nsize = 16\nqueue_timeout_ms = 3000\n"),
    );
    let mut clients: Vec<Client> = (0..3).map(|i| client(&s, i)).collect();
    // One with a user variable: that lives on its backend only, so it moves with it.
    let mut pinned = client(&s, 3);
    pinned.conn.query_drop("SET @v = 1").unwrap();
    let thread = backend_thread(&mut pinned);
    upgrade(&s);
    let succ = ready_successor(&s);
    assert!(s.wait_exit(LIMIT).success());
    wait_adopted(&s, 4);
    for c in clients.iter_mut() {
        check(c, "session mode, after the upgrade");
    }
    let v: Option<i64> = pinned.conn.query_first("SELECT @v").unwrap().unwrap();
    assert_eq!(v, Some(1));
    assert_eq!(backend_thread(&mut pinned), thread);
    drop(succ);
}

/// The ids of the clients process `pid` (a single sluice, or a successor) holds, from its
/// admin socket.
/// Process `pid`'s own clients (during a handover `CLIENTS` answers for both processes).
fn clients_of(pid: u32) -> Vec<sluice::metrics::ClientRow> {
    sluice::admin::request(pid, 0, "CLIENTS HERE")
        .ok()
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_else(|| panic!("process {pid} did not list its clients"))
}

fn ids_of(pid: u32) -> Vec<u64> {
    clients_of(pid).iter().map(|c| u64::from(c.id)).collect()
}

/// The server's error code for `e`, if it is a server error.
fn code(e: &mysql::Error) -> Option<u16> {
    common::server_error(e).map(|x| x.0)
}

/// A sluice (one shard, users `app` and `other`, the console on the port returned) whose
/// upgrade's successor holds the handover after adopting `after` sessions while the returned
/// file exists (a test hook it inherits): clients are then in the old process, in the successor
/// and on their way between them.
fn held_handover(after: usize) -> (Sluice, std::path::PathBuf, u16) {
    let hold = std::env::temp_dir().join(format!(
        "sluice-upgrade-hold-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&hold, b"").unwrap();
    let admin = common::free_port();
    let users = "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
                 [[users]]\nname = \"other\"\npassword = \"o\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n";
    let s = Sluice::with_env(
        Config::default()
            .top("shards = 1")
            .users(users)
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
        &[(
            "SLUICE_UPGRADE_FAULT",
            &format!("hold-after:{after}:{}", hold.display()),
        )],
    );
    (s, hold, admin)
}

/// Waits until every client of `ids` is parked in process `pid`.
fn wait_parked(pid: u32, ids: &[u64]) {
    common::wait_for("the idle clients to park", LIMIT, || {
        let rows = clients_of(pid);
        ids.iter()
            .all(|id| {
                rows.iter()
                    .any(|r| u64::from(r.id) == *id && r.state == "parked")
            })
            .then_some(())
    });
}

/// Upgrades `s` (see [`held_handover`]) and waits until its successor holds the handover.
fn upgrade_and_hold(s: &Sluice) -> Successor {
    upgrade(s);
    let succ = ready_successor(s);
    common::wait_for("the successor to hold the handover", LIMIT, || {
        plain(&s.log_text())
            .contains("holds the handover while this file exists")
            .then_some(())
    });
    succ
}

#[test]
fn kills_reach_clients_on_either_side_of_a_handover() {
    // The successor holds the handover after adopting its third session.
    let (mut s, hold, admin) = held_handover(3);
    let console = |sql: &str| common::mariadb_cli(admin, &["-uadmin", "-psecret"], sql);
    let old = s.pid();
    let mut victims: Vec<Client> = (0..6).map(|i| client(&s, i)).collect();
    let ids: Vec<u64> = victims.iter().map(|c| c.id).collect();
    // Two clients busy while the old process hands over: they stay in it. (Two rows: the
    // server notices the KILL QUERY between them and answers ERR 1317; a lone SLEEP
    // interrupted may answer 1 instead.)
    let mut d = common::direct();
    let busy_sql =
        "SELECT SLEEP(60) AS killed_from_the_successor FROM (SELECT 1 UNION ALL SELECT 2) t";
    let console_sql =
        "SELECT SLEEP(60) AS killed_from_the_console FROM (SELECT 1 UNION ALL SELECT 2) t";
    let mut sleepers = Vec::new();
    for (i, sql) in [busy_sql, console_sql].into_iter().enumerate() {
        let mut c = client(&s, 10 + i as u64);
        let id = c.id;
        sleepers.push((
            id,
            std::thread::spawn(move || {
                // (Every row read: the ERR comes after the first.)
                let r = c.conn.query::<u64, _>(sql).map(drop);
                (c, r)
            }),
        ));
        common::wait_for_statement(&mut d, sql);
    }
    let (busy_id, console_id) = (sleepers[0].0, sleepers[1].0);
    wait_parked(old, &ids);
    let succ = upgrade_and_hold(&s);
    // Where everyone is: three idle clients adopted, three on their way, the busy two in the
    // old process.
    let (in_old, in_new) = (ids_of(old), ids_of(succ.0));
    let moved: Vec<u64> = ids.iter().filter(|i| in_new.contains(i)).copied().collect();
    let on_the_way: Vec<u64> = ids
        .iter()
        .filter(|i| !in_new.contains(i) && !in_old.contains(i))
        .copied()
        .collect();
    let where_ = format!("old {in_old:?}, new {in_new:?}, clients {ids:?}");
    assert_eq!(moved.len(), 3, "{where_}");
    assert_eq!(on_the_way.len(), 3, "{where_}");
    assert!(
        in_old.contains(&busy_id) && in_old.contains(&console_id),
        "{where_}"
    );
    let nobody = 3_999_999u64;
    assert!(!in_old.contains(&nobody) && !in_new.contains(&nobody));

    // A client of the successor (the old process accepts no more) kills the statement of a
    // client the old process holds: the victim sees ERR 1317, the killer OK.
    let mut killer = s.conn();
    let killer_id: u64 = killer
        .query_first("SELECT CONNECTION_ID()")
        .unwrap()
        .unwrap();
    assert!(ids_of(succ.0).contains(&killer_id));
    // Another user may not, across processes either.
    let mut stranger = s.conn_as("other", "o", None);
    let e = stranger
        .query_drop(format!("KILL QUERY {busy_id}"))
        .expect_err("user other killed a statement of user app");
    assert_eq!(code(&e), Some(1095), "{e}");
    killer
        .query_drop(format!("KILL QUERY {busy_id}"))
        .unwrap_or_else(|e| panic!("KILL QUERY of a client of the old process: {e}"));
    let (_, sleeper) = sleepers.remove(0);
    let (mut busy, r) = sleeper.join().unwrap();
    let e = r.expect_err("the SLEEP ran its course");
    assert_eq!(code(&e), Some(1317), "{e}");
    // An id nobody has: the server's answer, exactly, from either process.
    let e = killer
        .query_drop(format!("KILL {nobody}"))
        .expect_err("KILL of an id nobody has");
    assert_eq!(
        common::server_error(&e),
        Some((1094, "HY000".into(), format!("Unknown thread id: {nobody}"))),
        "{e}"
    );
    // The other way round: a client of the old process kills one the successor adopted.
    busy.conn
        .query_drop(format!("KILL {}", moved[0]))
        .unwrap_or_else(|e| panic!("KILL from the old process of a moved client: {e}"));
    let e = busy
        .conn
        .query_drop(format!("KILL QUERY {nobody}"))
        .expect_err("KILL QUERY of an id nobody has");
    assert_eq!(
        common::server_error(&e),
        Some((1094, "HY000".into(), format!("Unknown thread id: {nobody}"))),
        "{e}"
    );
    // (The busy client is still the old process's: nothing is swept while the hold lasts.)
    assert!(ids_of(old).contains(&busy_id));
    // The console (whichever process answers it): one client in each process, and nobody.
    let (ok, out, err) = console(&format!("KILL CLIENT {}", moved[1]));
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = console(&format!("KILL CLIENT QUERY {console_id}"));
    assert!(ok, "{out}\n{err}");
    let (_, sleeper) = sleepers.remove(0);
    let (mut console_victim, r) = sleeper.join().unwrap();
    let e = r.expect_err("the SLEEP ran its course");
    assert_eq!(code(&e), Some(1317), "{e}");
    let (ok, _, err) = console(&format!("KILL CLIENT {nobody}"));
    assert!(
        !ok && err.contains(&format!(
            "ERROR 1094 (HY000) at line 1: Unknown thread id: {nobody}"
        )),
        "{err}"
    );
    // A client on its way: the KILL waits for it to arrive (here, once the hold ends).
    let target = on_the_way[0];
    let waiting = std::thread::spawn(move || {
        let r = killer.query_drop(format!("KILL {target}"));
        (killer, r)
    });
    let field = format!("conn_id={target}");
    common::wait_for("the KILL to wait for its client", LIMIT, || {
        plain(&s.log_text())
            .lines()
            .any(|l| {
                l.contains("KILL waits for a session on its way")
                    && l.split_whitespace().any(|w| w == field)
            })
            .then_some(())
    });
    std::fs::remove_file(&hold).unwrap();
    let (mut killer, r) = waiting.join().unwrap();
    r.unwrap_or_else(|e| panic!("KILL of a client on its way: {e}"));

    // The handover ends; the old process stops.
    assert!(s.wait_exit(LIMIT).success(), "{}", s.log_text());
    // (Adopted: the six idle clients and the two busy ones; three were killed since.)
    wait_adopted(&s, 8);
    // The killed clients are gone, each once; every other client is as it was.
    let killed = [moved[0], moved[1], on_the_way[0]];
    let left = ids_of(succ.0);
    for c in victims.iter_mut() {
        if killed.contains(&c.id) {
            assert!(!left.contains(&c.id), "client {} still there", c.id);
            assert!(
                c.conn.query_drop("SELECT 1").is_err(),
                "client {} answered",
                c.id
            );
        } else {
            check(c, "a client not killed");
        }
    }
    for (c, what) in [
        (&mut busy, "the client whose statement was killed"),
        (&mut console_victim, "the console's victim"),
    ] {
        check(c, what);
    }
    let _: Option<u64> = killer.query_first("SELECT 1").unwrap();
    let _: Option<u64> = stranger.query_first("SELECT 1").unwrap();
    let _ = std::fs::remove_file(&hold);
    drop(succ);
}

#[test]
fn kills_from_another_worker_reach_clients_of_a_worker_being_upgraded() {
    // Worker 0's successor stops reading sessions after adopting its first while `hold`
    // exists; worker 1 is not upgraded yet, and its clients KILL worker 0's through worker 0's
    // admin socket, which the old and the new worker 0 both answer during the handover.
    let hold = std::env::temp_dir().join(format!(
        "sluice-upgrade-kill-workers-hold-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&hold, b"").unwrap();
    let mut s = Sluice::with_env(
        Config::default().top("workers = 2\nshards = 1"),
        &[(
            "SLUICE_UPGRADE_FAULT",
            &format!("hold-after:1:{}", hold.display()),
        )],
    );
    workers_up(&s, 2);
    let layout = sluice::shared::IdLayout::new(2, 1);
    let worker = |id: u64| layout.locate(id as u32).0;
    // Clients spread over the workers by the kernel: enough of each (bounded).
    let (mut zero, mut one): (Vec<Client>, Vec<Client>) = (Vec::new(), Vec::new());
    let mut seen = Vec::new();
    for i in 0..200 {
        if zero.len() >= 4 && !one.is_empty() {
            break;
        }
        let c = client(&s, i);
        seen.push(c.id);
        match worker(c.id) {
            0 if zero.len() < 4 => zero.push(c),
            1 if one.is_empty() => one.push(c),
            _ => {}
        }
    }
    assert!(
        zero.len() == 4 && one.len() == 1,
        "clients did not spread over both workers: {seen:?}"
    );
    let mut killer = one.remove(0);
    // One of worker 0's clients is busy during the handover: it stays in the old worker.
    let mut busy = zero.remove(0);
    let busy_id = busy.id;
    let sql = "SELECT SLEEP(60) AS killed_from_worker_1 FROM (SELECT 1 UNION ALL SELECT 2) t";
    let sleeper = std::thread::spawn(move || {
        let r = busy.conn.query::<u64, _>(sql).map(drop);
        (busy, r)
    });
    let mut d = common::direct();
    common::wait_for_statement(&mut d, sql);
    // The idle ones parked first (a session lingers hot a moment after its command; only
    // parked sessions are sent at once, which the holds below count on).
    let idle_ids: Vec<u64> = zero.iter().map(|c| c.id).collect();
    wait_parked(s.pid(), &idle_ids);
    upgrade(&s);
    common::wait_for("worker 0's successor to hold the handover", LIMIT, || {
        plain(&s.log_text())
            .contains("holds the handover while this file exists")
            .then_some(())
    });
    // Worker 0 now has one idle client adopted by its successor and two on their way.
    killer
        .conn
        .query_drop(format!("KILL QUERY {busy_id}"))
        .unwrap_or_else(|e| panic!("KILL QUERY across workers during the handover: {e}"));
    let (mut busy, r) = sleeper.join().unwrap();
    let e = r.expect_err("the SLEEP ran its course");
    assert_eq!(code(&e), Some(1317), "{e}");
    let nobody = u64::from(layout.compose(0, 0, 999_999));
    let e = killer
        .conn
        .query_drop(format!("KILL {nobody}"))
        .expect_err("KILL of an id nobody has");
    assert_eq!(
        common::server_error(&e),
        Some((1094, "HY000".into(), format!("Unknown thread id: {nobody}"))),
        "{e}"
    );
    // KILL QUERY (nothing to interrupt: they are idle) of each idle client, then KILL of one:
    // those on their way are waited for, until the hold ends.
    let ids: Vec<u64> = zero.iter().map(|c| c.id).collect();
    let victim = ids[0];
    let killing = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for id in &ids {
            answers.push((
                format!("KILL QUERY {id}"),
                killer.conn.query_drop(format!("KILL QUERY {id}")),
            ));
        }
        answers.push((
            format!("KILL {victim}"),
            killer.conn.query_drop(format!("KILL {victim}")),
        ));
        (killer, answers)
    });
    common::wait_for("a KILL to wait for its client", LIMIT, || {
        plain(&s.log_text())
            .contains("KILL waits for a session on its way")
            .then_some(())
    });
    std::fs::remove_file(&hold).unwrap();
    let (mut killer, answers) = killing.join().unwrap();
    for (what, r) in answers {
        r.unwrap_or_else(|e| {
            panic!(
                "{what} across workers during the handover: {e}\n{}",
                s.log_text()
            )
        });
    }
    common::wait_for("both workers upgraded", LIMIT, || {
        plain(&s.log_text())
            .contains("supervisor: every worker upgraded")
            .then_some(())
    });
    for c in zero.iter_mut() {
        if c.id == victim {
            assert!(
                c.conn.query_drop("SELECT 1").is_err(),
                "the victim answered"
            );
        } else {
            check(
                c,
                "an idle client whose KILL QUERY found nothing to interrupt",
            );
        }
    }
    check(&mut busy, "the client whose statement was killed");
    check(&mut killer, "the killer");
    let _ = std::fs::remove_file(&hold);
    assert!(s.terminate().success());
}

#[test]
fn the_console_lists_and_kills_clients_on_both_sides_of_a_handover() {
    // The successor holds the handover after adopting two sessions.
    let (mut s, hold, admin) = held_handover(2);
    let console = |sql: &str| common::mariadb_cli(admin, &["-uadmin", "-psecret"], sql);
    let listed = |out: &str| -> Vec<u64> {
        out.lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next()?.parse().ok())
            .collect()
    };
    let old = s.pid();
    let idle: Vec<Client> = (0..2).map(|i| client(&s, i)).collect();
    let idle_ids: Vec<u64> = idle.iter().map(|c| c.id).collect();
    // Busy while the old process hands over: they stay in it. One of app, one of other.
    let mut d = common::direct();
    let mut sleepers = Vec::new();
    for (user, pw) in [("app", "app"), ("other", "o")] {
        let mut c = s.conn_as(user, pw, None);
        let id: u64 = c.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
        let sql = format!(
            "SELECT SLEEP(60) AS console_handover_{user} FROM (SELECT 1 UNION ALL SELECT 2) t"
        );
        let waiting = sql.clone();
        sleepers.push((
            id,
            std::thread::spawn(move || {
                let r = c.query::<u64, _>(sql).map(drop);
                (c, r)
            }),
        ));
        common::wait_for_statement(&mut d, &waiting);
    }
    let (busy_app, busy_other) = (sleepers[0].0, sleepers[1].0);
    wait_parked(old, &idle_ids);
    let succ = upgrade_and_hold(&s);
    // The two idle clients in the successor, the busy two in the old process.
    let (in_old, in_new) = (ids_of(old), ids_of(succ.0));
    let where_ = format!("old {in_old:?}, new {in_new:?}");
    assert!(
        idle_ids.iter().all(|i| in_new.contains(i)),
        "{where_}, idle {idle_ids:?}"
    );
    assert!(
        in_old.contains(&busy_app) && in_old.contains(&busy_other),
        "{where_}"
    );
    // SHOW CLIENTS lists both processes' clients, whichever process answers it.
    for _ in 0..4 {
        let (ok, out, err) = console("SHOW CLIENTS");
        assert!(ok, "{out}\n{err}");
        let ids = listed(&out);
        for id in idle_ids.iter().chain([&busy_app, &busy_other]) {
            assert!(
                ids.contains(id),
                "client {id} missing from SHOW CLIENTS: {out}"
            );
        }
    }
    // KILL CLIENTS WHERE USER = 'app' ends app's clients in both: the two moved and the busy one.
    let (ok, out, err) = console("KILL CLIENTS WHERE USER = 'app'");
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.lines().nth(1), Some("3"), "{out}");
    let (_, sleeper) = sleepers.remove(0);
    let (_, r) = sleeper.join().unwrap();
    assert!(r.is_err(), "app's busy client was not ended");
    for mut c in idle {
        assert!(
            c.conn.query_drop("SELECT 1").is_err(),
            "idle client {} answered",
            c.id
        );
    }
    // other's client is untouched: its statement still runs (ended now by the console's KILL
    // QUERY, its connection kept); the handover ends and it moves.
    assert!(ids_of(old).contains(&busy_other));
    let (ok, out, err) = console(&format!("KILL CLIENT QUERY {busy_other}"));
    assert!(ok, "{out}\n{err}");
    let (_, sleeper) = sleepers.remove(0);
    let (mut busy, r) = sleeper.join().unwrap();
    let e = r.expect_err("other's SLEEP ran its course");
    assert_eq!(code(&e), Some(1317), "{e}");
    std::fs::remove_file(&hold).unwrap();
    let _: Option<u64> = busy.query_first("SELECT 1").unwrap();
    assert!(s.wait_exit(LIMIT).success(), "{}", s.log_text());
    drop(succ);
}
