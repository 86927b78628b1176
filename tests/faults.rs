//! Backends that fail. A scripted fake backend produces the faults a real server will not on cue
//! (garbage, truncated packets, a hang, malformed session state); a private MariaDB is killed,
//! restarted and frozen for the rest. In every case the affected client gets a clear error, no
//! other client notices, nothing leaks, no committed write is lost and nothing is retried behind
//! the client's back.

mod common;

use common::{server_error, Config, PrivateMariaDb, Sluice};
use mysql::prelude::Queryable;
use sluice::codec::caps::{cap, status};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A connection the fake accepted (a handle to shut it down) and the thread serving it.
type Served = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// A scripted MySQL server: logs anyone in, answers with OK, and misbehaves on
/// `SELECT 'fault:<kind>'`. Dropping it stops it: its sockets are shut down and its threads
/// joined.
struct FakeBackend {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// A handle on every connection accepted (to shut it down) and the thread serving it.
    served: Served,
}

/// A BIGINT column definition called `name` (what a server sends for an integer expression).
fn bigint(name: &[u8]) -> Vec<u8> {
    const BIGINT: [u8; 13] = [0x0c, 63, 0, 21, 0, 0, 0, 0x08, 0x81, 0, 0, 0, 0];
    sluice::frontend::answer::column(
        &sluice::frontend::answer::Column {
            name,
            template: &BIGINT,
            charset: None,
            value: None,
        },
        false,
    )
}

fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut p = vec![0; len];
    s.read_exact(&mut p).ok()?;
    Some((h[3], p))
}

fn write_packet(s: &mut TcpStream, seq: u8, p: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::new();
    sluice::codec::frame::encode_packet(&mut out, seq, p);
    s.write_all(&out)
}

fn ok(status: u16) -> Vec<u8> {
    let mut v = Vec::new();
    sluice::codec::packets::encode_ok(&mut v, status, cap::SESSION_TRACK);
    v
}

fn serve(mut s: TcpStream, stop: Arc<AtomicBool>) {
    let greeting = sluice::codec::handshake::Handshake {
        server_version: b"5.5.5-10.11.99-MariaDB-fake".to_vec(),
        connection_id: 7,
        nonce: b"abcdefghijklmnopqrst".to_vec(),
        capabilities: cap::PROXYABLE & !cap::LONG_PASSWORD,
        collation: 45,
        status: status::AUTOCOMMIT,
        mariadb_capabilities: 0,
        auth_plugin: b"mysql_native_password".to_vec(),
    };
    let mut g = Vec::new();
    greeting.encode(&mut g);
    if write_packet(&mut s, 0, &g).is_err() || read_packet(&mut s).is_none() {
        return;
    }
    let _ = write_packet(&mut s, 2, &ok(status::AUTOCOMMIT));
    while let Some((_, p)) = read_packet(&mut s) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let text = String::from_utf8_lossy(&p[1..]).to_string();
        let r = match (p[0], text.as_str()) {
            (0x01, _) => return,
            (0x03, t) if t.contains("information_schema.COLLATIONS") => {
                let mut e = Vec::new();
                sluice::codec::packets::ErrPacket {
                    code: 1146,
                    sql_state: *b"42S02",
                    message: b"no collations here",
                }
                .encode(&mut e);
                write_packet(&mut s, 1, &e)
            }
            (0x03, "SELECT 'fault:close'") => return,
            (0x03, "SELECT 'fault:truncate'") => {
                let _ = s.write_all(&[0x20, 0x00]);
                return;
            }
            (0x03, "SELECT 'fault:huge'") => {
                let _ = s.write_all(&[0xFF, 0xFF, 0xFF, 1, 0x00, 0x00]);
                return;
            }
            (0x03, "SELECT 'fault:garbage'") => {
                // Not a valid first packet of a response to COM_QUERY (a column count of zero).
                let _ = write_packet(&mut s, 1, &[0xFC, 0x00, 0x00]);
                return;
            }
            (0x03, "SELECT 'fault:badstate'") => {
                // SERVER_SESSION_STATE_CHANGED with a state block that runs past its end.
                write_packet(&mut s, 1, &[0, 0, 0, 0x02, 0x40, 0, 0, 0, 5, 0, 0x20, 1, 2])
            }
            (0x03, "SELECT 'fault:rows-then-close'") => {
                let _ = write_packet(&mut s, 1, &[1]);
                let _ = write_packet(&mut s, 2, &bigint(b"x"));
                let _ = write_packet(&mut s, 3, &[1, b'1']);
                return;
            }
            (0x03, "SELECT 'fault:hang'") => {
                // Say nothing until sluice gives up on this connection (closes it) or the fake
                // is stopped; 30 s at most.
                let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut b = [0u8; 256];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match s.read(&mut b) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
            (0x03, t) if t.starts_with("SELECT ") => {
                // A one-row result: the query's own text as the value.
                let _ = write_packet(&mut s, 1, &[1]);
                let _ = write_packet(&mut s, 2, &bigint(b"v"));
                let mut row = Vec::new();
                sluice::codec::wire::put_lenenc_bytes(&mut row, b"7");
                let _ = write_packet(&mut s, 3, &row);
                let mut end = Vec::new();
                sluice::codec::packets::OkPacket {
                    status: status::AUTOCOMMIT,
                    ..Default::default()
                }
                .encode(&mut end, 0xFE, cap::SESSION_TRACK);
                write_packet(&mut s, 4, &end)
            }
            _ => write_packet(&mut s, 1, &ok(status::AUTOCOMMIT)),
        };
        if r.is_err() {
            return;
        }
    }
}

impl FakeBackend {
    fn start() -> FakeBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served: Served = Arc::new(Mutex::new(Vec::new()));
        let (st, sv) = (stop.clone(), served.clone());
        let accept = std::thread::spawn(move || {
            // A non-blocking accept polled until the fake is stopped (its Drop joins this).
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let handle = s.try_clone().unwrap();
                        let st = st.clone();
                        let t = std::thread::spawn(move || serve(s, st));
                        sv.lock().unwrap().push((handle, t));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeBackend {
            port,
            stop,
            accept: Some(accept),
            served,
        }
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        // Shut every connection down: a thread blocked reading from sluice returns at once.
        let served = std::mem::take(&mut *self.served.lock().unwrap());
        for (s, t) in served {
            let _ = s.shutdown(std::net::Shutdown::Both);
            let _ = t.join();
        }
    }
}

/// Sends a query and reads every packet of the answer until the response ends, an ERR arrives
/// or the connection closes; returns the packets and whether the connection is still open.
fn raw_query(c: &mut common::RawClient, sql: &str) -> (Vec<Vec<u8>>, bool) {
    let mut p = vec![3u8];
    p.extend_from_slice(sql.as_bytes());
    c.send(0, &p);
    let mut t = sluice::codec::response::ResponseTracker::new(
        sluice::codec::command::ResponseKind::Query,
        true,
    );
    let mut out = Vec::new();
    while !t.is_done() {
        // A close ends the answer; a read that fails or times out panics (a hang is no answer).
        let Some((_, p)) = c.read_packet() else {
            return (out, false);
        };
        let role = t
            .on_packet(p.len(), &p)
            .expect("well-formed packets from sluice");
        out.push(p);
        if role == sluice::codec::response::Role::Err {
            break;
        }
    }
    (out, true)
}

#[test]
fn a_misbehaving_backend_gives_the_client_a_clear_error_and_the_session_goes_on() {
    let fake = FakeBackend::start();
    let s = Sluice::with(
        Config::default()
            .backends(vec![format!("127.0.0.1:{}", fake.port)])
            .pool("mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 3000\nquery_timeout_ms = 1000"),
    );
    let mut bystander = common::RawClient::login(s.port);
    let mut c = common::RawClient::login(s.port);
    for fault in [
        "close",
        "truncate",
        "huge",
        "garbage",
        "badstate",
        "rows-then-close",
        "hang",
    ] {
        let started = Instant::now();
        let (packets, open) = raw_query(&mut c, &format!("SELECT 'fault:{fault}'"));
        // A deadline, not a speed: query_timeout_ms (1 s) ends the hang.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{fault}: answered after {:?}",
            started.elapsed()
        );
        assert!(open, "{fault}: sluice closed the client's connection");
        let last = packets
            .last()
            .unwrap_or_else(|| panic!("{fault}: no answer"));
        let e = sluice::codec::packets::ErrPacket::decode(last)
            .unwrap_or_else(|_| panic!("{fault}: last packet is not an ERR: {last:?}"));
        let msg = String::from_utf8_lossy(e.message);
        assert_eq!(e.code, 2013, "{fault}: {msg}");
        assert!(msg.contains("Lost connection to backend"), "{fault}: {msg}");
        if fault == "rows-then-close" {
            assert_eq!(
                packets.len(),
                4,
                "the row that arrived was relayed before the error"
            );
        }
        // Outside a transaction, the session carries on with another backend connection.
        let (packets, _) = raw_query(&mut c, "SELECT 7");
        assert_eq!(packets[2], vec![1, b'7'], "after {fault}");
        let (packets, _) = raw_query(&mut bystander, "SELECT 7");
        assert_eq!(packets[2], vec![1, b'7']);
    }
    drop(fake);
}

fn app_threads(root: &mut mysql::Conn) -> Vec<u64> {
    root.query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
        .unwrap()
}

fn private_sluice(db: &PrivateMariaDb, pool: &str) -> Sluice {
    Sluice::with(Config::default().backends(vec![db.addr()]).pool(pool))
}

#[test]
fn a_backend_killed_mid_transaction_fails_that_client_only_and_loses_no_committed_write() {
    let db = PrivateMariaDb::start("");
    let mut root = db.root();
    root.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .unwrap();
    let s = private_sluice(
        &db,
        "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 3000",
    );
    let mut a = s.conn();
    let mut b = s.conn();
    a.query_drop("INSERT INTO t VALUES (1)").unwrap();
    a.query_drop("BEGIN").unwrap();
    a.query_drop("INSERT INTO t VALUES (2)").unwrap();
    let thread: u64 = a.query_first("SELECT @@pseudo_thread_id").unwrap().unwrap();
    root.query_drop(format!("KILL CONNECTION {thread}"))
        .unwrap();
    let e = a.query_drop("COMMIT").unwrap_err();
    let (code, _, msg) = server_error(&e).expect("an error packet");
    assert_eq!(code, 2013, "{msg}");
    // The transaction is gone with its backend: the client's connection ends too (the next
    // statement finds it closed; no server answers it).
    let e = a
        .query_drop("SELECT 1")
        .expect_err("the client's connection ends with its transaction");
    assert!(
        server_error(&e).is_none(),
        "the connection should be closed, but a server answered: {e}"
    );
    let ids: Vec<i64> = b.query("SELECT id FROM t ORDER BY id").unwrap();
    assert_eq!(
        ids,
        vec![1],
        "the committed row stays, the uncommitted one is gone"
    );
}

#[test]
fn a_backend_killed_mid_result_set_or_while_idle() {
    let db = PrivateMariaDb::start("");
    let mut root = db.root();
    let s = private_sluice(
        &db,
        "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 3000",
    );
    let mut b = s.conn();
    // Rows of 4 KB, a few milliseconds apart: the result streams for seconds.
    let sql = "SELECT REPEAT('x', 4000), SLEEP(0.005) FROM seq_1_to_2000";
    let port = s.port;
    let h = std::thread::spawn(move || {
        let mut raw = common::RawClient::login(port);
        raw_query(&mut raw, sql)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let thread = loop {
        let t: Option<u64> = root
            .query_first("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT REPEAT%' AND TIME_MS > 300")
            .unwrap();
        if let Some(t) = t {
            break t;
        }
        assert!(Instant::now() < deadline, "the query never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    root.query_drop(format!("KILL CONNECTION {thread}"))
        .unwrap();
    let (packets, open) = h.join().unwrap();
    // Fewer rows than the query makes: the kill cut the stream (the whole result takes 10 s or
    // more, and a hang fails in raw_query at the read timeout).
    let rows = packets.len().saturating_sub(3);
    assert!(
        rows > 0 && rows < 2000,
        "killed mid-result-set, after {rows} rows"
    );
    // The client got an ERR in place of the rest (or, mid-row, its connection closed).
    if open {
        let e = sluice::codec::packets::ErrPacket::decode(packets.last().unwrap())
            .expect("an ERR ends the rows");
        assert_eq!(e.code, 2013);
    }
    let v: i64 = b.query_first("SELECT 5").unwrap().unwrap();
    assert_eq!(v, 5, "another client does not notice");
    // Every idle pooled connection killed from the server side: the next commands notice
    // before use (the pool probes connections idle for a while) and carry on.
    let killed = app_threads(&mut root);
    assert!(!killed.is_empty(), "no pooled connection to kill");
    for &t in &killed {
        let _ = root.query_drop(format!("KILL CONNECTION {t}"));
    }
    for &t in &killed {
        common::wait_thread_gone(&mut root, t);
    }
    // Not a wait for a condition but the condition itself: the pool probes a connection only
    // when it has been idle over 500 ms (PROBE_AFTER in src/backend/pool.rs); this makes the
    // killed ones that old.
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..5 {
        let v: i64 = b.query_first("SELECT 6").unwrap().unwrap();
        assert_eq!(v, 6);
    }
}

#[test]
fn a_backend_restart_is_invisible_outside_transactions() {
    let mut db = PrivateMariaDb::start("");
    db.root()
        .query_drop("CREATE TABLE app.r (id INT PRIMARY KEY)")
        .unwrap();
    let s = private_sluice(
        &db,
        "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 10000\nconnect_timeout_ms = 2000",
    );
    let mut idle1 = s.conn();
    let mut idle2 = s.conn();
    let mut in_trx = s.conn();
    idle1.query_drop("INSERT INTO r VALUES (1)").unwrap();
    in_trx.query_drop("BEGIN").unwrap();
    in_trx.query_drop("INSERT INTO r VALUES (2)").unwrap();
    db.restart();
    for (i, c) in [&mut idle1, &mut idle2].into_iter().enumerate() {
        let v: i64 = c
            .query_first("SELECT 8")
            .unwrap_or_else(|e| panic!("client {i} after the restart: {e}"))
            .unwrap();
        assert_eq!(v, 8);
    }
    let e = in_trx.query_drop("COMMIT").unwrap_err();
    assert_eq!(server_error(&e).map(|x| x.0), Some(2013), "{e}");
    let ids: Vec<i64> = idle1.query("SELECT id FROM r ORDER BY id").unwrap();
    assert_eq!(
        ids,
        vec![1],
        "committed before the restart: kept; the open transaction: rolled back"
    );
}

#[test]
fn a_backend_that_stops_answering_times_out_and_the_pool_recovers() {
    let db = PrivateMariaDb::start("");
    let s = private_sluice(
        &db,
        "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 2000\nconnect_timeout_ms = 1000\nquery_timeout_ms = 1000",
    );
    let mut a = s.conn();
    let mut b = s.conn();
    let _: i64 = a.query_first("SELECT 1").unwrap().unwrap();
    db.freeze(true);
    let started = Instant::now();
    let e = a.query_drop("SELECT 2").unwrap_err();
    let waited = started.elapsed();
    db.freeze(false);
    let (code, _, msg) = server_error(&e).expect("an error packet");
    assert!(
        code == 2013 || code == 9002 || code == 9001,
        "{code}: {msg}"
    );
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    // Unfrozen: the same clients carry on.
    // Polled (bounded): the first statements after the thaw may still fail while the pool
    // replaces connections that timed out.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match a.query_first::<i64, _>("SELECT 3") {
            Ok(Some(3)) => break,
            r => assert!(Instant::now() < deadline, "no recovery within 15 s: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v: i64 = b.query_first("SELECT 4").unwrap().unwrap();
    assert_eq!(v, 4);
}

#[test]
fn a_statement_interrupted_by_a_dying_backend_is_not_retried() {
    let db = PrivateMariaDb::start("");
    let mut root = db.root();
    // Each row records the backend connection that wrote it.
    root.query_drop("CREATE TABLE app.once (n BIGINT)").unwrap();
    let s = private_sluice(
        &db,
        "mode = \"transaction\"\nsize = 4\nqueue_timeout_ms = 3000",
    );
    let mut a = s.conn();
    let sql = "INSERT INTO once SELECT @@pseudo_thread_id + SLEEP(3) * 0";
    let h = std::thread::spawn(move || {
        let r = a.query_drop(sql);
        (r, a)
    });
    let thread = common::wait_for_statement(&mut root, sql);
    root.query_drop(format!("KILL CONNECTION {thread}"))
        .unwrap();
    let (r, mut a) = h.join().unwrap();
    // MariaDB may say "Connection was killed" (1927) before it hangs up, or
    // just hang up (sluice then answers 2013); either is a clear error.
    let code = r.as_ref().err().and_then(server_error).map(|x| x.0);
    assert!(
        matches!(code, Some(1927 | 2013)),
        "expected 1927 or 2013, got {r:?}"
    );
    // The rows are final once the killed connection is gone and no INSERT runs any more (a
    // retry by sluice would have run before it answered the client).
    common::wait_thread_gone(&mut root, thread);
    common::wait_for(
        "no INSERT INTO once running",
        Duration::from_secs(10),
        || (common::running(&mut root, sql) == 0).then_some(()),
    );
    // MariaDB itself may commit the row before it notices the kill (its SLEEP returns early);
    // a row from any other backend connection would be sluice running the INSERT again.
    let again: i64 = root
        .query_first(format!("SELECT COUNT(*) FROM app.once WHERE n <> {thread}"))
        .unwrap()
        .unwrap();
    assert_eq!(again, 0, "the interrupted INSERT was not run again");
    let n: i64 = root
        .query_first("SELECT COUNT(*) FROM app.once")
        .unwrap()
        .unwrap();
    assert!(n <= 1, "the INSERT ran {n} times");
    // And the client, outside a transaction, goes on.
    let v: i64 = a.query_first("SELECT 9").unwrap().unwrap();
    assert_eq!(v, 9);
}
