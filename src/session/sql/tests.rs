//! Table tests of the tokenizer and statement analysis.

use super::*;

fn a(sql: &str) -> Effects {
    analyze(sql.as_bytes(), Modes::default())
}

fn with_schema(sql: &str, schema: &str) -> Effects {
    analyze_with(
        sql.as_bytes(),
        &Context {
            schema: Some(schema.as_bytes()),
            ..Context::default()
        },
    )
}

fn id(db: &str, t: &str) -> TableId {
    join_id(db.as_bytes(), t.as_bytes())
}

#[test]
fn plain_settings_explain_their_state_change() {
    for sql in [
        "SET time_zone = '+01:00'",
        "SET NAMES utf8mb4",
        "USE app",
        "SET SESSION sql_mode = ''",
        "BEGIN",
        "SET autocommit = 0, sql_select_limit = 5",
    ] {
        let e = a(sql);
        assert!(e.explains_state_change, "{sql}");
        assert!(!e.may_pin(), "{sql}");
    }
}

#[test]
fn user_variables_are_seen_in_every_form() {
    for sql in [
        "SET @a = 1",
        "set @a := 1",
        "SET time_zone = 'UTC', @b = 2",
        "SELECT @x := 5",
        "SELECT id INTO @id FROM t",
        "SELECT 1 INTO @`odd name`",
        "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE */",
        "EXECUTE IMMEDIATE 'SELECT @v := 1'",
        "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT, @e = MYSQL_ERRNO",
        "GET DIAGNOSTICS @n = NUMBER",
        "LOAD DATA LOCAL INFILE 'f' INTO TABLE t (@a, b) SET c = @a",
    ] {
        assert!(a(sql).user_var_write, "{sql}");
    }
    for sql in [
        "SELECT @a",
        "SELECT * FROM t WHERE x = @a",
        "SELECT '@a := 1'",
        "SELECT 1 -- @a := 1",
        "SELECT 1 /* @a := 2 */",
        "SET time_zone = @tz",
    ] {
        assert!(!a(sql).user_var_write, "{sql}");
    }
}

#[test]
fn temporary_tables_are_named_as_the_server_names_them() {
    let e = with_schema(
        "CREATE TEMPORARY TABLE IF NOT EXISTS other.`Tmp` (x INT)",
        "app",
    );
    assert_eq!(e.temp_created, vec![id("other", "Tmp")]);
    assert!(e.may_pin());
    // Unqualified names resolve in the current schema; case is kept (lower_case_table_names=0).
    let e = with_schema("DROP TEMPORARY TABLE IF EXISTS tmp, other.Tmp", "app");
    assert_eq!(e.tables_dropped, vec![id("app", "tmp"), id("other", "Tmp")]);
    assert!(!e.may_pin());
    // `CREATE TEMPORARY TABLE a.t` then `DROP TABLE b.t` names different tables.
    assert_ne!(
        with_schema("CREATE TEMPORARY TABLE a.t (x INT)", "a").temp_created,
        with_schema("DROP TABLE b.t", "a").tables_dropped
    );
    let folded = analyze_with(
        b"DROP TABLE App.TMP",
        &Context {
            fold_table_names: true,
            ..Context::default()
        },
    );
    assert_eq!(folded.tables_dropped, vec![id("app", "tmp")]);
}

#[test]
fn prepares_locks_and_sequences() {
    let e = a("PREPARE s1 FROM 'SELECT 1'");
    assert_eq!(
        e.prepared,
        vec![(b"s1".to_vec(), Some(b"SELECT 1".to_vec()))]
    );
    assert_eq!(
        a("PREPARE S1 FROM @q").prepared,
        vec![(b"s1".to_vec(), None)]
    );
    assert_eq!(a("DEALLOCATE PREPARE s1").deallocated, vec![b"s1".to_vec()]);
    assert_eq!(a("DROP PREPARE s1").deallocated, vec![b"s1".to_vec()]);
    let e = a("SELECT GET_LOCK('job-1', 10)");
    assert_eq!(e.locks_acquired, vec![b"job-1".to_vec()]);
    assert_eq!(
        a("DO RELEASE_LOCK('job-1')").locks_released,
        vec![b"job-1".to_vec()]
    );
    assert!(a("SELECT RELEASE_ALL_LOCKS()").release_all_locks);
    assert!(a("LOCK TABLES t READ").lock_tables);
    assert!(a("HANDLER t OPEN").handler_open);
    for sql in [
        "SELECT NEXTVAL(s)",
        "SELECT NEXT VALUE FOR s",
        "SELECT PREVIOUS VALUE FOR s",
        "SELECT LASTVAL(s)",
        "INSERT INTO t VALUES (NEXT VALUE FOR s)",
    ] {
        assert!(a(sql).sequence, "{sql}");
        assert!(a(sql).may_pin(), "{sql}");
    }
}

#[test]
fn nothing_is_explained_by_a_statement_kind_that_runs_unseen_code() {
    for sql in [
        "CALL p()",
        "EXECUTE s",
        "EXECUTE s USING @a",
        "EXECUTE IMMEDIATE @q",
        "CREATE TABLE t (x INT)",
        "ALTER TABLE t ADD y INT",
        "INSERT INTO t VALUES (1)",
    ] {
        assert!(!a(sql).explains_state_change, "{sql}");
    }
    for sql in ["CALL p()", "EXECUTE s", "EXECUTE IMMEDIATE @q"] {
        assert!(a(sql).opaque, "{sql}");
    }
    // A stored function the server has (and only those) makes a SELECT opaque.
    let fns: HashSet<Vec<u8>> = [b"f_lock".to_vec()].into_iter().collect();
    let ctx = Context {
        stored_functions: Some(&fns),
        ..Context::default()
    };
    let e = analyze_with(b"SELECT F_LOCK(1), CONCAT('a', 'b')", &ctx);
    assert!(e.stored_function && e.opaque && !e.explains_state_change);
    assert!(analyze_with(b"SELECT other.f_lock()", &ctx).stored_function);
    for sql in [
        "SELECT CONCAT('a', 'b')",
        "INSERT INTO f_lock (x) VALUES (1)",
        "INSERT INTO app.f_lock (x) VALUES (1)",
        "SELECT 1 FROM f_lock",
    ] {
        assert!(!analyze_with(sql.as_bytes(), &ctx).stored_function, "{sql}");
    }
}

#[test]
fn history_reads_are_found_with_their_positions() {
    let sql = "INSERT INTO t VALUES (ROW_COUNT ( ), LAST_INSERT_ID(), @@session.last_gtid)";
    let e = a(sql);
    let got: Vec<(Hist, &str, bool)> = e
        .history
        .iter()
        .map(|h| (h.kind, &sql[h.at.clone()], h.whole_item))
        .collect();
    assert_eq!(
        got,
        vec![
            (Hist::RowCount, "ROW_COUNT ( )", false),
            (Hist::LastInsertId, "LAST_INSERT_ID()", false),
            (Hist::LastGtid, "@@session.last_gtid", false),
        ]
    );
    let whole = |sql: &str| -> Vec<(Hist, bool)> {
        a(sql)
            .history
            .iter()
            .map(|h| (h.kind, h.whole_item))
            .collect()
    };
    assert_eq!(
        whole("SELECT FOUND_ROWS() + 1, x FROM t WHERE y = ROW_COUNT()"),
        vec![(Hist::FoundRows, false), (Hist::RowCount, false)]
    );
    assert_eq!(
        whole("SELECT DISTINCT ROW_COUNT(), @@last_gtid AS g, 1, @@warning_count FROM t"),
        vec![
            (Hist::RowCount, true),
            (Hist::LastGtid, false),
            (Hist::WarningCount, true)
        ]
    );
    assert_eq!(
        whole("SELECT CAST(@@last_gtid AS CHAR(64)) AS g, @@last_gtid = '' AS e"),
        vec![(Hist::LastGtid, false), (Hist::LastGtid, false)]
    );
    assert!(a("SELECT LAST_INSERT_ID(5)").sets_last_insert_id);
    assert!(!a("SELECT LAST_INSERT_ID()").sets_last_insert_id);
    assert!(a("SELECT @@global.last_gtid").history.is_empty());
    // Assignments are not reads.
    assert!(a("SET @@session.last_insert_id = 5").history.is_empty());
    assert!(a("SET SESSION @@insert_id = 5").history.is_empty());
    assert_eq!(
        a("SET @x = @@warning_count").history[0].kind,
        Hist::WarningCount
    );
    assert!(a("SHOW WARNINGS").reads_backend_history());
    assert!(a("GET DIAGNOSTICS @n = NUMBER").reads_backend_history());
    assert!(!a("SELECT LAST_INSERT_ID()").reads_backend_history());
}

#[test]
fn statement_kinds() {
    for (sql, kind) in [
        ("SELECT 1", Kind::Query),
        ("SHOW TABLES", Kind::Query),
        ("SELECT 1 INTO @x", Kind::SelectInto),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", Kind::Query),
        ("SHOW WARNINGS", Kind::Diagnostic),
        ("SHOW COUNT(*) WARNINGS", Kind::Diagnostic),
        ("SHOW ERRORS LIMIT 1", Kind::Diagnostic),
        ("GET DIAGNOSTICS @n = NUMBER", Kind::Diagnostic),
        (
            "GET CURRENT DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT",
            Kind::Diagnostic,
        ),
        ("SET @a = 1", Kind::Set),
        ("COMMIT", Kind::Control),
        ("CALL p()", Kind::Routine),
        ("INSERT INTO t VALUES (1)", Kind::Other),
        ("SELECT 1; SELECT 2", Kind::Multi),
        (
            "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
            Kind::Query,
        ),
    ] {
        assert_eq!(a(sql).kind, kind, "{sql}");
    }
}

#[test]
fn set_statement_names_its_temporary_variables() {
    let e = a("SET STATEMENT max_statement_time=1, SQL_SELECT_LIMIT = 3 FOR SELECT ROW_COUNT()");
    assert_eq!(
        e.set_statement_vars,
        vec![b"max_statement_time".to_vec(), b"sql_select_limit".to_vec()]
    );
    assert!(e.history[0].whole_item);
    assert!(!e.user_var_write);
}

#[test]
fn intercepted_selects_and_their_labels() {
    let item = |kind, label: &str| Answered {
        kind,
        label: label.as_bytes().to_vec(),
    };
    assert_eq!(
        a("SELECT LAST_INSERT_ID()").intercept,
        Some(Intercept::Select(vec![item(
            Hist::LastInsertId,
            "LAST_INSERT_ID()"
        )]))
    );
    assert_eq!(
        a("select last_insert_id( ) as Id").intercept,
        Some(Intercept::Select(vec![item(Hist::LastInsertId, "Id")]))
    );
    assert_eq!(
        a("SELECT @@identity, ROW_COUNT() `n`, @@SESSION.warning_count").intercept,
        Some(Intercept::Select(vec![
            item(Hist::Identity, "@@identity"),
            item(Hist::RowCount, "n"),
            item(Hist::WarningCount, "@@SESSION.warning_count"),
        ]))
    );
    assert_eq!(
        a("SELECT CONNECTION_ID()").intercept,
        Some(Intercept::Select(vec![item(
            Hist::ConnectionId,
            "CONNECTION_ID()"
        )]))
    );
    assert_eq!(
        a("SELECT FOUND_ROWS();").intercept,
        Some(Intercept::Select(vec![item(
            Hist::FoundRows,
            "FOUND_ROWS()"
        )]))
    );
    for sql in [
        "SELECT LAST_INSERT_ID(5)",
        "SELECT LAST_INSERT_ID(), 1",
        "SELECT LAST_INSERT_ID() + 1",
        "SELECT 1; SELECT LAST_INSERT_ID()",
        "SELECT @@global.warning_count",
        "SELECT LAST_INSERT_ID() FROM t",
    ] {
        assert_eq!(a(sql).intercept, None, "{sql}");
    }
}

#[test]
fn kill_forms() {
    assert_eq!(
        a("KILL 42").intercept,
        Some(Intercept::Kill {
            query_only: false,
            id: 42
        })
    );
    assert_eq!(
        a("KILL CONNECTION 42").intercept,
        Some(Intercept::Kill {
            query_only: false,
            id: 42
        })
    );
    assert_eq!(
        a("kill hard query 7").intercept,
        Some(Intercept::Kill {
            query_only: true,
            id: 7
        })
    );
    assert_eq!(
        a("KILL QUERY ID 7").intercept,
        Some(Intercept::KillUnsupported)
    );
    assert_eq!(
        a("KILL USER app").intercept,
        Some(Intercept::KillUnsupported)
    );
    // KILL where sluice cannot answer it itself would reach backend threads.
    for sql in [
        "SELECT 1; KILL 5",
        "EXECUTE IMMEDIATE 'KILL 5'",
        "PREPARE k FROM 'KILL QUERY 5'",
    ] {
        assert!(a(sql).kill_nested, "{sql}");
    }
    assert!(!a("KILL 5").kill_nested);
}

#[test]
fn connection_id_rewrite_skips_literals_and_comments() {
    let out = rewrite_connection_id(
        b"SELECT CONNECTION_ID(), 'CONNECTION_ID()' /* CONNECTION_ID() */, connection_id ( ) + 1",
        77,
        Modes::default(),
    );
    assert_eq!(
        out,
        b"SELECT 77, 'CONNECTION_ID()' /* CONNECTION_ID() */, 77 + 1".to_vec()
    );
    assert!(a("SELECT CONNECTION_ID() + 1").reads(Hist::ConnectionId));
}

#[test]
fn literals_and_quote_modes() {
    let t = tokens(br#"SELECT 'it''s', "a\"b", `x``y`"#, Modes::default());
    assert!(t.contains(&Tok::Str(b"it's".to_vec())));
    assert!(t.contains(&Tok::Str(b"a\"b".to_vec())));
    assert!(t.contains(&Tok::Ident(b"x`y".to_vec())));
    let t = tokens(
        br#"SELECT "col""#,
        Modes {
            ansi_quotes: true,
            no_backslash_escapes: false,
        },
    );
    assert!(t.contains(&Tok::Ident(b"col".to_vec())));
    let t = tokens(
        br"SELECT 'a\'",
        Modes {
            ansi_quotes: false,
            no_backslash_escapes: true,
        },
    );
    assert!(t.contains(&Tok::Str(b"a\\".to_vec())));
    let sql = b"SELECT `a` , 'b'";
    for l in lex(sql, Modes::default()) {
        assert!(l.at.end <= sql.len() && l.at.start < l.at.end);
    }
}

#[test]
fn splice_replaces_ranges() {
    assert_eq!(
        splice(b"abcdef", &[(1..2, b"XY".to_vec()), (4..6, b"".to_vec())]),
        b"aXYcd".to_vec()
    );
    // Bad ranges are skipped, never panic.
    assert_eq!(splice(b"abc", &[(2..9, b"X".to_vec())]), b"abc".to_vec());
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..5000 {
        let n = (seed % 64) as usize;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"'\"`@:;/*!-#\\ aSELECTKILL0123()=,.";
            v.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let _ = analyze(&v, Modes::default());
        let _ = rewrite_connection_id(
            &v,
            1,
            Modes {
                ansi_quotes: true,
                no_backslash_escapes: true,
            },
        );
    }
}

#[test]
fn stored_code_bodies_are_not_read_now_and_keep_their_semicolons() {
    let proc =
        "CREATE DEFINER = CURRENT_USER() PROCEDURE p(IN v INT) BEGIN INSERT INTO t VALUES (v); \
                SELECT LAST_INSERT_ID() AS lid, ROW_COUNT() AS rc, CONNECTION_ID(); END";
    let e = a(proc);
    assert_eq!(e.statements, 1, "{proc}");
    assert!(e.history.is_empty(), "{proc}: {:?}", e.history);
    assert!(!e.opaque);
    for sql in [
        "CREATE OR REPLACE ALGORITHM = MERGE VIEW v AS SELECT ROW_COUNT(), CONNECTION_ID()",
        "ALTER VIEW v AS SELECT FOUND_ROWS()",
        "CREATE FUNCTION f() RETURNS INT RETURN ROW_COUNT()",
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW SET @r = ROW_COUNT()",
        "CREATE EVENT ev ON SCHEDULE EVERY 1 HOUR DO SELECT @@last_gtid",
    ] {
        let e = a(sql);
        assert!(e.history.is_empty(), "{sql}: {:?}", e.history);
        assert_eq!(e.statements, 1, "{sql}");
    }
    // Run at once, statement after statement: sluice cannot see into it.
    for sql in [
        "BEGIN NOT ATOMIC INSERT INTO t VALUES (1); SELECT ROW_COUNT(); END",
        "l1: BEGIN NOT ATOMIC SELECT 1; END",
        "IF (SELECT 1) THEN SELECT ROW_COUNT(); END IF",
    ] {
        let e = a(sql);
        assert_eq!(e.statements, 1, "{sql}");
        assert!(e.opaque, "{sql}");
        assert!(e.history.is_empty(), "{sql}");
        assert_eq!(e.kind, Kind::Other, "{sql}");
    }
    // What runs now is still read now.
    for sql in [
        "CREATE TABLE t2 AS SELECT ROW_COUNT() AS r",
        "INSERT INTO log VALUES (ROW_COUNT()); SELECT 1",
    ] {
        assert_eq!(a(sql).history.len(), 1, "{sql}");
    }
}

#[test]
fn a_user_variable_passed_to_call_is_written() {
    assert!(a("CALL p_out(3, @o)").user_var_write);
    assert!(a("CALL db.p(@a, 1)").user_var_write);
    assert!(!a("CALL p(1)").user_var_write);
}

#[test]
fn rows_selected_into_a_table_are_counted_on_the_server() {
    for sql in [
        "INSERT INTO t SELECT * FROM u",
        "CREATE TEMPORARY TABLE IF NOT EXISTS x AS SELECT id FROM t1",
        "CREATE TABLE x (a INT) SELECT 1",
        "REPLACE INTO t (a) SELECT a FROM u",
    ] {
        assert!(a(sql).selects_into, "{sql}");
    }
    for sql in [
        "SELECT 1",
        "UPDATE t SET a = 1 WHERE b IN (SELECT b FROM u)",
        "INSERT INTO t VALUES ((SELECT 1))",
    ] {
        assert!(!a(sql).selects_into, "{sql}");
    }
}

#[test]
fn statements_that_return_rows_without_counting_them_in_found_rows() {
    // As MariaDB 10.11 does, one by one.
    let keeps = [
        "SHOW CREATE TABLE t1",
        "show warnings",
        "SHOW ERRORS",
        "SHOW FULL PROCESSLIST",
        "SHOW GRANTS",
        "SHOW MASTER STATUS",
        "SHOW BINLOG EVENTS LIMIT 1",
        "SHOW ENGINE INNODB STATUS",
        "SHOW PRIVILEGES",
        "EXPLAIN SELECT * FROM t1",
        "DESC SELECT 1",
        "CHECK TABLE t1",
        "OPTIMIZE TABLE t1",
        "CHECKSUM TABLE t1",
        "VALUES (1), (2)",
        "TABLE t1",
        "HELP 'x'",
        "SET STATEMENT max_statement_time = 1 FOR SHOW CREATE TABLE t1",
    ];
    for sql in keeps {
        assert!(a(sql).keeps_found_rows, "{sql}");
    }
    let counts = [
        "SELECT 1",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "SHOW VARIABLES LIKE 'x%'",
        "SHOW GLOBAL STATUS",
        "SHOW COUNT(*) WARNINGS",
        "SHOW TABLES",
        "SHOW FULL TABLES",
        "SHOW DATABASES",
        "SHOW COLUMNS FROM t1",
        "DESCRIBE t1",
        "EXPLAIN t1",
        "SHOW TABLE STATUS",
    ];
    for sql in counts {
        assert!(!a(sql).keeps_found_rows, "{sql}");
    }
}

#[test]
fn statements_that_empty_the_diagnostics_area() {
    for (sql, clears) in [
        ("INSERT INTO t2 (s) VALUES ('x')", true),
        ("insert ignore into t1 (v) values ('a')", true),
        ("REPLACE INTO t1 (id, v) VALUES (1, 'r')", true),
        ("UPDATE t1 SET n = n + 1", true),
        ("DELETE FROM t1 WHERE id > 100", true),
        (
            "SET STATEMENT max_statement_time = 1 FOR UPDATE t1 SET n = 1",
            true,
        ),
        ("SELECT 1", false),
        ("SELECT * FROM t1", false),
        ("SET @a = (SELECT COUNT(*) FROM t1)", false),
        ("DO 1", false),
        ("CALL p()", false),
        ("SHOW WARNINGS", false),
        ("SELECT 'INSERT'", false),
        // Code only on a server at least that new: not vouched for.
        (
            "/*!99999 INSERT INTO t2 (s) VALUES ('x') */ SELECT 1",
            false,
        ),
        ("/*M!100000 UPDATE t1 SET n = 1 */", false),
    ] {
        assert_eq!(a(sql).clears_diagnostics, clears, "{sql}");
    }
}

#[test]
fn statements_on_the_session_trackers() {
    for (sql, on) in [
        ("SET session_track_schema = OFF", true),
        ("SELECT @@session_track_system_variables", true),
        ("SELECT @@SESSION.session_track_state_change", true),
        ("SHOW VARIABLES LIKE 'session_track%'", true),
        ("SHOW SESSION VARIABLES", true),
        (
            "show local variables where Variable_name = 'time_zone'",
            true,
        ),
        ("SELECT * FROM information_schema.SESSION_VARIABLES", true),
        (
            "SELECT SESSION_VALUE FROM information_schema.SYSTEM_VARIABLES",
            true,
        ),
        ("SHOW STATUS LIKE 'Threads%'", false),
        ("SELECT variables FROM t", false),
        ("SELECT 'session_track_schema'", false),
        ("SELECT @@time_zone", false),
    ] {
        assert_eq!(a(sql).session_track, on, "{sql}");
    }
}

#[test]
fn show_processlist_forms() {
    for (sql, want) in [
        ("SHOW PROCESSLIST", Some(false)),
        ("show full processlist", Some(true)),
        ("SHOW PROCESSLIST;", Some(false)),
        ("/* x */ SHOW FULL PROCESSLIST", Some(true)),
        ("SHOW PROCESSLIST; SELECT 1", None),
        ("SHOW FULL", None),
        ("SHOW STATUS", None),
        ("SHOW PROCESSLIST x", None),
    ] {
        assert_eq!(
            a(sql).intercept,
            want.map(|full| Intercept::ShowProcesslist { full }),
            "{sql}"
        );
    }
}

#[test]
fn the_token_scratch_keeps_its_allocation() {
    // `relifetime` must hand the same buffer on (the in-place collect), or every statement's
    // analysis would allocate again.
    let kept: Vec<Lexed<'static>> = Vec::with_capacity(64);
    let at = kept.as_ptr() as usize;
    let sql = b"SELECT c FROM sbtest1 WHERE id = 42".to_vec();
    let mut toks: Vec<Lexed<'_>> = relifetime(kept);
    lex_into(&sql, Modes::default(), &mut toks);
    assert_eq!(toks.len(), 8);
    assert_eq!(
        toks.as_ptr() as usize,
        at,
        "lex_into reallocated a buffer with room"
    );
    assert_eq!(toks, lex(&sql, Modes::default()));
    let back: Vec<Lexed<'static>> = relifetime(toks);
    assert!(back.is_empty());
    assert_eq!(back.as_ptr() as usize, at, "the buffer was not reused");
    assert_eq!(back.capacity(), 64);
    // The analysis leaves the thread's buffer empty, and a nested one (EXECUTE IMMEDIATE of a
    // literal) gets a buffer of its own.
    let e = a("EXECUTE IMMEDIATE 'SELECT @v := 1'");
    assert!(e.user_var_write);
    assert_eq!(a("SELECT LAST_INSERT_ID()").statements, 1);
    let left = SCRATCH.take();
    assert!(left.is_empty() && left.capacity() > 0);
}
