//! Where a text reads the table `information_schema.PROCESSLIST`, so that sluice can put its own
//! listing there (see `frontend::processlist`): the spans to replace, found with the tokenizer
//! (never inside a string literal, a comment or a quoted identifier that merely holds the word).
//!
//! A reference is replaced only where a derived table may stand in for it: a table of a `FROM`
//! list or a `JOIN` (`FROM information_schema.PROCESSLIST`, ``JOIN `information_schema`.
//! `processlist` p``, `FROM t, PROCESSLIST` while the current schema is `information_schema`) of a
//! statement that reads (`SELECT`, `WITH`, `( SELECT`, `INSERT … SELECT`, `REPLACE … SELECT`,
//! `CREATE TABLE … SELECT`, `SET … = (SELECT …)`, `DO`, `VALUES`), and in a subquery of `UPDATE`
//! and `DELETE` (their own tables are targets). Everything else reaches the server as written and
//! reads the server's view: `EXPLAIN`, `DESCRIBE`, `SHOW … FROM`, the bodies of views, routines,
//! triggers, events and compound statements (stored code runs later, or statement by statement on
//! the server: a listing frozen into it would be wrong), dynamic SQL (`PREPARE … FROM`,
//! `EXECUTE IMMEDIATE`: the text is a string). `PROCESSLIST` as a column, an alias, a common table
//! expression or a table of another schema is not the table. The content of executable comments
//! (`/*! … */`, `/*M! … */`) is code, as the server reads it: a reference there is replaced in
//! place (the replacement holds no `*/`), and a comment whose version the server skips skips the
//! replacement too.
//!
//! Alternative turned down: matching the text with a pattern. It cannot tell a table from a word
//! in a literal or a comment, and sluice would then rewrite what the client did not ask.

use super::{contains_ci, is_kw, lex, stored_program, Context, Lexed, Tok, Toks};
use std::ops::Range;

/// One place to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The table reference at `at` (`information_schema.PROCESSLIST`, or `PROCESSLIST` alone):
    /// to be replaced by a derived table, named `alias` when the text gives it none after the
    /// reference (`None`: the text's own alias follows and stays). `alias` is the table's name as
    /// written, which is what the server names it (and how the rest of the text refers to it).
    Table {
        at: Range<usize>,
        alias: Option<Vec<u8>>,
    },
    /// `information_schema.` before `PROCESSLIST.column`, at `at`: to be removed (the derived
    /// table has no schema; the column is then qualified by the table's name alone).
    Qualifier { at: Range<usize> },
}

impl Edit {
    pub fn at(&self) -> &Range<usize> {
        match self {
            Edit::Table { at, .. } | Edit::Qualifier { at } => at,
        }
    }
}

const SCHEMA: &[u8] = b"information_schema";
const TABLE: &[u8] = b"processlist";

/// Words that may follow a table reference without being its alias.
const NOT_ALIASES: &[&str] = &[
    "WHERE",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "CROSS",
    "NATURAL",
    "STRAIGHT_JOIN",
    "FULL",
    "OUTER",
    "ON",
    "USING",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "MINUS",
    "WINDOW",
    "FOR",
    "LOCK",
    "INTO",
    "PROCEDURE",
    "USE",
    "FORCE",
    "IGNORE",
    "PARTITION",
    "SET",
    "RETURNING",
    "AS",
];

/// Words that end a `FROM` list at their depth.
const FROM_ENDS: &[&str] = &[
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "MINUS",
    "WINDOW",
    "FOR",
    "LOCK",
    "INTO",
    "PROCEDURE",
    "RETURNING",
    "SET",
    "SELECT",
    "VALUES",
    "ON",
];

/// Statements whose `FROM` lists read (at every depth).
const READERS: &[&str] = &[
    "SELECT", "WITH", "INSERT", "REPLACE", "CREATE", "SET", "DO", "VALUES",
];

/// Statements that read only in their subqueries.
const WRITERS: &[&str] = &["UPDATE", "DELETE"];

fn name_of(t: Option<&Tok<'_>>) -> Option<Vec<u8>> {
    match t {
        Some(Tok::Word(w)) => Some(w.to_vec()),
        Some(Tok::Ident(s)) => Some(s.clone()),
        _ => None,
    }
}

fn is_name(t: Option<&Tok<'_>>, name: &[u8]) -> bool {
    name_of(t).is_some_and(|n| n.eq_ignore_ascii_case(name))
}

fn is_dot(t: Option<&Tok<'_>>) -> bool {
    matches!(t, Some(Tok::Punct(b'.')))
}

/// The edits that make `sql` read sluice's listing instead of `information_schema.PROCESSLIST`,
/// in text order (empty: the text does not read the table where sluice can replace it).
pub fn processlist_edits(sql: &[u8], ctx: &Context<'_>) -> Vec<Edit> {
    // Nearly every statement: not a word of it.
    if !contains_ci(sql, TABLE) {
        return Vec::new();
    }
    let toks = lex(sql, ctx.modes);
    let mut schema: Option<Vec<u8>> = ctx.schema.map(<[u8]>::to_vec);
    let mut tables = Vec::new();
    let mut qualifiers = Vec::new();
    for stmt in toks.split(|t| t.tok == Tok::Semicolon) {
        let plain: Vec<Tok<'_>> = stmt.iter().map(|l| l.tok.clone()).collect();
        let Some(first) = plain.first() else {
            continue;
        };
        // Stored code, and what follows it in the text (a body's later statements).
        if stored_program(Toks(stmt)).is_some() {
            break;
        }
        if is_kw(Some(first), "USE") {
            if let Some(n) = name_of(plain.get(1)) {
                schema = Some(n);
            }
            continue;
        }
        let top_level =
            READERS.iter().any(|k| is_kw(Some(first), k)) || matches!(first, Tok::Punct(b'('));
        if !top_level && !WRITERS.iter().any(|k| is_kw(Some(first), k)) {
            continue;
        }
        let in_schema = schema
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(SCHEMA));
        statement(
            &plain,
            stmt,
            top_level,
            in_schema,
            &mut tables,
            &mut qualifiers,
        );
    }
    if tables.is_empty() {
        return Vec::new();
    }
    let mut all = tables;
    all.extend(qualifiers);
    all.sort_by_key(|e| e.at().start);
    all
}

/// One statement's edits (`top_level`: its outermost `FROM` lists read; `in_schema`: the current
/// schema is `information_schema`).
fn statement(
    s: &[Tok<'_>],
    lexed: &[Lexed<'_>],
    top_level: bool,
    in_schema: bool,
    tables: &mut Vec<Edit>,
    qualifiers: &mut Vec<Edit>,
) {
    // A common table expression named PROCESSLIST: the unqualified name is that.
    let cte = is_kw(s.first(), "WITH")
        && s.iter().enumerate().any(|(i, t)| {
            is_name(Some(t), TABLE)
                && i > 0
                && (matches!(s[i - 1], Tok::Punct(b','))
                    || is_kw(s.get(i - 1), "WITH")
                    || is_kw(s.get(i - 1), "RECURSIVE"))
                && (is_kw(s.get(i + 1), "AS") || matches!(s.get(i + 1), Some(Tok::Punct(b'('))))
        });
    // Per depth of parentheses: is it inside a FROM list?
    let mut from: Vec<bool> = vec![false];
    let mut i = 0;
    while i < s.len() {
        let t = &s[i];
        let in_from = *from.last().unwrap_or(&false);
        match t {
            Tok::Punct(b'(') => {
                from.push(in_from);
                i += 1;
                continue;
            }
            Tok::Punct(b')') => {
                if from.len() > 1 {
                    from.pop();
                }
                i += 1;
                continue;
            }
            // A join's own tables follow JOIN (its ON condition is an expression).
            Tok::Word(w)
                if w.eq_ignore_ascii_case(b"FROM")
                    || w.eq_ignore_ascii_case(b"JOIN")
                    || w.eq_ignore_ascii_case(b"STRAIGHT_JOIN") =>
            {
                if let Some(f) = from.last_mut() {
                    *f = true;
                }
                i += 1;
                continue;
            }
            Tok::Word(_) if FROM_ENDS.iter().any(|k| is_kw(Some(t), k)) => {
                if let Some(f) = from.last_mut() {
                    *f = false;
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        let prev = i.checked_sub(1).and_then(|p| s.get(p));
        let after_dot = is_dot(prev);
        // `information_schema.PROCESSLIST.column`: a column of the table.
        if !after_dot
            && is_name(Some(t), SCHEMA)
            && is_dot(s.get(i + 1))
            && is_name(s.get(i + 2), TABLE)
            && is_dot(s.get(i + 3))
        {
            qualifiers.push(Edit::Qualifier {
                at: lexed[i].at.start..lexed[i + 2].at.start,
            });
            i += 4;
            continue;
        }
        let table_position = in_from
            && (is_kw(prev, "FROM")
                || is_kw(prev, "JOIN")
                || is_kw(prev, "STRAIGHT_JOIN")
                || matches!(prev, Some(Tok::Punct(b',' | b'('))));
        let readable = top_level || from.len() > 1;
        if !table_position || !readable || after_dot {
            i += 1;
            continue;
        }
        // The reference and the index of its name token.
        let name_at = if is_name(Some(t), SCHEMA) && is_dot(s.get(i + 1)) {
            i + 2
        } else {
            i
        };
        let qualified = name_at != i;
        if !is_name(s.get(name_at), TABLE)
            || is_dot(s.get(name_at + 1))
            || (!qualified && (!in_schema || cte))
        {
            i += 1;
            continue;
        }
        let next = s.get(name_at + 1);
        let aliased = match next {
            Some(Tok::Ident(_)) => true,
            Some(w @ Tok::Word(_)) => {
                is_kw(Some(w), "AS") || !NOT_ALIASES.iter().any(|k| is_kw(Some(w), k))
            }
            _ => false,
        };
        tables.push(Edit::Table {
            at: lexed[i].at.start..lexed[name_at].at.end,
            alias: (!aliased).then(|| name_of(s.get(name_at)).unwrap_or_default()),
        });
        i = name_at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::sql::Modes;

    /// The text of each edit: `T<span>=alias` for a table (`T<span>` when the text names it),
    /// `Q<span>` for a qualifier.
    fn edits(sql: &str, schema: Option<&str>, modes: Modes) -> Vec<String> {
        let ctx = Context {
            modes,
            schema: schema.map(str::as_bytes),
            ..Context::default()
        };
        processlist_edits(sql.as_bytes(), &ctx)
            .iter()
            .map(|e| match e {
                Edit::Table { at, alias } => {
                    let mut s = format!("T<{}>", &sql[at.clone()]);
                    if let Some(a) = alias {
                        s.push('=');
                        s.push_str(&String::from_utf8_lossy(a));
                    }
                    s
                }
                Edit::Qualifier { at } => format!("Q<{}>", &sql[at.clone()]),
            })
            .collect()
    }

    #[test]
    fn references_to_the_table_and_nothing_else() {
        let is = Some("information_schema");
        let app = Some("app");
        let cases: &[(&str, Option<&str>, &[&str])] = &[
            // The forms of the name.
            (
                "SELECT * FROM information_schema.PROCESSLIST",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "select id from INFORMATION_SCHEMA.processlist where user = current_user()",
                None,
                &["T<INFORMATION_SCHEMA.processlist>=processlist"],
            ),
            (
                "SELECT * FROM `information_schema`.`processlist`",
                app,
                &["T<`information_schema`.`processlist`>=processlist"],
            ),
            (
                "SELECT * FROM information_schema . /* c */ PROCESSLIST",
                app,
                &["T<information_schema . /* c */ PROCESSLIST>=PROCESSLIST"],
            ),
            ("SELECT COUNT(*) FROM PROCESSLIST", is, &["T<PROCESSLIST>=PROCESSLIST"]),
            ("SELECT COUNT(*) FROM `ProcessList`", is, &["T<`ProcessList`>=ProcessList"]),
            ("SELECT COUNT(*) FROM PROCESSLIST", app, &[]),
            ("SELECT COUNT(*) FROM PROCESSLIST", None, &[]),
            ("SELECT * FROM app.PROCESSLIST", is, &[]),
            ("SELECT * FROM information_schema.PROCESSLIST_X", app, &[]),
            ("SELECT * FROM information_schema.`PROCESSLIST `", app, &[]),
            // Aliases: the text's stays, else the name as written.
            (
                "SELECT p.ID FROM information_schema.PROCESSLIST p WHERE p.ID > 1",
                app,
                &["T<information_schema.PROCESSLIST>"],
            ),
            (
                "SELECT p.ID FROM information_schema.PROCESSLIST AS p",
                app,
                &["T<information_schema.PROCESSLIST>"],
            ),
            (
                "SELECT 1 FROM information_schema.PROCESSLIST `x y`",
                app,
                &["T<information_schema.PROCESSLIST>"],
            ),
            (
                "SELECT 1 FROM information_schema.PROCESSLIST WHERE 0",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT 1 FROM information_schema.PROCESSLIST ORDER BY ID LIMIT 1",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT 1 FROM information_schema.PROCESSLIST;",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            // Joins, lists, subqueries, several references.
            (
                "SELECT a.ID FROM information_schema.PROCESSLIST a JOIN information_schema.PROCESSLIST b ON a.ID = b.ID",
                app,
                &["T<information_schema.PROCESSLIST>", "T<information_schema.PROCESSLIST>"],
            ),
            (
                "SELECT * FROM t, information_schema.PROCESSLIST WHERE t.id = PROCESSLIST.ID",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT * FROM t LEFT JOIN PROCESSLIST p USING (ID), u",
                is,
                &["T<PROCESSLIST>"],
            ),
            (
                "SELECT * FROM t JOIN u ON t.a = u.a JOIN PROCESSLIST ON PROCESSLIST.ID = t.a",
                is,
                &["T<PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT * FROM (information_schema.PROCESSLIST p JOIN t ON p.ID = t.id)",
                app,
                &["T<information_schema.PROCESSLIST>"],
            ),
            (
                "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST) AS n, 1 FROM dual",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT * FROM t WHERE id IN (SELECT ID FROM information_schema.PROCESSLIST)",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT * FROM (SELECT * FROM information_schema.PROCESSLIST) AS x",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "WITH x AS (SELECT ID FROM information_schema.PROCESSLIST) SELECT * FROM x",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "(SELECT ID FROM information_schema.PROCESSLIST) UNION (SELECT 1)",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "INSERT INTO t SELECT ID FROM information_schema.PROCESSLIST",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "CREATE TABLE t AS SELECT * FROM information_schema.PROCESSLIST",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SET @n = (SELECT COUNT(*) FROM information_schema.PROCESSLIST)",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SET STATEMENT max_statement_time = 1 FOR SELECT * FROM information_schema.PROCESSLIST",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "DELETE FROM t WHERE id NOT IN (SELECT ID FROM information_schema.PROCESSLIST)",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            // Columns qualified with the schema: the qualifier goes with a replaced table.
            (
                "SELECT information_schema.PROCESSLIST.ID FROM information_schema.PROCESSLIST",
                app,
                &["Q<information_schema.>", "T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            ("SELECT information_schema.PROCESSLIST.ID FROM t", app, &[]),
            // Several statements; USE changes the schema for those after it.
            (
                "SELECT 1; SELECT ID FROM information_schema.PROCESSLIST",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT 1 FROM PROCESSLIST; USE information_schema; SELECT 2 FROM PROCESSLIST",
                app,
                &["T<PROCESSLIST>=PROCESSLIST"],
            ),
            // Executable comments are code.
            (
                "SELECT * FROM /*! information_schema.PROCESSLIST */",
                app,
                &["T<information_schema.PROCESSLIST>=PROCESSLIST"],
            ),
            (
                "SELECT * FROM /*M!100500 information_schema.PROCESSLIST */ p",
                app,
                &["T<information_schema.PROCESSLIST>"],
            ),
        ];
        for (sql, schema, want) in cases {
            assert_eq!(
                edits(sql, *schema, Modes::default()),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{sql} (schema {schema:?})"
            );
        }
    }

    #[test]
    fn what_is_not_the_table_or_cannot_be_replaced() {
        let is = Some("information_schema");
        let app = Some("app");
        let cases: &[(&str, Option<&str>)] = &[
            // Literals, comments, quoted identifiers, variables that hold the words.
            ("SELECT 'SELECT * FROM information_schema.PROCESSLIST'", app),
            ("SELECT \"FROM information_schema.PROCESSLIST\"", app),
            ("SELECT 1 /* FROM information_schema.PROCESSLIST */", app),
            ("SELECT 1 -- FROM information_schema.PROCESSLIST", app),
            ("SELECT 1 # FROM information_schema.PROCESSLIST", app),
            ("SELECT * FROM `information_schema.PROCESSLIST`", app),
            ("SELECT @processlist, @@processlist FROM t", is),
            // The word as a column, an alias, another schema's table, a CTE, a function.
            ("SELECT processlist FROM t", is),
            ("SELECT t.processlist FROM t", is),
            ("SELECT 1 AS processlist FROM t", is),
            ("SELECT * FROM t processlist", is),
            ("SELECT * FROM t AS PROCESSLIST", is),
            ("SELECT * FROM (SELECT 1) AS PROCESSLIST", is),
            ("SELECT * FROM app.processlist", is),
            ("SELECT * FROM t WHERE processlist = 1", is),
            ("SELECT processlist(1) FROM t", is),
            ("SELECT * FROM t JOIN u ON f(PROCESSLIST) AND (PROCESSLIST)", is),
            ("WITH processlist AS (SELECT 1) SELECT * FROM processlist", is),
            ("WITH x AS (SELECT 1), PROCESSLIST (a) AS (SELECT 1) SELECT * FROM PROCESSLIST", is),
            // Statements where the server's table stays.
            ("SHOW COLUMNS FROM information_schema.PROCESSLIST", app),
            ("SHOW COLUMNS FROM PROCESSLIST", is),
            ("DESCRIBE information_schema.PROCESSLIST", app),
            ("EXPLAIN SELECT * FROM information_schema.PROCESSLIST", app),
            ("SHOW CREATE TABLE information_schema.PROCESSLIST", app),
            ("CREATE TABLE t LIKE information_schema.PROCESSLIST", app),
            ("DELETE FROM information_schema.PROCESSLIST", app),
            ("UPDATE information_schema.PROCESSLIST SET ID = 1", app),
            ("LOCK TABLES information_schema.PROCESSLIST READ", app),
            ("INSERT INTO information_schema.PROCESSLIST VALUES (1)", app),
            // Stored code and dynamic SQL.
            ("CREATE VIEW v AS SELECT * FROM information_schema.PROCESSLIST", app),
            (
                "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT * FROM information_schema.PROCESSLIST; END",
                app,
            ),
            (
                "CREATE FUNCTION f() RETURNS INT RETURN (SELECT COUNT(*) FROM information_schema.PROCESSLIST)",
                app,
            ),
            (
                "CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO SELECT * FROM information_schema.PROCESSLIST",
                app,
            ),
            (
                "BEGIN NOT ATOMIC SELECT * FROM information_schema.PROCESSLIST; END",
                app,
            ),
            ("PREPARE s FROM 'SELECT * FROM information_schema.PROCESSLIST'", app),
            ("EXECUTE IMMEDIATE 'SELECT * FROM information_schema.PROCESSLIST'", app),
            ("PREPARE s FROM @q", app),
            ("CALL p()", app),
        ];
        for (sql, schema) in cases {
            assert_eq!(
                edits(sql, *schema, Modes::default()),
                Vec::<String>::new(),
                "{sql} (schema {schema:?})"
            );
        }
    }

    #[test]
    fn quoting_modes() {
        let ansi = Modes {
            ansi_quotes: true,
            ..Modes::default()
        };
        // Under ANSI_QUOTES a double-quoted name is an identifier; otherwise a string.
        let sql = "SELECT * FROM \"information_schema\".\"PROCESSLIST\"";
        assert_eq!(
            edits(sql, None, ansi),
            vec!["T<\"information_schema\".\"PROCESSLIST\">=PROCESSLIST".to_string()]
        );
        assert!(edits(sql, None, Modes::default()).is_empty());
        // A backslash escapes a quote unless NO_BACKSLASH_ESCAPES: the reference is in the
        // literal, or after it.
        let sql = r"SELECT 'a\' FROM information_schema.PROCESSLIST -- '";
        assert!(edits(sql, None, Modes::default()).is_empty());
        let nbe = Modes {
            no_backslash_escapes: true,
            ..Modes::default()
        };
        assert_eq!(
            edits(sql, None, nbe),
            vec!["T<information_schema.PROCESSLIST>=PROCESSLIST".to_string()]
        );
    }
}
