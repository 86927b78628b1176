//! Hot reload of users and TLS certificates (SIGHUP / the console's `RELOAD`) on a real MariaDB:
//! new logins see the new users at once, sessions already logged in keep running, a changed
//! backend password reaches the pool's new connections, a renewed certificate reaches new
//! handshakes.

mod common;

use common::{direct, free_port, make_certs, mariadb_cli, server_error, wait_for, Config, Sluice};
use mysql::prelude::Queryable;
use std::io::{BufRead, Write};
use std::time::Duration;

/// The `[admin]` table for a console on `port` (admin/secret).
fn admin(port: u16) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n")
}

fn user(name: &str, password: &str, backend_user: &str, backend_password: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\npassword = \"{password}\"\nbackend_user = \"{backend_user}\"\nbackend_password = \"{backend_password}\"\n")
}

/// RELOAD on the console: its answer (one row per worker), or the console's error.
fn reload(port: u16) -> Result<String, String> {
    let (ok, out, err) = mariadb_cli(port, &["-uadmin", "-psecret"], "RELOAD");
    if ok {
        Ok(out)
    } else {
        Err(err)
    }
}

/// The MariaDB error code of a login through sluice, or `None` when it succeeds.
fn login_error(s: &Sluice, name: &str, password: &str) -> Option<u16> {
    let opts = mysql::Opts::from_url(&s.url(name, password, None)).unwrap();
    let opts =
        mysql::OptsBuilder::from_opts(opts).tcp_connect_timeout(Some(Duration::from_secs(10)));
    match mysql::Conn::new(opts) {
        Ok(_) => None,
        Err(e) => Some(server_error(&e).map_or(0, |(code, _, _)| code)),
    }
}

#[test]
fn users_added_removed_and_repassworded_apply_at_the_next_login_and_spare_sessions() {
    let port = free_port();
    let app = user("app", "app", "app", "app");
    let base = Config::default().top("shards = 2").tables(&admin(port));
    let s = Sluice::with(base.clone().users(&format!(
        "{app}{}{}",
        user("ru_a", "old", "app", "app"),
        user("ru_gone", "gone", "app", "app")
    )));
    let mut a = s.conn_as("ru_a", "old", None);
    let mut gone = s.conn_as("ru_gone", "gone", None);
    assert_eq!(login_error(&s, "ru_new", "n"), Some(1045));

    // ru_a gets a new password, ru_gone goes, ru_new comes; app moves to the end (ids are by
    // name: nobody takes another's pools or counts).
    s.rewrite_config(&base.clone().users(&format!(
        "{}{}{app}",
        user("ru_new", "n", "app", "app"),
        user("ru_a", "new", "app", "app"),
    )));
    let out = reload(port).expect("RELOAD");
    for want in [
        "users added: ru_new",
        "users removed: ru_gone",
        "users password changed: ru_a",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(!out.contains("needs a restart"), "{out}");

    // New logins: the new password only, the new user, not the removed one. Both shards see
    // it at once (several logins land on each).
    for _ in 0..4 {
        assert_eq!(login_error(&s, "ru_a", "old"), Some(1045));
        assert_eq!(login_error(&s, "ru_a", "new"), None);
        assert_eq!(login_error(&s, "ru_new", "n"), None);
        assert_eq!(login_error(&s, "ru_gone", "gone"), Some(1045));
    }
    let mut n = s.conn_as("ru_new", "n", None);
    assert_eq!(
        n.query_first::<String, _>("SELECT CURRENT_USER()")
            .unwrap()
            .as_deref(),
        Some("app@%")
    );
    // Sessions logged in before the reload go on: each statement checks a backend out again.
    for i in 0..5u32 {
        let v: Option<u32> = a.query_first(format!("SELECT {i}")).unwrap();
        assert_eq!(v, Some(i));
        let v: Option<u32> = gone.query_first(format!("SELECT {i} + 1")).unwrap();
        assert_eq!(v, Some(i + 1));
    }
    gone.query_drop("BEGIN").unwrap();
    gone.query_drop("SELECT 1").unwrap();
    gone.query_drop("COMMIT").unwrap();
    // The console sees the removed user's session and can end it.
    let (ok, out, err) = mariadb_cli(
        port,
        &["-uadmin", "-psecret"],
        "KILL CLIENTS WHERE USER = 'ru_gone'",
    );
    assert!(ok && out.contains('1'), "{out}{err}");
    wait_for("ru_gone's session ended", Duration::from_secs(10), || {
        gone.query_drop("SELECT 1").is_err().then_some(())
    });
    // A broken user entry refuses the whole reload and changes nothing.
    s.rewrite_config(
        &base
            .clone()
            .users(&format!("{app}{}", user("ru_a", "*12", "app", "app"))),
    );
    let err = reload(port).expect_err("a bad hash is refused");
    assert!(
        err.contains("1105") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(login_error(&s, "ru_new", "n"), None);
}

#[test]
fn limits_follow_the_user_across_a_reload() {
    let port = free_port();
    let base = Config::default().top("shards = 1").tables(&admin(port));
    let limited = |n: u32| {
        format!(
            "{}{}max_connections = {n}\n",
            user("app", "app", "app", "app"),
            user("ru_lim", "l", "app", "app")
        )
    };
    let s = Sluice::with(base.clone().users(&limited(1)));
    let _one = s.conn_as("ru_lim", "l", None);
    assert_eq!(login_error(&s, "ru_lim", "l"), Some(1040));
    s.rewrite_config(&base.clone().users(&limited(2)));
    let out = reload(port).expect("RELOAD");
    assert!(out.contains("users options changed: ru_lim"), "{out}");
    // The session open before the reload still counts.
    let _two = s.conn_as("ru_lim", "l", None);
    assert_eq!(login_error(&s, "ru_lim", "l"), Some(1040));
}

/// The backend connections account `name` has open now (their MariaDB thread ids).
fn threads(d: &mut mysql::Conn, name: &str) -> Vec<u64> {
    d.query(format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{name}'"
    ))
    .unwrap()
}

#[test]
fn a_new_backend_password_reaches_the_pools_new_connections() {
    let account = "sluice_reload_bp";
    let mut d = direct();
    d.query_drop(format!("DROP USER IF EXISTS '{account}'@'%'"))
        .unwrap();
    d.query_drop(format!("CREATE USER '{account}'@'%' IDENTIFIED BY 'pw1'"))
        .unwrap();
    d.query_drop(format!("GRANT ALL PRIVILEGES ON *.* TO '{account}'@'%'"))
        .unwrap();
    let port = free_port();
    let base = Config::default().top("shards = 1").tables(&admin(port));
    let s = Sluice::with(base.clone().users(&user("app", "app", account, "pw1")));
    // One connection held by a transaction, one idle in the pool.
    let mut busy = s.conn();
    busy.query_drop("BEGIN").unwrap();
    busy.query_drop("SELECT 1").unwrap();
    let mut idle = s.conn();
    idle.query_drop("SELECT 1").unwrap();
    let before = threads(&mut d, account);
    assert!(before.len() >= 2, "{before:?}");

    // The server's account changes password; sluice's file follows.
    d.query_drop(format!("ALTER USER '{account}'@'%' IDENTIFIED BY 'pw2'"))
        .unwrap();
    s.rewrite_config(&base.clone().users(&user("app", "app", account, "pw2")));
    let out = reload(port).expect("RELOAD");
    assert!(out.contains("users backend account changed: app"), "{out}");
    // The idle connection opened with the old password closes at once; the one in a
    // transaction stays until it comes back.
    wait_for(
        "the idle connection retired",
        Duration::from_secs(10),
        || {
            let now = threads(&mut d, account);
            (now.len() == 1).then_some(())
        },
    );
    // New work opens connections with the new password (the old one is refused now).
    let mut fresh = s.conn();
    for i in 0..3u32 {
        let v: Option<u32> = fresh.query_first(format!("SELECT {i}")).unwrap();
        assert_eq!(v, Some(i));
    }
    idle.query_drop("SELECT 1").unwrap();
    // The transaction goes on on its connection, which then closes.
    busy.query_drop("SELECT 2").unwrap();
    busy.query_drop("COMMIT").unwrap();
    wait_for(
        "every pre-reload connection closed",
        Duration::from_secs(10),
        || {
            let now = threads(&mut d, account);
            (!now.is_empty() && now.iter().all(|t| !before.contains(t))).then_some(())
        },
    );
    busy.query_drop("SELECT 3").unwrap();
    drop((idle, busy, fresh));
    drop(s);
    d.query_drop(format!("DROP USER IF EXISTS '{account}'@'%'"))
        .unwrap();
}

/// A `mariadb` client kept open over TLS, verifying the server against `ca`: statements in,
/// output lines out.
struct TlsSession {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl TlsSession {
    fn open(port: u16, ca: &std::path::Path) -> TlsSession {
        let mut child = std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uapp",
                "-papp",
                "--ssl",
                &format!("--ssl-ca={}", ca.display()),
                "--ssl-verify-server-cert",
                "--batch",
                "--skip-column-names",
                "--unbuffered",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the mariadb client");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        TlsSession { child, lines }
    }

    fn ask(&mut self, sql: &str) -> Option<String> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql};").ok()?;
        stdin.flush().ok()?;
        self.lines.recv_timeout(Duration::from_secs(20)).ok()
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_renewed_certificate_reaches_new_handshakes_and_spares_open_sessions() {
    let dir = std::env::temp_dir().join(format!("sluice-reload-tls-{}", std::process::id()));
    let (old_dir, new_dir) = (dir.join("old"), dir.join("new"));
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let (old_ca, cert, key) = make_certs(&old_dir);
    let (new_ca, new_cert, new_key) = make_certs(&new_dir);
    let port = free_port();
    let c = Config::default().top("shards = 1").tables(&format!(
        "{}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        admin(port),
        cert.display(),
        key.display()
    ));
    let s = Sluice::with(c);
    let verifies = |ca: &std::path::Path| {
        common::cli(
            s.port,
            "app",
            "app",
            &[
                "--ssl",
                &format!("--ssl-ca={}", ca.display()),
                "--ssl-verify-server-cert",
                "-e",
                "SELECT 1",
            ],
        )
        .0
    };
    assert!(verifies(&old_ca));
    assert!(!verifies(&new_ca));
    let mut open = TlsSession::open(s.port, &old_ca);
    assert_eq!(open.ask("SELECT 'before'").as_deref(), Some("before"));

    // The certificate is renewed in place (same paths): a reload reads the files again.
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let out = reload(port).expect("RELOAD");
    assert!(out.contains("TLS certificate read from"), "{out}");
    assert!(
        verifies(&new_ca),
        "new handshakes get the renewed certificate"
    );
    assert!(!verifies(&old_ca));
    assert_eq!(
        open.ask("SELECT 'after'").as_deref(),
        Some("after"),
        "the session opened before keeps its TLS state"
    );
    // A key that does not load leaves the running certificate, and says so.
    std::fs::write(&key, "not a key").unwrap();
    let err = reload(port).expect_err("a broken key is reported");
    assert!(err.contains("1105") && err.contains("tls.key"), "{err}");
    assert!(verifies(&new_ca));
    drop(open);
    let _ = std::fs::remove_dir_all(&dir);
}
