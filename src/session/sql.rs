//! A small SQL tokenizer, not a parser: it tells what a statement may leave behind in the session
//! that sluice cannot replay (user variables, temporary tables, SQL-level prepared statements,
//! locks, sequence values), which of the values the server derives from the session's own history
//! it reads (`LAST_INSERT_ID()`, `ROW_COUNT()`, `@@warning_count`, …, with their byte positions so
//! they can be rewritten), and recognises the few statements sluice answers itself
//! (`SELECT LAST_INSERT_ID()` and its kin, `KILL …`).
//!
//! The server's session trackers remain the source of truth for replayable state; this module
//! explains what they flag but cannot describe ("state changed"), and covers what MariaDB does not
//! report at all (a user variable assigned inside a `SELECT`, a named lock). It never explains a
//! change away by a statement's kind alone: a statement that may run code sluice cannot see
//! (`CALL`, `EXECUTE`, a stored function) explains nothing. It works on bytes (SQL text need not
//! be UTF-8), understands comments (including executable `/*! … */` comments, whose content counts
//! as code), string literals with both escaping styles, and quoted identifiers.

use std::cell::Cell;
use std::collections::HashSet;
use std::ops::Range;

pub mod info_schema;

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

/// A token and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed<'a> {
    pub tok: Tok<'a>,
    pub at: Range<usize>,
}

/// Parse-affecting modes of the session (from sql_mode / status flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct Modes {
    pub ansi_quotes: bool,
    pub no_backslash_escapes: bool,
}

/// Splits `sql` into tokens with their byte ranges. Never fails: unterminated literals end at the
/// end of input.
pub fn lex(sql: &[u8], modes: Modes) -> Vec<Lexed<'_>> {
    let mut out = Vec::new();
    lex_into(sql, modes, &mut out);
    out
}

/// [`lex`] into `out` (cleared first): no allocation when `out` has room (the statement
/// analysis lexes into a buffer it keeps, see [`with_scratch`]).
pub fn lex_into<'a>(sql: &'a [u8], modes: Modes, out: &mut Vec<Lexed<'a>>) {
    out.clear();
    // About one token per four bytes of SQL: one allocation for most statements.
    out.reserve(sql.len() / 4 + 4);
    let mut i = 0;
    let n = sql.len();
    let mut push = |tok, at: Range<usize>| out.push(Lexed { tok, at });
    while i < n {
        let c = sql[i];
        let start = i;
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
                push(Tok::Str(s), start..j);
                i = j;
            }
            b'"' if !modes.ansi_quotes => {
                let (s, j) = quoted(sql, i, b'"', modes.no_backslash_escapes);
                push(Tok::Str(s), start..j);
                i = j;
            }
            b'"' | b'`' => {
                let (s, j) = quoted(sql, i, c, true);
                push(Tok::Ident(s), start..j);
                i = j;
            }
            b'@' if sql.get(i + 1) == Some(&b'@') => {
                let mut j = i + 2;
                while j < n && (is_word(sql[j]) || sql[j] == b'.') {
                    j += 1;
                }
                push(Tok::SysVar(&sql[i + 2..j]), start..j);
                i = j;
            }
            b'@' => match sql.get(i + 1) {
                Some(&q @ (b'\'' | b'"' | b'`')) => {
                    let (s, j) = quoted(sql, i + 1, q, q == b'`' || modes.no_backslash_escapes);
                    push(Tok::UserVar(s), start..j);
                    i = j;
                }
                _ => {
                    let mut j = i + 1;
                    while j < n && (is_word(sql[j]) || sql[j] == b'.') {
                        j += 1;
                    }
                    push(Tok::UserVar(sql[i + 1..j].to_vec()), start..j);
                    i = j;
                }
            },
            b':' if sql.get(i + 1) == Some(&b'=') => {
                push(Tok::Assign, start..i + 2);
                i += 2;
            }
            b';' => {
                push(Tok::Semicolon, start..i + 1);
                i += 1;
            }
            b'0'..=b'9' => {
                let mut j = i;
                while j < n && (sql[j].is_ascii_alphanumeric() || sql[j] == b'.') {
                    j += 1;
                }
                push(Tok::Number(&sql[i..j]), start..j);
                i = j;
            }
            c if is_word(c) => {
                let mut j = i;
                while j < n && is_word(sql[j]) {
                    j += 1;
                }
                push(Tok::Word(&sql[i..j]), start..j);
                i = j;
            }
            c => {
                push(Tok::Punct(c), start..i + 1);
                i += 1;
            }
        }
    }
}

/// A statement's tokens, read in place in the lexed text (positions alongside) rather than
/// copied out of it: the analysis of a statement allocates nothing for its tokens.
#[derive(Debug, Clone, Copy)]
struct Toks<'s, 'a>(&'s [Lexed<'a>]);

impl<'s, 'a> Toks<'s, 'a> {
    fn get(self, i: usize) -> Option<&'s Tok<'a>> {
        self.0.get(i).map(|l| &l.tok)
    }

    fn first(self) -> Option<&'s Tok<'a>> {
        self.get(0)
    }

    fn len(self) -> usize {
        self.0.len()
    }

    fn iter(self) -> impl Iterator<Item = &'s Tok<'a>> {
        self.0.iter().map(|l| &l.tok)
    }

    /// The tokens from the `i`th on (none past the end).
    fn from(self, i: usize) -> Toks<'s, 'a> {
        Toks(self.0.get(i..).unwrap_or_default())
    }

    /// Where the `i`th token is in the text.
    fn at(self, i: usize) -> Range<usize> {
        self.0.get(i).map_or(0..0, |l| l.at.clone())
    }
}

/// Token vectors that grew past this many tokens are not kept for the next statement.
const SCRATCH_MAX: usize = 4096;

thread_local! {
    /// The token buffer the statement analysis lexes into, kept (empty) between statements:
    /// one per shard thread, so a query's analysis allocates nothing for its tokens.
    static SCRATCH: Cell<Vec<Lexed<'static>>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's token buffer (empty). A nested call (`EXECUTE IMMEDIATE
/// 'literal'` is analysed inside its statement's analysis) finds none and allocates its own.
fn with_scratch<'a, R>(f: impl FnOnce(&mut Vec<Lexed<'a>>) -> R) -> R {
    let mut toks = relifetime(SCRATCH.take());
    let r = f(&mut toks);
    if toks.capacity() <= SCRATCH_MAX {
        SCRATCH.set(relifetime(toks));
    }
    r
}

/// The same vector, emptied, for tokens of another text. No element is converted (there are
/// none left) and the in-place `collect` keeps the allocation, both element types having one
/// layout (`the_token_scratch_keeps_its_allocation` checks it): the alternative, a transmute,
/// would need `unsafe`.
// (`filter_map` rather than `filter`: the element type changes, in its lifetime.)
#[allow(clippy::unnecessary_filter_map)]
fn relifetime<'a, 'b>(mut v: Vec<Lexed<'a>>) -> Vec<Lexed<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// The tokens of `sql`, without positions.
pub fn tokens(sql: &[u8], modes: Modes) -> Vec<Tok<'_>> {
    lex(sql, modes).into_iter().map(|l| l.tok).collect()
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

/// An identifier's name as the server compares it: as written (unquoted words and quoted
/// identifiers alike), lowercased only where the server folds case.
fn ident_of(t: Option<&Tok<'_>>, fold: bool) -> Option<Vec<u8>> {
    let v = match t {
        Some(Tok::Word(w)) => w.to_vec(),
        Some(Tok::Ident(s)) => s.clone(),
        Some(Tok::Str(s)) => s.clone(),
        _ => return None,
    };
    Some(if fold { v.to_ascii_lowercase() } else { v })
}

/// Names the server always compares case-insensitively (prepared statements, locks are exact).
fn name_ci(t: Option<&Tok<'_>>) -> Option<Vec<u8>> {
    ident_of(t, true)
}

/// The values the server derives from a session's own history, as a statement can read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hist {
    /// `LAST_INSERT_ID()` without an argument.
    LastInsertId,
    /// `@@identity`, `@@last_insert_id` (the same value as `LAST_INSERT_ID()`, typed differently).
    Identity,
    /// `@@insert_id` (the one-shot id for the next insert).
    InsertId,
    RowCount,
    FoundRows,
    WarningCount,
    ErrorCount,
    LastGtid,
    /// `CONNECTION_ID()`: sluice's own id, the one the handshake gave.
    ConnectionId,
}

impl Hist {
    fn function(name: &[u8]) -> Option<Hist> {
        // (Compared in place: a lowercased copy would be an allocation per call in a query.)
        const FUNCTIONS: [(&str, Hist); 4] = [
            ("LAST_INSERT_ID", Hist::LastInsertId),
            ("ROW_COUNT", Hist::RowCount),
            ("FOUND_ROWS", Hist::FoundRows),
            ("CONNECTION_ID", Hist::ConnectionId),
        ];
        FUNCTIONS
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|&(_, h)| h)
    }

    /// `@@name` / `@@session.name` / `@@local.name`; `None` for anything else (including global).
    pub(crate) fn sysvar(v: &[u8]) -> Option<Hist> {
        const VARS: [(&str, Hist); 6] = [
            ("identity", Hist::Identity),
            ("last_insert_id", Hist::Identity),
            ("insert_id", Hist::InsertId),
            ("warning_count", Hist::WarningCount),
            ("error_count", Hist::ErrorCount),
            ("last_gtid", Hist::LastGtid),
        ];
        let name = strip_prefix_ci(v, b"session.")
            .or_else(|| strip_prefix_ci(v, b"local."))
            .unwrap_or(v);
        VARS.iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|&(_, h)| h)
    }
}

/// `v` without `prefix` (compared ignoring ASCII case), if it starts with it.
fn strip_prefix_ci<'v>(v: &'v [u8], prefix: &[u8]) -> Option<&'v [u8]> {
    v.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .and_then(|_| v.get(prefix.len()..))
}

/// Where a statement reads a history value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistRef {
    pub kind: Hist,
    /// The bytes of the reference in the text (`ROW_COUNT ( )`, `@@session.last_gtid`).
    pub at: Range<usize>,
    /// The reference is a whole item of a top-level select list without an alias: the column
    /// is named after its text, which a replacement must keep (with an alias).
    pub whole_item: bool,
    /// A later statement of a multi-statement text: what it reads, the statements before it
    /// in the same text set.
    pub later: bool,
}

/// One item of a statement sluice answers itself: the value and the column's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub kind: Hist,
    /// The column name: the alias, or the item exactly as written.
    pub label: Vec<u8>,
}

/// What sluice answers or handles itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intercept {
    /// `SELECT` of history values only (`SELECT LAST_INSERT_ID()`, `SELECT ROW_COUNT() AS n,
    /// @@warning_count`), answerable from what sluice tracks.
    Select(Vec<Answered>),
    /// `KILL [CONNECTION | QUERY] id`.
    Kill { query_only: bool, id: u64 },
    /// A KILL form sluice does not support (`KILL USER`, `KILL QUERY ID`).
    KillUnsupported,
    /// `SHOW [FULL] PROCESSLIST`: the server would list sluice's pooled connections, under ids
    /// no client of sluice has; sluice lists its own clients (see `frontend::processlist`).
    ShowProcesslist { full: bool },
}

/// A table name resolved against the current schema: `schema\0name`, case as the server compares.
pub type TableId = Vec<u8>;

/// What sluice needs to know about the server to read statements as it does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub modes: Modes,
    /// The session's current schema (unqualified table names resolve there).
    pub schema: Option<&'a [u8]>,
    /// `lower_case_table_names` is not 0: table and schema names compare case-insensitively.
    pub fold_table_names: bool,
    /// Stored functions the server has (lowercased names): a call to one may do what the server
    /// does not report (take a named lock). `None`: treat every unknown call as built in.
    pub stored_functions: Option<&'a HashSet<Vec<u8>>>,
}

/// What kind of statement a text is, for the command-effects decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// A query that returns a result set (`SELECT`, `SHOW`, `WITH`, `VALUES`, `TABLE`).
    Query,
    /// `SELECT … INTO` (an OK, no rows).
    SelectInto,
    /// `SHOW WARNINGS`, `SHOW ERRORS`, `SHOW COUNT(*) …`, `GET DIAGNOSTICS`: reads the diagnostics
    /// area without clearing it.
    Diagnostic,
    /// `SET` of variables.
    Set,
    /// Transaction control and `USE`.
    Control,
    /// `CALL`, `EXECUTE`, `EXECUTE IMMEDIATE`: runs code sluice does not see.
    Routine,
    /// Anything else (DML, DDL, …).
    #[default]
    Other,
    /// Several statements.
    Multi,
}

/// What a statement (or several, separated by `;`) may do to the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Assigns a user variable (`SET @a`, `@a :=`, `INTO @a`).
    pub user_var_write: bool,
    pub temp_created: Vec<TableId>,
    /// Tables dropped (temporary or not: `DROP TABLE` drops a temporary table of that name first).
    pub tables_dropped: Vec<TableId>,
    /// SQL-level PREPARE: the statement names (lowercased), with the text when it is a literal.
    pub prepared: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub deallocated: Vec<Vec<u8>>,
    /// SQL-level EXECUTE of these statement names.
    pub executed: Vec<Vec<u8>>,
    pub locks_acquired: Vec<Vec<u8>>,
    pub locks_released: Vec<Vec<u8>>,
    pub release_all_locks: bool,
    pub lock_tables: bool,
    /// Ends the session's table locks when it succeeds: `UNLOCK TABLES`, `BEGIN`, `START
    /// TRANSACTION`.
    pub unlocks_tables: bool,
    /// May end (or change) the session's table locks: those above, `LOCK TABLES` (which releases
    /// the earlier ones), `FLUSH`, `XA`, an SQL `EXECUTE`. Only after one of these does a
    /// transaction-state report without `L` mean the tables are unlocked (see `pins`).
    pub may_unlock_tables: bool,
    pub handler_open: bool,
    /// Uses a sequence (`NEXTVAL`, `SETVAL`, `NEXT VALUE FOR`): its last value stays on the backend.
    pub sequence: bool,
    /// Calls a stored function (which may take a named lock the server does not report).
    pub stored_function: bool,
    /// Runs code sluice does not see: `CALL`, `EXECUTE`, `EXECUTE IMMEDIATE` of a non-literal, a
    /// stored function.
    pub opaque: bool,
    /// `LAST_INSERT_ID(expr)`: sets the session's LAST_INSERT_ID.
    pub sets_last_insert_id: bool,
    /// Mentions a `session_track_*` variable: sluice must restore its trackers afterwards.
    pub session_track: bool,
    /// Every statement is one whose "state changed" report sluice fully accounts for (settings,
    /// transaction control, and the tracked effects above).
    pub explains_state_change: bool,
    /// Uses SQL_CALC_FOUND_ROWS.
    pub calc_found_rows: bool,
    /// A statement without a result set that selects rows at its top level (`INSERT … SELECT`,
    /// `CREATE TABLE … SELECT`): FOUND_ROWS() counts them, on the server only.
    pub selects_into: bool,
    /// Returns rows without setting FOUND_ROWS() (`SHOW CREATE TABLE`, `SHOW WARNINGS`,
    /// `EXPLAIN SELECT`, `VALUES`, …).
    pub keeps_found_rows: bool,
    /// Starts with `INSERT`, `REPLACE`, `UPDATE` or `DELETE`: a statement that names a table,
    /// for which the server empties the diagnostics area before it runs (MariaDB's
    /// `mysql_execute_command` clears it for every statement with tables but the diagnostics
    /// ones). Meaningful for one statement (`Kind::Other`), not several.
    pub clears_diagnostics: bool,
    /// Calls an aggregate function somewhere (`COUNT(`, `MAX(`, …): the statement may be
    /// implicitly grouped, and then whether it sets FOUND_ROWS() is the optimizer's to say.
    pub aggregate: bool,
    /// Variables named in `SET STATEMENT … FOR`: the server reports their temporary values.
    pub set_statement_vars: Vec<Vec<u8>>,
    /// `KILL` inside several statements or inside dynamic SQL: it would reach backend threads.
    pub kill_nested: bool,
    /// Creates, changes or drops a stored function (sluice's list of them is refreshed).
    pub routine_ddl: bool,
    /// SAVEPOINT: with autocommit off and no transaction reported, the savepoint still lives in
    /// the session's implicit transaction on its backend.
    pub savepoint: bool,
    /// COMMIT, ROLLBACK (not ROLLBACK TO), BEGIN, START TRANSACTION: savepoints end.
    pub ends_transaction: bool,
    /// Reads of history values, in text order.
    pub history: Vec<HistRef>,
    /// The statement kind (of the only statement; `Multi` for several).
    pub kind: Kind,
    /// Statements in the text.
    pub statements: usize,
    pub intercept: Option<Intercept>,
}

impl Effects {
    /// Would this leave state behind that pins the session to its backend?
    pub fn may_pin(&self) -> bool {
        self.user_var_write || self.pins_beyond_user_vars()
    }

    /// Pins for a reason other than a user variable written.
    pub fn pins_beyond_user_vars(&self) -> bool {
        !self.temp_created.is_empty()
            || !self.prepared.is_empty()
            || !self.locks_acquired.is_empty()
            || self.lock_tables
            || self.handler_open
            || self.sequence
            || self.stored_function
    }

    /// Reads `kind` somewhere.
    pub fn reads(&self, kind: Hist) -> bool {
        self.history.iter().any(|h| h.kind == kind)
    }

    /// Reads a history value the server keeps and no SET restores (everything but
    /// LAST_INSERT_ID and CONNECTION_ID), or the diagnostics area.
    pub fn reads_backend_history(&self) -> bool {
        self.kind == Kind::Diagnostic
            || self.history.iter().any(|h| {
                !matches!(
                    h.kind,
                    Hist::LastInsertId | Hist::Identity | Hist::ConnectionId
                )
            })
    }
}

/// Analyses a COM_QUERY text with default server knowledge.
pub fn analyze(sql: &[u8], modes: Modes) -> Effects {
    analyze_with(
        sql,
        &Context {
            modes,
            ..Context::default()
        },
    )
}

/// Analyses a COM_QUERY text (or a prepared statement's).
pub fn analyze_with(sql: &[u8], ctx: &Context<'_>) -> Effects {
    with_scratch(|toks| {
        lex_into(sql, ctx.modes, toks);
        analyze_lexed(sql, toks, ctx)
    })
}

/// [`analyze_with`] of a text lexed into `toks`.
fn analyze_lexed(sql: &[u8], toks: &[Lexed<'_>], ctx: &Context<'_>) -> Effects {
    let mut e = Effects {
        explains_state_change: true,
        ..Effects::default()
    };
    // The statements, between semicolons. Nearly every text is one statement (perhaps with a
    // trailing `;`): that one is not collected into a vector of its own.
    let parts = || {
        toks.split(|t| t.tok == Tok::Semicolon)
            .filter(|s| !s.is_empty())
    };
    let mut parts_seen = parts();
    let only = match (parts_seen.next(), parts_seen.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    };
    let mut many: Vec<&[Lexed<'_>]> = Vec::new();
    let mut stmts: &[&[Lexed<'_>]] = match &only {
        Some(one) => std::slice::from_ref(one),
        None => {
            many.extend(parts());
            &many
        }
    };
    let whole = [toks];
    // A stored program's body (`CREATE PROCEDURE … BEGIN …; …; END`, `BEGIN NOT ATOMIC …
    // END`) holds semicolons of its own: the text is one statement.
    if let Some(first) = stmts.first().filter(|_| stmts.len() > 1) {
        let head = Toks(&first[..first.len().min(24)]);
        if matches!(
            stored_program(head),
            Some(Program::Routine | Program::Compound)
        ) {
            stmts = &whole;
        }
    }
    e.statements = stmts.len();
    if stmts.len() == 1 {
        e.intercept = intercept(stmts[0], sql);
    }
    for (n, s) in stmts.iter().enumerate() {
        let s = Toks(s);
        let refs = e.history.len();
        let kind = statement(s, ctx, &mut e);
        for r in &mut e.history[refs..] {
            r.later = n > 0;
        }
        e.kind = if stmts.len() == 1 { kind } else { Kind::Multi };
        if stmts.len() > 1 && is_kw(s.first(), "KILL") {
            e.kill_nested = true;
        }
    }
    // An executable comment is code only on a server at least as new as its version, which the
    // tokenizer does not ask (`/*!99999 INSERT … */ SELECT 1` runs a SELECT without tables): a
    // text with one does not vouch for an emptied diagnostics area.
    if e.clears_diagnostics && has_executable_comment(sql) {
        e.clears_diagnostics = false;
    }
    e
}

/// Does the text hold an executable comment (`/*!…*/`, `/*M!…*/`)? The tokenizer reads its
/// content as code whatever its version, which the server may not run.
pub fn has_executable_comment(sql: &[u8]) -> bool {
    find(sql, 0, b"/*!").is_some() || find(sql, 0, b"/*M!").is_some()
}

/// Words that may precede `(` without being a function call.
const NOT_CALLS: &[&str] = &[
    "AND",
    "AS",
    "BY",
    "FROM",
    "IF",
    "IN",
    "INTO",
    "JOIN",
    "KEY",
    "NOT",
    "ON",
    "OR",
    "OVER",
    "SELECT",
    "SET",
    "TABLE",
    "THEN",
    "UNION",
    "USING",
    "VALUES",
    "WHEN",
    "WHERE",
    "WITH",
    "XOR",
    "EXISTS",
    "ALL",
    "ANY",
    "SOME",
    "ELSE",
    "RETURN",
    "TO",
    "IS",
    "LIKE",
    "REGEXP",
    "RLIKE",
    "BETWEEN",
    "CASE",
    "DISTINCT",
    "INDEX",
    "PRIMARY",
    "UNIQUE",
    "CHECK",
    "CONSTRAINT",
    "REFERENCES",
    "PARTITION",
    "PARTITIONS",
    "COLUMNS",
    "RANGE",
    "LIST",
    "CHARACTER",
    "ROW",
    "LIMIT",
    "HAVING",
    "ORDER",
    "GROUP",
    "WINDOW",
    "RETURNS",
    "INSERT",
    "REPLACE",
    "DEFAULT",
];

/// Analyses one statement; returns its kind.
fn statement(s: Toks<'_, '_>, ctx: &Context<'_>, e: &mut Effects) -> Kind {
    // SET STATEMENT a = 1, b = 2 FOR <statement>: the assignments last one statement, and the
    // server reports their temporary values as if they were session changes.
    let mut body = 0;
    if is_kw(s.first(), "SET") && is_kw(s.get(1), "STATEMENT") {
        let mut i = 2;
        while i < s.len() && !is_kw(s.get(i), "FOR") {
            if matches!(s.get(i + 1), Some(Tok::Punct(b'=') | Tok::Assign)) {
                if let Some(n) = name_ci(s.get(i)) {
                    e.set_statement_vars.push(n);
                }
            }
            i += 1;
        }
        body = (i + 1).min(s.len());
    }
    let refs = e.history.len();
    scan(s, body, ctx, e);
    // The body runs later (or, for a compound block, statement after statement on the
    // server): its history reads are not this statement's, and nothing may rewrite them.
    if let Some(p) = stored_program(s.from(body)) {
        e.history.truncate(refs);
        if p == Program::Compound {
            e.opaque = true;
        }
    }
    e.keeps_found_rows |= keeps_found_rows(s.from(body));
    classify(s.from(body), ctx, e)
}

/// Statements that return rows without setting FOUND_ROWS(): the SHOW forms MariaDB answers
/// without a query on its information schema, EXPLAIN of a statement, table maintenance,
/// `VALUES`, `TABLE t` and `HELP` (MariaDB 10.11, checked one by one). Other SHOW forms, DESCRIBE
/// of a table and every SELECT set it to their rows.
fn keeps_found_rows(s: Toks<'_, '_>) -> bool {
    let first = s.first();
    let second = s.get(1);
    if [
        "VALUES", "TABLE", "HELP", "CHECK", "CHECKSUM", "OPTIMIZE", "REPAIR", "ANALYZE",
    ]
    .iter()
    .any(|k| is_kw(first, k))
    {
        return true;
    }
    if ["EXPLAIN", "DESCRIBE", "DESC"]
        .iter()
        .any(|k| is_kw(first, k))
    {
        // Of a statement (not of a table, which reads the information schema).
        return [
            "SELECT",
            "WITH",
            "INSERT",
            "REPLACE",
            "UPDATE",
            "DELETE",
            "EXTENDED",
            "PARTITIONS",
            "FORMAT",
            "ANALYZE",
        ]
        .iter()
        .any(|k| is_kw(second, k))
            || matches!(second, Some(Tok::Punct(b'(')));
    }
    if !is_kw(first, "SHOW") {
        return false;
    }
    // SHOW FULL PROCESSLIST, SHOW GLOBAL STATUS: the word after the modifier decides.
    let word = if ["FULL", "GLOBAL", "SESSION", "LOCAL", "ALL"]
        .iter()
        .any(|k| is_kw(second, k))
    {
        s.get(2)
    } else {
        second
    };
    [
        "CREATE",
        "WARNINGS",
        "ERRORS",
        "PROCESSLIST",
        "GRANTS",
        "MASTER",
        "BINLOG",
        "BINARY",
        "SLAVE",
        "SLAVES",
        "REPLICA",
        "REPLICAS",
        "RELAYLOG",
        "PRIVILEGES",
        "ENGINE",
        "PROFILE",
        "PROFILES",
        "AUTHORS",
        "CONTRIBUTORS",
        "EXPLAIN",
        "ANALYZE",
    ]
    .iter()
    .any(|k| is_kw(word, k))
}

/// Statements that define or run stored code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    /// CREATE / ALTER VIEW: a body evaluated when the view is read.
    View,
    /// CREATE / ALTER PROCEDURE, FUNCTION, TRIGGER, EVENT, PACKAGE: a body run later.
    Routine,
    /// A compound statement run at once (`BEGIN NOT ATOMIC … END`, a top-level IF, LOOP, …).
    Compound,
}

fn stored_program(s: Toks<'_, '_>) -> Option<Program> {
    let mut i = 0;
    // A label: `l1: BEGIN NOT ATOMIC`.
    if matches!(s.get(1), Some(Tok::Punct(b':'))) {
        i = 2;
    }
    let kw = |i: usize, k: &str| is_kw(s.get(i), k);
    if kw(i, "BEGIN") && kw(i + 1, "NOT") && kw(i + 2, "ATOMIC") {
        return Some(Program::Compound);
    }
    if ["IF", "CASE", "LOOP", "WHILE", "REPEAT", "FOR"]
        .iter()
        .any(|k| kw(i, k))
    {
        return Some(Program::Compound);
    }
    if !kw(0, "CREATE") && !kw(0, "ALTER") {
        return None;
    }
    // CREATE [OR REPLACE] [DEFINER = …] [ALGORITHM = …] [SQL SECURITY …] [AGGREGATE] <kind>.
    for t in s.iter().skip(1).take(20) {
        for (k, p) in [
            ("VIEW", Program::View),
            ("PROCEDURE", Program::Routine),
            ("FUNCTION", Program::Routine),
            ("TRIGGER", Program::Routine),
            ("EVENT", Program::Routine),
            ("PACKAGE", Program::Routine),
        ] {
            if is_kw(Some(t), k) {
                return Some(p);
            }
        }
        if [
            "TABLE", "INDEX", "DATABASE", "SCHEMA", "USER", "ROLE", "SEQUENCE", "SERVER", "AS",
            "SELECT",
        ]
        .iter()
        .any(|k| is_kw(Some(t), k))
        {
            return None;
        }
    }
    None
}

/// MariaDB's aggregate functions (10.11): a SELECT calling one without GROUP BY is implicitly
/// grouped. Window uses (`COUNT(*) OVER (…)`) and a user's function of the same name count too:
/// taking one for an aggregate only costs a read of FOUND_ROWS() (see `effects::after`).
const AGGREGATES: [&str; 18] = [
    "COUNT",
    "SUM",
    "MIN",
    "MAX",
    "AVG",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "GROUP_CONCAT",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
];

/// Effects that can appear anywhere in a statement (`body`: where the statement proper starts).
fn scan(s: Toks<'_, '_>, body: usize, ctx: &Context<'_>, e: &mut Effects) {
    let select_list = select_list_range(s.from(body)).map(|r| r.start + body..r.end + body);
    let mut depth = 0usize;
    for (i, t) in s.iter().enumerate() {
        let next = s.get(i + 1);
        let after_dot = i > 0 && matches!(s.get(i - 1), Some(Tok::Punct(b'.')));
        let in_list = select_list.as_ref().is_some_and(|r| r.contains(&i));
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            Tok::UserVar(_) if matches!(next, Some(Tok::Assign)) => e.user_var_write = true,
            // CALL p(@out): an OUT or INOUT parameter assigns the variable.
            Tok::UserVar(_) if is_kw(s.get(body), "CALL") => e.user_var_write = true,
            Tok::Word(w) if w.eq_ignore_ascii_case(b"INTO") => {
                if matches!(next, Some(Tok::UserVar(_))) {
                    e.user_var_write = true;
                }
            }
            Tok::Word(w) if w.eq_ignore_ascii_case(b"SELECT") && depth == 0 && i > body => {
                e.selects_into = true
            }
            Tok::Word(w) if w.eq_ignore_ascii_case(b"SQL_CALC_FOUND_ROWS") => {
                e.calc_found_rows = true
            }
            Tok::Word(w) if w.len() > 14 && w[..14].eq_ignore_ascii_case(b"session_track_") => {
                e.session_track = true
            }
            // Listings of the session's variables show the trackers too (by pattern, or all).
            Tok::Word(w)
                if w.eq_ignore_ascii_case(b"SESSION_VARIABLES")
                    || w.eq_ignore_ascii_case(b"SYSTEM_VARIABLES")
                    || (w.eq_ignore_ascii_case(b"VARIABLES") && is_kw(s.first(), "SHOW")) =>
            {
                e.session_track = true
            }
            Tok::SysVar(w) => {
                if contains_ci(w, b"session_track_") {
                    e.session_track = true;
                }
                // `SET @@x = …` assigns x; everywhere else `@@x` reads it.
                // The comma form (`SET a = 1, @@b = 2`) only inside a SET's assignment list:
                // in `SELECT 1, @@b = 2` the comparison reads b.
                let in_set_list = depth == 0
                    && is_kw(s.first(), "SET")
                    && (i < body || is_kw(s.get(body), "SET"));
                let target = matches!(next, Some(Tok::Punct(b'=') | Tok::Assign))
                    && i > 0
                    && ((in_set_list && matches!(s.get(i - 1), Some(Tok::Punct(b','))))
                        || ["SET", "SESSION", "LOCAL", "GLOBAL"]
                            .iter()
                            .any(|k| is_kw(s.get(i - 1), k)));
                if let Some(kind) = Hist::sysvar(w).filter(|_| !target) {
                    e.history.push(HistRef {
                        kind,
                        at: s.at(i),
                        whole_item: in_list && whole_item(s, i, i, depth),
                        later: false,
                    });
                }
            }
            // NEXT VALUE FOR s / PREVIOUS VALUE FOR s (the latter only reads, but what it reads
            // is the session's own last value, which lives on its backend).
            Tok::Word(w)
                if (w.eq_ignore_ascii_case(b"NEXT") || w.eq_ignore_ascii_case(b"PREVIOUS"))
                    && is_kw(next, "VALUE")
                    && is_kw(s.get(i + 2), "FOR") =>
            {
                e.sequence = true
            }
            Tok::Word(w) if matches!(next, Some(Tok::Punct(b'('))) && !after_dot => {
                // (Names compared in place: an uppercased copy would be an allocation per
                // call in the text.)
                let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
                let arg_empty = matches!(s.get(i + 2), Some(Tok::Punct(b')')));
                if is("GET_LOCK") {
                    e.locks_acquired
                        .push(ident_of(s.get(i + 2), false).unwrap_or_default());
                } else if is("RELEASE_LOCK") {
                    e.locks_released
                        .push(ident_of(s.get(i + 2), false).unwrap_or_default());
                } else if is("RELEASE_ALL_LOCKS") {
                    e.release_all_locks = true;
                } else if is("NEXTVAL") || is("SETVAL") || is("LASTVAL") {
                    e.sequence = true;
                } else if is("LAST_INSERT_ID") && !arg_empty {
                    e.sets_last_insert_id = true;
                } else if AGGREGATES.iter().any(|a| is(a)) {
                    e.aggregate = true;
                }
                if let Some(kind) = Hist::function(w).filter(|_| arg_empty) {
                    let end = s.at(i + 2).end;
                    e.history.push(HistRef {
                        kind,
                        at: s.at(i).start..end,
                        whole_item: in_list && whole_item(s, i, i + 2, depth),
                        later: false,
                    });
                }
                if is_call_site(s, i) && is_stored(ctx, w) {
                    e.stored_function = true;
                    e.opaque = true;
                }
            }
            // `db.f(…)`: a call of a stored function in another schema.
            Tok::Word(_) | Tok::Ident(_)
                if matches!(next, Some(Tok::Punct(b'.')))
                    && matches!(s.get(i + 3), Some(Tok::Punct(b'(')))
                    && !after_dot
                    && is_call_site(s, i) =>
            {
                if let Some(Tok::Word(f)) = s.get(i + 2) {
                    if is_stored(ctx, f) {
                        e.stored_function = true;
                        e.opaque = true;
                    }
                }
            }
            _ => {}
        }
    }
    // A stored function may do what the server does not report; nothing explains it away.
    if e.stored_function {
        e.explains_state_change = false;
    }
}

/// What kind of statement `s` is, and the effects its kind implies; returns the kind.
fn classify(s: Toks<'_, '_>, ctx: &Context<'_>, e: &mut Effects) -> Kind {
    let fold = ctx.fold_table_names;
    let first = s.first();
    if stored_program(s) == Some(Program::Compound) {
        e.explains_state_change = false;
        return Kind::Other;
    }
    let kw = |i: usize, k: &str| is_kw(s.get(i), k);
    if ["INSERT", "REPLACE", "UPDATE", "DELETE"]
        .iter()
        .any(|k| is_kw(first, k))
    {
        e.clears_diagnostics = true;
    }
    if is_kw(first, "UNLOCK")
        || is_kw(first, "BEGIN")
        || (is_kw(first, "START") && kw(1, "TRANSACTION"))
    {
        e.unlocks_tables = true;
    }
    if e.unlocks_tables
        || ["LOCK", "FLUSH", "XA", "EXECUTE"]
            .iter()
            .any(|k| is_kw(first, k))
    {
        e.may_unlock_tables = true;
    }
    if ["CREATE", "DROP", "ALTER"].iter().any(|k| is_kw(first, k))
        && s.iter().take(8).any(|t| is_kw(Some(t), "FUNCTION"))
    {
        e.routine_ddl = true;
    }
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
        return Kind::Set;
    }
    if is_kw(first, "CREATE") {
        let mut i = 1;
        if kw(i, "OR") && kw(i + 1, "REPLACE") {
            i += 2;
        }
        if kw(i, "TEMPORARY") && kw(i + 1, "TABLE") {
            i += 2;
            if kw(i, "IF") && kw(i + 1, "NOT") && kw(i + 2, "EXISTS") {
                i += 3;
            }
            let (id, _) = table_id(s, i, ctx.schema, fold);
            e.temp_created.push(id.unwrap_or_default());
        } else {
            e.explains_state_change = false;
        }
        return Kind::Other;
    }
    if is_kw(first, "DROP") {
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
                let (id, j) = table_id(s, i, ctx.schema, fold);
                match id {
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
            if let Some(n) = name_ci(s.get(i + 1)) {
                e.deallocated.push(n);
            }
        } else {
            e.explains_state_change = false;
        }
        return Kind::Other;
    }
    if is_kw(first, "PREPARE") {
        if let Some(n) = name_ci(s.get(1)) {
            let text = match (kw(2, "FROM"), s.get(3)) {
                (true, Some(Tok::Str(t))) => Some(t.clone()),
                _ => None,
            };
            if let Some(t) = &text {
                // The text is known: what it would do when executed is analysed at EXECUTE.
                if starts_with_kill(t, ctx.modes) {
                    e.kill_nested = true;
                }
            }
            e.prepared.push((n, text));
        }
        return Kind::Other;
    }
    if is_kw(first, "DEALLOCATE") && kw(1, "PREPARE") {
        if let Some(n) = name_ci(s.get(2)) {
            e.deallocated.push(n);
        }
        return Kind::Other;
    }
    if is_kw(first, "EXECUTE") {
        if kw(1, "IMMEDIATE") {
            match s.get(2) {
                Some(Tok::Str(t)) if s.len() == 3 => {
                    // A literal: analyse it as if sent directly.
                    let inner = analyze_with(t, ctx);
                    if inner.kill_nested || starts_with_kill(t, ctx.modes) {
                        e.kill_nested = true;
                    }
                    merge(e, inner);
                }
                _ => {
                    e.opaque = true;
                    e.explains_state_change = false;
                }
            }
        } else if let Some(n) = name_ci(s.get(1)) {
            e.executed.push(n);
            e.opaque = true;
            e.explains_state_change = false;
        }
        return Kind::Routine;
    }
    if is_kw(first, "CALL") {
        e.opaque = true;
        e.explains_state_change = false;
        return Kind::Routine;
    }
    if is_kw(first, "LOCK") {
        e.lock_tables = true;
        return Kind::Other;
    }
    if is_kw(first, "HANDLER") {
        e.handler_open = s.iter().any(|t| is_kw(Some(t), "OPEN"));
        return Kind::Other;
    }
    if is_diagnostic(s) {
        // GET DIAGNOSTICS @m = MESSAGE_TEXT writes user variables (the server does not report it).
        if is_kw(first, "GET") && s.iter().any(|t| matches!(t, Tok::UserVar(_))) {
            e.user_var_write = true;
        }
        return Kind::Diagnostic;
    }
    if is_kw(first, "LOAD") && s.iter().any(|t| matches!(t, Tok::UserVar(_))) {
        // LOAD DATA … (@a, b) SET c = @a assigns @a.
        e.user_var_write = true;
    }
    if [
        "SELECT", "WITH", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC", "EXPLAIN",
    ]
    .iter()
    .any(|k| is_kw(first, k))
    {
        let into = s.iter().enumerate().any(|(i, t)| {
            is_kw(Some(t), "INTO")
                && !matches!(s.get(i + 1), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(b"OUTFILE") || w.eq_ignore_ascii_case(b"DUMPFILE"))
        });
        // Rows selected into variables or a file: FOUND_ROWS() counts them, on the server only.
        e.selects_into |= into;
        return if into && is_kw(first, "SELECT") {
            Kind::SelectInto
        } else {
            Kind::Query
        };
    }
    if kw(0, "SAVEPOINT") {
        e.savepoint = true;
    }
    let rollback_to = kw(0, "ROLLBACK") && s.iter().take(4).any(|t| is_kw(Some(t), "TO"));
    if kw(0, "COMMIT")
        || (kw(0, "ROLLBACK") && !rollback_to)
        || kw(0, "BEGIN")
        || (kw(0, "START") && kw(1, "TRANSACTION"))
    {
        e.ends_transaction = true;
    }
    if [
        "USE",
        "BEGIN",
        "START",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "UNLOCK",
        "XA",
    ]
    .iter()
    .any(|k| is_kw(first, k))
    {
        return Kind::Control;
    }
    if is_kw(first, "DO") {
        return Kind::Other;
    }
    e.explains_state_change = false;
    Kind::Other
}

/// Words after which `name (` is a table or column list, not a call.
const TABLE_CONTEXT: &[&str] = &[
    "INTO",
    "TABLE",
    "FROM",
    "JOIN",
    "UPDATE",
    "REPLACE",
    "REFERENCES",
    "ON",
    "TABLES",
    "INSERT",
    "EXISTS",
    "STRAIGHT_JOIN",
    "IGNORE",
    "USING",
    "DESCRIBE",
    "DESC",
    "TRIGGER",
    "PROCEDURE",
    "FUNCTION",
    "VIEW",
    "SEQUENCE",
    "INDEX",
    "KEY",
];

/// Is the word at `i` (followed by `(` or `.name(`) in a position where it would be a call?
fn is_call_site(s: Toks<'_, '_>, i: usize) -> bool {
    let w = match s.get(i) {
        Some(Tok::Word(w)) => *w,
        Some(Tok::Ident(_)) => b"",
        _ => return false,
    };
    if NOT_CALLS
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
    {
        return false;
    }
    let prev = i.checked_sub(1).and_then(|p| s.get(p));
    !TABLE_CONTEXT.iter().any(|k| is_kw(prev, k))
}

/// Is `name` one of the server's stored functions? With no list, nothing is.
fn is_stored(ctx: &Context<'_>, name: &[u8]) -> bool {
    let Some(f) = ctx.stored_functions.filter(|f| !f.is_empty()) else {
        return false;
    };
    // Lowercased on the stack (an allocation per call in a query otherwise); longer names, which
    // the server does not have (64 characters at most), are copied.
    let mut buf = [0u8; 64];
    match buf.get_mut(..name.len()) {
        Some(lower) => {
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            f.contains(&*lower)
        }
        None => f.contains(&name.to_ascii_lowercase()),
    }
}

/// Folds an analysed inner text (EXECUTE IMMEDIATE 'literal') into the outer statement's effects.
fn merge(e: &mut Effects, inner: Effects) {
    e.user_var_write |= inner.user_var_write;
    e.temp_created.extend(inner.temp_created);
    e.tables_dropped.extend(inner.tables_dropped);
    e.prepared.extend(inner.prepared);
    e.deallocated.extend(inner.deallocated);
    e.executed.extend(inner.executed);
    e.locks_acquired.extend(inner.locks_acquired);
    e.locks_released.extend(inner.locks_released);
    e.release_all_locks |= inner.release_all_locks;
    e.lock_tables |= inner.lock_tables;
    e.unlocks_tables |= inner.unlocks_tables;
    e.may_unlock_tables |= inner.may_unlock_tables;
    e.handler_open |= inner.handler_open;
    e.sequence |= inner.sequence;
    e.stored_function |= inner.stored_function;
    e.opaque |= inner.opaque;
    e.sets_last_insert_id |= inner.sets_last_insert_id;
    e.session_track |= inner.session_track;
    e.explains_state_change &= inner.explains_state_change;
    e.calc_found_rows |= inner.calc_found_rows;
    e.set_statement_vars.extend(inner.set_statement_vars);
    e.routine_ddl |= inner.routine_ddl;
    // History reads inside a literal are not rewritable in place (an empty position).
    e.history.extend(inner.history.into_iter().map(|mut h| {
        h.at = 0..0;
        h
    }));
}

fn starts_with_kill(text: &[u8], modes: Modes) -> bool {
    let t = tokens(text, modes);
    t.split(|t| *t == Tok::Semicolon)
        .any(|s| is_kw(s.first(), "KILL"))
}

/// Words that may stand between `SELECT` and the first item of its list.
const SELECT_MODIFIERS: &[&str] = &[
    "SELECT",
    "ALL",
    "DISTINCT",
    "DISTINCTROW",
    "HIGH_PRIORITY",
    "STRAIGHT_JOIN",
    "SQL_SMALL_RESULT",
    "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT",
    "SQL_CACHE",
    "SQL_NO_CACHE",
    "SQL_CALC_FOUND_ROWS",
];

/// Is `s[first..=last]` (at paren depth `depth`, in a select list) a whole item without alias:
/// after `SELECT` (and its modifiers) or a comma, and before a comma or the list's end?
fn whole_item(s: Toks<'_, '_>, first: usize, last: usize, depth: usize) -> bool {
    if depth != 0 {
        return false;
    }
    let before = first
        .checked_sub(1)
        .and_then(|p| s.get(p))
        .is_some_and(|t| {
            matches!(t, Tok::Punct(b',')) || SELECT_MODIFIERS.iter().any(|k| is_kw(Some(t), k))
        });
    let after = match s.get(last + 1) {
        None | Some(Tok::Punct(b',')) => true,
        Some(t @ Tok::Word(_)) => SELECT_LIST_ENDS.iter().any(|k| is_kw(Some(t), k)),
        _ => false,
    };
    before && after
}

/// `SHOW WARNINGS`, `SHOW ERRORS`, `SHOW COUNT(*) WARNINGS|ERRORS`, `GET [CURRENT|STACKED]
/// DIAGNOSTICS`.
fn is_diagnostic(s: Toks<'_, '_>) -> bool {
    let kw = |i: usize, k: &str| is_kw(s.get(i), k);
    if kw(0, "SHOW") {
        return kw(1, "WARNINGS")
            || kw(1, "ERRORS")
            || (kw(1, "COUNT") && (kw(5, "WARNINGS") || kw(5, "ERRORS")));
    }
    kw(0, "GET") && (kw(1, "DIAGNOSTICS") || kw(2, "DIAGNOSTICS"))
}

/// Words that end a `SELECT`'s top-level select list.
const SELECT_LIST_ENDS: [&str; 13] = [
    "FROM",
    "INTO",
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "FOR",
    "LOCK",
    "WINDOW",
];

/// The token range of a `SELECT`'s top-level select list (after `SELECT` and its modifiers, up to
/// `FROM`/`INTO`/`WHERE`/… at depth 0), if the statement is a SELECT.
fn select_list_range(s: Toks<'_, '_>) -> Option<Range<usize>> {
    if !is_kw(s.first(), "SELECT") {
        return None;
    }
    let mut depth = 0usize;
    let start = 1;
    for (i, t) in s.iter().enumerate().skip(1) {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 => {
                let ends = SELECT_LIST_ENDS
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k.as_bytes()));
                if ends {
                    return Some(start..i);
                }
            }
            _ => {}
        }
    }
    Some(start..s.len())
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A table name possibly qualified as `db.t`, resolved against `schema`.
fn table_id(
    toks: Toks<'_, '_>,
    i: usize,
    schema: Option<&[u8]>,
    fold: bool,
) -> (Option<TableId>, usize) {
    let Some(first) = ident_of(toks.get(i), fold) else {
        return (None, i);
    };
    if matches!(toks.get(i + 1), Some(Tok::Punct(b'.'))) {
        if let Some(name) = ident_of(toks.get(i + 2), fold) {
            return (Some(join_id(&first, &name)), i + 3);
        }
    }
    let db = schema
        .map(|s| {
            if fold {
                s.to_ascii_lowercase()
            } else {
                s.to_vec()
            }
        })
        .unwrap_or_default();
    (Some(join_id(&db, &first)), i + 1)
}

fn join_id(db: &[u8], name: &[u8]) -> TableId {
    let mut v = Vec::with_capacity(db.len() + name.len() + 1);
    v.extend_from_slice(db);
    v.push(0);
    v.extend_from_slice(name);
    v
}

/// Recognises `SELECT item [[AS] alias], …` where every item is a history value sluice can
/// answer, `KILL` and `SHOW [FULL] PROCESSLIST`.
fn intercept(s: &[Lexed<'_>], sql: &[u8]) -> Option<Intercept> {
    let t = Toks(s);
    let kw = |i: usize, k: &str| is_kw(t.get(i), k);
    if kw(0, "SHOW") {
        let full = kw(1, "FULL");
        let at = 1 + usize::from(full);
        return (kw(at, "PROCESSLIST") && t.len() == at + 1)
            .then_some(Intercept::ShowProcesslist { full });
    }
    if kw(0, "KILL") {
        let mut i = 1;
        if kw(i, "HARD") || kw(i, "SOFT") {
            i += 1;
        }
        let mut query_only = false;
        if kw(i, "CONNECTION") {
            i += 1;
        } else if kw(i, "QUERY") {
            query_only = true;
            i += 1;
        }
        if kw(i, "ID") || kw(i, "USER") {
            return Some(Intercept::KillUnsupported);
        }
        return match (t.get(i), t.len() == i + 1) {
            (Some(Tok::Number(n)), true) => std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .map(|id| Intercept::Kill { query_only, id })
                .or(Some(Intercept::KillUnsupported)),
            _ => Some(Intercept::KillUnsupported),
        };
    }
    if !kw(0, "SELECT") {
        return None;
    }
    let mut items = Vec::new();
    let mut i = 1;
    loop {
        // The item: `f()` or `@@var`.
        let (kind, end) = match t.get(i)? {
            Tok::Word(f)
                if matches!(t.get(i + 1), Some(Tok::Punct(b'(')))
                    && matches!(t.get(i + 2), Some(Tok::Punct(b')'))) =>
            {
                (Hist::function(f)?, i + 3)
            }
            Tok::SysVar(v) => (Hist::sysvar(v)?, i + 1),
            _ => return None,
        };
        let written = sql.get(s[i].at.start..s[end - 1].at.end)?.to_vec();
        i = end;
        let label = match (t.get(i), t.get(i + 1)) {
            (Some(Tok::Word(a)), Some(alias)) if a.eq_ignore_ascii_case(b"AS") => {
                i += 2;
                label_of(alias)?
            }
            (Some(alias @ (Tok::Word(_) | Tok::Ident(_) | Tok::Str(_))), _)
                if !is_kw(Some(alias), "FROM") =>
            {
                i += 1;
                label_of(alias)?
            }
            _ => written,
        };
        items.push(Answered { kind, label });
        match t.get(i) {
            None => return Some(Intercept::Select(items)),
            Some(Tok::Punct(b',')) => i += 1,
            _ => return None,
        }
    }
}

/// A column alias as the server names the column (case kept).
fn label_of(t: &Tok<'_>) -> Option<Vec<u8>> {
    match t {
        Tok::Word(w) => Some(w.to_vec()),
        Tok::Ident(s) | Tok::Str(s) => Some(s.clone()),
        _ => None,
    }
}

/// Replaces the bytes of each `(range, text)` (sorted, non-overlapping) in `sql`.
pub fn splice(sql: &[u8], edits: &[(Range<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 16);
    let mut at = 0;
    for (r, text) in edits {
        if r.start < at || r.end > sql.len() || r.start > r.end {
            continue;
        }
        out.extend_from_slice(&sql[at..r.start]);
        out.extend_from_slice(text);
        at = r.end;
    }
    out.extend_from_slice(&sql[at..]);
    out
}

/// Replaces every `CONNECTION_ID()` call (outside literals and comments) with `id`.
pub fn rewrite_connection_id(sql: &[u8], id: u32, modes: Modes) -> Vec<u8> {
    let e = analyze(sql, modes);
    let lit = id.to_string().into_bytes();
    let edits: Vec<(Range<usize>, Vec<u8>)> = e
        .history
        .iter()
        .filter(|h| h.kind == Hist::ConnectionId && !h.at.is_empty())
        .map(|h| (h.at.clone(), lit.clone()))
        .collect();
    splice(sql, &edits)
}

#[cfg(test)]
mod tests;
