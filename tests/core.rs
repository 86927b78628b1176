//! The core checks of sluice in session mode, against the suite's real MariaDB: everyday
//! statements through the `mariadb` CLI, large packets, authentication, isolation, limits,
//! hostile input, backend failure and shutdown.

mod common;

use common::{direct, mariadb_cli, server_error, Config, RawClient, Sluice};
use mysql::prelude::Queryable;
use std::time::{Duration, Instant};

#[test]
fn cli_runs_everyday_statements() {
    for mode in ["session", "transaction"] {
        let s = Sluice::with(Config::default().pool(&format!(
            "mode = \"{mode}\"\nsize = 4\nqueue_timeout_ms = 5000"
        )));
        cli_statements(&s);
    }
}

fn cli_statements(s: &Sluice) {
    let sql = "DROP TABLE IF EXISTS cli_t;
CREATE TABLE cli_t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20));
INSERT INTO cli_t (v) VALUES ('a'), ('b'), ('c');
UPDATE cli_t SET v = 'bb' WHERE id = 2;
BEGIN; INSERT INTO cli_t (v) VALUES ('rolled back'); ROLLBACK;
START TRANSACTION; DELETE FROM cli_t WHERE id = 3; COMMIT;
SELECT id, v FROM cli_t ORDER BY id;
USE mysql;
SELECT DATABASE();
SET NAMES latin1;
SELECT @@character_set_client, @@character_set_results;
PREPARE s FROM 'SELECT ? * 2 AS doubled';
SET @n = 21;
EXECUTE s USING @n;
DEALLOCATE PREPARE s;
SELECT 1 AS one; SELECT 2 AS two;
DROP TABLE app.cli_t;
";
    let (ok, out, err) = mariadb_cli(s.port, &["app"], sql);
    assert!(ok, "mariadb client failed: {err}\n{}", s.log_text());
    let expected = "id\tv\n1\ta\n2\tbb\nDATABASE()\nmysql\n@@character_set_client\t@@character_set_results\nlatin1\tlatin1\ndoubled\n42\none\n1\ntwo\n2\n";
    assert_eq!(out, expected);
}

#[test]
fn cli_load_data_local_infile() {
    let s = Sluice::start();
    let file = s.dir.join("rows.csv");
    std::fs::write(&file, "1,one\n2,two\n3,three\n").unwrap();
    let sql = format!(
        "DROP TABLE IF EXISTS infile_t; CREATE TABLE infile_t (id INT PRIMARY KEY, v VARCHAR(10));
LOAD DATA LOCAL INFILE '{}' INTO TABLE infile_t FIELDS TERMINATED BY ',' (id, v);
SELECT COUNT(*), GROUP_CONCAT(v ORDER BY id) FROM infile_t; DROP TABLE infile_t;",
        file.display()
    );
    let (ok, out, err) = mariadb_cli(s.port, &["--local-infile=1", "app"], &sql);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "COUNT(*)\tGROUP_CONCAT(v ORDER BY id)\n3\tone,two,three\n"
    );
    // A client that did not enable local files is refused the way a server refuses it.
    let (ok, _, err) = mariadb_cli(
        s.port,
        &["--local-infile=0", "app"],
        &format!("CREATE TABLE IF NOT EXISTS infile_u (id INT, v VARCHAR(10)); LOAD DATA LOCAL INFILE '{}' INTO TABLE infile_u FIELDS TERMINATED BY ',';", file.display()),
    );
    assert!(!ok);
    assert!(err.contains("1148") || err.contains("not allowed"), "{err}");
    let (ok, _, _) = mariadb_cli(s.port, &["app"], "DROP TABLE IF EXISTS infile_u");
    assert!(ok);
}

#[test]
fn blob_of_20_mib_round_trips_both_ways() {
    let s = Sluice::start();
    let mut c = s.conn();
    c.query_drop("DROP TABLE IF EXISTS blob_t").unwrap();
    c.query_drop("CREATE TABLE blob_t (id INT PRIMARY KEY, b LONGBLOB)")
        .unwrap();
    let data: Vec<u8> = (0..20 * 1024 * 1024 + 7)
        .map(|i: usize| (i * 7919 % 251) as u8)
        .collect();
    c.exec_drop("INSERT INTO blob_t VALUES (1, ?)", (data.clone(),))
        .unwrap();
    let back: Vec<u8> = c
        .query_first("SELECT b FROM blob_t WHERE id = 1")
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "blob differs after the round trip");
    // The same through the text protocol, as a literal larger than one 16 MiB frame.
    let hex: String = data[..9 * 1024 * 1024]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.query_drop(format!("UPDATE blob_t SET b = X'{hex}' WHERE id = 1"))
        .unwrap();
    let len: u64 = c
        .query_first("SELECT LENGTH(b) FROM blob_t")
        .unwrap()
        .unwrap();
    assert_eq!(len, 9 * 1024 * 1024);
    c.query_drop("DROP TABLE blob_t").unwrap();
}

#[test]
fn server_errors_pass_through_with_code_and_sqlstate() {
    let s = Sluice::start();
    let mut c = s.conn();
    let e = c.query_drop("SELECT * FROM no_such_table").unwrap_err();
    let (code, state, msg) = server_error(&e).expect("a server error");
    assert_eq!((code, state.as_str()), (1146, "42S02"));
    assert!(msg.contains("no_such_table"), "{msg}");
    let e = c.query_drop("SELEC 1").unwrap_err();
    assert_eq!(
        server_error(&e).map(|x| (x.0, x.1)),
        Some((1064, "42000".to_string()))
    );
    // The session goes on after errors.
    let one: i64 = c.query_first("SELECT 1").unwrap().unwrap();
    assert_eq!(one, 1);
}

#[test]
fn prepared_statements_use_the_binary_protocol() {
    let s = Sluice::start();
    let mut c = s.conn();
    c.query_drop("CREATE TABLE IF NOT EXISTS ps_t (id INT PRIMARY KEY, v VARCHAR(20), d DOUBLE)")
        .unwrap();
    c.query_drop("DELETE FROM ps_t").unwrap();
    let ins = c.prep("INSERT INTO ps_t VALUES (?, ?, ?)").unwrap();
    for i in 0..50 {
        let v: Option<String> = (i % 5 != 0).then(|| format!("v{i}"));
        c.exec_drop(&ins, (i, v, i as f64 / 4.0)).unwrap();
    }
    let rows: Vec<(i32, Option<String>, f64)> = c
        .exec("SELECT id, v, d FROM ps_t WHERE id >= ? ORDER BY id", (45,))
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], (45, None, 11.25));
    assert_eq!(rows[1], (46, Some("v46".into()), 11.5));
    c.close(ins).unwrap();
    c.query_drop("DROP TABLE ps_t").unwrap();
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer_after_the_same_delay() {
    let s = Sluice::with(Config::default().top("auth_failure_delay_ms = 300"));
    let try_login = |user: &str, pw: &str| {
        let started = Instant::now();
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(s.port)
            .user(Some(user))
            .pass(Some(pw))
            .prefer_socket(false);
        let Err(e) = mysql::Conn::new(opts) else {
            panic!("login must fail")
        };
        (server_error(&e).expect("a server error"), started.elapsed())
    };
    let ((c1, s1, m1), t1) = try_login("app", "wrong");
    let ((c2, s2, m2), t2) = try_login("nobody", "wrong");
    assert_eq!((c1, s1.as_str()), (1045, "28000"));
    assert_eq!((c2, s2.as_str()), (1045, "28000"));
    assert_eq!(
        m1,
        "Access denied for user 'app'@'127.0.0.1' (using password: YES)"
    );
    assert_eq!(
        m2,
        "Access denied for user 'nobody'@'127.0.0.1' (using password: YES)"
    );
    for t in [t1, t2] {
        assert!(
            t >= Duration::from_millis(300),
            "refused after {t:?}, before the configured delay"
        );
        assert!(t < Duration::from_secs(3), "refused after {t:?}");
    }
}

#[test]
fn hashed_credentials_for_both_plugins_log_in() {
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
    let hash = |plugin: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{plugin}: ")))
            .unwrap_or_else(|| panic!("no {plugin} line in {text}"))
            .to_string()
    };
    let users = format!(
        "[[users]]\nname = \"native\"\npassword = \"{}\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
         [[users]]\nname = \"sha2\"\npassword = \"{}\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n",
        hash("mysql_native_password"),
        hash("caching_sha2_password")
    );
    let s = Sluice::with(Config::default().users(&users));
    for user in ["native", "sha2"] {
        let mut c = s.conn_as(user, "s3cret", Some("app"));
        let u: String = c.query_first("SELECT CURRENT_USER()").unwrap().unwrap();
        assert!(
            u.starts_with("app@"),
            "backend user is the configured one: {u}"
        );
        let e = mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .tcp_port(s.port)
                .user(Some(user))
                .pass(Some("nope"))
                .prefer_socket(false),
        )
        .err()
        .unwrap();
        assert_eq!(server_error(&e).map(|x| x.0), Some(1045));
    }
    // The mariadb command-line client too (it switches to caching_sha2_password when asked).
    let out = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{}", s.port),
            "-usha2",
            "-ps3cret",
            "-N",
            "-e",
            "SELECT 7",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
}

#[test]
fn session_state_does_not_leak_to_the_next_client_of_a_backend() {
    // One shard and one backend connection: the second client gets the first one's connection.
    let s = Sluice::with(
        Config::default()
            .top("shards = 1")
            .pool("mode = \"session\"\nsize = 1\nqueue_timeout_ms = 5000"),
    );
    let mut a = s.conn();
    // CONNECTION_ID() is sluice's id for the client (what the handshake told it)...
    let a_id: u64 = a.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    assert_eq!(a_id, u64::from(a.connection_id()));
    // ...and @@pseudo_thread_id the backend connection's own.
    let a_thread: u64 = a.query_first("SELECT @@pseudo_thread_id").unwrap().unwrap();
    a.query_drop("SET time_zone = '+05:00', sql_mode = 'ANSI_QUOTES', @secret = 'a-only'")
        .unwrap();
    a.query_drop("SET NAMES latin1").unwrap();
    a.query_drop("CREATE TEMPORARY TABLE a_tmp (x INT)")
        .unwrap();
    a.query_drop("USE mysql").unwrap();
    drop(a);
    let mut b = s.conn();
    let b_thread: u64 = b.query_first("SELECT @@pseudo_thread_id").unwrap().unwrap();
    assert_eq!(
        a_thread, b_thread,
        "the test needs both clients on the same backend connection"
    );
    let row: (String, String, Option<String>, String, String) = b
        .query_first("SELECT @@time_zone, @@sql_mode, @secret, @@character_set_client, DATABASE()")
        .unwrap()
        .unwrap();
    assert_eq!(row.0, "SYSTEM");
    assert!(!row.1.contains("ANSI_QUOTES"), "{}", row.1);
    assert_eq!(row.2, None);
    assert_eq!(row.3, "utf8mb4");
    assert_eq!(row.4, "app");
    let e = b.query_drop("SELECT * FROM a_tmp").unwrap_err();
    assert_eq!(server_error(&e).map(|x| x.0), Some(1146));
}

#[test]
fn two_concurrent_clients_keep_their_own_state() {
    let s = Sluice::start();
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("SET time_zone = '+01:00', @who = 'a'")
        .unwrap();
    b.query_drop("SET time_zone = '-07:00', @who = 'b'")
        .unwrap();
    a.query_drop("USE mysql").unwrap();
    for _ in 0..20 {
        let (tz, who, db): (String, String, String) = a
            .query_first("SELECT @@time_zone, @who, DATABASE()")
            .unwrap()
            .unwrap();
        assert_eq!(
            (tz.as_str(), who.as_str(), db.as_str()),
            ("+01:00", "a", "mysql")
        );
        let (tz, who, db): (String, String, String) = b
            .query_first("SELECT @@time_zone, @who, DATABASE()")
            .unwrap()
            .unwrap();
        assert_eq!(
            (tz.as_str(), who.as_str(), db.as_str()),
            ("-07:00", "b", "app")
        );
    }
}

#[test]
fn exhausted_pool_answers_with_a_clear_error_after_the_queue_timeout() {
    let s = Sluice::with(
        Config::default()
            .top("shards = 1")
            .pool("mode = \"session\"\nsize = 1\nqueue_timeout_ms = 400"),
    );
    let mut holder = s.conn();
    holder.query_drop("SELECT 1").unwrap();
    // A bare client: drivers run queries while connecting, and this one must reach its first
    // query with the pool exhausted.
    let mut waiter = RawClient::login(s.port);
    let started = Instant::now();
    let r = waiter.query("SELECT 1");
    let waited = started.elapsed();
    let e = sluice::codec::packets::ErrPacket::decode(&r[0]).expect("an ERR packet");
    assert_eq!((e.code, &e.sql_state), (9001, b"HY000"));
    let msg = String::from_utf8_lossy(e.message);
    assert!(
        msg.starts_with("sluice: no backend connection available within"),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Once the holder leaves, the waiter is served.
    drop(holder);
    let r = waiter.query("SELECT 1");
    assert_eq!(r[0], vec![1], "a result set this time");
}

#[test]
fn hostile_bytes_get_an_error_or_a_close_and_nobody_else_notices() {
    let mut s = Sluice::with(
        Config::default().top("handshake_timeout_ms = 1000\nmax_packet_size = 1048576"),
    );
    let mut bystander = s.conn();
    // 1. Garbage instead of a handshake response.
    let mut c = RawClient::connect(s.port);
    c.read_packet().expect("greeting");
    c.send_raw(b"\x05\x00\x00\x01garbage that is not a handshake response")
        .unwrap();
    c.err_or_close();
    // 2. A handshake response whose auth data announces 1 GiB.
    let mut c = RawClient::connect(s.port);
    c.read_packet().expect("greeting");
    let mut resp = vec![0u8; 32];
    resp[0..4].copy_from_slice(&(0x0020_0000u32 | 0x8000 | 0x200 | 0x80000).to_le_bytes());
    resp.extend_from_slice(b"app\0");
    resp.extend_from_slice(&[0xFD, 0xFF, 0xFF, 0x3F]);
    resp.extend_from_slice(b"short");
    c.send(1, &resp);
    c.err_or_close();
    // 3. A frame header announcing 16 MiB that never arrives (over the 1 MiB limit: refused at once).
    let mut c = RawClient::login(s.port);
    c.send_raw(&[0xFF, 0xFF, 0xFF, 0x00, 0x03]).unwrap();
    let (_, p) = c.read_packet().expect("an ERR before the close");
    assert_eq!(
        &p[..3],
        &[0xFF, 0x81, 0x04],
        "ER_NET_PACKET_TOO_LARGE (1153)"
    );
    assert!(c.closed_by_peer());
    // 4. A truncated packet followed by a close.
    let mut c = RawClient::login(s.port);
    c.send_raw(&[0x20, 0x00, 0x00, 0x00, 0x03, b'S']).unwrap();
    drop(c);
    // 5. Random packets after login.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..30 {
        let mut c = RawClient::login(s.port);
        for _ in 0..5 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let payload: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            if c.send_raw(&{
                let mut f = Vec::new();
                sluice::codec::frame::encode_packet(&mut f, 0, &payload);
                f
            })
            .is_err()
            {
                break;
            }
        }
    }
    // 6. A frame header with a wrong sequence id for a continuation, and an empty packet.
    let mut c = RawClient::login(s.port);
    c.send(0, &[]);
    c.err_or_close();
    assert!(s.alive(), "sluice died:\n{}", s.log_text());
    assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
    let one: i64 = bystander.query_first("SELECT 1").unwrap().unwrap();
    assert_eq!(one, 1);
    let mut fresh = s.conn();
    let two: i64 = fresh.query_first("SELECT 2").unwrap().unwrap();
    assert_eq!(two, 2);
}

#[test]
fn a_client_vanishing_mid_result_set_does_not_leak_its_backend() {
    let s = Sluice::with(
        Config::default()
            .top("shards = 1")
            .pool("mode = \"session\"\nsize = 1\nqueue_timeout_ms = 5000"),
    );
    let sql = "SELECT REPEAT('x', 2000) AS abandoned FROM seq_1_to_200000";
    for _ in 0..3 {
        let mut c = RawClient::login(s.port);
        let mut p = vec![3u8];
        p.extend_from_slice(sql.as_bytes());
        c.send(0, &p);
        // The result set has begun (its column count), and the client leaves in the middle.
        let (_, first) = c.read_packet().expect("the result set's first packet");
        assert_eq!(first, vec![1], "a one-column result set");
        drop(c);
        // The next client is served on the single pool slot: the old backend was not kept dirty.
        let mut next = s.conn();
        let v: String = next.query_first("SELECT 'clean'").unwrap().unwrap();
        assert_eq!(v, "clean");
    }
    let mut d = direct();
    common::wait_for(
        "the abandoned queries to stop running on the backend",
        Duration::from_secs(5),
        || (common::running(&mut d, sql) == 0).then_some(()),
    );
}

#[test]
fn a_backend_dying_mid_command_gives_a_clear_error_not_a_hang() {
    let mut s = Sluice::start();
    let mut c = s.conn();
    // A text of its own: other tests' statements run on the same server.
    let sql = "SELECT SLEEP(20) AS backend_dies";
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let r = c.query_drop(sql);
        (r, started.elapsed())
    });
    let mut d = direct();
    let id = common::wait_for_statement(&mut d, sql);
    d.query_drop(format!("KILL CONNECTION {id}")).unwrap();
    let (r, took) = handle.join().unwrap();
    assert!(took < Duration::from_secs(10), "client waited {took:?}");
    let e = r.unwrap_err();
    match server_error(&e) {
        Some((code, _, msg)) => assert!(code == 2013 || code == 1927, "{code} {msg}"),
        None => panic!("expected an error packet, got {e}"),
    }
    assert!(s.alive());
    let mut again = s.conn();
    let one: i64 = again.query_first("SELECT 1").unwrap().unwrap();
    assert_eq!(one, 1);
}

#[test]
fn replication_commands_are_refused_with_a_clear_error() {
    let s = Sluice::start();
    let mut c = RawClient::login(s.port);
    c.send(0, &[0x12, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    let (_, p) = c.read_packet().expect("an answer");
    let e = sluice::codec::packets::ErrPacket::decode(&p).unwrap();
    assert_eq!((e.code, &e.sql_state), (1235, b"42000"));
    assert!(String::from_utf8_lossy(e.message).contains("COM_BINLOG_DUMP"));
    // The session is still usable.
    let r = c.query("SELECT 1");
    assert_eq!(r[0], vec![1]);
}

#[test]
fn sigterm_lets_a_command_in_flight_finish_then_exits() {
    let mut s = Sluice::start();
    let mut d = direct();
    d.query_drop("CREATE TABLE IF NOT EXISTS sigterm_t (id INT PRIMARY KEY, v INT)")
        .unwrap();
    d.query_drop("REPLACE INTO sigterm_t VALUES (1, 5)")
        .unwrap();
    // The test holds the row, so the client's statement stays in flight until the test lets it
    // finish: SIGTERM is sure to arrive while it runs.
    d.query_drop("BEGIN").unwrap();
    d.query_drop("SELECT v FROM sigterm_t WHERE id = 1 FOR UPDATE")
        .unwrap();
    let mut c = s.conn();
    let port = s.port;
    let sql = "SELECT v FROM sigterm_t WHERE id = 1 LOCK IN SHARE MODE";
    let h = std::thread::spawn(move || c.query_first::<i64, _>(sql));
    common::wait_for_statement(&mut d, sql);
    s.sigterm();
    // Draining: no new clients...
    common::wait_for("sluice to stop accepting", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(s.alive(), "sluice exited with a command in flight");
    // ...while the command in flight runs to its end.
    d.query_drop("COMMIT").unwrap();
    let v = h.join().unwrap().expect("the in-flight query's answer");
    assert_eq!(v, Some(5), "the in-flight query completed");
    let st = s.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "exit status {st}");
}

#[test]
fn check_config_accepts_the_example_and_explains_mistakes() {
    let bin = env!("CARGO_BIN_EXE_sluice");
    let example = common::repo_root().join("config/sluice.example.toml");
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = std::env::temp_dir().join(format!("sluice-bad-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "listen = \"nope\"\n[pool]\nsize = 0\n[[backends]]\naddress = \"x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "listen = \"nope\": not an IP:port address",
        "pool.size = 0",
        "backends[0].address",
        "users",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn sysbench_oltp_read_write_has_zero_errors() {
    // Session mode here; transaction mode with server-side prepared statements is in
    // tests/multiplex.rs.
    let s = Sluice::with(
        Config::default().pool("mode = \"session\"\nsize = 32\nqueue_timeout_ms = 10000"),
    );
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
    let _ = run(&["oltp_read_write", "cleanup"]);
    let out = run(&["oltp_read_write", "prepare"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = format!("--time={secs}");
    let out = run(&["--threads=16", &t, "oltp_read_write", "run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Any error other than InnoDB's own deadlock / lock-wait answers (1213, 1205, 1020, which
    // sysbench retries by default and which happen without a proxy too) aborts sysbench with a
    // failure status, so success above means the proxy caused no error. The retried conflicts
    // must stay rare.
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
        "{retried} deadlock retries in {txs} transactions:\n{text}"
    );
    let _ = run(&["oltp_read_write", "cleanup"]);
}

#[test]
fn a_backend_on_a_unix_socket() {
    let dir = std::env::var("SLUICE_TEST_MARIADB_DIR")
        .expect("SLUICE_TEST_MARIADB_DIR (scripts/test.sh sets it)");
    let sock = format!("unix:{dir}/mariadb.sock");
    let s = Sluice::with(Config::default().backends(vec![sock]));
    let mut c = s.conn();
    let (v, via): (i64, String) = c.query_first("SELECT 41 + 1, @@socket").unwrap().unwrap();
    assert_eq!(v, 42);
    assert!(via.ends_with("mariadb.sock"), "{via}");
    let mut d = direct();
    let n: u64 = d
        .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE HOST = 'localhost' AND USER = 'app'")
        .unwrap()
        .unwrap();
    assert!(
        n >= 1,
        "sluice's backend connection came in over the socket"
    );
}
