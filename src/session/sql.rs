//! A small SQL tokenizer, not a parser: it tells what a statement may leave behind in the session
//! that sluice cannot replay (user variables, temporary tables, SQL-level prepared statements,
//! locks), and recognises the few statements sluice answers or rewrites itself
//! (`SELECT LAST_INSERT_ID()`, `SELECT CONNECTION_ID()`, `KILL …`).
//!
//! The server's session trackers remain the source of truth for replayable state; this module
//! explains what they flag but cannot describe ("state changed"), and covers statements whose
//! effects MariaDB does not report at all (result-set statements such as `SELECT @a := 1` or
//! `SELECT GET_LOCK('x', 1)`). It works on bytes (SQL text need not be UTF-8), understands
//! comments (including executable `/*! … */` comments, whose content counts as code), string
//! literals with both escaping styles, and quoted identifiers.

/// One lexical token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok<'a> {
    /// An unquoted word (keyword or identifier), as written.
    Word(&'a [u8]),
    /// A back-quoted (or, under ANSI_QUOTES, double-quoted) identifier, unescaped.
    Ident(Vec<u8>),
    /// A string literal's content, unescaped.
    Str(Vec<u8>),
    Number(&'a [u8]),
    /// `@name`, `@'name'`, `@"name"`, ``@`name` ``.
    UserVar(Vec<u8>),
    /// `@@name`, `@@session.name`, …
    SysVar(&'a [u8]),
    /// Any other single byte: punctuation and operators (`:=` is `Assign`).
    Punct(u8),
    Assign,
    /// `;` between statements.
    Semicolon,
}

/// Parse-affecting modes of the session (from sql_mode / status flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct Modes {
    pub ansi_quotes: bool,
    pub no_backslash_escapes: bool,
}

/// Splits `sql` into tokens. Never fails: unterminated literals end at the end of input.
pub fn tokens(sql: &[u8], modes: Modes) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = sql.len();
    while i < n {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'#' => i = skip_line(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) =>
            {
                i = skip_line(sql, i)
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                // `/*!` (MySQL/MariaDB) and `/*M!` (MariaDB) comments are code.
                let exec = match sql.get(i + 2) {
                    Some(b'!') => Some(i + 3),
                    Some(b'M') if sql.get(i + 3) == Some(&b'!') => Some(i + 4),
                    _ => None,
                };
                if let Some(mut j) = exec {
                    while j < n && sql[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                } else {
                    i = match find(sql, i + 2, b"*/") {
                        Some(e) => e + 2,
                        None => n,
                    };
                }
            }
            b'*' if sql.get(i + 1) == Some(&b'/') => i += 2, // end of an executable comment
            b'\'' => {
                let (s, j) = quoted(sql, i, b'\'', modes.no_backslash_escapes);
                out.push(Tok::Str(s));
                i = j;
            }
            b'"' if !modes.ansi_quotes => {
                let (s, j) = quoted(sql, i, b'"', modes.no_backslash_escapes);
                out.push(Tok::Str(s));
                i = j;
            }
            b'"' | b'`' => {
                let (s, j) = quoted(sql, i, c, true);
                out.push(Tok::Ident(s));
                i = j;
            }
            b'@' if sql.get(i + 1) == Some(&b'@') => {
                let mut j = i + 2;
                while j < n && (is_word(sql[j]) || sql[j] == b'.') {
                    j += 1;
                }
                out.push(Tok::SysVar(&sql[i + 2..j]));
                i = j;
            }
            b'@' => match sql.get(i + 1) {
                Some(&q @ (b'\'' | b'"' | b'`')) => {
                    let (s, j) = quoted(sql, i + 1, q, q == b'`' || modes.no_backslash_escapes);
                    out.push(Tok::UserVar(s));
                    i = j;
                }
                _ => {
                    let mut j = i + 1;
                    while j < n && (is_word(sql[j]) || sql[j] == b'.') {
                        j += 1;
                    }
                    out.push(Tok::UserVar(sql[i + 1..j].to_vec()));
                    i = j;
                }
            },
            b':' if sql.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Assign);
                i += 2;
            }
            b';' => {
                out.push(Tok::Semicolon);
                i += 1;
            }
            b'0'..=b'9' => {
                let mut j = i;
                while j < n && (sql[j].is_ascii_alphanumeric() || sql[j] == b'.') {
                    j += 1;
                }
                out.push(Tok::Number(&sql[i..j]));
                i = j;
            }
            c if is_word(c) => {
                let mut j = i;
                while j < n && is_word(sql[j]) {
                    j += 1;
                }
                out.push(Tok::Word(&sql[i..j]));
                i = j;
            }
            c => {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    match sql[i..].iter().position(|&b| b == b'\n') {
        Some(p) => i + p + 1,
        None => sql.len(),
    }
}

fn find(sql: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    sql.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// Reads a literal quoted with `q` starting at `i`; returns its content and the index after it.
fn quoted(sql: &[u8], i: usize, q: u8, no_backslash: bool) -> (Vec<u8>, usize) {
    let mut s = Vec::new();
    let mut j = i + 1;
    while j < sql.len() {
        let c = sql[j];
        if c == q {
            if sql.get(j + 1) == Some(&q) {
                s.push(q);
                j += 2;
                continue;
            }
            return (s, j + 1);
        }
        if c == b'\\' && !no_backslash && j + 1 < sql.len() {
            s.push(match sql[j + 1] {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'0' => 0,
                other => other,
            });
            j += 2;
            continue;
        }
        s.push(c);
        j += 1;
    }
    (s, sql.len())
}

fn is_kw(t: Option<&Tok<'_>>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw.as_bytes()))
}

fn name_of(t: Option<&Tok<'_>>) -> Option<Vec<u8>> {
    match t {
        Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
        Some(Tok::Ident(s)) => Some(s.to_ascii_lowercase()),
        Some(Tok::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

/// A table name possibly qualified as `db.t`: the last part, lowercased.
fn table_name(toks: &[Tok<'_>], mut i: usize) -> (Option<Vec<u8>>, usize) {
    let mut name = name_of(toks.get(i));
    if name.is_some() {
        i += 1;
        while matches!(toks.get(i), Some(Tok::Punct(b'.'))) {
            name = name_of(toks.get(i + 1));
            i += 2;
        }
    }
    (name, i)
}

/// What sluice answers or rewrites itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intercept {
    /// `SELECT LAST_INSERT_ID()` / `@@identity` / `@@last_insert_id` (column name as written).
    LastInsertId(Vec<u8>),
    /// `SELECT ROW_COUNT()`.
    RowCount(Vec<u8>),
    /// `SELECT FOUND_ROWS()`.
    FoundRows(Vec<u8>),
    /// `SELECT CONNECTION_ID()`.
    ConnectionId(Vec<u8>),
    /// `KILL [CONNECTION | QUERY] id`.
    Kill { query_only: bool, id: u64 },
    /// A KILL form sluice does not support (`KILL USER`, `KILL QUERY ID`).
    KillUnsupported,
}

/// What a statement (or several, separated by `;`) may do to the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Assigns a user variable (`SET @a`, `@a :=`, `INTO @a`).
    pub user_var_write: bool,
    pub temp_created: Vec<Vec<u8>>,
    /// Tables dropped (temporary or not: `DROP TABLE` drops a temporary table of that name first).
    pub tables_dropped: Vec<Vec<u8>>,
    pub prepared: Vec<Vec<u8>>,
    pub deallocated: Vec<Vec<u8>>,
    pub locks_acquired: Vec<Vec<u8>>,
    pub locks_released: Vec<Vec<u8>>,
    pub release_all_locks: bool,
    pub lock_tables: bool,
    pub handler_open: bool,
    /// Mentions a `session_track_*` variable: sluice must restore its trackers afterwards.
    pub session_track: bool,
    /// Every statement is one whose "state changed" report sluice fully accounts for (settings,
    /// transaction control, and the tracked effects above).
    pub explains_state_change: bool,
    /// Uses SQL_CALC_FOUND_ROWS (FOUND_ROWS() must be read on the same backend).
    pub calc_found_rows: bool,
    /// Contains `CONNECTION_ID()` outside the intercepted form (the query is rewritten).
    pub connection_id_call: bool,
    /// Statements in the text.
    pub statements: usize,
    pub intercept: Option<Intercept>,
}

impl Effects {
    /// Would this leave state behind that pins the session to its backend?
    pub fn may_pin(&self) -> bool {
        self.user_var_write
            || !self.temp_created.is_empty()
            || !self.prepared.is_empty()
            || !self.locks_acquired.is_empty()
            || self.lock_tables
            || self.handler_open
    }
}

/// Analyses a COM_QUERY text.
pub fn analyze(sql: &[u8], modes: Modes) -> Effects {
    let toks = tokens(sql, modes);
    let mut e = Effects {
        explains_state_change: true,
        ..Effects::default()
    };
    let stmts: Vec<&[Tok<'_>]> = toks
        .split(|t| *t == Tok::Semicolon)
        .filter(|s| !s.is_empty())
        .collect();
    e.statements = stmts.len();
    if stmts.len() == 1 {
        e.intercept = intercept(stmts[0]);
    }
    for s in stmts {
        statement(s, &mut e);
    }
    e
}

fn statement(s: &[Tok<'_>], e: &mut Effects) {
    // Effects that can appear anywhere in a statement.
    for (i, t) in s.iter().enumerate() {
        match t {
            Tok::UserVar(_) if matches!(s.get(i + 1), Some(Tok::Assign)) => e.user_var_write = true,
            Tok::Word(w) if w.eq_ignore_ascii_case(b"INTO") => {
                if matches!(s.get(i + 1), Some(Tok::UserVar(_))) {
                    e.user_var_write = true;
                }
            }
            Tok::Word(w) if w.eq_ignore_ascii_case(b"SQL_CALC_FOUND_ROWS") => {
                e.calc_found_rows = true
            }
            Tok::Word(w) if w.eq_ignore_ascii_case(b"CONNECTION_ID") => e.connection_id_call = true,
            Tok::Word(w) if w.len() > 14 && w[..14].eq_ignore_ascii_case(b"session_track_") => {
                e.session_track = true
            }
            Tok::SysVar(w) if contains_ci(w, b"session_track_") => e.session_track = true,
            Tok::Word(w) if matches!(s.get(i + 1), Some(Tok::Punct(b'('))) => {
                let arg = name_of(s.get(i + 2));
                if w.eq_ignore_ascii_case(b"GET_LOCK") {
                    e.locks_acquired.push(arg.unwrap_or_default());
                } else if w.eq_ignore_ascii_case(b"RELEASE_LOCK") {
                    e.locks_released.push(arg.unwrap_or_default());
                } else if w.eq_ignore_ascii_case(b"RELEASE_ALL_LOCKS") {
                    e.release_all_locks = true;
                }
            }
            _ => {}
        }
    }
    let first = s.first();
    let kw = |i: usize, k: &str| is_kw(s.get(i), k);
    if is_kw(first, "SET") {
        // Any user variable assigned by SET (`SET @a = 1`, `SET @a := 1`, `SET x = 1, @a = 2`).
        for (i, t) in s.iter().enumerate() {
            if let Tok::UserVar(_) = t {
                let prev_is_separator = i == 1 || matches!(s.get(i - 1), Some(Tok::Punct(b',')));
                if prev_is_separator && matches!(s.get(i + 1), Some(Tok::Punct(b'=') | Tok::Assign))
                {
                    e.user_var_write = true;
                }
            }
        }
    } else if is_kw(first, "CREATE") {
        let mut i = 1;
        if kw(i, "OR") && kw(i + 1, "REPLACE") {
            i += 2;
        }
        if kw(i, "TEMPORARY") && kw(i + 1, "TABLE") {
            i += 2;
            if kw(i, "IF") && kw(i + 1, "NOT") && kw(i + 2, "EXISTS") {
                i += 3;
            }
            let (name, _) = table_name(s, i);
            e.temp_created.push(name.unwrap_or_default());
        } else {
            e.explains_state_change = false;
        }
    } else if is_kw(first, "DROP") {
        let mut i = 1;
        if kw(i, "TEMPORARY") {
            i += 1;
        }
        if kw(i, "TABLE") || kw(i, "TABLES") {
            i += 1;
            if kw(i, "IF") && kw(i + 1, "EXISTS") {
                i += 2;
            }
            loop {
                let (name, j) = table_name(s, i);
                match name {
                    Some(n) => e.tables_dropped.push(n),
                    None => break,
                }
                if matches!(s.get(j), Some(Tok::Punct(b','))) {
                    i = j + 1;
                } else {
                    break;
                }
            }
        } else if kw(i, "PREPARE") {
            if let Some(n) = name_of(s.get(i + 1)) {
                e.deallocated.push(n);
            }
        } else {
            e.explains_state_change = false;
        }
    } else if is_kw(first, "PREPARE") {
        if let Some(n) = name_of(s.get(1)) {
            e.prepared.push(n);
        }
    } else if is_kw(first, "DEALLOCATE") && kw(1, "PREPARE") {
        if let Some(n) = name_of(s.get(2)) {
            e.deallocated.push(n);
        }
    } else if is_kw(first, "LOCK") {
        e.lock_tables = true;
    } else if is_kw(first, "HANDLER") {
        e.handler_open = s.iter().any(|t| is_kw(Some(t), "OPEN"));
    } else if [
        "USE",
        "BEGIN",
        "START",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "UNLOCK",
        "XA",
        "EXECUTE",
        "DO",
        "SELECT",
        "WITH",
        "VALUES",
        "TABLE",
    ]
    .iter()
    .any(|k| is_kw(first, k))
    {
        // Settings, transaction control, and queries whose effects are collected above.
    } else {
        e.explains_state_change = false;
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Recognises `SELECT f()` [`[AS] alias`] for the functions sluice answers, and `KILL`.
fn intercept(s: &[Tok<'_>]) -> Option<Intercept> {
    if is_kw(s.first(), "KILL") {
        let mut i = 1;
        if is_kw(s.get(i), "HARD") || is_kw(s.get(i), "SOFT") {
            i += 1;
        }
        let mut query_only = false;
        if is_kw(s.get(i), "CONNECTION") {
            i += 1;
        } else if is_kw(s.get(i), "QUERY") {
            query_only = true;
            i += 1;
        }
        if is_kw(s.get(i), "ID") || is_kw(s.get(i), "USER") {
            return Some(Intercept::KillUnsupported);
        }
        return match (s.get(i), s.len() == i + 1) {
            (Some(Tok::Number(n)), true) => std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .map(|id| Intercept::Kill { query_only, id })
                .or(Some(Intercept::KillUnsupported)),
            _ => Some(Intercept::KillUnsupported),
        };
    }
    if !is_kw(s.first(), "SELECT") {
        return None;
    }
    let (expr_end, label): (usize, Vec<u8>) = match s.get(1)? {
        Tok::Word(f)
            if matches!(s.get(2), Some(Tok::Punct(b'(')))
                && matches!(s.get(3), Some(Tok::Punct(b')'))) =>
        {
            (4, [*f, b"()".as_slice()].concat())
        }
        Tok::SysVar(v) => (2, [b"@@".as_slice(), v].concat()),
        _ => return None,
    };
    let label = match (s.get(expr_end), s.get(expr_end + 1), s.len()) {
        (None, _, _) => label,
        (Some(t), Some(a), n) if is_kw(Some(t), "AS") && n == expr_end + 2 => name_of(Some(a))?,
        (Some(a @ (Tok::Word(_) | Tok::Ident(_) | Tok::Str(_))), None, _) => name_of(Some(a))?,
        _ => return None,
    };
    let f = match s.get(1)? {
        Tok::Word(f) => f.to_ascii_uppercase(),
        Tok::SysVar(v) => v.to_ascii_uppercase(),
        _ => return None,
    };
    match f.as_slice() {
        b"LAST_INSERT_ID" | b"IDENTITY" | b"SESSION.IDENTITY" | b"SESSION.LAST_INSERT_ID" => {
            Some(Intercept::LastInsertId(label))
        }
        b"ROW_COUNT" => Some(Intercept::RowCount(label)),
        b"FOUND_ROWS" => Some(Intercept::FoundRows(label)),
        b"CONNECTION_ID" => Some(Intercept::ConnectionId(label)),
        _ => None,
    }
}

/// Replaces every `CONNECTION_ID()` call (outside literals and comments) with `id`.
pub fn rewrite_connection_id(sql: &[u8], id: u32, modes: Modes) -> Vec<u8> {
    // Re-lex to find byte offsets: scan with the same rules as `tokens`, copying bytes through.
    let mut out = Vec::with_capacity(sql.len());
    let mut i = 0;
    let n = sql.len();
    let lit = id.to_string();
    while i < n {
        let c = sql[i];
        let start = i;
        match c {
            b'\'' | b'"' | b'`' => {
                let q = c;
                let no_bs =
                    q == b'`' || modes.no_backslash_escapes || (q == b'"' && modes.ansi_quotes);
                i = quoted(sql, i, q, no_bs).1;
            }
            b'#' => i = skip_line(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) =>
            {
                i = skip_line(sql, i)
            }
            b'/' if sql.get(i + 1) == Some(&b'*')
                && !matches!(sql.get(i + 2), Some(b'!' | b'M')) =>
            {
                i = find(sql, i + 2, b"*/").map(|e| e + 2).unwrap_or(n);
            }
            c if is_word(c) => {
                while i < n && is_word(sql[i]) {
                    i += 1;
                }
                if sql[start..i].eq_ignore_ascii_case(b"CONNECTION_ID") {
                    let mut j = i;
                    while j < n && sql[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if sql.get(j) == Some(&b'(') {
                        let mut k = j + 1;
                        while k < n && sql[k].is_ascii_whitespace() {
                            k += 1;
                        }
                        if sql.get(k) == Some(&b')') {
                            out.extend_from_slice(lit.as_bytes());
                            i = k + 1;
                            continue;
                        }
                    }
                }
            }
            _ => i += 1,
        }
        out.extend_from_slice(&sql[start..i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(sql: &str) -> Effects {
        analyze(sql.as_bytes(), Modes::default())
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
    fn temporary_tables_prepares_and_locks() {
        let e = a("CREATE TEMPORARY TABLE IF NOT EXISTS app.`Tmp` (x INT)");
        assert_eq!(e.temp_created, vec![b"tmp".to_vec()]);
        assert!(e.may_pin());
        let e = a("DROP TEMPORARY TABLE IF EXISTS tmp, other");
        assert_eq!(e.tables_dropped, vec![b"tmp".to_vec(), b"other".to_vec()]);
        assert!(!e.may_pin());
        let e = a("PREPARE s1 FROM 'SELECT 1'");
        assert_eq!(e.prepared, vec![b"s1".to_vec()]);
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
    }

    #[test]
    fn unexplained_statements_are_flagged() {
        for sql in [
            "CALL p()",
            "CREATE TABLE t (x INT)",
            "ALTER TABLE t ADD y INT",
            "INSERT INTO t VALUES (1)",
        ] {
            assert!(!a(sql).explains_state_change, "{sql}");
        }
    }

    #[test]
    fn intercepted_selects_and_their_labels() {
        assert_eq!(
            a("SELECT LAST_INSERT_ID()").intercept,
            Some(Intercept::LastInsertId(b"LAST_INSERT_ID()".to_vec()))
        );
        assert_eq!(
            a("select last_insert_id() as id").intercept,
            Some(Intercept::LastInsertId(b"id".to_vec()))
        );
        assert_eq!(
            a("SELECT @@identity").intercept,
            Some(Intercept::LastInsertId(b"@@identity".to_vec()))
        );
        assert_eq!(
            a("SELECT CONNECTION_ID()").intercept,
            Some(Intercept::ConnectionId(b"CONNECTION_ID()".to_vec()))
        );
        assert_eq!(
            a("SELECT FOUND_ROWS() `n`").intercept,
            Some(Intercept::FoundRows(b"n".to_vec()))
        );
        assert_eq!(
            a("SELECT ROW_COUNT();").intercept,
            Some(Intercept::RowCount(b"ROW_COUNT()".to_vec()))
        );
        assert_eq!(a("SELECT LAST_INSERT_ID(5)").intercept, None);
        assert_eq!(a("SELECT LAST_INSERT_ID(), 1").intercept, None);
        assert_eq!(a("SELECT 1; SELECT LAST_INSERT_ID()").intercept, None);
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
    }

    #[test]
    fn connection_id_rewrite_skips_literals_and_comments() {
        let out = rewrite_connection_id(b"SELECT CONNECTION_ID(), 'CONNECTION_ID()' /* CONNECTION_ID() */, connection_id ( ) + 1", 77, Modes::default());
        assert_eq!(
            out,
            b"SELECT 77, 'CONNECTION_ID()' /* CONNECTION_ID() */, 77 + 1".to_vec()
        );
        assert!(a("SELECT CONNECTION_ID() + 1").connection_id_call);
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
                let alphabet = b"'\"`@:;/*!-#\\ aSELECTKILL0123()";
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
}
