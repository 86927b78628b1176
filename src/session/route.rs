//! Which statements a replica may answer (read routing, opt-in): pure, decided from the text and
//! its analysis, and conservative — when in doubt, the primary.
//!
//! A statement goes to a replica only if it is one plain `SELECT` that reads tables and nothing
//! of the server it runs on: no locking read (`FOR UPDATE`, `LOCK IN SHARE MODE`, `FOR SHARE`),
//! no `INTO` (variables, files), no system variable (a replica's `@@server_id`, `@@read_only`, …
//! are not the primary's), no history value (`LAST_INSERT_ID()`, `FOUND_ROWS()`, …), no user
//! variable, no sequence, no stored function or any function outside a short list of builtins
//! that compute from their arguments alone, no server schema (`information_schema`,
//! `performance_schema`, `mysql`, `sys`), nothing that pins, nothing sluice answers itself.

use super::sql::{tokens, Effects, Hist, Kind, Modes, Tok};

/// Builtins a replica answers as the primary would (computed from their arguments and the rows).
const SAFE_FUNCTIONS: &[&[u8]] = &[
    b"ABS",
    b"AVG",
    b"CAST",
    b"CEIL",
    b"CEILING",
    b"CHAR_LENGTH",
    b"COALESCE",
    b"CONCAT",
    b"CONCAT_WS",
    b"CONVERT",
    b"COUNT",
    b"DATE",
    b"DATE_FORMAT",
    b"DAY",
    b"FIELD",
    b"FIND_IN_SET",
    b"FLOOR",
    b"GREATEST",
    b"GROUP_CONCAT",
    b"HEX",
    b"IF",
    b"IFNULL",
    b"INSTR",
    b"JSON_EXTRACT",
    b"JSON_UNQUOTE",
    b"LEAST",
    b"LEFT",
    b"LENGTH",
    b"LOCATE",
    b"LOWER",
    b"LPAD",
    b"LTRIM",
    b"MAX",
    b"MD5",
    b"MIN",
    b"MOD",
    b"MONTH",
    b"NULLIF",
    b"REPLACE",
    b"RIGHT",
    b"ROUND",
    b"RPAD",
    b"RTRIM",
    b"SHA1",
    b"SHA2",
    b"SUBSTR",
    b"SUBSTRING",
    b"SUM",
    b"TRIM",
    b"UNHEX",
    b"UPPER",
    b"YEAR",
];

/// Keywords that a `(` may follow without being a call.
const KEYWORDS_BEFORE_PAREN: &[&[u8]] = &[
    b"ALL",
    b"AND",
    b"ANY",
    b"AS",
    b"BETWEEN",
    b"BY",
    b"CASE",
    b"DISTINCT",
    b"ELSE",
    b"EXISTS",
    b"FROM",
    b"HAVING",
    b"IN",
    b"IS",
    b"JOIN",
    b"LIKE",
    b"NOT",
    b"ON",
    b"OR",
    b"OVER",
    b"SELECT",
    b"SOME",
    b"THEN",
    b"UNION",
    b"USING",
    b"WHEN",
    b"WHERE",
    b"XOR",
];

/// Words that make a read lock, write or reach outside the rows.
const UNSAFE_WORDS: &[&[u8]] = &[
    b"UPDATE",
    b"LOCK",
    b"SHARE",
    b"INTO",
    b"OUTFILE",
    b"DUMPFILE",
    b"PROCEDURE",
    b"NEXTVAL",
    b"LASTVAL",
    b"SETVAL",
];

/// History functions: on a replica the session holds, answered as anywhere (see
/// [`plain_select`]).
const HISTORY_FUNCTIONS: &[&[u8]] = &[b"LAST_INSERT_ID", b"FOUND_ROWS", b"ROW_COUNT"];

/// Schemas whose contents belong to the server answering (its threads, its status, its grants,
/// its replication state): a replica's are not the primary's.
const SERVER_SCHEMAS: &[&[u8]] = &[
    b"information_schema",
    b"performance_schema",
    b"mysql",
    b"sys",
];

fn is(word: &[u8], list: &[&[u8]]) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// May a replica answer this statement (`e`: its analysis)?
pub fn replica_safe(sql: &[u8], e: &Effects, modes: Modes) -> bool {
    if e.kind != Kind::Query
        || e.statements != 1
        || e.may_pin()
        || e.opaque
        || e.user_var_write
        || e.sequence
        || e.stored_function
        || e.calc_found_rows
        || e.session_track
        || !e.history.is_empty()
        || e.intercept.is_some()
    {
        return false;
    }
    plain_select(sql, modes, false)
}

/// Is this one `SELECT` that reads rows and nothing of the server answering? `held`: on a
/// replica the session already holds after a routed read, where it may also read what that
/// read left: its conditions (`@@warning_count`, `@@error_count`), history values (which sluice
/// answers or rewrites from the session's own record) and user variables (a session with
/// variables of its own holds the primary; it holds a replica only with those a `GET
/// DIAGNOSTICS` set there).
fn plain_select(sql: &[u8], modes: Modes, held: bool) -> bool {
    let toks = tokens(sql, modes);
    if !matches!(toks.first(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(b"SELECT")) {
        return false;
    }
    for (i, t) in toks.iter().enumerate() {
        let next_is_paren = matches!(toks.get(i + 1), Some(Tok::Punct(b'(')));
        match t {
            Tok::Assign | Tok::Semicolon => return false,
            Tok::UserVar(_) if !held => return false,
            Tok::SysVar(v) if !(held && Hist::sysvar(v).is_some()) => return false,
            Tok::Word(w) if is(w, UNSAFE_WORDS) || is(w, SERVER_SCHEMAS) => return false,
            Tok::Ident(w) if is(w, SERVER_SCHEMAS) => return false,
            Tok::Word(w)
                if next_is_paren
                    && !is(w, SAFE_FUNCTIONS)
                    && !is(w, KEYWORDS_BEFORE_PAREN)
                    && (!held || !is(w, HISTORY_FUNCTIONS)) =>
            {
                return false
            }
            // A quoted name called as a function: a stored function.
            Tok::Ident(_) if next_is_paren => return false,
            _ => {}
        }
    }
    true
}

/// May this statement run on a replica the session still holds after a routed read (a session
/// lingers on its backend between quick commands, and keeps it for the diagnostics of its last
/// statement)? Reads, diagnostics reads and settings may; anything that writes, locks, pins or
/// starts a transaction goes to the primary (the replica given up first).
pub fn may_stay_on_replica(sql: &[u8], e: &Effects, modes: Modes) -> bool {
    if e.statements != 1 || e.opaque || e.stored_function {
        return false;
    }
    // `GET DIAGNOSTICS @v = …` reads the replica's conditions into user variables, which the
    // session then carries to its next backend (see [`diagnostics_targets`]).
    if e.kind == Kind::Diagnostic {
        return !e.pins_beyond_user_vars();
    }
    if e.may_pin() {
        return false;
    }
    match e.kind {
        Kind::Set => true,
        Kind::Query => plain_select(sql, modes, true),
        _ => false,
    }
}

/// Does this statement certainly empty the diagnostics area of the connection it runs on?
/// MariaDB empties it for a statement that uses a table, and for one that raises a condition
/// (which nobody knows before it runs): certain only for a write of rows (`INSERT`, `REPLACE`,
/// `UPDATE`, `DELETE`) and a `SELECT` naming a table in a `FROM` of its own (not `DUAL`, not
/// inside parentheses, where `FROM` may belong to `EXTRACT` or `TRIM`). Anything else may leave
/// an earlier statement's conditions for the client to read.
pub fn clears_conditions(sql: &[u8], e: &Effects, modes: Modes) -> bool {
    if e.statements != 1 {
        return false;
    }
    // A write of rows (see `Effects::clears_diagnostics`).
    if e.clears_diagnostics && e.kind == Kind::Other {
        return true;
    }
    // (Not a text with an executable comment: whether the server runs what the tokenizer reads
    // as code depends on its version.)
    if e.kind != Kind::Query || super::sql::has_executable_comment(sql) {
        return false;
    }
    let toks = tokens(sql, modes);
    if !matches!(toks.first(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(b"SELECT")) {
        return false;
    }
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case(b"FROM") => {
                return match toks.get(i + 1) {
                    Some(Tok::Ident(_)) => true,
                    Some(Tok::Word(w)) => !w.eq_ignore_ascii_case(b"DUAL"),
                    _ => false,
                };
            }
            _ => {}
        }
    }
    false
}

/// An error a replica may give to a routed read where the primary would not: an object it has
/// not created yet (a table, a schema, a column, a view's base). The read runs again on the
/// primary, and the client hears the primary's answer; any other error is the read's answer.
pub fn replica_may_lack(code: u16) -> bool {
    matches!(
        code,
        1049 // ER_BAD_DB_ERROR: unknown database
            | 1054 // ER_BAD_FIELD_ERROR: unknown column
            | 1146 // ER_NO_SUCH_TABLE
            | 1356 // ER_VIEW_INVALID: a view's tables or columns
            | 1932 // ER_NO_SUCH_TABLE_IN_ENGINE
    )
}

/// What a user variable set by `GET DIAGNOSTICS` holds, by the item assigned to it (the server's
/// types: `NUMBER`, `MYSQL_ERRNO` and `ROW_NUMBER` unsigned integers, `ROW_COUNT` a signed one,
/// every other item a string in the system character set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagValue {
    Unsigned,
    Signed,
    Text,
}

/// The user variables a `GET [CURRENT | STACKED] DIAGNOSTICS` statement assigns, each with the
/// type of its item, in order; `None` for any other statement, or one whose form is not the
/// plain `@v = ITEM, …` list.
pub fn diagnostics_targets(sql: &[u8], modes: Modes) -> Option<Vec<(Vec<u8>, DiagValue)>> {
    let toks = tokens(sql, modes);
    let word = |i: usize, k: &str| matches!(toks.get(i), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k.as_bytes()));
    if !word(0, "GET") {
        return None;
    }
    let mut i = 1;
    if word(i, "CURRENT") || word(i, "STACKED") {
        i += 1;
    }
    if !word(i, "DIAGNOSTICS") {
        return None;
    }
    i += 1;
    if word(i, "CONDITION") {
        // The condition number: a literal or a variable (read, not assigned).
        i += 2;
    }
    let mut out = Vec::new();
    loop {
        let (Some(Tok::UserVar(name)), Some(Tok::Punct(b'=')), Some(Tok::Word(item))) =
            (toks.get(i), toks.get(i + 1), toks.get(i + 2))
        else {
            return None;
        };
        let kind = if [&b"NUMBER"[..], b"MYSQL_ERRNO", b"ROW_NUMBER"]
            .iter()
            .any(|k| item.eq_ignore_ascii_case(k))
        {
            DiagValue::Unsigned
        } else if item.eq_ignore_ascii_case(b"ROW_COUNT") {
            DiagValue::Signed
        } else {
            DiagValue::Text
        };
        out.push((name.clone(), kind));
        i += 3;
        match toks.get(i) {
            None => return Some(out),
            Some(Tok::Punct(b',')) => i += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::sql::analyze;

    #[test]
    fn only_plain_reads_go_to_a_replica() {
        let m = Modes::default();
        let cases: &[(&str, bool)] = &[
            ("SELECT c FROM sbtest1 WHERE id = 5", true),
            (
                "select count(*), max(id) from t where a in (1, 2) and b like 'x%'",
                true,
            ),
            (
                "SELECT t.a, u.b FROM t JOIN u ON (t.id = u.id) WHERE EXISTS (SELECT 1 FROM v)",
                true,
            ),
            (
                "SELECT CONCAT(a, '-', b) AS k FROM t GROUP BY k ORDER BY k LIMIT 10",
                true,
            ),
            ("SELECT a FROM t FOR UPDATE", false),
            ("SELECT a FROM t LOCK IN SHARE MODE", false),
            ("SELECT a FROM t FOR SHARE", false),
            ("SELECT a INTO @x FROM t", false),
            ("SELECT a FROM t INTO OUTFILE '/tmp/x'", false),
            ("SELECT @@server_id", false),
            ("SELECT @a", false),
            ("SELECT LAST_INSERT_ID()", false),
            ("SELECT FOUND_ROWS()", false),
            ("SELECT SQL_CALC_FOUND_ROWS a FROM t LIMIT 1", false),
            ("SELECT NOW()", false),
            ("SELECT my_func(a) FROM t", false),
            ("SELECT `my func`(a) FROM t", false),
            ("SELECT db.f(a) FROM t", false),
            ("SELECT GET_LOCK('x', 1)", false),
            ("SELECT NEXTVAL(s)", false),
            ("SELECT 1; SELECT 2", false),
            ("SELECT * FROM information_schema.PROCESSLIST", false),
            ("SELECT * FROM `performance_schema`.threads", false),
            ("SELECT user FROM mysql.user", false),
            ("SHOW TABLES", false),
            ("WITH x AS (SELECT 1) SELECT * FROM x", false),
            ("INSERT INTO t VALUES (1)", false),
            ("UPDATE t SET a = 1", false),
            ("BEGIN", false),
            ("SET @a = 1", false),
        ];
        for (sql, want) in cases {
            let e = analyze(sql.as_bytes(), m);
            assert_eq!(replica_safe(sql.as_bytes(), &e, m), *want, "{sql}");
        }
    }

    #[test]
    fn what_may_follow_a_routed_read_on_its_replica() {
        let m = Modes::default();
        let cases: &[(&str, bool)] = &[
            ("SHOW WARNINGS", true),
            ("SELECT @@warning_count", true),
            ("SELECT FOUND_ROWS()", true),
            ("SELECT a FROM t", true),
            ("SET NAMES utf8mb4", true),
            ("SET @a = 1", false),
            ("GET DIAGNOSTICS @n = NUMBER", true),
            ("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT", true),
            ("SELECT @n", true),
            ("SELECT @n := 1", false),
            ("SELECT @@error_count, ROW_COUNT(), LAST_INSERT_ID()", true),
            ("SELECT @@server_id", false),
            ("SELECT @@gtid_current_pos", false),
            ("SELECT NOW()", false),
            ("SELECT CONNECTION_ID()", false),
            ("SELECT * FROM information_schema.PROCESSLIST", false),
            ("SHOW STATUS", false),
            ("SELECT a FROM t FOR UPDATE", false),
            ("SELECT a INTO @x FROM t", false),
            ("INSERT INTO t VALUES (1)", false),
            ("BEGIN", false),
            ("CREATE TEMPORARY TABLE x (a INT)", false),
            ("CALL p()", false),
        ];
        for (sql, want) in cases {
            let e = analyze(sql.as_bytes(), m);
            assert_eq!(may_stay_on_replica(sql.as_bytes(), &e, m), *want, "{sql}");
        }
    }

    #[test]
    fn what_get_diagnostics_assigns() {
        use DiagValue::*;
        let m = Modes::default();
        type Targets = &'static [(&'static str, DiagValue)];
        let cases: &[(&str, Option<Targets>)] = &[
            ("GET DIAGNOSTICS @n = NUMBER", Some(&[("n", Unsigned)])),
            (
                "get current diagnostics @n = number, @r = ROW_COUNT",
                Some(&[("n", Unsigned), ("r", Signed)]),
            ),
            (
                "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT, @e = MYSQL_ERRNO, @s = RETURNED_SQLSTATE",
                Some(&[("m", Text), ("e", Unsigned), ("s", Text)]),
            ),
            (
                "GET STACKED DIAGNOSTICS CONDITION @i @`x y` = CLASS_ORIGIN",
                Some(&[("x y", Text)]),
            ),
            ("GET DIAGNOSTICS", None),
            ("GET DIAGNOSTICS @n = NUMBER @r = ROW_COUNT", None),
            ("GET DIAGNOSTICS @n := NUMBER", None),
            ("SHOW WARNINGS", None),
            ("SELECT @n", None),
        ];
        for (sql, want) in cases {
            let got = diagnostics_targets(sql.as_bytes(), m);
            let want: Option<Vec<(Vec<u8>, DiagValue)>> =
                want.map(|w| w.iter().map(|(n, k)| (n.as_bytes().to_vec(), *k)).collect());
            assert_eq!(got, want, "{sql}");
        }
    }

    #[test]
    fn statements_that_certainly_empty_the_diagnostics_area() {
        let m = Modes::default();
        let cases: &[(&str, bool)] = &[
            ("INSERT INTO t VALUES (1)", true),
            ("replace into t values (1)", true),
            ("UPDATE t SET a = 1", true),
            ("DELETE FROM t", true),
            ("SELECT a FROM t", true),
            ("SELECT a FROM `t` WHERE b = 1", true),
            ("SELECT a FROM s.t FOR UPDATE", true),
            ("SELECT 1 FROM DUAL", false),
            ("SELECT 1", false),
            ("SELECT EXTRACT(DAY FROM NOW())", false),
            ("SELECT TRIM(LEADING 'x' FROM 'xa')", false),
            ("SELECT * FROM (SELECT 1) AS d", false),
            ("SELECT @@warning_count", false),
            ("SET @a = 1", false),
            ("DO 1", false),
            ("CALL p()", false),
            ("SHOW WARNINGS", false),
            ("INSERT INTO t VALUES (1); SELECT 1", false),
            ("SELECT 1 /*!99999 FROM t */", false),
            ("INSERT /*!99999 IGNORE */ INTO t VALUES (1)", false),
        ];
        for (sql, want) in cases {
            let e = analyze(sql.as_bytes(), m);
            assert_eq!(clears_conditions(sql.as_bytes(), &e, m), *want, "{sql}");
        }
    }

    #[test]
    fn replica_errors_the_primary_answers_again() {
        for (code, again) in [
            (1146, true),
            (1049, true),
            (1054, true),
            (1356, true),
            (1932, true),
            (1064, false), // a syntax error is the same everywhere
            (1292, false),
            (1242, false), // subquery returns more than one row: the data's answer
            (1317, false), // interrupted (KILL QUERY)
            (2013, false),
        ] {
            assert_eq!(replica_may_lack(code), again, "{code}");
        }
    }
}
