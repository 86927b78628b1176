//! Per-session fixtures: each session k owns two schemas, `<prefix>_k` and `<prefix>_k_b`,
//! dropped and created fresh through a direct connection before every run (so auto-increment
//! values, sequences and row contents start identical for the direct and every proxied run), and
//! dropped after the last run. Setup statements are not part of any transcript.

use crate::client::{session_capabilities, ClientError, Conn, Credentials};
use crate::gen::schemas;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The statements that create session `k`'s schemas, tables, sequence and routines.
pub fn statements(prefix: &str, k: usize) -> Vec<String> {
    let (a, b) = schemas(prefix, k);
    let mut v = vec![
        format!("DROP DATABASE IF EXISTS {a}"),
        format!("DROP DATABASE IF EXISTS {b}"),
        format!("CREATE DATABASE {a}"),
        format!("CREATE DATABASE {b}"),
    ];
    for db in [&a, &b] {
        v.push(format!(
            "CREATE TABLE {db}.t1 (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32) NOT NULL, n INT, UNIQUE KEY uv (v)) ENGINE=InnoDB"
        ));
        v.push(format!(
            "CREATE TABLE {db}.t2 (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, d DATE, x DOUBLE, s VARCHAR(200), b BLOB) ENGINE=InnoDB"
        ));
        v.push(format!(
            "CREATE TABLE {db}.t3 (k INT PRIMARY KEY, c CHAR(4), tiny TINYINT, dec1 DECIMAL(6,2)) ENGINE=InnoDB"
        ));
        v.push(format!(
            "CREATE TABLE {db}.t4 (id INT AUTO_INCREMENT PRIMARY KEY, ts TIMESTAMP NULL) ENGINE=InnoDB"
        ));
        v.push(format!(
            "CREATE SEQUENCE {db}.s1 START WITH 100 INCREMENT BY 5 CACHE 10"
        ));
    }
    let rows: Vec<String> = (1..=10).map(|i| format!("('a{i}', {i})")).collect();
    v.push(format!(
        "INSERT INTO {a}.t1 (v, n) VALUES {}",
        rows.join(", ")
    ));
    v.push(format!(
        "INSERT INTO {b}.t1 (v, n) VALUES ('b1', 1), ('b2', 2), ('b3', 3)"
    ));
    for db in [&a, &b] {
        v.push(format!(
            "INSERT INTO {db}.t3 VALUES (1, 'one', 1, 1.25), (2, 'two', 2, 2.5), (3, 'thr', 3, 3.75), (4, 'fou', 4, 4.0), (5, 'fiv', 5, 5.5)"
        ));
        v.push(format!(
            "INSERT INTO {db}.t4 (ts) VALUES ('2001-02-03 04:05:06'), ('2020-06-30 23:59:59')"
        ));
    }
    v.extend([
        format!(
            "CREATE PROCEDURE {a}.p_multi() BEGIN SELECT 1 AS a; SELECT id, v FROM {a}.t1 ORDER BY id LIMIT 3; END"
        ),
        format!(
            "CREATE PROCEDURE {a}.p_out(IN x INT, OUT y INT) BEGIN SET y = x * 2 + (SELECT COUNT(*) FROM {a}.t3); END"
        ),
        format!("CREATE PROCEDURE {a}.p_inout(INOUT x INT) BEGIN SET x = x + 1; END"),
        // A procedure that changes a session variable.
        format!("CREATE PROCEDURE {a}.p_setvar() BEGIN SET SESSION div_precision_increment = 9; END"),
        // A procedure that creates a temporary table.
        format!(
            "CREATE PROCEDURE {a}.p_tmp() BEGIN CREATE TEMPORARY TABLE IF NOT EXISTS tmp_p (a INT); INSERT INTO tmp_p VALUES (1); END"
        ),
        format!(
            "CREATE PROCEDURE {a}.p_ins(IN val VARCHAR(32)) BEGIN INSERT INTO {a}.t1 (v, n) VALUES (val, 0); SELECT LAST_INSERT_ID() AS lid, ROW_COUNT() AS rc; END"
        ),
        // Functions must be declared DETERMINISTIC with the binary log on (the server refuses
        // others unless log_bin_trust_function_creators, a global we do not touch).
        format!(
            "CREATE FUNCTION {a}.f_ins(val VARCHAR(200)) RETURNS BIGINT DETERMINISTIC MODIFIES SQL DATA BEGIN INSERT INTO {a}.t2 (s) VALUES (val); RETURN LAST_INSERT_ID(); END"
        ),
        format!("CREATE FUNCTION {a}.f_lii() RETURNS BIGINT DETERMINISTIC RETURN LAST_INSERT_ID()"),
    ]);
    v
}

fn connect(addr: &str, creds: &Credentials) -> Result<Conn, ClientError> {
    Conn::connect(
        addr,
        creds,
        None,
        session_capabilities(true, false),
        Duration::from_secs(60),
    )
}

/// Runs `work(k, conn)` for every session index, `concurrency` at a time, each worker on its own
/// direct connection. Returns the first error.
fn for_each_session(
    addr: &str,
    creds: &Credentials,
    sessions: &[usize],
    concurrency: usize,
    work: &(dyn Fn(usize, &mut Conn) -> Result<(), ClientError> + Sync),
) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, sessions.len().max(1)) {
            s.spawn(|| {
                let mut conn = match connect(addr, creds) {
                    Ok(c) => c,
                    Err(e) => {
                        let mut fe = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        fe.get_or_insert(format!("setup connection to {addr}: {e}"));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&k) = sessions.get(i) else { break };
                    if let Err(e) = work(k, &mut conn) {
                        let mut fe = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        fe.get_or_insert(format!("session {k}: {e}"));
                        return;
                    }
                }
                conn.quit();
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Drops and creates every listed session's fixtures.
pub fn create(
    addr: &str,
    creds: &Credentials,
    prefix: &str,
    sessions: &[usize],
    concurrency: usize,
) -> Result<(), String> {
    for_each_session(addr, creds, sessions, concurrency, &|k, c| {
        for sql in statements(prefix, k) {
            c.simple_query(&sql)?;
        }
        Ok(())
    })
}

/// Waits (up to a minute) until every replica has applied everything the primary (`direct`) has
/// committed: its `gtid_binlog_pos` now, waited for with MASTER_GTID_WAIT on each replica.
pub fn settle(direct: &str, replicas: &[String], creds: &Credentials) -> Result<(), String> {
    if replicas.is_empty() {
        return Ok(());
    }
    let mut p = connect(direct, creds).map_err(|e| format!("{direct}: {e}"))?;
    let rows = p
        .simple_query("SELECT @@global.gtid_binlog_pos")
        .map_err(|e| format!("{direct}: {e}"))?;
    let pos = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    for r in replicas {
        let mut c = connect(r, creds).map_err(|e| format!("{r}: {e}"))?;
        let rows = c
            .simple_query(&format!("SELECT MASTER_GTID_WAIT('{pos}', 60)"))
            .map_err(|e| format!("{r}: {e}"))?;
        let v = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if v.as_deref() != Some("0") {
            return Err(format!("{r} did not apply {pos} within 60 s ({v:?})"));
        }
    }
    Ok(())
}

/// Drops every listed session's schemas.
pub fn drop_all(
    addr: &str,
    creds: &Credentials,
    prefix: &str,
    sessions: &[usize],
    concurrency: usize,
) -> Result<(), String> {
    for_each_session(addr, creds, sessions, concurrency, &|k, c| {
        let (a, b) = schemas(prefix, k);
        c.simple_query(&format!("DROP DATABASE IF EXISTS {a}"))?;
        c.simple_query(&format!("DROP DATABASE IF EXISTS {b}"))?;
        Ok(())
    })
}
