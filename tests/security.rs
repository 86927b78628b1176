//! TLS, authentication and limits: what makes sluice safe to expose.

mod common;

use common::{
    cli, free_port, make_certs, metric, scrape, Config, PrivateMariaDb, RawClient, Sluice,
};
use mysql::prelude::Queryable;
use std::time::{Duration, Instant};

fn cipher(status_output: &str) -> Option<String> {
    status_output
        .lines()
        .find(|l| l.starts_with("SSL:"))
        .and_then(|l| l.split("Cipher in use is ").nth(1))
        .map(|c| c.trim().to_string())
}

#[test]
fn tls_is_offered_out_of_the_box_with_tls_1_2_and_1_3() {
    let s = Sluice::start();
    for (version, expect) in [("TLSv1.3", "TLS_"), ("TLSv1.2", "ECDHE")] {
        let (ok, out, err) = cli(
            s.port,
            "app",
            "app",
            &[
                "--ssl",
                "--ssl-verify-server-cert=0",
                &format!("--tls-version={version}"),
                "-e",
                "status",
            ],
        );
        assert!(ok, "{version}: {err}");
        let c = cipher(&out).unwrap_or_else(|| panic!("no cipher in {out}"));
        assert!(c.starts_with(expect), "{version}: cipher {c}");
    }
    // Plain clients still work when TLS is not required.
    let (ok, out, _) = cli(
        s.port,
        "app",
        "app",
        &["--skip-ssl", "-N", "-e", "SELECT 5"],
    );
    assert!(ok);
    assert_eq!(out.trim(), "5");
    // A whole session over TLS: queries, a big result, prepared statements (PyMySQL-free: the
    // mariadb client's SQL PREPARE plus a 2 MB row).
    let (ok, out, err) = cli(
        s.port,
        "app",
        "app",
        &["--ssl", "--ssl-verify-server-cert=0", "-N", "-e", "SELECT LENGTH(REPEAT('x', 2000000)); PREPARE p FROM 'SELECT ? + 1'; SET @v = 41; EXECUTE p USING @v"],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "2000000\n42\n");
}

#[test]
fn a_configured_certificate_is_served_and_verifies() {
    let dir = std::env::temp_dir().join(format!("sluice-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = make_certs(&dir);
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let mut c = Config::default();
    c.pool.push_str(&format!("\n{tls}"));
    let s = Sluice::with(c);
    let (ok, out, err) = cli(
        s.port,
        "app",
        "app",
        &[
            "--ssl",
            &format!("--ssl-ca={}", ca.display()),
            "--ssl-verify-server-cert",
            "-e",
            "status",
        ],
    );
    assert!(ok, "verification against the configured CA failed: {err}");
    assert!(cipher(&out).is_some(), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn require_tls_refuses_plain_clients_globally_and_per_user() {
    let mut c = Config::default();
    c.pool.push_str("\n[tls]\nrequire = true\n");
    let s = Sluice::with(c);
    let (ok, _, err) = cli(s.port, "app", "app", &["--skip-ssl", "-e", "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("3159") && err.contains("TLS"), "{err}");
    let (ok, _, err) = cli(
        s.port,
        "app",
        "app",
        &["--ssl", "--ssl-verify-server-cert=0", "-e", "SELECT 1"],
    );
    assert!(ok, "{err}");
    drop(s);
    let users = "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
                 [[users]]\nname = \"secure\"\npassword = \"s\"\nbackend_user = \"app\"\nbackend_password = \"app\"\nrequire_tls = true\n";
    let s = Sluice::with(Config::default().users(users));
    let (ok, _, err) = cli(s.port, "secure", "s", &["--skip-ssl", "-e", "SELECT 1"]);
    assert!(!ok && err.contains("must connect with TLS"), "{err}");
    let (ok, _, err) = cli(
        s.port,
        "secure",
        "s",
        &["--ssl", "--ssl-verify-server-cert=0", "-e", "SELECT 1"],
    );
    assert!(ok, "{err}");
    let (ok, _, _) = cli(s.port, "app", "app", &["--skip-ssl", "-e", "SELECT 1"]);
    assert!(ok, "other users are not affected");
}

#[test]
fn caching_sha2_full_authentication_over_tls_then_the_fast_path() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let crypt = text
        .lines()
        .find_map(|l| l.split(": ").nth(1).filter(|h| h.starts_with("$A$005$")))
        .unwrap()
        .to_string();
    let users = format!("[[users]]\nname = \"c2\"\npassword = '{crypt}'\nbackend_user = \"app\"\nbackend_password = \"app\"\n");
    let s = Sluice::with(Config::default().users(&users));
    // Nothing cached yet and no TLS: the password cannot be checked, the login fails.
    let (ok, _, _) = cli(s.port, "c2", "s3cret", &["--skip-ssl", "-e", "SELECT 1"]);
    assert!(!ok);
    // Over TLS the client sends the password itself; sluice checks it against the crypt hash.
    let (ok, out, err) = cli(
        s.port,
        "c2",
        "s3cret",
        &[
            "--ssl",
            "--ssl-verify-server-cert=0",
            "-N",
            "-e",
            "SELECT 2",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
    // Now the fast path works without TLS, on every shard (several tries land on both).
    for _ in 0..6 {
        let (ok, out, err) = cli(
            s.port,
            "c2",
            "s3cret",
            &["--skip-ssl", "-N", "-e", "SELECT 3"],
        );
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "3");
    }
    let (ok, _, err) = cli(
        s.port,
        "c2",
        "wrong",
        &["--ssl", "--ssl-verify-server-cert=0", "-e", "SELECT 4"],
    );
    assert!(!ok && err.contains("1045"), "{err}");
}

#[test]
fn backend_tls_with_ca_verification() {
    let dir = std::env::temp_dir().join(format!("sluice-backend-certs-{}", std::process::id()));
    let (db, ca) = PrivateMariaDb::start_tls(&dir, "");
    let tls = |ca: &std::path::Path| {
        Config::default().backends(vec![]).top("").pool(&format!(
            "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 3000\nconnect_timeout_ms = 3000\n\n[[backends]]\naddress = \"{}\"\n[backends.tls]\nca = \"{}\"\nserver_name = \"localhost\"\n",
            db.addr(),
            ca.display()
        ))
    };
    let s = Sluice::with(tls(&ca));
    let mut c = s.conn();
    let v: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .unwrap();
    let (_, version) = v.unwrap();
    assert!(
        version.starts_with("TLSv1."),
        "the backend connection is not encrypted: {version:?}"
    );
    drop(c);
    drop(s);
    // A CA that did not sign the server's certificate: connections are refused, clearly.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (wrong_ca, _, _) = make_certs(&other);
    let s = Sluice::with(tls(&wrong_ca));
    let mut c = RawClient::connect(s.port);
    c.read_packet()
        .expect("a greeting: sluice accepts clients without a backend");
    drop(c);
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(s.port)
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false);
    let Err(e) = mysql::Conn::new(opts) else {
        panic!("no backend can be reached")
    };
    let (code, _, msg) = common::server_error(&e).expect("a server error");
    assert_eq!(code, 9002, "{msg}");
    assert!(
        msg.to_lowercase().contains("certificate") || msg.contains("TLS"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn users_from_the_backend_authenticate_with_their_own_passwords() {
    let db = PrivateMariaDb::start("");
    let mut root = db.root();
    root.query_drop("CREATE USER 'alice'@'%' IDENTIFIED BY 'pw-a'")
        .unwrap();
    root.query_drop("CREATE USER 'reader'@'%' IDENTIFIED BY 'rpw'")
        .unwrap();
    root.query_drop("GRANT SELECT ON mysql.* TO 'reader'@'%'")
        .unwrap();
    let cfg = Config::default().backends(vec![db.addr()]).users("").top("").pool(
        "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 3000\n\n[auth_from_backend]\nuser = \"reader\"\npassword = \"rpw\"\nbackend_user = \"app\"\nbackend_password = \"app\"\nrefresh_ms = 1000\n",
    );
    let s = Sluice::with(cfg);
    let mut a = s.conn_as("alice", "pw-a", Some("app"));
    let who: String = a.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
    assert!(
        who.starts_with("app@"),
        "backend connections use the pool account: {who}"
    );
    let (ok, _, err) = cli(s.port, "alice", "nope", &["-e", "SELECT 1"]);
    assert!(!ok && err.contains("1045"), "{err}");
    // Changes on the server reach sluice at the next refresh.
    root.query_drop("CREATE USER 'bob'@'%' IDENTIFIED BY 'pw-b'")
        .unwrap();
    root.query_drop("DROP USER 'alice'@'%'").unwrap();
    // Polled, bounded: the refresh runs every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (bob, _, _) = cli(s.port, "bob", "pw-b", &["-e", "SELECT 1"]);
        let (alice, _, _) = cli(s.port, "alice", "pw-a", &["-e", "SELECT 1"]);
        if bob && !alice {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refresh not seen: bob {bob}, alice {alice}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn handshake_timeout_idle_timeout_and_failed_login_limit() {
    // A sluice of its own for the short handshake timeout: the logins below must not race it on
    // a loaded machine.
    let s = Sluice::with(Config::default().top("handshake_timeout_ms = 500"));
    // A client that says nothing after the greeting is told (ERR 1159), or at least dropped;
    // not left hanging (that fails at the read timeout).
    let mut c = RawClient::connect(s.port);
    c.read_packet().expect("greeting");
    let started = Instant::now();
    let refusal = c.err_or_close();
    // A deadline, not a speed: handshake_timeout_ms (0.5 s) ended it, nothing much later.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    if let Some(code) = refusal {
        assert_eq!(code, 1159);
        assert!(c.closed_by_peer(), "closed after the ERR");
    }
    drop(s);
    let mport = free_port();
    let s = Sluice::with(Config::default().top(&format!(
        "client_idle_timeout_ms = 1000\nauth_failure_limit = 3\nauth_failure_delay_ms = 10\nmetrics_listen = \"127.0.0.1:{mport}\""
    )));
    // An idle client is disconnected with ERR 4031 (unsolicited, sequence 0).
    let mut idle = RawClient::login(s.port);
    let (seq, p) = idle.read_packet().expect("an ERR before the close");
    let e = sluice::codec::packets::ErrPacket::decode(&p).unwrap();
    assert_eq!((seq, e.code), (0, 4031));
    assert!(idle.closed_by_peer());
    assert!(metric(&scrape(mport), "sluice_idle_timeouts_total{worker=\"0\"}") >= 1.0);
    // Too many failed logins from one address: refused at connect for the rest of the minute.
    for _ in 0..8 {
        let (ok, _, err) = cli(s.port, "app", "wrong", &["-e", "SELECT 1"]);
        // Refused: access denied, or already blocked.
        assert!(
            !ok && (err.contains("1045") || err.contains("1129")),
            "{err}"
        );
    }
    // The failures are counted per instance (across its shards): past the limit, even the right
    // password is refused, on every shard.
    for _ in 0..6 {
        let (ok, _, err) = cli(s.port, "app", "app", &["-e", "SELECT 1"]);
        assert!(
            !ok && err.contains("1129") && err.contains("blocked"),
            "the right password must be refused while the address is blocked: {err}"
        );
    }
    assert!(metric(&scrape(mport), "sluice_auth_blocked_total{worker=\"0\"}") >= 1.0);
}
