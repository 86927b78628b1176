//! The command-effects decision as a table: every kind of command × every legal response.

use super::*;
use crate::session::sql::{analyze, Modes};

const AC: u16 = AUTOCOMMIT;

fn q(sql: &str) -> Effects {
    analyze(sql.as_bytes(), Modes::default())
}

fn ok(affected: u64, id: u64) -> Response {
    Response {
        last_ok: Some((affected, id)),
        insert_id: id != 0,
        status: AC,
        ..Response::default()
    }
}

fn rows(n: u64) -> Response {
    Response {
        rows: Some(n),
        last_rows: Some(n),
        status: AC,
        ..Response::default()
    }
}

fn err() -> Response {
    Response {
        error: true,
        status: AC,
        ..Response::default()
    }
}

fn warned(mut r: Response) -> Response {
    r.warnings = true;
    r
}

fn status(mut r: Response, st: u16) -> Response {
    r.status = st;
    r
}

fn known(lid: u64, rc: i64, fr: u64) -> History {
    History {
        last_insert_id: Known::Is(lid),
        row_count: rc,
        found_rows: Known::Is(fr),
        ..History::default()
    }
}

/// One row of the table: what came before, the command, the response → what must follow.
struct Case {
    name: &'static str,
    before: History,
    cmd: Option<&'static str>,
    resp: Response,
    facts: Facts,
    /// (LAST_INSERT_ID, ROW_COUNT, FOUND_ROWS, diagnostics)
    want: (Known<u64>, i64, Known<u64>, Diag),
    hold: Option<Hold>,
    read: bool,
}

fn run(c: &Case) {
    let e;
    let cmd = match c.cmd {
        Some(s) if s.starts_with("EXEC ") => {
            e = q(&s[5..]);
            Command::Execute(&e)
        }
        Some("FETCH") => Command::Fetch,
        Some(s) => {
            e = q(s);
            Command::Query(&e)
        }
        None => Command::Plain,
    };
    let o = after(cmd, &c.resp, c.facts, &c.before);
    let h = &o.history;
    assert_eq!(
        (h.last_insert_id, h.row_count, h.found_rows, h.diag),
        c.want,
        "{}: history",
        c.name
    );
    assert_eq!(o.hold, c.hold, "{}: hold", c.name);
    assert_eq!(
        o.read_before_release, c.read,
        "{}: read before release",
        c.name
    );
}

#[test]
fn every_command_by_every_response() {
    use Diag::*;
    use Known::{Is, OnBackend};
    let f = Facts::default();
    let base = known(7, 3, 5);
    let cases = [
        // Plain SELECT: rows known, ROW_COUNT -1, LAST_INSERT_ID unchanged.
        Case {
            name: "select rows",
            before: base.clone(),
            cmd: Some("SELECT a FROM t"),
            resp: rows(4),
            facts: f,
            want: (Is(7), -1, Is(4), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "select with warnings",
            before: base.clone(),
            cmd: Some("SELECT CAST('1x' AS INT)"),
            resp: warned(rows(1)),
            facts: f,
            want: (Is(7), -1, Is(1), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "select error",
            before: base.clone(),
            cmd: Some("SELECT nosuch"),
            resp: err(),
            facts: f,
            // Kept or changed (an error while it ran), the server's value is the session's.
            want: (Is(7), -1, OnBackend, Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "select failing after its metadata on a backend new to the session",
            before: base.clone(),
            cmd: Some("SELECT SLEEP(5)"),
            resp: Response {
                rows: Some(0),
                ..err()
            },
            facts: Facts {
                fresh_backend: true,
                ..f
            },
            want: (Is(7), -1, OnBackend, Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "select refused on a backend new to the session",
            before: base.clone(),
            cmd: Some("SELECT nosuch"),
            resp: err(),
            facts: Facts {
                fresh_backend: true,
                ..f
            },
            // Its FOUND_ROWS() is another session's; this one's stays as sluice knew it.
            want: (Is(7), -1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "calc found rows",
            before: base.clone(),
            cmd: Some("SELECT SQL_CALC_FOUND_ROWS a FROM t LIMIT 1"),
            resp: rows(1),
            facts: f,
            want: (Is(7), -1, OnBackend, Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "select into",
            before: base.clone(),
            cmd: Some("SELECT 1 INTO @x"),
            resp: ok(1, 0),
            facts: f,
            want: (Is(7), 1, OnBackend, Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "set last_insert_id by function",
            before: base.clone(),
            cmd: Some("SELECT LAST_INSERT_ID(42)"),
            resp: rows(1),
            facts: f,
            want: (OnBackend, -1, Is(1), Clean),
            hold: None,
            read: true,
        },
        // DML: an insert id in the OK may be explicit, so LAST_INSERT_ID is read from the server.
        Case {
            name: "insert generated id",
            before: base.clone(),
            cmd: Some("INSERT INTO t (v) VALUES (1)"),
            resp: ok(1, 10),
            facts: f,
            want: (OnBackend, 1, Is(5), Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "insert no id",
            before: base.clone(),
            cmd: Some("INSERT INTO t (v) VALUES (1)"),
            resp: ok(1, 0),
            facts: f,
            want: (Is(7), 1, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "update",
            before: base.clone(),
            cmd: Some("UPDATE t SET v = 1"),
            resp: ok(3, 0),
            facts: f,
            want: (Is(7), 3, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "dml error",
            before: base.clone(),
            cmd: Some("INSERT INTO t VALUES (1)"),
            resp: err(),
            facts: f,
            want: (Is(7), -1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "dml error autocommit off",
            before: base.clone(),
            cmd: Some("INSERT INTO t VALUES (1)"),
            resp: status(err(), 0),
            facts: f,
            want: (Is(7), -1, Is(5), Dirty),
            hold: Some(Hold::UncertainTransaction),
            read: false,
        },
        Case {
            name: "in transaction",
            before: base.clone(),
            cmd: Some("INSERT INTO t (v) VALUES (1)"),
            resp: status(ok(1, 11), AC | IN_TRANS),
            facts: f,
            want: (OnBackend, 1, Is(5), Clean),
            hold: Some(Hold::Transaction),
            read: false,
        },
        // SET and control statements.
        Case {
            name: "set",
            before: base.clone(),
            cmd: Some("SET time_zone = '+01:00'"),
            resp: ok(0, 0),
            facts: f,
            want: (Is(7), 0, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "set last_insert_id",
            before: base.clone(),
            cmd: Some("SET @@last_insert_id = 9"),
            resp: Response {
                last_insert_id_set: Some(9),
                ..ok(0, 0)
            },
            facts: f,
            want: (Is(9), 0, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "set insert_id",
            before: base.clone(),
            cmd: Some("SET insert_id = 50"),
            resp: Response {
                insert_id_set: true,
                ..ok(0, 0)
            },
            facts: f,
            want: (Is(7), 0, Is(5), Clean),
            hold: Some(Hold::OneShot),
            read: false,
        },
        Case {
            name: "unknown prepared statement on a backend new to the session",
            before: base.clone(),
            cmd: Some("EXECUTE never_prepared"),
            resp: err(),
            facts: Facts {
                fresh_backend: true,
                ..f
            },
            want: (OnBackend, -1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "routine failing on the session's backend",
            before: base.clone(),
            cmd: Some("CALL p()"),
            resp: err(),
            facts: f,
            want: (OnBackend, -1, OnBackend, Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "insert_id still set after a statement that did not use it",
            before: base.clone(),
            cmd: Some("INSERT INTO t (s) VALUES ('x')"),
            resp: Response {
                insert_id_kept: true,
                ..err()
            },
            facts: f,
            want: (Is(7), -1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "insert_id still set after a SELECT",
            before: base.clone(),
            cmd: Some("SELECT 1"),
            resp: Response {
                insert_id_kept: true,
                ..rows(1)
            },
            facts: f,
            want: (Is(7), -1, Is(1), Clean),
            hold: Some(Hold::OneShot),
            read: false,
        },
        Case {
            name: "commit",
            before: base.clone(),
            cmd: Some("COMMIT"),
            resp: Response {
                last_gtid: Some("0-1-9".into()),
                ..ok(0, 0)
            },
            facts: f,
            want: (Is(7), 0, Is(5), Clean),
            hold: None,
            read: false,
        },
        // Routines: their effects are the server's to tell.
        Case {
            name: "call",
            before: base.clone(),
            cmd: Some("CALL p()"),
            resp: ok(2, 0),
            facts: f,
            want: (OnBackend, 2, OnBackend, Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "call with rows then ok",
            before: base.clone(),
            cmd: Some("CALL p()"),
            resp: Response {
                rows: Some(3),
                ..ok(0, 0)
            },
            facts: f,
            want: (OnBackend, 0, OnBackend, Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "multi statement",
            before: base.clone(),
            cmd: Some("UPDATE t SET v = 1; SELECT 1"),
            resp: rows(1),
            facts: f,
            // FOUND_ROWS(): the last result set's rows.
            want: (OnBackend, -1, Is(1), Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "rows FOUND_ROWS() does not count",
            before: base.clone(),
            cmd: Some("SHOW CREATE TABLE t"),
            resp: rows(1),
            facts: f,
            want: (Is(7), -1, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "multi statement failing before any result set",
            before: base.clone(),
            cmd: Some("BEGIN; INSERT INTO t VALUES (1); SELECT 1"),
            resp: err(),
            facts: f,
            // FOUND_ROWS() as it was: no statement that counts rows ran.
            want: (OnBackend, -1, base.found_rows, Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "multi statement failing after a result set",
            before: base.clone(),
            cmd: Some("SELECT 1; INSERT INTO t VALUES (1)"),
            resp: Response {
                last_rows: Some(2),
                ..err()
            },
            facts: f,
            want: (OnBackend, -1, Is(2), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "multi statement selecting into variables",
            before: base.clone(),
            cmd: Some("SELECT 1 INTO @a; SELECT 2"),
            resp: rows(1),
            facts: f,
            // The server counted the rows selected into @a, then the SELECT's: left to it.
            want: (OnBackend, -1, OnBackend, Clean),
            hold: None,
            read: true,
        },
        // Diagnostics statements read the area without clearing it.
        Case {
            name: "show warnings while dirty",
            before: History {
                diag: Dirty,
                ..base.clone()
            },
            cmd: Some("SHOW WARNINGS"),
            resp: rows(1),
            facts: f,
            // SHOW WARNINGS does not count its rows in FOUND_ROWS().
            want: (Is(7), -1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "quiet statement after conditions",
            before: History {
                diag: Dirty,
                ..base.clone()
            },
            cmd: Some("SELECT 1"),
            resp: rows(1),
            facts: f,
            want: (Is(7), -1, Is(1), Unknown),
            hold: None,
            read: true,
        },
        // A statement naming a table empties the area before it runs; one raising nothing
        // leaves it empty (MariaDB clears it for every statement with tables).
        Case {
            name: "insert after conditions",
            before: History {
                diag: Dirty,
                ..base.clone()
            },
            cmd: Some("INSERT INTO t (a) VALUES (1)"),
            resp: ok(1, 0),
            facts: f,
            want: (Is(7), 1, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "update, delete, replace after conditions (binary protocol too)",
            before: History {
                diag: Unknown,
                ..base.clone()
            },
            cmd: Some("EXEC UPDATE t SET a = 2 WHERE b = ?"),
            resp: ok(0, 0),
            facts: f,
            want: (Is(7), 0, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "insert after conditions, raising its own",
            before: History {
                diag: Dirty,
                ..base.clone()
            },
            cmd: Some("INSERT IGNORE INTO t (a) VALUES (1), (1)"),
            resp: warned(ok(1, 0)),
            facts: f,
            want: (Is(7), 1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "several statements with an insert after conditions",
            before: History {
                diag: Dirty,
                ..base.clone()
            },
            cmd: Some("INSERT INTO t (a) VALUES (1); DO 1"),
            resp: ok(0, 0),
            facts: f,
            // The last one, without tables, left what the insert left: not told apart here.
            want: (OnBackend, 0, Is(5), Unknown),
            hold: None,
            read: true,
        },
        Case {
            name: "show warnings while clean",
            before: base.clone(),
            cmd: Some("SHOW WARNINGS"),
            resp: rows(0),
            facts: f,
            want: (Is(7), -1, Is(5), Clean),
            hold: None,
            read: false,
        },
        // Binary protocol.
        Case {
            name: "execute select",
            before: base.clone(),
            cmd: Some("EXEC SELECT a FROM t WHERE id = ?"),
            resp: rows(1),
            facts: f,
            want: (Is(7), -1, Is(1), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "execute insert",
            before: base.clone(),
            cmd: Some("EXEC INSERT INTO t (v) VALUES (?)"),
            resp: ok(1, 12),
            facts: f,
            want: (OnBackend, 1, Is(5), Clean),
            hold: None,
            read: true,
        },
        Case {
            name: "execute warnings",
            before: base.clone(),
            cmd: Some("EXEC INSERT IGNORE INTO t VALUES (?)"),
            resp: warned(ok(0, 0)),
            facts: f,
            want: (Is(7), 0, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        Case {
            name: "fetch",
            before: base.clone(),
            cmd: Some("FETCH"),
            resp: rows(2),
            facts: Facts {
                statement_pending: true,
                ..f
            },
            want: (Is(7), -1, Is(5), Clean),
            hold: Some(Hold::Statement),
            read: false,
        },
        // Other commands: COM_INIT_DB, COM_STMT_PREPARE, COM_STMT_RESET …
        Case {
            name: "plain ok",
            before: base.clone(),
            cmd: None,
            resp: ok(0, 0),
            facts: f,
            want: (Is(7), 0, Is(5), Clean),
            hold: None,
            read: false,
        },
        Case {
            name: "plain error",
            before: base.clone(),
            cmd: None,
            resp: err(),
            facts: f,
            want: (Is(7), -1, Is(5), Dirty),
            hold: Some(Hold::Diagnostics),
            read: false,
        },
        // What else holds the backend.
        Case {
            name: "session mode",
            before: base.clone(),
            cmd: Some("SELECT 1"),
            resp: rows(1),
            facts: Facts {
                session_mode: true,
                ..f
            },
            want: (Is(7), -1, Is(1), Clean),
            hold: Some(Hold::SessionMode),
            read: false,
        },
        Case {
            name: "pinned",
            before: base.clone(),
            cmd: Some("SET @a = 1"),
            resp: ok(0, 0),
            facts: Facts { pinned: true, ..f },
            want: (Is(7), 0, Is(5), Clean),
            hold: Some(Hold::Pinned),
            read: false,
        },
        Case {
            name: "cursor open",
            before: base.clone(),
            cmd: Some("EXEC SELECT a FROM t"),
            resp: Response {
                cursor: true,
                ..status(rows(0), AC | 64)
            },
            facts: Facts {
                statement_pending: true,
                ..f
            },
            // FOUND_ROWS(): what the server counted filling the cursor (all rows, or none).
            want: (Is(7), -1, OnBackend, Clean),
            hold: Some(Hold::Statement),
            read: false,
        },
    ];
    for c in &cases {
        run(c);
    }
}

#[test]
fn last_gtid_is_the_sessions_own() {
    let r = Response {
        last_gtid: Some("0-1-44".into()),
        ..ok(1, 0)
    };
    let o = after(
        Command::Query(&q("INSERT INTO t VALUES (1)")),
        &r,
        Facts::default(),
        &History::default(),
    );
    assert_eq!(&*o.history.last_gtid, "0-1-44");
    let o2 = after(
        Command::Query(&q("SELECT 1")),
        &rows(1),
        Facts::default(),
        &o.history,
    );
    assert_eq!(&*o2.history.last_gtid, "0-1-44", "reads keep it");
}

#[test]
fn a_read_settles_what_only_the_backend_knew() {
    let before = History {
        diag: Diag::Dirty,
        ..known(7, 3, 5)
    };
    let o = after(
        Command::Query(&q("INSERT INTO t (v) VALUES (1)")),
        &ok(1, 8),
        Facts::default(),
        &before,
    );
    assert!(o.read_before_release && o.hold.is_none());
    // The diagnostics area was cleared (the insert used a table): release, values known.
    let done = after_read(o.clone(), 0, 8, 5);
    assert_eq!(done.hold, None);
    assert_eq!(done.history.last_insert_id, Known::Is(8));
    assert_eq!(done.history.diag, Diag::Clean);
    // Still conditions there: keep the backend; sluice's read disturbed its ROW_COUNT().
    let kept = after_read(o, 2, 8, 5);
    assert_eq!(kept.hold, Some(Hold::Diagnostics));
    assert_eq!(kept.history.foreign, Foreign::ALL);
    assert!(!server_answers(true, false, &kept.history, Hist::RowCount));
    assert!(server_answers(true, false, &known(0, 0, 0), Hist::RowCount));
    assert!(!server_answers(false, true, &kept.history, Hist::FoundRows));
    assert!(server_answers(
        false,
        true,
        &known(0, 0, 0),
        Hist::FoundRows
    ));
    assert!(!server_answers(
        false,
        false,
        &known(0, 0, 0),
        Hist::RowCount
    ));
}

#[test]
fn a_backend_holds_the_sessions_values_once_its_statements_set_them() {
    let fresh = Facts {
        fresh_backend: true,
        ..Facts::default()
    };
    let before = known(7, 3, 5);
    // A statement without a result set, on a backend just taken: ROW_COUNT() is the session's
    // there now, FOUND_ROWS() still the last user's.
    let o = after(
        Command::Query(&q("UPDATE t SET v = 1")),
        &ok(1, 0),
        fresh,
        &before,
    );
    assert_eq!(
        o.history.foreign,
        Foreign {
            row_count: false,
            found_rows: true
        }
    );
    assert!(server_answers(true, false, &o.history, Hist::RowCount));
    assert!(server_answers(true, false, &o.history, Hist::WarningCount));
    assert!(!server_answers(true, false, &o.history, Hist::FoundRows));
    // A later SELECT on the same backend sets FOUND_ROWS() too.
    let o = after(
        Command::Query(&q("SELECT 1")),
        &rows(1),
        Facts::default(),
        &o.history,
    );
    assert_eq!(o.history.foreign, Foreign::default());
    // A failed SELECT sets ROW_COUNT() but not FOUND_ROWS(); a prepare sets neither.
    let failed = Response {
        error: true,
        ..Response::default()
    };
    let o = after(Command::Query(&q("SELECT 1")), &failed, fresh, &before);
    assert_eq!(
        o.history.foreign,
        Foreign {
            row_count: false,
            found_rows: true
        }
    );
    let o = after(Command::Plain, &Response::default(), fresh, &before);
    assert_eq!(o.history.foreign, Foreign::ALL);
    // On the backend the session kept, what its last statement left stays.
    let o = after(
        Command::Plain,
        &Response::default(),
        Facts::default(),
        &before,
    );
    assert_eq!(o.history.foreign, Foreign::default());
}

#[test]
fn holds_have_names() {
    for h in [
        Hold::SessionMode,
        Hold::Transaction,
        Hold::UncertainTransaction,
        Hold::Statement,
        Hold::Pinned,
        Hold::Diagnostics,
        Hold::OneShot,
    ] {
        assert!(!h.name().is_empty());
    }
}

#[test]
fn an_aggregate_leaves_found_rows_to_the_server_when_the_optimizer_may_have_answered() {
    let fresh = Facts {
        fresh_backend: true,
        ..Facts::default()
    };
    let agg = q("SELECT COUNT(*), MAX(id) FROM t WHERE id = 9");
    // (session's FOUND_ROWS before, facts, rows) → (FOUND_ROWS after, read before release)
    let cases = [
        // The session's own value is on the backend: the server's answer decides.
        ("held", 5, Facts::default(), 1, Known::OnBackend, true),
        (
            "no row (a HAVING that failed)",
            5,
            Facts::default(),
            0,
            Known::OnBackend,
            true,
        ),
        // Counted or left, both are 1: nothing to ask.
        ("agrees", 1, Facts::default(), 1, Known::Is(1), false),
        // Grouped rows: more than one is always counted.
        ("rows", 5, Facts::default(), 3, Known::Is(3), false),
        // Another session's value was on the backend: what the statement left there cannot be
        // told from its count; counted (the documented difference).
        ("fresh backend", 5, fresh, 1, Known::Is(1), false),
    ];
    for (name, fr, facts, n, want, read) in cases {
        let before = known(7, 3, fr);
        for cmd in [Command::Query(&agg), Command::Execute(&agg)] {
            let o = after(cmd, &rows(n), facts, &before);
            assert_eq!(o.history.found_rows, want, "{name}");
            assert_eq!(o.read_before_release, read, "{name}");
        }
    }
    // The read settles it: the statement's count, or the value it left.
    let o = after(
        Command::Query(&agg),
        &rows(1),
        Facts::default(),
        &known(7, 3, 5),
    );
    assert_eq!(
        after_read(o.clone(), 0, 7, 5).history.found_rows,
        Known::Is(5)
    );
    assert_eq!(
        after_read(o.clone(), 0, 7, 1).history.found_rows,
        Known::Is(1)
    );
    // In a transaction the backend stays; a later statement that sets FOUND_ROWS() ends the
    // question, one that leaves it (an UPDATE) keeps it open.
    let next = after(
        Command::Query(&q("SELECT a FROM t")),
        &rows(4),
        Facts::default(),
        &o.history,
    );
    assert_eq!(next.history.found_rows, Known::Is(4));
    let next = after(
        Command::Query(&q("UPDATE t SET a = 1")),
        &ok(1, 0),
        Facts::default(),
        &o.history,
    );
    assert_eq!(next.history.found_rows, Known::OnBackend);
    // Not aggregates: a one-row SELECT of a column named like one, a schema's function.
    for sql in ["SELECT count FROM t WHERE id = 9", "SELECT s.max(1)"] {
        let o = after(
            Command::Query(&q(sql)),
            &rows(1),
            Facts::default(),
            &known(7, 3, 5),
        );
        assert_eq!(o.history.found_rows, Known::Is(1), "{sql}");
    }
}

#[test]
fn which_commands_may_use_a_one_shot_insert_id() {
    let cases: &[(&str, bool)] = &[
        ("INSERT INTO t (s) VALUES ('x')", true),
        ("REPLACE INTO t VALUES (1)", true),
        ("INSERT INTO t SELECT * FROM u", true),
        ("LOAD DATA INFILE 'f' INTO TABLE t", true),
        // A trigger may insert.
        ("UPDATE t SET a = 1", true),
        ("DELETE FROM t", true),
        ("CALL p()", true),
        ("EXECUTE s", true),
        ("INSERT INTO t VALUES (1); SELECT 1", true),
        ("CREATE TABLE t2 AS SELECT * FROM t", true),
        ("SELECT 1", false),
        ("SELECT LAST_INSERT_ID() + 1", false),
        ("SELECT @@warning_count, @@error_count", false),
        ("SHOW WARNINGS", false),
        ("GET DIAGNOSTICS @n = NUMBER, @rc = ROW_COUNT", false),
        ("SET @a = 1", false),
        ("SET time_zone = '+01:00'", false),
        ("BEGIN", false),
        ("COMMIT", false),
        ("USE db", false),
        ("DROP TABLE IF EXISTS nosuch_table", false),
        ("SELEC 1", true),
    ];
    for (sql, want) in cases {
        let e = q(sql);
        assert_eq!(may_use_one_shot(Command::Query(&e)), *want, "{sql}");
    }
    assert!(!may_use_one_shot(Command::Fetch));
    assert!(!may_use_one_shot(Command::Plain));
}

#[test]
fn which_failed_statements_may_have_committed() {
    let cases: &[(&str, bool)] = &[
        ("DROP TABLE nosuch_table", true),
        ("CREATE TABLE t9 (a INT)", true),
        ("ALTER TABLE t ADD COLUMN z INT", true),
        ("LOCK TABLES t WRITE", true),
        ("BEGIN", true),
        ("SET autocommit = 1", true),
        ("CALL p()", true),
        ("INSERT INTO t VALUES (1); DROP TABLE x", true),
        ("INSERT INTO t VALUES (1)", false),
        ("UPDATE t SET a = 1", false),
        ("DELETE FROM t", false),
        ("SELECT * FROM nosuch", false),
        ("SHOW WARNINGS", false),
        ("SELECT 1 INTO @x", false),
    ];
    for (sql, want) in cases {
        assert_eq!(may_commit_implicitly(&q(sql)), *want, "{sql}");
    }
}

#[test]
fn get_diagnostics_row_count_and_its_restore() {
    let m = Modes::default();
    for (sql, want) in [
        ("GET DIAGNOSTICS @n = NUMBER, @rc = ROW_COUNT", true),
        ("get current diagnostics @rc = row_count", true),
        ("GET DIAGNOSTICS @n = NUMBER", false),
        ("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT", false),
        ("SHOW WARNINGS", false),
        ("SELECT ROW_COUNT()", false),
    ] {
        assert_eq!(
            reads_row_count_item(sql.as_bytes(), &q(sql), m),
            want,
            "{sql}"
        );
    }
    assert_eq!(row_count_restore(0, true), Some("DO 0"));
    assert_eq!(row_count_restore(-1, true), Some("VALUES (1)"));
    assert_eq!(row_count_restore(-1, false), None);
    assert_eq!(row_count_restore(3, true), None);
}
