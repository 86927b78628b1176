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
    let (ok, _, err) = console(port, &format!("KILL CLIENT {idb}"));
    assert!(ok, "{err}");
    assert!(mysql::prelude::Queryable::query_drop(&mut b, "SELECT 1").is_err());
    mysql::prelude::Queryable::query_drop(&mut a, "SELECT 1").unwrap();
    let (ok, _, err) = console(port, "KILL CLIENT 4000000000");
    assert!(!ok && err.contains("ERROR 1094"), "{err}");
}
