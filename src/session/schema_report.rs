//! The schema report a server holds back, and when a client would hear it.
//!
//! MariaDB switches a session's current schema while it runs code that lives in another one (a
//! stored procedure, function or trigger of another schema, a prepared statement executed after
//! a `USE` elsewhere) and back afterwards; each switch marks the schema tracker. When such a
//! statement fails, the ERR carries no session state, so the mark stays pending, and the server
//! reports the (unchanged) schema with the next OK that carries any session state at all, which
//! is the next statement that marks a tracker *the connection has enabled*.
//!
//! sluice's backends run every tracker, so a backend flushes that leftover at statements a
//! client with the default trackers hears nothing about (`GET_LOCK`, `COMMIT`, an `INSERT`:
//! state change, transaction state, `last_gtid`), and a pooled connection may flush a mark left
//! by another session. Checked against MariaDB 10.11 (difftest reproducer
//! `schema-report-held-back.txt`): after `EXECUTE` of a statement prepared in another schema fails
//! inside a read-only transaction, the server's direct connection says nothing at `SELECT
//! GET_LOCK(…)` and adds `schema` to the variables it reports at the next `SET NAMES`.
//!
//! So sluice follows the mark per session, as the client's direct connection would hold it:
//! - a statement that may switch schemas ([`Turn::may_switch`]) and fails leaves a *mark* on
//!   the connection it ran on ([`Held::mark`]), which the next report from that connection
//!   resolves: a schema entry in it that no statement of the session explains is the flush;
//!   a report without one says there was nothing pending;
//! - a session that leaves its connection before the mark is resolved takes it as pending when
//!   the failed statement very likely switched (it named another schema's code, or executed a
//!   statement prepared in another schema), else drops it;
//! - a pending report is added to the next report the client hears for its own trackers, after
//!   the variables (the server's order), and a flushed entry nobody holds is dropped.

use crate::codec::packets::session_track;
use crate::codec::wire::{put_lenenc_bytes, Reader};
use crate::codec::Result;
use crate::session::sql::{lex, Modes, Tok};

/// What one session holds of a schema report (kept with its history).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// The client's direct connection would be holding a schema report now.
    pub pending: bool,
    /// A statement of this session that may have switched schemas failed on the connection it
    /// still holds (marked there): whether it very likely did.
    pub mark: Option<bool>,
}

/// A backend report's schema entry, against the session's schema before the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    None,
    /// The schema the session was in.
    Same,
    /// Another schema (or none): a real change.
    Changed,
}

/// What happens to the schema entry of a report passed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    /// Remove the backend's entry: the client's connection would not report it now.
    Drop,
    /// Add the session's schema: the client's connection reports its pending one now.
    Add,
}

impl Held {
    /// A command starts on a connection; `mine`: it carries this session's mark. A mark left on
    /// another connection cannot be resolved any more: taken as pending when likely.
    pub fn start(&mut self, mine: bool) {
        if !mine {
            if let Some(likely) = self.mark.take() {
                self.pending |= likely;
            }
        }
    }

    /// An OK-shaped packet with session state from the connection the session holds
    /// (`mine`: it carries this session's mark). `explained`: the command may have reported
    /// the schema itself (a `USE`, code that switches schemas). `rest_visible`: the report
    /// keeps entries for the client besides a schema entry.
    pub fn report(
        &mut self,
        mine: bool,
        explained: bool,
        entry: Entry,
        rest_visible: bool,
    ) -> Action {
        let marked = mine && self.mark.take().is_some();
        match entry {
            Entry::Changed => {
                self.pending = false;
                Action::Pass
            }
            Entry::Same if explained => {
                self.pending = false;
                Action::Pass
            }
            Entry::Same => {
                // A flush: this session's when it marked this connection.
                let held = self.pending || marked;
                if held && rest_visible {
                    self.pending = false;
                    Action::Pass
                } else {
                    self.pending = held;
                    Action::Drop
                }
            }
            Entry::None if self.pending && rest_visible => {
                self.pending = false;
                Action::Add
            }
            Entry::None => Action::Pass,
        }
    }

    /// The command's response ended with an ERR.
    pub fn failed(&mut self, may_switch: bool, likely: bool) {
        if may_switch {
            self.mark = Some(likely);
        }
    }
}

/// What a command may do to the schema tracker, judged from its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turn {
    /// It may switch schemas while it runs (or report the schema itself).
    pub may_switch: bool,
    /// It names code or tables of another schema (a switch is very likely).
    pub likely: bool,
}

/// Words a table name may follow (where a `(` after the name opens a column list, not a call).
const TABLE_BEFORE: &[&[u8]] = &[
    b"INTO",
    b"TABLE",
    b"INSERT",
    b"REPLACE",
    b"IGNORE",
    b"DELAYED",
    b"LOW_PRIORITY",
    b"HIGH_PRIORITY",
    b"EXISTS",
    b"UPDATE",
    b"FROM",
    b"JOIN",
    b"ON",
    b"VIEW",
];

impl Turn {
    /// A text command: `USE` reports the schema; a routine, a stored function, several
    /// statements or anything opaque may switch, and so may a name qualified with another schema
    /// than `schema` (a table whose trigger lives there); a call of another schema's procedure or
    /// function very likely does.
    pub fn of_text(sql: &[u8], modes: Modes, schema: &[u8], opaque: bool) -> Turn {
        let toks = lex(sql, modes);
        let word = |i: usize| match toks.get(i).map(|l| &l.tok) {
            Some(Tok::Word(w)) => Some(*w),
            Some(Tok::Ident(w)) => Some(&w[..]),
            _ => None,
        };
        let is_use = word(0).is_some_and(|w| w.eq_ignore_ascii_case(b"USE"));
        // A name qualified with another schema.
        let other = |i: usize| {
            matches!(toks.get(i + 1).map(|l| &l.tok), Some(Tok::Punct(b'.')))
                && word(i).is_some_and(|w| w != schema)
                && word(i + 2).is_some()
        };
        let after = |i: usize, keys: &[&[u8]]| {
            i.checked_sub(1)
                .and_then(word)
                .is_some_and(|w| keys.iter().any(|k| w.eq_ignore_ascii_case(k)))
        };
        // Code of another schema: a call (a name and `(` where no table stands: not a column
        // list after `INSERT INTO b.t`), or a procedure. Running it switches there.
        let calls = |i: usize| {
            other(i)
                && ((matches!(toks.get(i + 3).map(|l| &l.tok), Some(Tok::Punct(b'(')))
                    && !after(i, TABLE_BEFORE))
                    || after(i, &[b"CALL"]))
        };
        // A table of another schema, or a column of one (`t.col` of a table alias is not a
        // schema: a schema-qualified name is followed by a call or a `.`, or stands where a
        // table does): its triggers or a view's code may switch there, which is rare.
        let names = |i: usize| {
            other(i)
                && (matches!(toks.get(i + 3).map(|l| &l.tok), Some(Tok::Punct(b'.')))
                    || after(i, TABLE_BEFORE))
        };
        // `likely` decides a mark left on a connection the session leaves before the server
        // said (see `Held::start`): only code of another schema; a table there (a failed `DROP
        // TABLE other.t`, an insert into a table without triggers) switches nothing, almost
        // always (seed 1796710056 session 11: a schema report added to the next one after a
        // failed `DROP TABLE` of another schema).
        let likely = (0..toks.len()).any(calls);
        let may = likely || (0..toks.len()).any(names);
        Turn {
            may_switch: is_use || opaque || may,
            likely,
        }
    }
}

/// Can a command that failed have left the session in another schema than it began in? Only a
/// text `USE`, `DROP DATABASE`/`DROP SCHEMA` (of the current one) or several statements can
/// change it. Any other command's schema reports are code of another schema switching there and
/// back (MariaDB always returns to the caller's schema), and a failure inside that code cuts
/// off the report of the switch back, not the switch (seed 1796720005 session 28: a `CALL
/// other.p()` reporting `other` with its first result, then failing; the session is still in
/// its own schema, and the server holds that report back).
pub fn failure_may_change_schema(payload: &[u8], modes: Modes) -> bool {
    use crate::codec::command::com;
    let sql = match payload.split_first() {
        Some((&com::QUERY, sql)) => sql,
        Some((&com::DROP_DB, _)) => return true,
        _ => return false,
    };
    let toks = lex(sql, modes);
    let word = |i: usize, k: &str| matches!(toks.get(i).map(|l| &l.tok), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k.as_bytes()));
    let several = toks.iter().any(|l| matches!(l.tok, Tok::Semicolon));
    word(0, "USE") || (word(0, "DROP") && (word(1, "DATABASE") || word(1, "SCHEMA"))) || several
}

/// Where a report's schema entry is, and its value.
pub fn find(block: &[u8]) -> Result<Option<(std::ops::Range<usize>, &[u8])>> {
    crate::session::trackers::find_entry(block, |ty, data| {
        if ty != session_track::SCHEMA {
            return Ok(None);
        }
        Reader::new(data).lenenc_bytes("tracked schema").map(Some)
    })
}

/// `block` with a schema entry for `schema` after its leading variable entries (where the
/// server puts it).
pub fn insert(block: &[u8], schema: &[u8]) -> Result<Vec<u8>> {
    let at = crate::session::trackers::after_variables(block)?;
    let mut data = Vec::with_capacity(schema.len() + 1);
    put_lenenc_bytes(&mut data, schema);
    let mut out = Vec::with_capacity(block.len() + data.len() + 2);
    out.extend_from_slice(&block[..at]);
    out.push(session_track::SCHEMA);
    put_lenenc_bytes(&mut out, &data);
    out.extend_from_slice(&block[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(pending: bool, mark: Option<bool>) -> Held {
        Held { pending, mark }
    }

    #[test]
    fn reports_follow_the_direct_connection() {
        use Action::{Add, Drop, Pass};
        use Entry::{Changed, Same};
        let no = Entry::None;
        // (held before, mine, explained, entry, rest visible) => (action, held after)
        let cases = [
            // Nothing held: a flushed entry is someone else's leftover, or the server's own.
            (
                held(false, None),
                true,
                false,
                Same,
                true,
                Drop,
                held(false, None),
            ),
            (
                held(false, None),
                true,
                false,
                Same,
                false,
                Drop,
                held(false, None),
            ),
            (
                held(false, None),
                true,
                true,
                Same,
                false,
                Pass,
                held(false, None),
            ),
            (
                held(false, None),
                true,
                false,
                Changed,
                false,
                Pass,
                held(false, None),
            ),
            (
                held(false, None),
                true,
                false,
                no,
                true,
                Pass,
                held(false, None),
            ),
            // This session's mark, flushed: heard now if the client hears anything, else held.
            (
                held(false, Some(false)),
                true,
                false,
                Same,
                true,
                Pass,
                held(false, None),
            ),
            (
                held(false, Some(true)),
                true,
                false,
                Same,
                false,
                Drop,
                held(true, None),
            ),
            // A report without the entry: there was nothing pending.
            (
                held(false, Some(true)),
                true,
                false,
                no,
                true,
                Pass,
                held(false, None),
            ),
            // A mark on another connection is not resolved by this one's report.
            (
                held(false, Some(true)),
                false,
                false,
                Same,
                false,
                Drop,
                held(false, Some(true)),
            ),
            // Pending: added to the next report the client hears, which a flush may be.
            (
                held(true, None),
                false,
                false,
                no,
                true,
                Add,
                held(false, None),
            ),
            (
                held(true, None),
                false,
                false,
                no,
                false,
                Pass,
                held(true, None),
            ),
            (
                held(true, None),
                true,
                false,
                Same,
                true,
                Pass,
                held(false, None),
            ),
            (
                held(true, None),
                true,
                false,
                Same,
                false,
                Drop,
                held(true, None),
            ),
            // A USE (or a switch the statement made) reports the schema: nothing left.
            (
                held(true, None),
                true,
                true,
                Same,
                false,
                Pass,
                held(false, None),
            ),
            (
                held(true, Some(true)),
                true,
                false,
                Changed,
                false,
                Pass,
                held(false, None),
            ),
        ];
        for (i, (before, mine, explained, entry, rest, action, after)) in cases.iter().enumerate() {
            let mut h = *before;
            let got = h.report(*mine, *explained, *entry, *rest);
            assert_eq!(
                (got, h),
                (*action, *after),
                "case {i}: {before:?} mine={mine} explained={explained} {entry:?} rest={rest}"
            );
        }
    }

    #[test]
    fn a_mark_left_behind_is_taken_as_likely_or_dropped() {
        let mut h = held(false, Some(true));
        h.start(true);
        assert_eq!(
            h,
            held(false, Some(true)),
            "same connection: still resolvable"
        );
        h.start(false);
        assert_eq!(h, held(true, None));
        let mut h = held(false, Some(false));
        h.start(false);
        assert_eq!(h, held(false, None));
        let mut h = held(true, None);
        h.failed(false, true);
        assert_eq!(
            h,
            held(true, None),
            "a statement that cannot switch leaves no mark"
        );
        h.failed(true, false);
        assert_eq!(h, held(true, Some(false)));
    }

    #[test]
    fn which_failures_may_leave_another_schema() {
        let m = Modes::default();
        let q = |sql: &str| {
            let mut p = vec![crate::codec::command::com::QUERY];
            p.extend_from_slice(sql.as_bytes());
            failure_may_change_schema(&p, m)
        };
        assert!(q("USE b"));
        assert!(q("drop database b"));
        assert!(q("DROP SCHEMA IF EXISTS b"));
        assert!(q("CALL b.p(); USE c"));
        assert!(!q("CALL b.p()"));
        assert!(!q("SELECT b.f(1)"));
        assert!(!q("DROP TABLE b.t"));
        assert!(!failure_may_change_schema(
            &[crate::codec::command::com::STMT_EXECUTE, 1, 0, 0, 0],
            m
        ));
        assert!(!failure_may_change_schema(&[], m));
    }

    #[test]
    fn which_texts_may_switch_schemas() {
        let m = Modes::default();
        let t = |sql: &str, opaque| Turn::of_text(sql.as_bytes(), m, b"a", opaque);
        let no = Turn::default();
        let likely = Turn {
            may_switch: true,
            likely: true,
        };
        let may = Turn {
            may_switch: true,
            likely: false,
        };
        assert_eq!(t("SELECT GET_LOCK('x', 0)", false), no);
        assert_eq!(t("COMMIT", false), no);
        assert_eq!(t("SELECT t.id FROM t1 AS t", false), no);
        assert_eq!(t("SELECT a.f(1)", true), may, "its own schema");
        assert_eq!(t("use b", false), may);
        assert_eq!(t("CALL p()", true), may);
        assert_eq!(t("CALL b.p()", true), likely);
        assert_eq!(t("CALL `b`.p_ins('x')", true), likely);
        assert_eq!(t("SELECT b.f_ins('x') AS fid", false), likely);
        assert_eq!(t("INSERT INTO b.t1 (v) VALUES (1)", false), may);
        assert_eq!(t("UPDATE b.t1 SET n = 1", false), may);
        assert_eq!(t("SELECT * FROM b.t1 JOIN a.t2", false), may);
        assert_eq!(t("DROP TABLE b.tt", false), may);
        assert_eq!(
            t("SELECT b.t1.id FROM t1", false),
            may,
            "schema.table.column"
        );
        assert_eq!(t("INSERT INTO a.t1 (v) VALUES (b.f(1))", false), likely);
        assert_eq!(
            t("INSERT b.t1 (v) VALUES (1)", false),
            may,
            "INSERT without INTO"
        );
        assert_eq!(t("INSERT IGNORE INTO b.t1 (v) VALUES (1)", false), may);
        assert_eq!(t("CREATE TABLE IF NOT EXISTS b.t (a INT)", false), may);
    }

    #[test]
    fn entries_are_found_and_added_after_the_variables() {
        let var = |n: &[u8], v: &[u8]| {
            let mut d = Vec::new();
            put_lenenc_bytes(&mut d, n);
            put_lenenc_bytes(&mut d, v);
            let mut e = vec![session_track::SYSTEM_VARIABLES];
            put_lenenc_bytes(&mut e, &d);
            e
        };
        let state = |v: &[u8]| {
            let mut e = vec![session_track::STATE_CHANGE];
            put_lenenc_bytes(&mut e, v);
            e
        };
        let schema = |s: &[u8]| insert(&[], s).unwrap();
        let block = [var(b"character_set_client", b"utf8mb4"), state(b"1")].concat();
        assert_eq!(find(&block).unwrap(), None);
        let added = insert(&block, b"dt_0_b").unwrap();
        let want = [
            var(b"character_set_client", b"utf8mb4"),
            schema(b"dt_0_b"),
            state(b"1"),
        ]
        .concat();
        assert_eq!(added, want);
        let (at, name) = find(&added).unwrap().unwrap();
        assert_eq!(name, b"dt_0_b");
        let mut dropped = added.clone();
        dropped.drain(at);
        assert_eq!(dropped, block);
        assert_eq!(
            insert(&state(b"1"), b"s").unwrap(),
            [schema(b"s"), state(b"1")].concat()
        );
        assert!(find(&[session_track::SCHEMA, 5, 1]).is_err(), "truncated");
    }
}
