//! Who a session is and what it may touch: KILL that never reaches another client's statement,
//! COM_CHANGE_USER held to the login's rules, logins that do not reveal which users exist, the
//! failed-login limit counted across shards and worker processes, and refusals at the
//! file-descriptor limit.

mod common;

use common::{direct, server_error, Config, RawClient, Sluice};
use mysql::prelude::Queryable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// MariaDB's "Query execution was interrupted" and "Connection was killed".
const KILLED: [u16; 2] = [1317, 1927];

/// Answers the question the KILL design depends on: a `KILL QUERY` that reaches a connection
/// after its statement finished (the connection idle) does not carry over to that connection's
/// next statement — the server clears the flag when it starts the next command. So once a KILL
/// has been *answered*, the connection is safe to hand to another client.
#[test]
fn server_clears_a_late_kill_query_before_the_next_statement() {
    let mut victim = direct();
    let mut killer = direct();
    let id = victim.connection_id();
    for round in 0..20 {
        let v: i64 = victim.query_first("SELECT 1").unwrap().unwrap();
        assert_eq!(v, 1);
        // The victim is idle: its statement is over.
        killer.query_drop(format!("KILL QUERY {id}")).unwrap();
        // The next statement, a prepared one, and a ping all run normally.
        // (A killed SLEEP fails with 1317 or answers 1; one that ran its course answers 0.)
        let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(0.02)");
        assert!(
            matches!(r, Ok(Some(0))),
            "round {round}: late KILL hit the next statement: {r:?}"
        );
        killer.query_drop(format!("KILL QUERY {id}")).unwrap();
        let r: Result<Option<i64>, _> = victim.exec_first("SELECT ? + 1", (round,));
        assert_eq!(r.unwrap(), Some(round + 1));
        killer.query_drop(format!("KILL QUERY {id}")).unwrap();
        victim
            .ping()
            .unwrap_or_else(|e| panic!("round {round}: late KILL hit the ping: {e}"));
    }
}

/// Connections MariaDB has accepted for account `name` since it started (performance_schema).
fn connections_of(d: &mut mysql::Conn, name: &str) -> u64 {
    d.query_first(format!(
        "SELECT COALESCE(SUM(TOTAL_CONNECTIONS), 0) FROM performance_schema.accounts \
         WHERE USER = '{name}'"
    ))
    .unwrap()
    .unwrap_or(0)
}

/// Through sluice too, a `KILL QUERY` aimed at a client between statements does nothing: its
/// next statement runs to the end (sluice has nothing to interrupt, and sends nothing).
#[test]
fn kill_query_of_an_idle_client_leaves_its_next_statement_alone() {
    let s = Sluice::with(Config::default().top("shards = 1"));
    let mut victim = s.conn();
    let mut killer = s.conn();
    let id = victim.connection_id();
    for round in 0..10 {
        killer.query_drop(format!("KILL QUERY {id}")).unwrap();
        // (A killed SLEEP fails with 1317 or answers 1; one that ran its course answers 0.)
        let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(0.02)");
        assert!(
            matches!(r, Ok(Some(0))),
            "round {round}: a KILL of an idle client hit its next statement: {r:?}"
        );
    }
}

/// A TCP relay in front of the suite's MariaDB that holds every `KILL QUERY` for `delay` before
/// passing it on, as a loaded server may answer one late (MariaDB itself can take two seconds:
/// see `src/shard/kill.rs`). Everything else passes at once. Its threads live as long as the test
/// process.
fn kill_delaying_relay(delay: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let server = std::net::TcpStream::connect(common::mariadb_addr()).unwrap();
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
            let (mut s_in, mut s_out) = (server.try_clone().unwrap(), server);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = c_in.read(&mut buf) {
                    // A packet (4-byte header) carrying COM_QUERY (3) "KILL QUERY …": sluice writes
                    // each of its commands at once, so it starts a read.
                    if n > 5 && buf[4] == 3 && buf[5..n].starts_with(b"KILL QUERY") {
                        std::thread::sleep(delay);
                    }
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// A storm of KILL QUERY aimed at one client, while that client and others share a pool of one
/// backend connection: only the target's statements may be interrupted, never the others'.
///
/// The server answers each KILL 5 ms late (a relay holds it), and the target alternates a
/// statement longer than that (the KILL lands inside it: it is interrupted) with one shorter
/// (it ends first, the KILL still on its way). With a pool of one and the others queued, the
/// backend of such a statement would go straight to another client, whose statement the late
/// KILL would interrupt; sluice keeps it until the KILL has landed. The storm runs until that
/// has happened often enough (`sluice_kill_holds_total`). Without the relay the race still
/// exists but is too narrow to lose reliably (a KILL over sluice's open connection lands in
/// about as long as handing the backend over takes).
#[test]
fn kill_query_never_interrupts_another_clients_statement() {
    let users = common::dedicated_backend_user("killstorm");
    let mport = common::free_port();
    let relay = kill_delaying_relay(Duration::from_millis(5));
    let s = Sluice::with(
        Config::default()
            .top(&format!(
                "shards = 1\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .backends(vec![format!("127.0.0.1:{relay}")])
            .users(&users)
            .pool("mode = \"transaction\"\nsize = 1\nqueue_timeout_ms = 20000\n"),
    );
    let mut d = direct();
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let others_done = Arc::new(AtomicU64::new(0));
    let target_killed = Arc::new(AtomicU64::new(0));
    let target_runs = Arc::new(AtomicU64::new(0));
    let mut target = s.conn();
    let target_id = target.connection_id();
    let mut killers: Vec<mysql::Conn> = (0..2).map(|_| s.conn()).collect();
    let mut others: Vec<mysql::Conn> = (0..2).map(|_| s.conn()).collect();
    let connections_before = connections_of(&mut d, "killstorm");
    // The target's statements: one the late KILLs land in, one they outlast.
    let t = {
        let stop = stop.clone();
        let killed = target_killed.clone();
        let runs = target_runs.clone();
        std::thread::spawn(move || {
            for sql in ["SELECT SLEEP(0.02)", "SELECT SLEEP(0.001)"].iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // A SLEEP that ran its course answers 0; an interrupted one fails with 1317 or
                // answers 1.
                match target.query_first::<i64, _>(*sql) {
                    Ok(Some(0)) => {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(1)) => {
                        killed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(v) => panic!("target: SLEEP answered {v:?}"),
                    Err(e) => {
                        let code = server_error(&e).map(|x| x.0);
                        assert!(
                            code.is_some_and(|c| KILLED.contains(&c)),
                            "target: unexpected error {e}"
                        );
                        killed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let killers: Vec<_> = killers
        .drain(..)
        .map(|mut k| {
            let (stop, kills) = (stop.clone(), kills.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    k.query_drop(format!("KILL QUERY {target_id}")).unwrap();
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Other clients run statements long enough for a stray KILL to land in them: one that did
    // fails with 1317 or answers 1.
    let hits = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let others: Vec<_> = others
        .drain(..)
        .map(|mut c| {
            let (stop, done, hits) = (stop.clone(), others_done.clone(), hits.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match c.query_first::<i64, _>("SELECT SLEEP(0.01)") {
                        Ok(Some(0)) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        r => hits.lock().unwrap().push(format!("{r:?}")),
                    }
                }
            })
        })
        .collect();
    let no_hits = || {
        let hits = hits.lock().unwrap();
        assert!(
            hits.is_empty(),
            "other clients' statements were interrupted by KILLs aimed at {target_id} ({} kills, \
             target interrupted {} times): {hits:?}",
            kills.load(Ordering::Relaxed),
            target_killed.load(Ordering::Relaxed)
        );
    };
    // Polled, bounded: the storm runs until the race has had its chances, the target was
    // interrupted (KILLs do reach its statements) and the others got through; it stops at the
    // first statement of another client interrupted, or the target's thread failing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holds = || common::metric(&common::scrape(mport), "sluice_kill_holds_total");
    loop {
        no_hits();
        if t.is_finished() {
            t.join().unwrap();
            panic!("the target stopped");
        }
        let held = holds();
        if held >= 20.0
            && target_killed.load(Ordering::Relaxed) >= 20
            && others_done.load(Ordering::Relaxed) >= 100
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "storm did not run its course: {} kills, target interrupted {} times, {} statements \
             of other clients, {held} statements ended with a KILL in flight",
            kills.load(Ordering::Relaxed),
            target_killed.load(Ordering::Relaxed),
            others_done.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    for k in killers {
        k.join().unwrap();
    }
    for o in others {
        o.join().unwrap();
    }
    no_hits();
    // One KILL QUERY per statement (at most), over connections sluice keeps: a few backend
    // connections for the whole storm, not one per KILL.
    let m = common::scrape(mport);
    let sent = common::metric(&m, "sluice_kill_queries_sent_total");
    let shared = common::metric(&m, "sluice_kill_queries_shared_total");
    let opened = connections_of(&mut d, "killstorm") - connections_before;
    let statements = target_runs.load(Ordering::Relaxed) + target_killed.load(Ordering::Relaxed);
    assert!(
        sent >= 20.0 && sent as u64 <= statements + 1,
        "{sent} KILL QUERYs sent for {statements} statements of the target"
    );
    assert!(
        opened <= 10,
        "{opened} backend connections opened for {sent} KILL QUERYs"
    );
    eprintln!(
        "{} KILLs ({sent} sent to the server, {shared} served by one already sent); the target \
         ran {} statements and was interrupted {} times; the others ran {}; {} statements ended \
         with a KILL in flight; {opened} backend connections opened",
        kills.load(Ordering::Relaxed),
        target_runs.load(Ordering::Relaxed),
        target_killed.load(Ordering::Relaxed),
        others_done.load(Ordering::Relaxed),
        holds()
    );
}

// ---- COM_CHANGE_USER --------------------------------------------------------------------------

fn two_users(extra_second: &str) -> String {
    format!(
        "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
         [[users]]\nname = \"other\"\npassword = \"o\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n{extra_second}"
    )
}

#[test]
fn change_user_is_held_to_require_tls_like_the_login() {
    let s = Sluice::with(Config::default().users(&two_users("require_tls = true\n")));
    let mut c = s.conn_as("app", "app", None);
    let e = c
        .change_user(
            mysql::ChangeUserOpts::default()
                .with_user(Some("other".into()))
                .with_pass(Some("o".into())),
        )
        .expect_err("a plain-text connection became a require_tls user");
    let (code, state, msg) = server_error(&e).unwrap_or_else(|| panic!("{e}"));
    assert_eq!((code, state.as_str()), (3159, "HY000"), "{msg}");
    assert!(msg.contains("must connect with TLS"), "{msg}");
    // The login says the same.
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(s.port)
        .user(Some("other"))
        .pass(Some("o"))
        .prefer_socket(false);
    let e = mysql::Conn::new(opts).err().unwrap();
    assert_eq!(server_error(&e).map(|x| x.0), Some(3159));
    // Users without the requirement still change over plain text.
    let mut c = s.conn_as("app", "app", None);
    c.change_user(
        mysql::ChangeUserOpts::default()
            .with_user(Some("app".into()))
            .with_pass(Some("app".into())),
    )
    .unwrap();
    let v: i64 = c.query_first("SELECT 7").unwrap().unwrap();
    assert_eq!(v, 7);
}

/// Sends COM_CHANGE_USER on a raw client and answers the auth switch; `then` is sent right
/// behind the answer, before sluice replies, so it runs in the same activation of the session.
fn raw_change_user(c: &mut RawClient, user: &str, password: &str, then: Option<&str>) -> Vec<u8> {
    use sluice::codec::auth::{native_scramble, sha2_scramble, AuthSwitch, CACHING_SHA2_PASSWORD};
    let caps = sluice::codec::login::BASE_CAPABILITIES | sluice::codec::caps::cap::DEPRECATE_EOF;
    let mut p = Vec::new();
    sluice::codec::command::ChangeUser {
        username: user.as_bytes().to_vec(),
        auth_response: vec![0; 20],
        database: Vec::new(),
        collation: Some(45),
        auth_plugin: Some(b"mysql_native_password".to_vec()),
        attributes: Vec::new(),
    }
    .encode(&mut p, caps);
    c.send(0, &p);
    let (seq, sw) = c.read_packet().expect("auth switch");
    let sw = AuthSwitch::decode(&sw).expect("an auth switch");
    let scramble = if sw.plugin == CACHING_SHA2_PASSWORD {
        sha2_scramble(password.as_bytes(), &sw.data)
    } else {
        native_scramble(password.as_bytes(), &sw.data)
    };
    c.send(seq.wrapping_add(1), &scramble);
    if let Some(sql) = then {
        let mut q = vec![3u8];
        q.extend_from_slice(sql.as_bytes());
        c.send(0, &q);
    }
    let (_, answer) = c.read_packet().expect("change user answer");
    answer
}

/// After COM_CHANGE_USER the session belongs to the new user at once: KILL permissions follow it
/// even while the session stays active (its next statement already queued), and so does the
/// per-user connection limit.
#[test]
fn change_user_moves_kill_permissions_and_user_limits_at_once() {
    let s = Sluice::with(Config::default().users(&two_users("max_connections = 2\n")));
    let mut a = RawClient::login(s.port);
    let a_id = {
        let r = a.query("SELECT CONNECTION_ID()");
        let row = &r[r.len() - 2];
        String::from_utf8_lossy(&row[1..]).parse::<u32>().unwrap()
    };
    let sql = "SELECT SLEEP(20) AS after_change_user";
    let ok = raw_change_user(&mut a, "other", "o", Some(sql));
    assert_eq!(
        ok[0],
        0,
        "change user refused: {:?}",
        String::from_utf8_lossy(&ok)
    );
    // Wait until the statement runs on a backend (the session is active and serving it).
    let mut d = direct();
    common::wait_for_statement(&mut d, sql);
    // The old identity may no longer touch the session.
    let mut app = s.conn_as("app", "app", None);
    let e = app
        .query_drop(format!("KILL QUERY {a_id}"))
        .expect_err("user app killed a statement of user other");
    assert_eq!(server_error(&e).map(|x| x.0), Some(1095), "{e}");
    // The new one counts towards its limit (2): one more login fits, the next does not.
    let mut other = s.conn_as("other", "o", None);
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(s.port)
        .user(Some("other"))
        .pass(Some("o"))
        .prefer_socket(false);
    let e = mysql::Conn::new(opts).expect_err("over the user's limit");
    assert_eq!(server_error(&e).map(|x| x.0), Some(1040), "{e}");
    // And the new identity may kill it.
    let started = Instant::now();
    other.query_drop(format!("KILL QUERY {a_id}")).unwrap();
    // (The column definitions come first; the ERR replaces the row.)
    let code = loop {
        let r = a.read_packet().expect("the killed statement's answer").1;
        match r[0] {
            0xFF => break u16::from_le_bytes([r[1], r[2]]),
            0xFE if r.len() < 9 => panic!("the statement was not interrupted"),
            _ => {}
        }
    };
    assert_eq!(code, 1317);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Changing back to app frees the place under other's limit.
    let ok = raw_change_user(&mut a, "app", "app", None);
    assert_eq!(ok[0], 0);
    let _third = s.conn_as("other", "o", None);
}

// ---- No user enumeration ----------------------------------------------------------------------

/// What a client sees of one failed authentication: each packet's kind (auth switch and its
/// plugin, more-data and its byte, the ERR with the user name taken out) and how long the answer
/// took after the client's last packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape(Vec<String>);

/// Drives a login (or, with `change_user`, a COM_CHANGE_USER after logging in as app) for `user`
/// with a wrong password, the way a client without TLS does, and records what it sees.
fn failed_auth_shape(port: u16, user: &str, change_user: bool) -> (Shape, Duration) {
    use sluice::codec::auth::{native_scramble, sha2_scramble, AuthSwitch, CACHING_SHA2_PASSWORD};
    use sluice::codec::handshake::{Handshake, HandshakeResponse};
    let password = b"definitely-wrong";
    let caps = sluice::codec::login::BASE_CAPABILITIES | sluice::codec::caps::cap::DEPRECATE_EOF;
    let mut c;
    let mut seq;
    // Each time is taken before the packet goes out: the server's delay starts when it has
    // read it, which may be before this thread returns from the write (a loaded machine).
    let mut sent;
    if change_user {
        c = RawClient::login(port);
        let mut p = Vec::new();
        sluice::codec::command::ChangeUser {
            username: user.as_bytes().to_vec(),
            auth_response: vec![7; 20],
            database: Vec::new(),
            collation: Some(45),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attributes: Vec::new(),
        }
        .encode(&mut p, caps);
        sent = Instant::now();
        c.send(0, &p);
        seq = 0;
    } else {
        c = RawClient::connect(port);
        let (s, g) = c.read_packet().expect("greeting");
        let g = Handshake::decode(&g).unwrap();
        let mut p = Vec::new();
        HandshakeResponse {
            capabilities: caps,
            max_packet_size: 1 << 24,
            collation: 45,
            mariadb_capabilities: 0,
            username: user.as_bytes().to_vec(),
            auth_response: native_scramble(password, &g.nonce),
            database: None,
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attributes: Vec::new(),
        }
        .encode(&mut p);
        seq = s.wrapping_add(1);
        sent = Instant::now();
        c.send(seq, &p);
    }
    let mut shape = Vec::new();
    loop {
        let Some((s, p)) = c.read_packet() else {
            shape.push("closed".to_string());
            break;
        };
        assert_eq!(s, seq.wrapping_add(1), "sequence ids in order: {shape:?}");
        seq = s;
        match p.first() {
            Some(0xFE) => {
                let sw = AuthSwitch::decode(&p).unwrap();
                shape.push(format!("switch {}", String::from_utf8_lossy(&sw.plugin)));
                let answer = if sw.plugin == CACHING_SHA2_PASSWORD {
                    sha2_scramble(password, &sw.data)
                } else {
                    native_scramble(password, &sw.data)
                };
                seq = seq.wrapping_add(1);
                sent = Instant::now();
                c.send(seq, &answer);
            }
            Some(0x01) => {
                shape.push(format!("more-data {:?}", &p[1..]));
                if p[1..] == [4] {
                    // Full authentication: without TLS a client asks for the server's RSA key.
                    seq = seq.wrapping_add(1);
                    sent = Instant::now();
                    c.send(seq, &[2]);
                }
            }
            Some(0xFF) => {
                let e = sluice::codec::packets::ErrPacket::decode(&p).unwrap();
                let msg =
                    String::from_utf8_lossy(e.message).replace(&format!("'{user}'"), "'USER'");
                shape.push(format!("err {} {msg}", e.code));
                break;
            }
            _ => {
                shape.push(format!("other {:02x}", p[0]));
                break;
            }
        }
    }
    (Shape(shape), sent.elapsed())
}

/// Known users of each kind (native, caching_sha2 fast path, caching_sha2 with a crypt hash)
/// and unknown names go through exchanges of the same shapes, with the same delay, at login and
/// at COM_CHANGE_USER; an unknown name always gets the same one.
#[test]
fn unknown_users_look_like_known_ones_on_the_wire() {
    let crypt = sluice::auth::crypt::Sha2Crypt::generate(b"c");
    let users = format!(
        "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
         [[users]]\nname = \"nat\"\npassword = \"n\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
         [[users]]\nname = \"fast\"\npassword = \"f\"\nauth_plugin = \"caching_sha2_password\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
         [[users]]\nname = \"full\"\npassword = '{crypt}'\nbackend_user = \"app\"\nbackend_password = \"app\"\n"
    );
    let delay = Duration::from_millis(150);
    let s = Sluice::with(
        Config::default()
            .users(&users)
            .top("auth_failure_delay_ms = 150\nauth_failure_limit = 0"),
    );
    for change_user in [false, true] {
        let mut known = std::collections::HashSet::new();
        for u in ["nat", "fast", "full"] {
            let (shape, took) = failed_auth_shape(s.port, u, change_user);
            assert!(took >= delay, "{u}: answered after {took:?}");
            assert!(
                shape.0.last().unwrap().starts_with("err 1045 "),
                "{u}: {shape:?}"
            );
            known.insert(shape);
        }
        assert_eq!(known.len(), 3, "the three kinds differ: {known:?}");
        let port = s.port;
        let seen: std::collections::HashMap<String, Shape> = std::thread::scope(|scope| {
            let attempts: Vec<_> = (0..24)
                .map(|i| {
                    scope.spawn(move || {
                        let name = format!("ghost{i}");
                        let (shape, took) = failed_auth_shape(port, &name, change_user);
                        (name, shape, took)
                    })
                })
                .collect();
            attempts
                .into_iter()
                .map(|a| {
                    let (name, shape, took) = a.join().unwrap();
                    assert!(took >= delay, "{name}: answered after {took:?}");
                    assert!(
                        known.contains(&shape),
                        "{name} (unknown) is told apart: {shape:?} is none of {known:?}"
                    );
                    (name, shape)
                })
                .collect()
        });
        // Unknown names spread over the configured kinds (1 of each here)…
        let kinds: std::collections::HashSet<_> = seen.values().collect();
        assert!(kinds.len() >= 2, "every unknown name got {kinds:?}");
        // …and a name's answer does not change between attempts.
        for name in ["ghost0", "ghost1", "ghost2", "ghost3"] {
            assert_eq!(failed_auth_shape(s.port, name, change_user).0, seen[name]);
        }
    }
}

// ---- The failed-login limit is per instance ---------------------------------------------------

/// Connects and reads the first packet: the greeting (and the connection id in it), or the
/// error code of a refusal sent in its place.
fn greet(port: u16) -> Result<(RawClient, u8, sluice::codec::handshake::Handshake), u16> {
    let mut c = RawClient::connect(port);
    let (seq, p) = c.read_packet().expect("a first packet");
    if p[0] == 0xFF {
        return Err(u16::from_le_bytes([p[1], p[2]]));
    }
    Ok((
        c,
        seq,
        sluice::codec::handshake::Handshake::decode(&p).unwrap(),
    ))
}

/// Logs in as app with a wrong password after `greet`; expects ERR 1045.
fn fail_login(mut c: RawClient, seq: u8, g: &sluice::codec::handshake::Handshake) {
    use sluice::codec::auth::native_scramble;
    let mut p = Vec::new();
    sluice::codec::handshake::HandshakeResponse {
        capabilities: sluice::codec::login::BASE_CAPABILITIES,
        max_packet_size: 1 << 24,
        collation: 45,
        mariadb_capabilities: 0,
        username: b"app".to_vec(),
        auth_response: native_scramble(b"wrong", &g.nonce),
        database: None,
        auth_plugin: Some(b"mysql_native_password".to_vec()),
        attributes: Vec::new(),
    }
    .encode(&mut p);
    c.send(seq.wrapping_add(1), &p);
    let (_, e) = c.read_packet().expect("an answer");
    assert_eq!(e[0], 0xFF);
    assert_eq!(u16::from_le_bytes([e[1], e[2]]), 1045);
}

/// Makes `per_place` failed logins land on each of the two places (shards or worker processes)
/// a connection id names through `place_of`, then checks the next connection is refused with
/// ERR 1129: the limit (2 × `per_place`) counted them together.
fn failures_add_up(port: u16, per_place: usize, place_of: impl Fn(u32) -> usize) {
    let mut done = [0usize; 2];
    let mut attempts = 0;
    while done.iter().any(|&n| n < per_place) {
        attempts += 1;
        assert!(attempts < 400, "connections never spread: {done:?}");
        let (c, seq, g) = greet(port).unwrap_or_else(|code| {
            panic!("refused with {code} after {done:?} failures: counted per place?")
        });
        let place = place_of(g.connection_id);
        if done[place] < per_place {
            fail_login(c, seq, &g);
            done[place] += 1;
        }
        // Else leave without logging in: not a failure.
    }
    match greet(port) {
        Err(code) => assert_eq!(code, 1129),
        Ok(_) => panic!("{done:?} failures spread over two places were not counted together"),
    }
}

#[test]
fn failed_logins_are_counted_across_shards() {
    let s = Sluice::with(
        Config::default().top("shards = 2\nauth_failure_limit = 4\nauth_failure_delay_ms = 10"),
    );
    // One worker, two shards: the shard is the top bit of the 31-bit connection id.
    failures_add_up(s.port, 2, |id| (id >> 30) as usize & 1);
}

#[test]
fn failed_logins_are_counted_across_worker_processes() {
    let s = Sluice::with(
        Config::default()
            .top("shards = 1\nworkers = 2\nauth_failure_limit = 4\nauth_failure_delay_ms = 10"),
    );
    // Two workers of one shard each: the worker is the top bit of the connection id.
    failures_add_up(s.port, 2, |id| (id >> 30) as usize & 1);
}

// ---- File descriptors -------------------------------------------------------------------------

/// A client connection with short timeouts (a refusal must come at once, not after a wait).
fn try_conn(port: u16) -> Result<mysql::Conn, mysql::Error> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(5)))
        .read_timeout(Some(Duration::from_secs(5)))
        .write_timeout(Some(Duration::from_secs(5)));
    mysql::Conn::new(opts)
}

/// Asserts `r` is the server's "Too many connections" refusal. That it came at once, rather than
/// after waiting in the backlog for a place, is what makes it a server error: the wait would
/// have ended in `try_conn`'s 5 s timeouts, an I/O error.
fn assert_too_many(r: Result<mysql::Conn, mysql::Error>, log: &str) {
    let e = r.expect_err("refused");
    let (code, _, msg) =
        server_error(&e).unwrap_or_else(|| panic!("not a server error: {e}\n{log}"));
    assert_eq!((code, msg.as_str()), (1040, "Too many connections"));
}

/// Clients are admitted only up to what RLIMIT_NOFILE leaves after sluice's own reserve; past
/// that they are answered with ERR 1040 at once, and sluice can still open backend connections
/// (a statement needing a new one, and KILL's own connection) and serve its metrics.
#[test]
fn at_the_fd_limit_new_clients_get_1040_at_once_and_backends_stay_reachable() {
    let users = common::dedicated_backend_user("fdlimit");
    let mport = common::free_port();
    let s = Sluice::with_nofile(
        Config::default()
            .top(&format!(
                "shards = 1\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .users(&users)
            .pool("mode = \"transaction\"\nsize = 3\nqueue_timeout_ms = 10000\n"),
        160,
    );
    let mut clients = Vec::new();
    let refusal = loop {
        assert!(clients.len() < 200, "never refused");
        match try_conn(s.port) {
            Ok(c) => clients.push(c),
            Err(e) => break Err(e),
        }
    };
    assert_too_many(refusal, &s.log_text());
    assert!(
        clients.len() > 50,
        "only {} clients admitted",
        clients.len()
    );
    eprintln!("{} clients admitted with 160 descriptors", clients.len());
    for _ in 0..3 {
        assert_too_many(try_conn(s.port), "");
    }
    // Existing clients keep working.
    for c in clients.iter_mut().take(5) {
        let v: i64 = c.query_first("SELECT 1").unwrap().unwrap();
        assert_eq!(v, 1);
    }
    // Backends stay reachable: two connections held in transactions, a third opened for a
    // statement, and KILL's own connection to interrupt it.
    let mut d = direct();
    let before = common::threads_of(&mut d, "fdlimit");
    for c in clients.iter_mut().take(2) {
        c.query_drop("BEGIN").unwrap();
        c.query_drop("SELECT 1").unwrap();
    }
    let mut sleeper = clients.pop().unwrap();
    let sleeper_id = sleeper.connection_id();
    let sql = "SELECT SLEEP(30) AS at_the_fd_limit";
    let h = std::thread::spawn(move || sleeper.query_first::<i64, _>(sql));
    assert!(
        before < 3,
        "the pool opened all its connections before the limit"
    );
    // Polled, bounded: the new backend connection shows in the server's list once open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::threads_of(&mut d, "fdlimit") < 3 {
        assert!(
            Instant::now() < deadline,
            "no new backend connection at the limit ({before} before)\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    common::wait_for_statement(&mut d, sql);
    clients[2]
        .query_drop(format!("KILL QUERY {sleeper_id}"))
        .unwrap();
    // The KILL landed: the SLEEP fails with 1317 or answers 1 (one that ran its 30 s answers 0).
    // Read with query_first: the ERR comes after the column definitions, and query_drop (the
    // mysql crate) returns once it has those, dropping what follows, errors included.
    let r = h.join().unwrap();
    let code = r.as_ref().err().and_then(server_error).map(|x| x.0);
    assert!(
        code == Some(1317) || matches!(r, Ok(Some(1))),
        "the SLEEP was not interrupted: {r:?}"
    );
    // The refusals are counted.
    let m = common::scrape(mport);
    assert!(common::metric(&m, "sluice_clients_refused_total") >= 4.0);
    assert!(
        common::metric(&m, "sluice_errors_total{worker=\"0\",kind=\"fd_limit\"}") >= 4.0,
        "{m}"
    );
    // A place freed is a place taken (polled, bounded: sluice sees the client go a little after
    // it closes).
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while try_conn(s.port).is_err() {
        assert!(Instant::now() < deadline, "no place after a client left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When the process really runs out of descriptors (here: its limit lowered under it), a new
/// client is still accepted, into the spare descriptor each shard holds, and told ERR 1040
/// instead of waiting in the listen backlog.
#[test]
fn a_real_emfile_is_answered_with_1040_through_the_spare_descriptor() {
    let s = Sluice::with_nofile(Config::default().top("shards = 1"), 256);
    let mut clients: Vec<mysql::Conn> = (0..3).map(|_| try_conn(s.port).unwrap()).collect();
    let pid = s.pid() as i32;
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let set = |cur: u64| {
        let r = libc::rlimit {
            rlim_cur: cur,
            rlim_max: 256,
        };
        // SAFETY: prlimit on our own child with a valid struct.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &r, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set(open + 2);
    let mut refused = false;
    for _ in 0..6 {
        match try_conn(s.port) {
            Ok(c) => clients.push(c),
            Err(e) => {
                assert_too_many(Err(e), &s.log_text());
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "never refused with {open} + 2 descriptors");
    for c in &mut clients {
        let v: i64 = c.query_first("SELECT 1").unwrap().unwrap();
        assert_eq!(v, 1);
    }
    // With descriptors again, clients are served again (polled, bounded).
    set(256);
    let deadline = Instant::now() + Duration::from_secs(5);
    while try_conn(s.port).is_err() {
        assert!(Instant::now() < deadline, "still refused\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.log_text().contains("out of file descriptors"));
}

// ---- SHOW PROCESSLIST -------------------------------------------------------------------------

/// `SHOW [FULL] PROCESSLIST` through `c`: each row's (Id, User, Host, db, Command, State, Info).
type PlRow = (
    u64,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
);

fn processlist(c: &mut mysql::Conn, sql: &str) -> Vec<PlRow> {
    c.query_map(sql, |row: mysql::Row| {
        let (id, user, host, db, command, _time, state, info, _progress): (
            u64,
            String,
            String,
            Option<String>,
            String,
            u64,
            String,
            Option<String>,
            f64,
        ) = mysql::from_row(row);
        (id, user, host, db, command, state, info)
    })
    .unwrap()
}

/// The column definitions of `sql`'s result as a client reads them: (name, charset, length,
/// type, flags, decimals).
fn column_shapes(c: &mut mysql::Conn, sql: &str) -> Vec<(String, u16, u32, u8, u16, u8)> {
    let r = c.query_iter(sql).unwrap();
    let shapes = r
        .columns()
        .as_ref()
        .iter()
        .map(|col| {
            (
                col.name_str().to_string(),
                col.character_set(),
                col.column_length(),
                col.column_type() as u8,
                col.flags().bits(),
                col.decimals(),
            )
        })
        .collect();
    drop(r);
    shapes
}

/// Through sluice, `SHOW PROCESSLIST` lists sluice's clients of the same user under the ids
/// `CONNECTION_ID()` returns and `KILL` takes, across shards and worker processes, in the
/// server's column definitions; the asker's row shows its own statement.
#[test]
fn show_processlist_lists_sluices_clients_under_their_own_ids() {
    for workers in [1, 2] {
        let s = Sluice::with(Config::default().top(&format!("shards = 2\nworkers = {workers}")));
        let mut clients: Vec<mysql::Conn> = (0..6)
            .map(|i| s.conn_as("app", "app", (i % 2 == 0).then_some("app")))
            .collect();
        let mut ids: Vec<u64> = clients.iter().map(|c| c.connection_id() as u64).collect();
        ids.sort_unstable();
        let me = clients[0].connection_id() as u64;
        let rows = processlist(&mut clients[0], "SHOW PROCESSLIST");
        let listed: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(listed, ids, "workers {workers}: {rows:?}");
        for (id, user, host, db, command, state, info) in &rows {
            assert_eq!(user, "app");
            assert!(host.starts_with("127.0.0.1:"), "{host}");
            if *id == me {
                assert_eq!(
                    (command.as_str(), state.as_str(), info.as_deref()),
                    ("Query", "starting", Some("SHOW PROCESSLIST"))
                );
                assert_eq!(db.as_deref(), Some("app"));
            } else {
                assert_eq!((command.as_str(), info.as_deref()), ("Sleep", None), "{id}");
            }
        }
        // The schema column follows each client's own schema.
        let with_db = rows
            .iter()
            .filter(|r| r.3.as_deref() == Some("app"))
            .count();
        assert_eq!(with_db, 3, "{rows:?}");
        // A client being served is listed with its command, named as the server names it.
        let busy_id = clients[1].connection_id() as u64;
        let mut busy = clients.remove(1);
        let sleeper = std::thread::spawn(move || {
            busy.exec_drop("SELECT SLEEP(?)", (2,)).unwrap();
            busy
        });
        common::wait_for(
            "the sleeping execute listed",
            Duration::from_secs(10),
            || {
                processlist(&mut clients[0], "SHOW PROCESSLIST")
                    .iter()
                    .any(|r| r.0 == busy_id && r.4 == "Execute")
                    .then_some(())
            },
        );
        clients.insert(1, sleeper.join().unwrap());
        // COM_PROCESS_INFO is answered as SHOW PROCESSLIST (the asker's command named so).
        let mut raw = common::RawClient::login(s.port);
        let packets = raw.command(&[0x0a]);
        // Column count, 9 definitions, the rows (the raw client's own too), the closing OK.
        assert_eq!(packets.len(), 1 + 9 + ids.len() + 1 + 1, "{packets:?}");
        let own = packets
            .iter()
            .filter(|p| p.windows(11).any(|w| w == b"Processlist"))
            .count();
        assert_eq!(own, 1, "{packets:?}");
        drop(raw);
        // KILL takes a listed id: that client is gone, and the list no longer has it.
        let victim = clients[5].connection_id() as u64;
        clients[0].query_drop(format!("KILL {victim}")).unwrap();
        assert!(clients[5].query_drop("SELECT 1").is_err());
        // (The raw client's and the victim's rows go as their sessions end.)
        let left: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
        common::wait_for(
            "the list to be the clients left",
            Duration::from_secs(10),
            || {
                let l: Vec<u64> = processlist(&mut clients[0], "SHOW FULL PROCESSLIST")
                    .iter()
                    .map(|r| r.0)
                    .collect();
                (l == left).then_some(())
            },
        );
    }
}

/// The column definitions are the server's, in whatever `character_set_results` the client
/// runs with (the server converts string columns' lengths to it).
#[test]
fn show_processlist_columns_are_the_servers() {
    let s = Sluice::start();
    let mut via = s.conn();
    let mut d = direct();
    for set in [
        "SET NAMES utf8mb4",
        "SET NAMES latin1",
        "SET NAMES utf8mb3",
        "SET character_set_results = NULL",
    ] {
        for c in [&mut via, &mut d] {
            c.query_drop(set).unwrap();
        }
        for sql in ["SHOW PROCESSLIST", "SHOW FULL PROCESSLIST"] {
            assert_eq!(
                column_shapes(&mut via, sql),
                column_shapes(&mut d, sql),
                "{set}; {sql}"
            );
        }
    }
    // Like the server's, it leaves the diagnostics area and FOUND_ROWS() alone and sets
    // ROW_COUNT() to -1.
    for c in [&mut via, &mut d] {
        c.query_drop("SET NAMES utf8mb4").unwrap();
        c.query_drop("SELECT SQL_CALC_FOUND_ROWS 1 UNION SELECT 2 LIMIT 1")
            .unwrap();
        c.query_drop("SELECT 1/0").unwrap();
        c.query_drop("SHOW PROCESSLIST").unwrap();
    }
    let after = |c: &mut mysql::Conn| -> (Vec<(String, u16)>, (i64, i64)) {
        let w = c
            .query_map("SHOW WARNINGS", |(l, code, _m): (String, u16, String)| {
                (l, code)
            })
            .unwrap();
        let fr: (i64, i64) = c
            .query_first("SELECT FOUND_ROWS(), ROW_COUNT()")
            .unwrap()
            .unwrap();
        (w, fr)
    };
    assert_eq!(after(&mut via), after(&mut d));
}

/// `processlist = "server"` passes the statement through: the server's list, its threads
/// under the backend account's name.
#[test]
fn show_processlist_passes_through_when_configured() {
    let users = common::dedicated_backend_user("plist_server");
    let s = Sluice::with(
        Config::default()
            .top("processlist = \"server\"")
            .users(&users),
    );
    let mut c = s.conn();
    let sql = "SHOW FULL /* plist-pass */ PROCESSLIST";
    let rows = processlist(&mut c, sql);
    let own: Vec<&PlRow> = rows
        .iter()
        .filter(|r| r.6.as_deref() == Some(sql))
        .collect();
    assert_eq!(own.len(), 1, "{rows:?}");
    assert_eq!(own[0].1, "plist_server");
}

// ---- information_schema.PROCESSLIST -----------------------------------------------------------

/// (ID, USER, HOST, DB, COMMAND, STATE, INFO) of the rows `sql` selects (it selects those).
type IsRow = (
    u64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

fn is_rows(c: &mut mysql::Conn, sql: &str) -> Vec<IsRow> {
    c.query_map(sql, |row: mysql::Row| mysql::from_row::<IsRow>(row))
        .unwrap()
}

/// Through sluice, `information_schema.PROCESSLIST` lists the clients `SHOW PROCESSLIST` lists
/// (the same user's, across shards and worker processes, under the ids `CONNECTION_ID()` and
/// `KILL` use), and the server evaluates the rest of the statement over them.
#[test]
fn information_schema_processlist_lists_sluices_clients_under_their_own_ids() {
    for workers in [1, 2] {
        let s = Sluice::with(Config::default().top(&format!("shards = 2\nworkers = {workers}")));
        let mut clients: Vec<mysql::Conn> = (0..5)
            .map(|i| s.conn_as("app", "app", (i % 2 == 0).then_some("app")))
            .collect();
        let mut ids: Vec<u64> = clients.iter().map(|c| c.connection_id() as u64).collect();
        ids.sort_unstable();
        let me = clients[0].connection_id() as u64;
        let sql = "SELECT ID, USER, HOST, DB, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST ORDER BY ID";
        let rows = is_rows(&mut clients[0], sql);
        let listed: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(listed, ids, "workers {workers}: {rows:?}");
        for (id, user, host, db, command, state, info) in &rows {
            assert_eq!(user, "app");
            assert!(host.starts_with("127.0.0.1:"), "{host}");
            if *id == me {
                assert_eq!(
                    (command.as_str(), state.as_deref(), info.as_deref()),
                    ("Query", Some("Filling schema table"), Some(sql))
                );
                assert_eq!(db.as_deref(), Some("app"));
            } else {
                assert_eq!(
                    (command.as_str(), state.as_deref(), info.as_deref()),
                    ("Sleep", Some(""), None),
                    "{id}"
                );
            }
        }
        // The same clients as SHOW PROCESSLIST, with the same hosts and schemas.
        let shown: Vec<(u64, String, Option<String>)> =
            processlist(&mut clients[0], "SHOW PROCESSLIST")
                .into_iter()
                .map(|r| (r.0, r.2, r.3))
                .collect();
        let read: Vec<(u64, String, Option<String>)> =
            rows.into_iter().map(|r| (r.0, r.2, r.3)).collect();
        assert_eq!(shown, read);
        // The server evaluates the statement: counts, filters, joins, subqueries, the column
        // qualified with the schema, the table unqualified in its own schema.
        let c = &mut clients[0];
        let n: u64 = c
            .query_first("SELECT COUNT(*) FROM information_schema.processlist")
            .unwrap()
            .unwrap();
        assert_eq!(n, ids.len() as u64);
        let mine: Vec<u64> = c
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
            .unwrap();
        assert_eq!(mine, vec![me]);
        let n: u64 = c
            .query_first(
                "SELECT COUNT(*) FROM `information_schema`.`PROCESSLIST` p \
                 JOIN information_schema.PROCESSLIST q ON p.ID = q.ID \
                 WHERE p.USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)",
            )
            .unwrap()
            .unwrap();
        assert_eq!(n, ids.len() as u64);
        let sleeping: Vec<u64> = c
            .query(
                "SELECT information_schema.PROCESSLIST.ID FROM information_schema.PROCESSLIST \
                 WHERE COMMAND = 'Sleep' ORDER BY 1",
            )
            .unwrap();
        let others: Vec<u64> = ids.iter().copied().filter(|i| *i != me).collect();
        assert_eq!(sleeping, others);
        let highest: Option<u64> = c
            .query_first(
                "SELECT (SELECT MAX(ID) FROM information_schema.PROCESSLIST WHERE TIME_MS >= 0)",
            )
            .unwrap();
        assert_eq!(highest, ids.last().copied());
        c.query_drop("USE information_schema").unwrap();
        let n: u64 = c
            .query_first("SELECT COUNT(*) FROM PROCESSLIST")
            .unwrap()
            .unwrap();
        assert_eq!(n, ids.len() as u64);
        c.query_drop("USE app").unwrap();
        // An executable comment is code.
        let n: u64 = c
            .query_first("SELECT COUNT(*) FROM /*M!100000 information_schema.PROCESSLIST */")
            .unwrap()
            .unwrap();
        assert_eq!(n, ids.len() as u64);
        // A KILL script built on it: the id it reads ends that client.
        let victim: u64 = c
            .query_first(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() ORDER BY ID DESC LIMIT 1",
            )
            .unwrap()
            .unwrap();
        assert_eq!(Some(&victim), others.last());
        c.query_drop(format!("KILL {victim}")).unwrap();
        let at = clients
            .iter()
            .position(|c| c.connection_id() as u64 == victim)
            .unwrap();
        assert!(clients[at].query_drop("SELECT 1").is_err());
    }
}

/// A column definition as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ColumnDef {
    name: String,
    org_name: String,
    table: String,
    org_table: String,
    schema: String,
    charset: u16,
    length: u32,
    ty: u8,
    flags: u16,
    decimals: u8,
}

fn column_defs(c: &mut mysql::Conn, sql: &str) -> Vec<ColumnDef> {
    let r = c.query_iter(sql).unwrap();
    let defs = r
        .columns()
        .as_ref()
        .iter()
        .map(|col| ColumnDef {
            name: col.name_str().to_string(),
            org_name: col.org_name_str().to_string(),
            table: col.table_str().to_string(),
            org_table: col.org_table_str().to_string(),
            schema: col.schema_str().to_string(),
            charset: col.character_set(),
            length: col.column_length(),
            ty: col.column_type() as u8,
            flags: col.flags().bits(),
            decimals: col.decimals(),
        })
        .collect();
    drop(r);
    defs
}

/// `SELECT * FROM information_schema.PROCESSLIST` through sluice has the server's columns:
/// names, order, character sets, decimals and nullability exactly, types and lengths except
/// where the README says (a derived table is not the server's table).
#[test]
fn information_schema_processlist_columns_are_the_servers() {
    const NO_DEFAULT_VALUE: u16 = 0x1000;
    const TINY: u8 = 0x01;
    const LONG: u8 = 0x03;
    const VAR_STRING: u8 = 0xfd;
    let s = Sluice::start();
    let mut via = s.conn();
    let mut d = direct();
    for set in [
        "SET NAMES utf8mb4",
        "SET NAMES latin1",
        "SET NAMES utf8mb3",
        "SET character_set_results = NULL",
    ] {
        for c in [&mut via, &mut d] {
            c.query_drop(set).unwrap();
        }
        for sql in [
            "SELECT * FROM information_schema.PROCESSLIST",
            "SELECT * FROM information_schema.PROCESSLIST WHERE 0",
        ] {
            let ours = column_defs(&mut via, sql);
            let theirs = column_defs(&mut d, sql);
            assert_eq!(ours.len(), 18, "{set}; {sql}");
            let names: Vec<&str> = theirs.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "ID",
                    "USER",
                    "HOST",
                    "DB",
                    "COMMAND",
                    "TIME",
                    "STATE",
                    "INFO",
                    "TIME_MS",
                    "STAGE",
                    "MAX_STAGE",
                    "PROGRESS",
                    "MEMORY_USED",
                    "MAX_MEMORY_USED",
                    "EXAMINED_ROWS",
                    "QUERY_ID",
                    "INFO_BINARY",
                    "TID"
                ]
            );
            for (o, t) in ours.iter().zip(&theirs) {
                let what = format!("{set}; {sql}; {o:?} / {t:?}");
                // Exactly the server's.
                assert_eq!(
                    (&o.name, &o.org_name, &o.table, o.charset, o.decimals),
                    (&t.name, &t.org_name, &t.table, t.charset, t.decimals),
                    "{what}"
                );
                assert_eq!(o.flags, t.flags & !NO_DEFAULT_VALUE, "{what}");
                // What differs, as the README says: no schema and no original table (a
                // derived table), no NO_DEFAULT_VALUE flag, STAGE and MAX_STAGE an INT, the
                // display lengths of numbers and of INFO.
                assert_eq!(
                    (o.schema.as_str(), o.org_table.as_str()),
                    ("", ""),
                    "{what}"
                );
                assert_eq!(
                    (t.schema.as_str(), t.org_table.as_str()),
                    ("information_schema", "PROCESSLIST"),
                    "{what}"
                );
                if t.name.ends_with("STAGE") {
                    assert_eq!((o.ty, t.ty), (LONG, TINY), "{what}");
                } else {
                    assert_eq!(o.ty, t.ty, "{what}");
                }
                if t.ty == VAR_STRING || t.name == "INFO_BINARY" || t.decimals == 3 {
                    assert_eq!(o.length, t.length, "{what}");
                }
            }
        }
    }
}

/// `INFO` is the asker's statement as the server shows it (utf8mb3, a `?` for each byte it
/// cannot show) and `INFO_BINARY` its bytes, whatever they are: quotes, backslashes, NUL,
/// invalid UTF-8, multi-byte text, comment ends. Another client's schema with quotes in its
/// name is listed as it is. Nothing breaks out of the literals sluice writes.
#[test]
fn information_schema_processlist_text_cannot_break_out_of_its_literals() {
    let s = Sluice::start();
    let mut d = direct();
    let odd_db = "pl'q\"b\\k`é";
    let quoted_db = format!("`{}`", odd_db.replace('`', "``"));
    d.query_drop(format!("CREATE DATABASE IF NOT EXISTS {quoted_db}"))
        .unwrap();
    let mut other = s.conn_as("app", "app", None);
    other.query_drop(format!("USE {quoted_db}")).unwrap();
    let other_id = other.connection_id();
    let mut via = s.conn();
    let db: Option<String> = via
        .query_first(format!(
            "SELECT DB FROM information_schema.PROCESSLIST WHERE ID = {other_id}"
        ))
        .unwrap()
        .unwrap();
    assert_eq!(db.as_deref(), Some(odd_db));
    // The same bytes to the server directly and through sluice: the same INFO.
    let mut text = b"SELECT INFO, HEX(INFO_BINARY), COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID() AND '".to_vec();
    text.extend_from_slice(
        b"a\\'b''c\"d\\\\e\x00f\xff\xfeg\xf0\x9f\x98\x80h\xc3\xa9i\xe2\x82*/;--j",
    );
    text.extend_from_slice(b"' <> '' -- ' DROP TABLE x");
    let info = |port: u16| -> Vec<Option<Vec<u8>>> {
        let mut c = RawClient::login(port);
        let mut p = vec![3u8];
        p.extend_from_slice(&text);
        let packets = c.command(&p);
        assert_eq!(packets[0], [3], "three columns: {packets:?}");
        // Count, three definitions, one row, the closing OK.
        assert_eq!(packets.len(), 6, "{packets:?}");
        text_row(&packets[4])
    };
    let through = info(s.port);
    let direct_port: u16 = common::mariadb_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = info(direct_port);
    assert_eq!(through, server);
    let hex: String = text.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(through[1].as_deref(), Some(hex.as_bytes()));
    assert_eq!(through[2].as_deref(), Some(&b"1"[..]));
    // Under ANSI_QUOTES and NO_BACKSLASH_ESCAPES, read as the server reads them.
    via.query_drop("SET sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'")
        .unwrap();
    let ids: Vec<u64> = via
        .query(
            "SELECT \"ID\" FROM \"information_schema\".\"PROCESSLIST\" WHERE \"ID\" = CONNECTION_ID() AND 'a\\' <> ''",
        )
        .unwrap();
    assert_eq!(ids, vec![via.connection_id() as u64]);
}

/// A text row's values (NULL as `None`).
fn text_row(row: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < row.len() {
        if row[i] == 0xfb {
            out.push(None);
            i += 1;
            continue;
        }
        let (len, n) = match row[i] {
            0xfc => (u16::from_le_bytes([row[i + 1], row[i + 2]]) as usize, 3),
            0xfd => (
                u32::from_le_bytes([row[i + 1], row[i + 2], row[i + 3], 0]) as usize,
                4,
            ),
            0xfe => panic!("8-byte length in a test row"),
            l => (l as usize, 1),
        };
        out.push(Some(row[i + n..i + n + len].to_vec()));
        i += n + len;
    }
    out
}

/// A statement whose listings would not fit in one statement is refused with an error (never
/// a shorter list), and the session goes on.
#[test]
fn information_schema_processlist_too_large_to_list_is_an_error() {
    let s = Sluice::start();
    let mut c = s.conn();
    // Each reference carries the asker's statement (INFO and INFO_BINARY, up to 64 KiB each,
    // in hex): twenty of them are more than sluice puts in a statement.
    let refs: Vec<String> = (0..20)
        .map(|i| format!("information_schema.PROCESSLIST p{i}"))
        .collect();
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE 0 AND '{}' <> ''",
        refs.join(", "),
        "x".repeat(65_000)
    );
    let e = c.query_drop(&sql).unwrap_err();
    let (code, state, message) = server_error(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!((code, state.as_str()), (1235, "42000"), "{message}");
    assert!(
        message.contains("information_schema.PROCESSLIST"),
        "{message}"
    );
    let n: u64 = c
        .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST")
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
}

/// `processlist = "server"` passes the statement through: the server's threads, under the
/// backend account's name.
#[test]
fn information_schema_processlist_passes_through_when_configured() {
    let users = common::dedicated_backend_user("plist_is_server");
    let s = Sluice::with(
        Config::default()
            .top("processlist = \"server\"")
            .users(&users),
    );
    let mut c = s.conn();
    let sql = "SELECT ID, USER, HOST, DB, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE '%plist-is-pass%'";
    let rows = is_rows(&mut c, sql);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "plist_is_server");
    assert_eq!(rows[0].6.as_deref(), Some(sql));
}
