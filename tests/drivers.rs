//! Real client drivers through sluice: Python (PyMySQL, mysql-connector-python), Node (mysql2),
//! Java (MariaDB Connector/J) and Rust (the `mysql` crate), each doing text queries and prepared
//! statements (the binary protocol where the driver has it) in every pool mode in [`MODES`].
//!
//! The scripts live in `tests/drivers/`; `scripts/test.sh` installs their interpreters and
//! packages. A missing one fails the test (these tests are never skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mysql::prelude::*;
use mysql::TxOpts;

/// The pool modes every driver runs in. Adding a mode is adding its name here.
const MODES: &[&str] = &["session", "transaction"];

/// How long one driver script may run.
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

fn start_sluice(mode: &str) -> common::Sluice {
    common::Sluice::with(common::Config::default().pool(&format!(
        "mode = \"{mode}\"\nsize = 8\nqueue_timeout_ms = 5000\n"
    )))
}

/// The connection arguments every driver script takes.
fn conn_args(sluice: &common::Sluice) -> Vec<String> {
    let port = sluice.port.to_string();
    let pairs = [
        ("--host", "127.0.0.1"),
        ("--port", &port),
        ("--user", "app"),
        ("--password", "app"),
        ("--database", "app"),
    ];
    pairs
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Spawns `cmd` (stdin closed, output captured), or fails with how to install `what`.
fn spawn(cmd: &mut Command, what: &str, install_hint: &str) -> std::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}\n{install_hint}"))
}

/// Checks a finished driver run: exit status 0 and the script's success line on stdout.
fn assert_driver_ok(
    what: &str,
    mode: &str,
    sluice: &mut common::Sluice,
    out: &Output,
    success_marker: &str,
) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stdout.contains(success_marker) {
        panic!(
            "{what} through sluice (pool mode {mode:?}) failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
             --- sluice log (last 80 lines)\n{}",
            out.status,
            tail(&sluice.log_text(), 80)
        );
    }
    assert!(
        sluice.alive(),
        "sluice died while {what} ran (pool mode {mode:?}):\n{}",
        tail(&sluice.log_text(), 80)
    );
    eprintln!("{what} [{mode}]: {}", stdout.lines().last().unwrap_or(""));
}

/// A private temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let d = std::env::temp_dir().join(format!("sluice-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Python: PyMySQL and mysql-connector-python
// ---------------------------------------------------------------------------------------------

const PYTHON_HINT: &str =
    "scripts/test.sh installs the Python drivers (PyMySQL, mysql-connector-python) \
     into target/test-python and exports SLUICE_TEST_PYTHON; run the suite through it, or set \
     SLUICE_TEST_PYTHON to a python that has both packages";

#[test]
fn python_pymysql_and_mysql_connector_text_and_prepared_through_sluice() {
    let python = std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    // The interpreter and both packages must be there: a missing one is a failure, not a skip.
    let probe = common::wait_output(
        spawn(
            Command::new(&python)
                .args(["-c", "import pymysql, mysql.connector; print('drivers ok')"]),
            "the Python interpreter",
            PYTHON_HINT,
        ),
        Duration::from_secs(60),
    );
    assert!(
        probe.status.success(),
        "{python} cannot import pymysql and mysql.connector: {}\n{PYTHON_HINT}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let script = common::repo_root().join("tests/drivers/python_drivers.py");
    for mode in MODES {
        let mut sluice = start_sluice(mode);
        let child = spawn(
            Command::new(&python).arg(&script).args(conn_args(&sluice)),
            "the Python driver test",
            PYTHON_HINT,
        );
        let out = common::wait_output(child, DRIVER_LIMIT);
        assert_driver_ok(
            "PyMySQL + mysql-connector-python",
            mode,
            &mut sluice,
            &out,
            "python drivers: all ",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Node: mysql2 (query = text protocol, execute = binary protocol)
// ---------------------------------------------------------------------------------------------

const NODE_HINT: &str =
    "scripts/test.sh installs node and npm (Debian packages nodejs, npm) and runs \
     `npm install` in tests/drivers/node (mysql2, pinned by package-lock.json)";

#[test]
fn node_mysql2_query_and_execute_through_sluice() {
    let dir = common::repo_root().join("tests/drivers/node");
    let probe = common::wait_output(
        spawn(Command::new("node").arg("--version"), "node", NODE_HINT),
        Duration::from_secs(60),
    );
    assert!(
        probe.status.success(),
        "`node --version` failed\n{NODE_HINT}"
    );
    assert!(
        dir.join("node_modules/mysql2/package.json").is_file(),
        "mysql2 is not installed in {}\n{NODE_HINT}",
        dir.join("node_modules").display()
    );
    for mode in MODES {
        let mut sluice = start_sluice(mode);
        let child = spawn(
            Command::new("node")
                .arg(dir.join("mysql2_test.js"))
                .args(conn_args(&sluice))
                .current_dir(&dir),
            "the node mysql2 test",
            NODE_HINT,
        );
        let out = common::wait_output(child, DRIVER_LIMIT);
        assert_driver_ok("node mysql2", mode, &mut sluice, &out, "mysql2: all ");
    }
}

// ---------------------------------------------------------------------------------------------
// Java: MariaDB Connector/J, client-side and server-side (binary) prepared statements
// ---------------------------------------------------------------------------------------------

const JAVA_HINT: &str =
    "scripts/test.sh installs a JDK (default-jdk-headless) and MariaDB Connector/J \
     (Debian package libmariadb-java) and exports SLUICE_TEST_JDBC_JAR";

#[test]
fn java_connector_j_statements_server_prepared_batches_through_sluice() {
    let jar = PathBuf::from(
        std::env::var("SLUICE_TEST_JDBC_JAR")
            .unwrap_or_else(|_| "/usr/share/java/mariadb-java-client.jar".into()),
    );
    assert!(
        jar.is_file(),
        "MariaDB Connector/J is not at {}\n{JAVA_HINT}",
        jar.display()
    );
    let classes = TempDir::new("drivers-java");
    let source = common::repo_root().join("tests/drivers/java/DriverTest.java");
    let compile = common::wait_output(
        spawn(
            Command::new("javac")
                .arg("-cp")
                .arg(&jar)
                .arg("-d")
                .arg(&classes.0)
                .arg(&source),
            "javac",
            JAVA_HINT,
        ),
        DRIVER_LIMIT,
    );
    assert!(
        compile.status.success(),
        "javac failed: {}\n{}\n{}",
        compile.status,
        String::from_utf8_lossy(&compile.stdout),
        String::from_utf8_lossy(&compile.stderr)
    );
    assert!(
        Path::new(&classes.0).join("DriverTest.class").is_file(),
        "javac wrote no DriverTest.class"
    );
    let classpath = format!("{}:{}", jar.display(), classes.0.display());
    for mode in MODES {
        let mut sluice = start_sluice(mode);
        let port = sluice.port.to_string();
        let child = spawn(
            Command::new("java").args([
                "-cp",
                &classpath,
                "DriverTest",
                "127.0.0.1",
                &port,
                "app",
                "app",
                "app",
            ]),
            "java",
            JAVA_HINT,
        );
        let out = common::wait_output(child, DRIVER_LIMIT);
        assert_driver_ok("MariaDB Connector/J", mode, &mut sluice, &out, "checks ok");
    }
}

// ---------------------------------------------------------------------------------------------
// Rust: the `mysql` crate (text queries, binary-protocol prepared statements)
// ---------------------------------------------------------------------------------------------

const UNICODE: &str = "héllo ✓";

fn blob(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + (i >> 8)) & 0xff) as u8)
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).unwrap()
}

type Row4 = (i32, Option<String>, Option<i32>, Option<Vec<u8>>);

fn must_fail<T: std::fmt::Debug>(r: mysql::Result<T>, what: &str) -> (u16, String, String) {
    match r {
        Ok(v) => panic!("{what}: expected a server error, got {v:?}"),
        Err(e) => {
            common::server_error(&e).unwrap_or_else(|| panic!("{what}: not a server error: {e}"))
        }
    }
}

fn rust_driver_checks(sluice: &common::Sluice, mode: &str) {
    let table = format!("drv_rust_{}_{mode}", std::process::id());
    let mut conn = sluice.conn();
    conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {table} (id INT NOT NULL PRIMARY KEY, \
         name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
         n INT NULL, data LONGBLOB NULL) ENGINE=InnoDB"
    ))
    .unwrap();

    // Text protocol.
    let r: Vec<(i32, String, Option<i32>, i64)> = conn
        .query("SELECT 1, 'héllo ✓', NULL, CAST(12345678901234 AS SIGNED)")
        .unwrap();
    assert_eq!(
        r,
        vec![(1, UNICODE.to_string(), None, 12345678901234)],
        "text SELECT"
    );
    // Several result sets from one COM_QUERY (the crate connects with CLIENT_MULTI_STATEMENTS).
    let mut sets: Vec<Vec<mysql::Row>> = Vec::new();
    {
        let mut it = conn
            .query_iter(format!(
                "SELECT 1; UPDATE {table} SET n = 1 WHERE id < 0; SELECT 'two', NULL"
            ))
            .unwrap();
        while let Some(set) = it.iter() {
            sets.push(set.map(|r| r.unwrap()).collect());
        }
    }
    assert_eq!(
        sets.len(),
        3,
        "multi-statement query: number of result sets"
    );
    assert_eq!(
        mysql::from_row::<i32>(sets[0][0].clone()),
        1,
        "result set 1"
    );
    assert!(sets[1].is_empty(), "result set 2 (UPDATE) has no rows");
    assert_eq!(
        mysql::from_row::<(String, Option<i32>)>(sets[2][0].clone()),
        ("two".into(), None),
        "result set 3"
    );

    // Binary protocol: one INSERT executed with several parameter sets (NULLs, unicode, 1 MiB).
    let big = blob(1 << 20);
    let rows: Vec<Row4> = vec![
        (
            1,
            Some(UNICODE.into()),
            Some(42),
            Some(vec![0, 1, b'\'', b'"', b'\\', 0xff]),
        ),
        (2, None, None, None),
        (3, Some("plain".into()), Some(-7), Some(big.clone())),
        (4, Some(String::new()), Some(0), Some(Vec::new())),
    ];
    let ins = format!("INSERT INTO {table} (id, name, n, data) VALUES (?, ?, ?, ?)");
    for r in &rows {
        conn.exec_drop(&ins, r.clone()).unwrap();
        assert_eq!(
            conn.affected_rows(),
            1,
            "exec INSERT id={} affected rows",
            r.0
        );
    }
    let sel = format!("SELECT id, name, n, data FROM {table} WHERE id = ?");
    for r in &rows {
        let got: Vec<Row4> = conn.exec(&sel, (r.0,)).unwrap();
        assert_eq!(got.len(), 1, "exec SELECT id={}", r.0);
        assert!(
            got[0] == *r,
            "exec SELECT id={} round trip differs (data len {:?} vs {:?})",
            r.0,
            got[0].3.as_ref().map(Vec::len),
            r.3.as_ref().map(Vec::len)
        );
    }
    // The same rows through the text protocol.
    let text: Vec<Row4> = conn
        .query(format!("SELECT id, name, n, data FROM {table} ORDER BY id"))
        .unwrap();
    assert!(
        text == rows,
        "text SELECT of the rows written with exec differs"
    );
    let (len, md5): (u64, String) = conn
        .exec_first(
            format!("SELECT LENGTH(data), MD5(data) FROM {table} WHERE id = ?"),
            (3,),
        )
        .unwrap()
        .unwrap();
    let (len2, md5_param): (u64, String) = conn
        .exec_first("SELECT LENGTH(?), MD5(?)", (&big[..], &big[..]))
        .unwrap()
        .unwrap();
    assert_eq!(
        (len, &md5),
        (1 << 20, &md5_param),
        "server-side size / MD5 of the 1 MiB blob"
    );
    assert_eq!(len2, 1 << 20);

    // An explicit statement, executed several times, then closed (COM_STMT_CLOSE has no reply).
    let stmt = conn
        .prep("SELECT ? + 1, CONCAT(?, '✓'), ? IS NULL")
        .unwrap();
    assert_eq!(stmt.num_params(), 3, "prepared statement parameter count");
    for (a, b, c) in [
        (1i64, "a", None),
        (41, "héllo ", Some(0i32)),
        (-2, "", None),
    ] {
        let got: Option<(i64, String, i32)> = conn.exec_first(&stmt, (a, b, c)).unwrap();
        assert_eq!(
            got,
            Some((a + 1, format!("{b}✓"), c.is_none() as i32)),
            "statement with ({a}, {b:?}, {c:?})"
        );
    }
    conn.close(stmt).unwrap();
    assert_eq!(
        conn.query_first::<i32, _>("SELECT 7").unwrap(),
        Some(7),
        "in sync after COM_STMT_CLOSE"
    );

    // UPDATE affected rows (no CLIENT_FOUND_ROWS: changed rows).
    let upd = format!("UPDATE {table} SET n = ? WHERE id IN (1, 2, 3)");
    conn.exec_drop(&upd, (100,)).unwrap();
    assert_eq!(conn.affected_rows(), 3, "UPDATE of 3 rows");
    conn.exec_drop(&upd, (100,)).unwrap();
    assert_eq!(conn.affected_rows(), 0, "UPDATE changing nothing");

    // exec_batch.
    let batch: Vec<Row4> = (0..30)
        .map(|i| {
            (
                100 + i,
                Some(format!("batch {i} ✓")),
                (i % 3 != 0).then_some(i),
                Some(vec![i as u8; i as usize]),
            )
        })
        .collect();
    conn.exec_batch(&ins, batch.iter().cloned()).unwrap();
    let got: Vec<Row4> = conn
        .exec(
            format!("SELECT id, name, n, data FROM {table} WHERE id >= ? ORDER BY id"),
            (100,),
        )
        .unwrap();
    assert!(got == batch, "rows written by exec_batch differ");
    conn.exec_batch(
        format!("UPDATE {table} SET n = ? WHERE id = ?"),
        (100..110).map(|id| (-1, id)),
    )
    .unwrap();
    let n: Option<i64> = conn
        .exec_first(format!("SELECT COUNT(*) FROM {table} WHERE n = ?"), (-1,))
        .unwrap();
    assert_eq!(n, Some(10), "rows updated by exec_batch");

    // Transactions: one committed, one rolled back.
    {
        let mut tx = conn.start_transaction(TxOpts::default()).unwrap();
        tx.exec_drop(&ins, (200, "committed", None::<i32>, None::<Vec<u8>>))
            .unwrap();
        tx.query_drop(format!(
            "UPDATE {table} SET name = 'changed in tx' WHERE id = 3"
        ))
        .unwrap();
        tx.commit().unwrap();
    }
    {
        let mut tx = conn.start_transaction(TxOpts::default()).unwrap();
        tx.exec_drop(&ins, (201, "rolled back", None::<i32>, None::<Vec<u8>>))
            .unwrap();
        tx.exec_drop(
            format!("UPDATE {table} SET name = ? WHERE id = ?"),
            ("should not stay", 3),
        )
        .unwrap();
        let seen: Option<i64> = tx
            .exec_first(format!("SELECT COUNT(*) FROM {table} WHERE id = ?"), (201,))
            .unwrap();
        assert_eq!(
            seen,
            Some(1),
            "uncommitted row visible inside its transaction"
        );
        tx.rollback().unwrap();
    }
    let after: Vec<(i32, String)> = conn
        .query(format!(
            "SELECT id, name FROM {table} WHERE id IN (3, 200, 201) ORDER BY id"
        ))
        .unwrap();
    assert_eq!(
        after,
        vec![(3, "changed in tx".into()), (200, "committed".into())],
        "after commit + rollback"
    );
    let mut other = sluice.conn();
    let seen: Option<i64> = other
        .query_first(format!(
            "SELECT COUNT(*) FROM {table} WHERE id IN (200, 201)"
        ))
        .unwrap();
    assert_eq!(
        seen,
        Some(1),
        "a second connection sees the committed row only"
    );
    drop(other);

    // Errors: code, SQLSTATE, message, and the connection (and statement) usable afterwards.
    let missing = format!("no_such_table_{}", std::process::id());
    let (code, state, msg) = must_fail(
        conn.query_drop(format!("SELECT * FROM {missing}")),
        "text query on a missing table",
    );
    assert_eq!(
        (code, state.as_str()),
        (1146, "42S02"),
        "text query error: {msg}"
    );
    assert!(
        msg.contains(&missing),
        "error message names the table: {msg}"
    );
    let (code, state, msg) = must_fail(
        conn.exec_drop(format!("SELECT * FROM {missing} WHERE id = ?"), (1,)),
        "prepare on a missing table",
    );
    assert_eq!(
        (code, state.as_str()),
        (1146, "42S02"),
        "COM_STMT_PREPARE error: {msg}"
    );
    let (code, state, msg) = must_fail(
        conn.exec_drop(&ins, (1, "dup", None::<i32>, None::<Vec<u8>>)),
        "duplicate key",
    );
    assert_eq!(
        (code, state.as_str()),
        (1062, "23000"),
        "COM_STMT_EXECUTE error: {msg}"
    );
    conn.exec_drop(&ins, (300, "after error", None::<i32>, None::<Vec<u8>>))
        .unwrap();
    assert_eq!(
        conn.affected_rows(),
        1,
        "same statement usable after an error"
    );

    // Session state.
    conn.query_drop("SET time_zone = '+03:00'").unwrap();
    assert_eq!(
        conn.query_first::<String, _>("SELECT @@session.time_zone")
            .unwrap()
            .as_deref(),
        Some("+03:00"),
        "time_zone (text)"
    );
    assert_eq!(
        conn.exec_first::<String, _, _>("SELECT @@session.time_zone", ())
            .unwrap()
            .as_deref(),
        Some("+03:00"),
        "time_zone (binary)"
    );
    conn.ping().unwrap();

    conn.query_drop(format!("DROP TABLE {table}")).unwrap();
}

#[test]
fn rust_mysql_crate_text_and_binary_protocol_through_sluice() {
    for mode in MODES {
        let mut sluice = start_sluice(mode);
        rust_driver_checks(&sluice, mode);
        assert!(
            sluice.alive(),
            "sluice died (pool mode {mode:?}):\n{}",
            tail(&sluice.log_text(), 80)
        );
    }
}

/// Values over 16 MiB split into several packets in every direction: a COM_QUERY over 16 MiB, a
/// COM_STMT_EXECUTE whose parameter goes up as COM_STMT_SEND_LONG_DATA (no reply), and result
/// rows over 16 MiB in both the text and the binary protocol.
#[test]
fn rust_mysql_crate_packets_over_16_mib_through_sluice() {
    const SIZE: usize = (16 << 20) + 1000;
    let big = blob(SIZE);
    let hex = to_hex(&big);
    for mode in MODES {
        let mut sluice = start_sluice(mode);
        let mut conn = sluice.conn();
        let table = format!("drv_rust_big_{}_{mode}", std::process::id());
        conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
            .unwrap();
        conn.query_drop(format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB"
        ))
        .unwrap();
        // A 32 MiB COM_QUERY (hex literal).
        conn.query_drop(format!("INSERT INTO {table} VALUES (1, X'{hex}')"))
            .unwrap();
        // COM_STMT_SEND_LONG_DATA (the crate sends parameters over 16 MiB that way).
        conn.exec_drop(format!("INSERT INTO {table} VALUES (?, ?)"), (2, &big[..]))
            .unwrap();
        assert_eq!(conn.affected_rows(), 1, "exec INSERT of {SIZE} bytes");
        let sums: Vec<(i32, u64, String)> = conn
            .query(format!(
                "SELECT id, LENGTH(data), MD5(data) FROM {table} ORDER BY id"
            ))
            .unwrap();
        let expect_md5: Option<String> = conn.exec_first("SELECT MD5(?)", (&big[..],)).unwrap();
        let expect_md5 = expect_md5.unwrap();
        assert_eq!(
            sums,
            vec![
                (1, SIZE as u64, expect_md5.clone()),
                (2, SIZE as u64, expect_md5)
            ],
            "server-side size / MD5"
        );
        // Rows over 16 MiB back: text and binary protocol.
        let text: Option<Vec<u8>> = conn
            .query_first(format!("SELECT data FROM {table} WHERE id = 1"))
            .unwrap();
        assert!(
            text.as_deref() == Some(&big[..]),
            "text result row over 16 MiB differs (len {:?})",
            text.map(|t| t.len())
        );
        let bin: Option<Vec<u8>> = conn
            .exec_first(format!("SELECT data FROM {table} WHERE id = ?"), (2,))
            .unwrap();
        assert!(
            bin.as_deref() == Some(&big[..]),
            "binary result row over 16 MiB differs (len {:?})",
            bin.map(|t| t.len())
        );
        assert_eq!(
            conn.query_first::<i32, _>("SELECT 5").unwrap(),
            Some(5),
            "in sync after the big packets"
        );
        conn.query_drop(format!("DROP TABLE {table}")).unwrap();
        assert!(
            sluice.alive(),
            "sluice died (pool mode {mode:?}):\n{}",
            tail(&sluice.log_text(), 80)
        );
    }
}

/// COM_RESET_CONNECTION from a client (what the crate's own pool sends when it takes a
/// connection back) resets the session's state and leaves the connection usable.
#[test]
fn rust_mysql_crate_reset_connection_through_sluice() {
    for mode in MODES {
        let mut sluice = start_sluice(mode);
        let mut conn = sluice.conn();
        let global: Option<String> = conn.query_first("SELECT @@global.time_zone").unwrap();
        conn.query_drop("SET time_zone = '+03:00', @drv_user_var = 42")
            .unwrap();
        let stmt = conn.prep("SELECT ? + 1").unwrap();
        assert_eq!(conn.exec_first::<i64, _, _>(&stmt, (1,)).unwrap(), Some(2));
        conn.reset().unwrap();
        let (tz, var): (Option<String>, Option<i64>) = conn
            .query_first("SELECT @@session.time_zone, @drv_user_var")
            .unwrap()
            .unwrap();
        assert_eq!(
            (tz, var),
            (global, None),
            "session state after COM_RESET_CONNECTION (pool mode {mode:?})"
        );
        // Statements are gone after a reset; the crate re-prepares from its cleared cache.
        assert_eq!(
            conn.exec_first::<i64, _, _>("SELECT ? + 1", (41,)).unwrap(),
            Some(42),
            "prepare after reset"
        );
        conn.ping().unwrap();
        assert!(
            sluice.alive(),
            "sluice died (pool mode {mode:?}):\n{}",
            tail(&sluice.log_text(), 80)
        );
    }
}
