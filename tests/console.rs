//! The SQL admin console (`[admin]`), spoken with the plain `mariadb` client.

mod common;

use common::{free_port, mariadb_addr, mariadb_cli, wait_for, Config, Sluice};
use std::time::Duration;

/// Runs `sql` on the console at `port` as admin/secret; (success, stdout, stderr).
fn console(port: u16, sql: &str) -> (bool, String, String) {
    mariadb_cli(port, &["-uadmin", "-psecret"], sql)
}

/// The value of column `col` in the row whose first column is `key` (tab-separated --batch
/// output with a header line).
fn cell(out: &str, key: &str, col: &str) -> Option<String> {
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next()?.split('\t').collect();
    let i = header.iter().position(|h| *h == col)?;
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|r| r.contains(&key))
        .map(|r| r[i].to_string())
}

fn with_console(workers: usize) -> (Sluice, u16) {
    let port = free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!("workers = {workers}\nshards = 1"))
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{port}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
    );
    (s, port)
}

#[test]
fn the_console_shows_and_drains_backends() {
    let (s, port) = with_console(1);
    let addr = mariadb_addr();
    // Traffic first, so that the pool has connections to show.
    let mut c = s.conn();
    mysql::prelude::Queryable::query_drop(&mut c, "SELECT 1").unwrap();
    let (ok, out, err) = console(port, "SHOW BACKENDS");
    assert!(ok, "{err}");
    assert_eq!(cell(&out, &addr, "state").as_deref(), Some("up"), "{out}");
    assert_eq!(cell(&out, &addr, "role").as_deref(), Some("any"), "{out}");
    let (ok, out, err) = console(port, "SHOW POOLS; SHOW STATS; SHOW WORKERS");
    assert!(ok, "{err}");
    assert!(
        out.contains("checkouts") && out.contains("commands"),
        "{out}"
    );

    let (ok, _, err) = console(port, &format!("DRAIN BACKEND '{addr}' TIMEOUT 60000"));
    assert!(ok, "{err}");
    wait_for("the backend drained", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW BACKENDS");
        (cell(&out, &addr, "state").as_deref() == Some("drained")).then_some(())
    });
    let (ok, _, err) = console(port, &format!("UNDRAIN BACKEND '{addr}'"));
    assert!(ok, "{err}");
    let (_, out, _) = console(port, "SHOW BACKENDS");
    assert_eq!(cell(&out, &addr, "state").as_deref(), Some("up"), "{out}");
    mysql::prelude::Queryable::query_drop(&mut c, "SELECT 1").unwrap();

    // Refusals are clear MySQL errors.
    let (ok, _, err) = console(port, "DROP TABLE x");
    assert!(
        !ok && err.contains("ERROR 1064") && err.contains("SHOW BACKENDS"),
        "{err}"
    );
    let (ok, _, err) = console(port, "DRAIN BACKEND 'nowhere:1'");
    assert!(!ok && err.contains("ERROR 1210"), "{err}");
    let (ok, _, err) = mariadb_cli(port, &["-uadmin", "-pwrong"], "SHOW BACKENDS");
    assert!(!ok && err.contains("ERROR 1045"), "{err}");
    // The console's users are not the database's, and the database's are not the console's.
    let (ok, _, err) = mariadb_cli(port, &[], "SHOW BACKENDS");
    assert!(!ok && err.contains("ERROR 1045"), "{err}");
}

#[test]
fn with_workers_the_console_speaks_for_all_of_them() {
    let (s, port) = with_console(2);
    let addr = mariadb_addr();
    wait_for("both workers answer", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW WORKERS");
        (out.lines().filter(|l| l.contains("\tup\t")).count() == 2).then_some(())
    });
    let (ok, _, err) = console(port, &format!("DRAIN BACKEND '{addr}'"));
    assert!(ok, "{err}");
    // Every worker got it.
    for w in 0..2 {
        let line = sluice::admin::request(s.pid(), w, "BACKENDS").unwrap();
        assert!(
            line.contains("\"draining\"") || line.contains("\"drained\""),
            "worker {w}: {line}"
        );
    }
    let (ok, _, err) = console(port, &format!("UNDRAIN BACKEND '{addr}'"));
    assert!(ok, "{err}");
    // Every worker answers SHOW CONFIG (the same values: one row each) and RECONNECT.
    let (ok, out, err) = console(port, "SHOW CONFIG");
    assert!(ok, "{err}");
    assert_eq!(
        cell(&out, "workers", "value").as_deref(),
        Some("2"),
        "{out}"
    );
    let (ok, out, err) = console(port, "RECONNECT");
    assert!(ok, "{err}");
    assert!(cell(&out, &addr, "closed_now").is_some(), "{out}");
    // SHOW POOLS: pool.size is one budget for both workers, with the slots each holds.
    let mut c = s.conn();
    mysql::prelude::Queryable::query_drop(&mut c, "SELECT 1").unwrap();
    let (ok, out, err) = console(port, "SHOW POOLS");
    assert!(ok, "{err}");
    assert_eq!(cell(&out, &addr, "budget").as_deref(), Some("16"), "{out}");
    let held = cell(&out, &addr, "budget_held").unwrap_or_default();
    assert!(held.contains("worker "), "{out}");
}

#[test]
fn reload_applies_backend_changes_and_names_what_needs_a_restart() {
    let port = free_port();
    let admin = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
    );
    let base = Config::default().top("shards = 1").tables(&admin);
    let s = Sluice::with(base.clone());
    // The same server by its Unix socket: a second backend address.
    let dir = std::env::var("SLUICE_TEST_MARIADB_DIR").expect("SLUICE_TEST_MARIADB_DIR");
    let sock = format!("unix:{dir}/mariadb.sock");
    s.rewrite_config(&base.clone().backends(vec![mariadb_addr(), sock.clone()]));
    let (ok, out, err) = console(port, "RELOAD");
    assert!(ok, "{err}");
    assert!(out.contains(&format!("backend {sock} added")), "{out}");
    wait_for("the new backend up", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW BACKENDS");
        (cell(&out, &sock, "state").as_deref() == Some("up")).then_some(())
    });
    // Clients keep working through it all.
    let mut c = s.conn();
    for _ in 0..10 {
        mysql::prelude::Queryable::query_drop(&mut c, "SELECT 1").unwrap();
    }
    // Removed again by SIGHUP, with a new pool size (applied live) and a new shard count (a
    // restart's business: reported).
    s.rewrite_config(
        &base
            .clone()
            .top("shards = 2")
            .pool("mode = \"transaction\"\nsize = 3\n"),
    );
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    wait_for("the reload logged", Duration::from_secs(10), || {
        s.log_text()
            .contains("needs a restart: shards")
            .then_some(())
    });
    let log = s.log_text();
    assert!(log.contains(&format!("backend {sock} removed")), "{log}");
    assert!(log.contains("pool.size changed"), "{log}");
    wait_for("the pool resized to 3", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW POOLS");
        (cell(&out, &mariadb_addr(), "limit").as_deref() == Some("3")).then_some(())
    });
    let (_, out, _) = console(port, "SHOW BACKENDS");
    assert_eq!(
        cell(&out, &sock, "state").as_deref(),
        Some("removed"),
        "{out}"
    );
    mysql::prelude::Queryable::query_drop(&mut c, "SELECT 1").unwrap();
    // A broken file changes nothing and says why.
    std::fs::write(s.dir_path().join("sluice.toml"), "listen = 5").unwrap();
    let (ok, _, err) = console(port, "RELOAD");
    assert!(
        !ok && err.contains("ERROR 1105") && err.contains("nothing changed"),
        "{err}"
    );
}

#[test]
fn show_clients_lists_them_and_kill_client_ends_one() {
    let (s, port) = with_console(1);
    let mut a = s.conn();
    let mut b = s.conn();
    mysql::prelude::Queryable::query_drop(&mut a, "CREATE TEMPORARY TABLE t_console (x INT)")
        .unwrap();
    mysql::prelude::Queryable::query_drop(&mut b, "SELECT 1").unwrap();
    let (ida, idb) = (a.connection_id().to_string(), b.connection_id().to_string());
    let out = wait_for(
        "both clients listed, parked",
        Duration::from_secs(10),
        || {
            let (_, out, _) = console(port, "SHOW CLIENTS");
            (cell(&out, &ida, "state").is_some()
                && cell(&out, &idb, "state").as_deref() == Some("parked"))
            .then_some(out)
        },
    );
    assert_eq!(cell(&out, &idb, "user").as_deref(), Some("app"), "{out}");
    assert_eq!(
        cell(&out, &ida, "state").as_deref(),
        Some("pinned"),
        "{out}"
    );
    assert_eq!(
        cell(&out, &ida, "holds").as_deref(),
        Some("temporary_table"),
        "{out}"
    );
    assert_eq!(cell(&out, &ida, "backend"), Some(mariadb_addr()), "{out}");
    let (ok, out, err) = console(port, "SHOW PINS");
    assert!(ok, "{err}");
    assert_eq!(
        cell(&out, "temporary_table", "pinned_now").as_deref(),
        Some("1"),
        "{out}"
    );
    assert_eq!(
        cell(&out, "user_variable", "pinned_now").as_deref(),
        Some("0"),
        "{out}"
    );
    let (ok, _, err) = console(port, &format!("KILL CLIENT {idb}"));
    assert!(ok, "{err}");
    assert!(mysql::prelude::Queryable::query_drop(&mut b, "SELECT 1").is_err());
    mysql::prelude::Queryable::query_drop(&mut a, "SELECT 1").unwrap();
    let (ok, _, err) = console(port, "KILL CLIENT 4000000000");
    assert!(!ok && err.contains("ERROR 1094"), "{err}");
}

/// A console on one worker with the given `[[users]]`.
fn with_console_users(users: &str) -> (Sluice, u16) {
    let port = free_port();
    let s = Sluice::with(
        Config::default()
            .top("shards = 1")
            .users(users)
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{port}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
    );
    (s, port)
}

#[test]
fn show_config_lists_every_key_with_its_live_value() {
    let (s, port) = with_console(1);
    let (ok, out, err) = console(port, "SHOW CONFIG");
    assert!(ok, "{err}");
    assert_eq!(cell(&out, "pool.size", "value").as_deref(), Some("16"));
    assert_eq!(
        cell(&out, "pool.size", "reloadable").as_deref(),
        Some("yes")
    );
    assert_eq!(
        cell(&out, "pool.mode", "value").as_deref(),
        Some("transaction")
    );
    assert_eq!(cell(&out, "listen", "reloadable").as_deref(), Some("no"));
    assert_eq!(
        cell(&out, "backends[0].address", "value"),
        Some(mariadb_addr())
    );
    // Passwords (the console's own `secret`, the users' and the probe's `app`) are not shown.
    assert!(!out.contains("secret"), "{out}");
    let users = cell(&out, "users", "value").unwrap();
    assert!(
        users.contains(r#""password":"(hidden)""#) && !users.contains(r#""password":"app""#),
        "{users}"
    );
    let (ok, out, err) = console(port, "SHOW CONFIG LIKE 'pool.%'");
    assert!(ok, "{err}");
    assert!(
        out.lines().skip(1).all(|l| l.starts_with("pool.")) && out.contains("pool.size"),
        "{out}"
    );
    // After a reload the live value is shown; a key that needs a restart keeps its running one.
    s.rewrite_config(
        &Config::default()
            .top("workers = 1\nshards = 2")
            .pool("mode = \"transaction\"\nsize = 3\n")
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{port}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
    );
    let (ok, _, err) = console(port, "RELOAD");
    assert!(ok, "{err}");
    let (_, out, _) = console(port, "SHOW CONFIG");
    assert_eq!(
        cell(&out, "pool.size", "value").as_deref(),
        Some("3"),
        "{out}"
    );
    assert_eq!(cell(&out, "shards", "value").as_deref(), Some("1"), "{out}");
}

#[test]
fn reconnect_retires_idle_connections_now_and_busy_ones_when_released() {
    use mysql::prelude::Queryable;
    let account = "sluice_reconnect";
    let (s, port) = with_console_users(&common::dedicated_backend_user(account));
    let addr = mariadb_addr();
    let mut d = common::direct();
    let threads = |d: &mut mysql::Conn| -> Vec<u64> {
        d.query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{account}' ORDER BY ID"
        ))
        .unwrap()
    };
    // One connection held in a transaction, one idle in the pool.
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("BEGIN").unwrap();
    a.query_drop("SELECT 1").unwrap();
    b.query_drop("SELECT 1").unwrap();
    let idle = wait_for("one in use, some idle", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW POOLS");
        let idle: usize = cell(&out, &addr, "idle")?.parse().ok()?;
        (idle >= 1 && cell(&out, &addr, "in_use").as_deref() == Some("1")).then_some(idle)
    });
    let old = threads(&mut d);
    assert_eq!(old.len(), idle + 1, "{old:?}");

    let (ok, out, err) = console(port, "RECONNECT");
    assert!(ok, "{err}");
    assert_eq!(
        cell(&out, &addr, "closed_now"),
        Some(idle.to_string()),
        "{out}"
    );
    assert_eq!(
        cell(&out, &addr, "closing_when_released").as_deref(),
        Some("1"),
        "{out}"
    );
    let still =
        |d: &mut mysql::Conn| -> usize { threads(d).iter().filter(|t| old.contains(t)).count() };
    wait_for(
        "the idle connections closed",
        Duration::from_secs(10),
        || (still(&mut d) == 1).then_some(()),
    );
    // The transaction goes on, on its connection; it closes when the transaction ends.
    a.query_drop("SELECT 1").unwrap();
    a.query_drop("COMMIT").unwrap();
    wait_for(
        "the busy connection closed once released",
        Duration::from_secs(10),
        || (still(&mut d) == 0).then_some(()),
    );
    // New connections serve both clients.
    a.query_drop("SELECT 1").unwrap();
    b.query_drop("SELECT 1").unwrap();
    let now = threads(&mut d);
    assert!(
        !now.is_empty() && now.iter().all(|t| !old.contains(t)),
        "{old:?} {now:?}"
    );

    let (ok, out, err) = console(port, &format!("RECONNECT BACKEND '{addr}'"));
    assert!(ok, "{err}");
    assert!(cell(&out, &addr, "closed_now").is_some(), "{out}");
    let (ok, _, err) = console(port, "RECONNECT BACKEND 'nowhere:1'");
    assert!(!ok && err.contains("ERROR 1210"), "{err}");
}

#[test]
fn kill_clients_by_user_and_by_source() {
    use mysql::prelude::Queryable;
    let app = "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n";
    let other = "[[users]]\nname = \"other\"\npassword = \"other\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n";
    let (s, port) = with_console_users(&format!("{app}{other}"));
    let mut a = s.conn();
    // b comes from another loopback address.
    let mut b = {
        let url = s.url("app", "app", Some("app"));
        let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(&url).unwrap())
            .bind_address(Some(([127, 0, 0, 2], 0)))
            .prefer_socket(false)
            .read_timeout(Some(Duration::from_secs(30)));
        mysql::Conn::new(opts).unwrap()
    };
    let mut c = s.conn_as("other", "other", None);
    for x in [&mut a, &mut b, &mut c] {
        x.query_drop("SELECT 1").unwrap();
    }
    let idb = b.connection_id().to_string();
    let out = wait_for("b listed with its source", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW CLIENTS");
        cell(&out, &idb, "source").map(|_| out)
    });
    assert_eq!(
        cell(&out, &idb, "source").as_deref(),
        Some("127.0.0.2"),
        "{out}"
    );
    assert_eq!(
        cell(&out, &a.connection_id().to_string(), "source").as_deref(),
        Some("127.0.0.1"),
        "{out}"
    );

    let (ok, out, err) = console(port, "KILL CLIENTS WHERE SOURCE = '127.0.0.2'");
    assert!(ok, "{err}");
    assert_eq!(out.lines().nth(1), Some("1"), "{out}");
    assert!(b.query_drop("SELECT 1").is_err());
    a.query_drop("SELECT 1").unwrap();

    // A client of `other` busy in a statement (active) and one idle (parked): both end; app's
    // client stays.
    let mut busy = s.conn_as("other", "other", None);
    let busy_id = busy.connection_id().to_string();
    let sleeper = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        // Interrupted (SLEEP returns 1 when killed) or failed: either way, not 20 s.
        let _ = busy.query_drop("SELECT SLEEP(20)");
        (busy, t.elapsed())
    });
    wait_for(
        "the busy client listed active",
        Duration::from_secs(10),
        || {
            let (_, out, _) = console(port, "SHOW CLIENTS");
            (cell(&out, &busy_id, "state").as_deref() == Some("active")
                && cell(&out, &busy_id, "user").as_deref() == Some("other"))
            .then_some(())
        },
    );
    let (ok, out, err) = console(port, "KILL CLIENTS WHERE user='other'");
    assert!(ok, "{err}");
    assert_eq!(out.lines().nth(1), Some("2"), "{out}");
    let (mut busy, took) = sleeper.join().unwrap();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        busy.query_drop("SELECT 1").is_err(),
        "the busy client ended"
    );
    assert!(c.query_drop("SELECT 1").is_err());
    a.query_drop("SELECT 1").unwrap();

    // Nobody matches: 0; a bad address is refused, saying so.
    let (ok, out, err) = console(port, "KILL CLIENTS WHERE USER = 'nobody'");
    assert!(ok && out.lines().nth(1) == Some("0"), "{out} {err}");
    let (ok, _, err) = console(port, "KILL CLIENTS WHERE SOURCE = 'here'");
    assert!(
        !ok && err.contains("ERROR 1210") && err.contains("not an IP address"),
        "{err}"
    );
}

/// This process's pause status, as worker `w` of the instance `pid` reports it.
fn paused(pid: u32, w: u32) -> bool {
    sluice::admin::request(pid, w, "PAUSE STATUS")
        .map(|a| a.contains("\"paused\":true"))
        .unwrap_or(false)
}

#[test]
fn pause_waits_for_transactions_holds_new_commands_and_resumes() {
    use mysql::prelude::Queryable;
    let (s, port) = with_console(1);
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("BEGIN").unwrap();
    a.query_drop("SELECT 1").unwrap();

    // A transaction is open: PAUSE times out saying so, and stays in effect.
    let (ok, _, err) = console(port, "PAUSE TIMEOUT 200");
    assert!(
        !ok && err.contains("ERROR 1205")
            && err.contains("1 transaction(s) open")
            && err.contains(&format!("(busy: client {})", a.connection_id())),
        "{err}"
    );
    assert!(paused(s.pid(), 0));
    let (ok, out, err) = console(port, "RESUME");
    assert!(ok, "{err}");
    assert_eq!(cell(&out, "yes", "clients_released").as_deref(), Some("0"));
    assert!(!paused(s.pid(), 0));

    // PAUSE waits for the transaction; the transaction may go on and end meanwhile.
    let pauser = std::thread::spawn(move || console(port, "PAUSE TIMEOUT 20000"));
    wait_for("the pause applied", Duration::from_secs(10), || {
        paused(s.pid(), 0).then_some(())
    });
    a.query_drop("SELECT 2").unwrap();
    a.query_drop("COMMIT").unwrap();
    let (ok, out, err) = pauser.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        cell(&out, "yes", "waited_for_transactions").as_deref(),
        Some("1"),
        "{out}"
    );

    // Paused: logins are accepted, a new command waits (listed as paused), RESUME lets it run.
    let _c = common::RawClient::login(s.port);
    let b_id = b.connection_id().to_string();
    let waiter = std::thread::spawn(move || {
        let v: Option<u32> = b.query_first("SELECT 42").unwrap();
        (b, v)
    });
    wait_for("b's command waiting", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW CLIENTS");
        (cell(&out, &b_id, "state").as_deref() == Some("paused")).then_some(())
    });
    assert!(!waiter.is_finished(), "b is not answered while paused");
    // The metrics say so too (sluice_paused, sluice_clients_paused).
    let stats = sluice::admin::request(s.pid(), 0, "STATS").unwrap();
    assert!(
        stats.contains("\"paused\":1") && stats.contains("\"clients_paused\":1"),
        "{stats}"
    );
    let (ok, out, err) = console(port, "RESUME");
    assert!(ok, "{err}");
    assert_eq!(
        cell(&out, "yes", "clients_released").as_deref(),
        Some("1"),
        "{out}"
    );
    let (mut b, v) = waiter.join().unwrap();
    assert_eq!(v, Some(42));

    // Paused, a client's own KILL QUERY (what a driver's statement timeout sends) is not held,
    // and ends the waiting command with ERR 1317.
    let mut k = s.conn();
    let (ok, _, err) = console(port, "PAUSE TIMEOUT 5000");
    assert!(ok, "{err}");
    let waiter = std::thread::spawn(move || {
        let r = b.query_drop("SELECT 43");
        (b, r)
    });
    wait_for("b's command waiting", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW CLIENTS");
        (cell(&out, &b_id, "state").as_deref() == Some("paused")).then_some(())
    });
    k.query_drop(format!("KILL QUERY {b_id}")).unwrap();
    let (mut b, r) = waiter.join().unwrap();
    let e = r.unwrap_err();
    assert_eq!(common::server_error(&e).map(|x| x.0), Some(1317), "{e}");
    let (ok, _, err) = console(port, "RESUME");
    assert!(ok, "{err}");
    b.query_drop("SELECT 1").unwrap();

    // A waiting PAUSE is cancelled by a RESUME from another console connection.
    b.query_drop("BEGIN").unwrap();
    let pauser = std::thread::spawn(move || console(port, "PAUSE TIMEOUT 60000"));
    wait_for("the pause applied", Duration::from_secs(10), || {
        paused(s.pid(), 0).then_some(())
    });
    let (ok, _, err) = console(port, "RESUME");
    assert!(ok, "{err}");
    let (ok, _, err) = pauser.join().unwrap();
    assert!(!ok && err.contains("ERROR 1317"), "{err}");
    b.query_drop("COMMIT").unwrap();
    a.query_drop("SELECT 3").unwrap();

    // The console client of a waiting PAUSE hangs up: the wait ends, the pause stays.
    b.query_drop("BEGIN").unwrap();
    let mut cli = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", &format!("-P{port}")])
        .args(["-uadmin", "-psecret", "-e", "PAUSE TIMEOUT 60000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the pause applied", Duration::from_secs(10), || {
        paused(s.pid(), 0).then_some(())
    });
    cli.kill().unwrap();
    cli.wait().unwrap();
    wait_for("the PAUSE stopped waiting", Duration::from_secs(10), || {
        s.log_text()
            .contains("the console client that asked left")
            .then_some(())
    });
    assert!(paused(s.pid(), 0), "the pause stays");
    b.query_drop("COMMIT").unwrap();
    let (ok, _, err) = console(port, "RESUME");
    assert!(ok, "{err}");
    a.query_drop("SELECT 4").unwrap();

    let (ok, _, err) = console(port, "PAUSE TIMEOUT x");
    assert!(!ok && err.contains("ERROR 1064"), "{err}");
}

#[test]
fn with_workers_every_worker_pauses_and_takes_a_set() {
    let (s, port) = with_console(2);
    wait_for("both workers answer", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW WORKERS");
        (out.lines().filter(|l| l.contains("\tup\t")).count() == 2).then_some(())
    });
    let (ok, out, err) = console(port, "PAUSE TIMEOUT 5000");
    assert!(ok, "{err}");
    assert_eq!(cell(&out, "yes", "paused").as_deref(), Some("yes"), "{out}");
    for w in 0..2 {
        assert!(paused(s.pid(), w), "worker {w}");
    }
    let (_, out, _) = console(port, "SHOW WORKERS");
    assert_eq!(cell(&out, "1", "paused").as_deref(), Some("yes"), "{out}");
    let (ok, _, err) = console(port, "RESUME");
    assert!(ok, "{err}");
    for w in 0..2 {
        assert!(!paused(s.pid(), w), "worker {w}");
    }
    mysql::prelude::Queryable::query_drop(&mut s.conn(), "SELECT 1").unwrap();

    // SET reaches every worker (SHOW CONFIG would name each worker's value if they differed).
    let (ok, _, err) = console(port, "SET pool.queue_timeout_ms = 1234");
    assert!(ok, "{err}");
    let (_, out, _) = console(port, "SHOW CONFIG LIKE 'pool.queue_timeout_ms'");
    assert_eq!(
        cell(&out, "pool.queue_timeout_ms", "value").as_deref(),
        Some("1234"),
        "{out}"
    );
    let (ok, _, err) = console(port, "SET workers = 3");
    assert!(!ok && err.contains("ERROR 1238"), "{err}");
}

#[test]
fn set_changes_a_reloadable_key_until_the_next_reload_and_shutdown_stops() {
    use mysql::prelude::Queryable;
    let port = free_port();
    let s = Sluice::with(
        Config::default()
            .top("shards = 1")
            .pool("mode = \"transaction\"\nsize = 1\nqueue_timeout_ms = 20000\n")
            .tables(&format!(
                "[admin]\nlisten = \"127.0.0.1:{port}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
            )),
    );
    let mut s = s;
    let (ok, out, err) = console(port, "SET pool.queue_timeout_ms = 300");
    assert!(ok, "{err}");
    assert!(out.contains("pool.queue_timeout_ms changed"), "{out}");
    let (_, out, _) = console(port, "SHOW CONFIG LIKE 'pool.queue%'");
    assert_eq!(
        cell(&out, "pool.queue_timeout_ms", "value").as_deref(),
        Some("300"),
        "{out}"
    );
    // Effective: with the only pooled connection held by a transaction, another client's
    // statement gives up after 300 ms, not 20 s.
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("BEGIN").unwrap();
    a.query_drop("SELECT 1").unwrap();
    let t = std::time::Instant::now();
    let e = b.query_drop("SELECT 2").unwrap_err();
    assert_eq!(common::server_error(&e).map(|x| x.0), Some(9001), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    a.query_drop("COMMIT").unwrap();

    // Refusals, with the server's codes for SET.
    let (ok, _, err) = console(port, "SET listen = '127.0.0.1:1'");
    assert!(
        !ok && err.contains("ERROR 1238") && err.contains("needs a restart"),
        "{err}"
    );
    let (ok, _, err) = console(port, "SET no_such_key = 1");
    assert!(
        !ok && err.contains("ERROR 1193") && err.contains("no_such_key"),
        "{err}"
    );
    let (ok, _, err) = console(port, "SET pool.size = 0");
    assert!(
        !ok && err.contains("ERROR 1231") && err.contains("at least 1"),
        "{err}"
    );
    let (ok, _, err) = console(port, "SET pool.size");
    assert!(!ok && err.contains("ERROR 1064"), "{err}");

    // A reload makes the file's value live again.
    let (ok, _, err) = console(port, "RELOAD");
    assert!(ok, "{err}");
    let (_, out, _) = console(port, "SHOW CONFIG LIKE 'pool.queue%'");
    assert_eq!(
        cell(&out, "pool.queue_timeout_ms", "value").as_deref(),
        Some("20000"),
        "{out}"
    );

    // SHUTDOWN: as SIGTERM, answered first.
    let (ok, _, err) = console(port, "SHUTDOWN");
    assert!(ok, "{err}");
    assert!(s.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn shutdown_wait_for_clients_serves_them_until_they_leave() {
    shutdown_wait_for_clients(1, false);
}

#[test]
fn shutdown_wait_for_clients_yields_to_a_sigterm() {
    shutdown_wait_for_clients(1, true);
}

#[test]
fn with_workers_shutdown_wait_for_clients_stops_every_worker() {
    shutdown_wait_for_clients(2, false);
}

/// SHUTDOWN WAIT_FOR_CLIENTS with one client connected; then the client leaves, or a SIGTERM
/// comes (`by_signal`): either way the process exits 0.
fn shutdown_wait_for_clients(workers: usize, by_signal: bool) {
    use mysql::prelude::Queryable;
    let (mut s, port) = with_console(workers);
    wait_for("every worker answers", Duration::from_secs(10), || {
        let (_, out, _) = console(port, "SHOW WORKERS");
        (out.lines().filter(|l| l.contains("\tup\t")).count() == workers).then_some(())
    });
    let mut a = s.conn();
    a.query_drop("SELECT 1").unwrap();
    let (ok, out, err) = console(port, "SHUTDOWN WAIT_FOR_CLIENTS TIMEOUT 60000");
    assert!(ok, "{err}");
    assert_eq!(
        cell(&out, "waiting for clients", "clients_connected").as_deref(),
        Some("1"),
        "{out}"
    );
    // New clients are refused; the connected one is still served.
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err());
    a.query_drop("SELECT 2").unwrap();
    assert!(s.alive());
    assert!(s
        .log_text()
        .contains("waiting for the connected ones to leave"));
    if by_signal {
        // A SIGTERM meanwhile stops it as usual (the waiting SHUTDOWN, seeing the clients
        // gone, raises no second signal, which would exit 1 at once).
        s.sigterm();
    } else {
        // The last client leaves: the process stops by itself.
        drop(a);
    }
    assert!(s.wait_exit(Duration::from_secs(20)).success());
}

/// `ADD BACKEND … TLS_CA …`: a backend added while running is reached over TLS, verified
/// against the CA given, as a `[[backends]]` entry with a `tls` table would be. The server
/// requires secure transport, so the probe and the pool can only reach it over TLS; its
/// sessions report an encrypted connection. A TLS backend added without what verifying
/// needs, or over a Unix socket, is refused with the file's reason.
#[test]
fn a_backend_added_on_the_console_speaks_tls() {
    use common::PrivateMariaDb;
    use mysql::prelude::Queryable;
    let dir = std::env::temp_dir().join(format!("sluice-console-certs-{}", std::process::id()));
    let (db, ca) = PrivateMariaDb::start_tls(&dir, "--require-secure-transport=ON");
    let (s, port) = with_console(1);
    let plain = mariadb_addr();
    let tls_addr = db.addr();

    let (ok, _, err) = console(port, &format!("ADD BACKEND '{tls_addr}' TLS ON"));
    assert!(
        !ok && err.contains("1210") && err.contains("tls.ca"),
        "{err}"
    );
    let (ok, _, err) = console(port, "ADD BACKEND 'unix:/tmp/no.sock' TLS_VERIFY OFF");
    assert!(!ok && err.contains("Unix socket"), "{err}");
    let (ok, _, err) = console(port, &format!("ADD BACKEND '{tls_addr}' TLS perhaps"));
    assert!(!ok && err.contains("1064"), "{err}");

    let (ok, _, err) = console(
        port,
        &format!(
            "ADD BACKEND '{tls_addr}' TLS_CA '{}' TLS_SERVER_NAME 'localhost'",
            ca.display()
        ),
    );
    assert!(ok, "{err}");
    // Up only once a probe got through, which needs TLS on this server.
    wait_for("the TLS backend is up", Duration::from_secs(15), || {
        let (_, out, _) = console(port, "SHOW BACKENDS");
        (cell(&out, &tls_addr, "state").as_deref() == Some("up")).then_some(())
    });
    let (ok, _, err) = console(port, &format!("REMOVE BACKEND '{plain}'"));
    assert!(ok, "{err}");
    let mut c = s.conn();
    let (_, version): (String, String) = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .unwrap()
        .unwrap();
    assert!(
        version.starts_with("TLSv1."),
        "the added backend's connection is not encrypted: {version:?}"
    );
    let port_seen: u16 = c.query_first("SELECT @@port").unwrap().unwrap();
    assert_eq!(tls_addr, format!("127.0.0.1:{port_seen}"));
    drop(c);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
