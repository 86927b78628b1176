//! What one command did to a session, decided from the command and the server's response alone:
//! the history values to record (the ones the server derives from the session's own statements:
//! `LAST_INSERT_ID()`, `ROW_COUNT()`, `FOUND_ROWS()`, the diagnostics area, `last_gtid`), and
//! whether the backend connection must stay with the session, and why.
//!
//! The frontend executes the decision; it does not decide. The rule is the server's: what sluice
//! cannot know exactly it does not guess. A value that lives only on the backend (an insert id
//! the response does not tell, rows found under `SQL_CALC_FOUND_ROWS`, diagnostics that a
//! statement may or may not have cleared) is either read from the server before the connection
//! goes back to the pool, or the connection stays with the session until the value no longer
//! matters. See the README's "What sluice answers, carries and pins" for the per-mode table.
//!
//! Modelled on TiProxy's command processor: one pure function, tested as a table of every
//! command × every legal response.

use super::sql::{Effects, Hist, Kind};

/// A value sluice knows exactly, or one that lives only on the session's backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<T> {
    Is(T),
    /// Only the backend the session holds has it (read it before that backend goes back).
    OnBackend,
}

impl<T: Copy> Known<T> {
    pub fn value(self) -> Option<T> {
        match self {
            Known::Is(v) => Some(v),
            Known::OnBackend => None,
        }
    }
}

/// The session's diagnostics area (what `SHOW WARNINGS`, `@@warning_count` and `GET DIAGNOSTICS`
/// read). MariaDB clears it only when a statement uses tables or raises a new condition, so after
/// a statement with conditions, a later quiet statement may or may not have cleared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diag {
    /// Empty: any backend connection sluice hands out has an empty area too.
    Clean,
    /// Holds conditions of one of the session's statements: they live on its backend.
    Dirty,
    /// Was dirty; a later statement raised nothing and may have cleared it.
    Unknown,
}

/// The history values of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub last_insert_id: Known<u64>,
    pub row_count: i64,
    pub found_rows: Known<u64>,
    pub diag: Diag,
    /// The session's own `@@last_gtid` (empty before its first write).
    pub last_gtid: Box<str>,
    /// Which of the held backend's own history values are not the session's (meaningful only
    /// while the session holds a backend).
    pub foreign: Foreign,
}

/// History values a backend holds that are not the session's: the backend came from the pool
/// and no statement of the session has set them there yet, a statement of sluice's own ran
/// there after the session's, or sluice answered the session's last statement itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Foreign {
    /// `ROW_COUNT()` and the diagnostics counts (every statement sets them).
    pub row_count: bool,
    /// `FOUND_ROWS()` (only a statement with a result set sets it).
    pub found_rows: bool,
}

impl Foreign {
    pub const ALL: Foreign = Foreign {
        row_count: true,
        found_rows: true,
    };
}

impl Default for History {
    fn default() -> Self {
        History {
            last_insert_id: Known::Is(0),
            row_count: -1,
            found_rows: Known::Is(0),
            diag: Diag::Clean,
            last_gtid: "".into(),
            foreign: Foreign::default(),
        }
    }
}

/// Why a backend connection stays with its session after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `pool.mode = "session"`.
    SessionMode,
    /// The server reports a transaction open.
    Transaction,
    /// An error with autocommit off: whether a transaction began is unknown until an OK says.
    UncertainTransaction,
    /// An open cursor, pending long data, or an unread result.
    Statement,
    /// State sluice cannot replay elsewhere (see [`super::pins`]).
    Pinned,
    /// The session's diagnostics area holds conditions only this backend has.
    Diagnostics,
    /// A one-shot variable (`insert_id`) waits for the session's next statement.
    OneShot,
}

impl Hold {
    pub fn name(self) -> &'static str {
        match self {
            Hold::SessionMode => "session_mode",
            Hold::Transaction => "transaction",
            Hold::UncertainTransaction => "uncertain_transaction",
            Hold::Statement => "statement",
            Hold::Pinned => "pinned",
            Hold::Diagnostics => "diagnostics",
            Hold::OneShot => "one_shot",
        }
    }
}

/// The command, as far as its effects go.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// COM_QUERY, analysed.
    Query(&'a Effects),
    /// COM_STMT_EXECUTE of a statement with this analysis.
    Execute(&'a Effects),
    /// COM_STMT_FETCH (rows of an open cursor).
    Fetch,
    /// Commands that change no history value on success (COM_INIT_DB, COM_STMT_PREPARE,
    /// COM_STMT_RESET, COM_FIELD_LIST, COM_SET_OPTION, …) but whose errors are conditions.
    Plain,
}

/// What the server said while answering one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The response ended with an ERR.
    pub error: bool,
    /// Some result in the response reported warnings.
    pub warnings: bool,
    /// The last result was an OK: (affected rows, insert id).
    pub last_ok: Option<(u64, u64)>,
    /// Some OK in the response carried an insert id.
    pub insert_id: bool,
    /// The response had a result set; the last one had this many rows.
    pub rows: Option<u64>,
    /// The rows of the last result set anywhere in the response, if there was one (for a
    /// multi-statement text: a later statement's OK or ERR does not change FOUND_ROWS()).
    pub last_rows: Option<u64>,
    /// The status flags of the last OK/EOF.
    pub status: u16,
    /// The server reported `last_insert_id` set (`SET @@last_insert_id = N`): its value.
    pub last_insert_id_set: Option<u64>,
    /// The server reported `insert_id` set to a non-zero value (a one-shot for the next insert).
    pub insert_id_set: bool,
    /// A one-shot `insert_id` set before this command is still set after it (read from the
    /// server: only an insert that generates an auto-increment value uses it up; a failed
    /// insert, a SELECT, anything else leaves it for a later one).
    pub insert_id_kept: bool,
    /// The server reported `last_gtid`.
    pub last_gtid: Option<Box<str>>,
    /// The result's rows were left in a cursor (COM_STMT_EXECUTE with a cursor type).
    pub cursor: bool,
}

/// What the session is besides its history (after its pins were updated for this command).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub session_mode: bool,
    pub pinned: bool,
    /// An open cursor or pending long data.
    pub statement_pending: bool,
    /// The command ran on a backend that did not hold the session's history values: one
    /// taken from the pool for it, or one where sluice ran statements of its own first.
    pub fresh_backend: bool,
}

/// The decision for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub history: History,
    /// The backend stays with the session, and why.
    pub hold: Option<Hold>,
    /// Before the backend goes back: read `@@warning_count, LAST_INSERT_ID(), FOUND_ROWS()` there
    /// (one statement; it clears nothing) and finish with [`after_read`].
    pub read_before_release: bool,
    /// The session's one-shot variable stays pending (`insert_id` set, not used yet).
    pub one_shot_pending: bool,
}

const IN_TRANS: u16 = 1;
const AUTOCOMMIT: u16 = 2;

/// Decides what a command did. `before` is the session's history before it.
pub fn after(cmd: Command<'_>, resp: &Response, facts: Facts, before: &History) -> Outcome {
    let mut h = before.clone();
    let e = match cmd {
        Command::Query(e) | Command::Execute(e) => Some(e),
        _ => None,
    };
    // Whose history values the backend holds now: a statement sets ROW_COUNT() (and the
    // diagnostics counts); only one with a result set sets FOUND_ROWS().
    if facts.fresh_backend {
        h.foreign = Foreign::ALL;
    }
    let kind = e.map(|e| e.kind);
    let opaque = e.is_some_and(|e| e.opaque || e.kind == Kind::Multi);
    // Several statements whose only row-counting statements return their rows: FOUND_ROWS()
    // is the last result set's rows, or what it was when none came back.
    let counted_multi = e.is_some_and(|e| {
        e.kind == Kind::Multi
            && !e.opaque
            && !e.calc_found_rows
            && !e.selects_into
            && !e.stored_function
            && !e.keeps_found_rows
    });
    let keeps_found_rows = e.is_some_and(|e| e.keeps_found_rows && e.kind != Kind::Multi);
    // Whether the backend held another session's FOUND_ROWS() when the statement began.
    let found_rows_foreign = h.foreign.found_rows;
    if e.is_some() {
        h.foreign.row_count = false;
        let counted = if counted_multi {
            resp.last_rows.is_some()
        } else if keeps_found_rows {
            false
        } else {
            !resp.error && (resp.rows.is_some() || resp.cursor)
        };
        if counted {
            h.foreign.found_rows = false;
        }
    }

    // ROW_COUNT(): the last result's affected rows; -1 after rows or an error, and after a
    // fetch from a cursor (MariaDB 10.11, checked); plain commands leave it to a later statement
    // (COM_INIT_DB and the like answer OK with 0, as the server counts them).
    match cmd {
        Command::Fetch => {
            h.row_count = -1;
            h.foreign.row_count = false;
        }
        // COM_STMT_PREPARE and the like answer without an OK and leave it as it was; an OK
        // (COM_INIT_DB) counts 0, an error -1.
        Command::Plain => {
            if resp.error {
                h.row_count = -1;
            } else if let Some((affected, _)) = resp.last_ok {
                h.row_count = affected as i64;
            }
        }
        _ => {
            h.row_count = match (resp.error, resp.last_ok, resp.rows) {
                (true, _, _) => -1,
                (false, Some((affected, _)), _) => affected as i64,
                (false, None, _) => -1,
            };
        }
    }

    // FOUND_ROWS(): the rows of the last SELECT; the server's count when the statement asked
    // for it (SQL_CALC_FOUND_ROWS) or ran code sluice does not see.
    if counted_multi {
        if let Some(n) = resp.last_rows {
            h.found_rows = Known::Is(n);
        }
    } else if keeps_found_rows {
        // Rows that FOUND_ROWS() does not count: it stays as it was.
    } else if let Some(e) = e {
        if !resp.error {
            let selects_into = e.selects_into && resp.rows.is_none();
            let calc =
                e.calc_found_rows || opaque || kind == Some(Kind::SelectInto) || selects_into;
            if calc {
                h.found_rows = Known::OnBackend;
            } else if resp.cursor {
                // The rows wait in a cursor, which the server counts as it fills it: all of
                // them, or none (a table-less SELECT; MariaDB 10.11, checked). Only it knows.
                h.found_rows = Known::OnBackend;
            } else if let Some(n) = resp.rows {
                // An aggregate answered by at most one row may have been implicitly grouped
                // and answered by the optimizer without reading rows, which leaves FOUND_ROWS()
                // as it was (`SELECT COUNT(*) FROM t WHERE pk = <missing>`, `SELECT MAX(k) FROM
                // t WHERE k > <largest>`, an impossible WHERE: MariaDB 10.11, checked). Unless
                // both outcomes agree, only the server knows, and on a backend that held the
                // session's value its read says which. On one that held another session's, the
                // value it was left at is not the session's, and a read after the statement
                // cannot tell "counted" from "left" when they are equal (1 is the common
                // value): the row is counted, as almost always happens (README, "MariaDB
                // behaviours"; knowing would take a statement of sluice's own before the
                // client's on every backend new to the session).
                if e.aggregate && n <= 1 && before.found_rows != Known::Is(n) && !found_rows_foreign
                {
                    h.found_rows = Known::OnBackend;
                } else {
                    h.found_rows = Known::Is(n);
                }
            }
        } else if resp.rows.is_some()
            || ((opaque || e.kind == Kind::Query) && !h.foreign.found_rows)
        {
            // A query (or code sluice does not see) that failed once it ran (its error came
            // after rows' metadata, as a KILL QUERY's does) leaves FOUND_ROWS() as the server
            // made it: 0 after a killed SELECT, the rows a subquery counted before `Subquery
            // returns more than 1 row` (MariaDB 10.11, checked). On a backend holding the
            // session's own value that is always the server's to say. One refused before
            // running (a syntax error, a missing table, an unknown prepared statement) on a
            // backend holding another session's value leaves the session's as it was, which
            // sluice knows (a routine failing halfway, after SELECTs that sent no rows, is
            // not told apart from that).
            h.found_rows = Known::OnBackend;
            h.foreign.found_rows = false;
        }
    }

    // LAST_INSERT_ID(): the response's insert id is not it (an explicit id shows there too), so
    // a statement that may have changed it leaves the value on the backend.
    if let Some(v) = resp.last_insert_id_set {
        h.last_insert_id = Known::Is(v);
    }
    let may_set_id = e.is_some_and(|e| e.sets_last_insert_id) || opaque || resp.insert_id;
    if may_set_id {
        h.last_insert_id = Known::OnBackend;
    }

    // The diagnostics area. A single INSERT, REPLACE, UPDATE or DELETE names a table, and the
    // server empties the area before running such a statement: after one that raised nothing it
    // is empty (a quiet statement without tables leaves what was there).
    let diagnostic = kind == Some(Kind::Diagnostic);
    let clears = e.is_some_and(|e| e.clears_diagnostics && e.kind == Kind::Other);
    h.diag = if resp.error || resp.warnings {
        Diag::Dirty
    } else if diagnostic {
        before.diag
    } else if before.diag == Diag::Clean || clears {
        Diag::Clean
    } else {
        Diag::Unknown
    };

    if let Some(g) = &resp.last_gtid {
        h.last_gtid = g.clone();
    }

    // A one-shot set now, or one set before that this command did not use up, waits for the
    // insert that uses it.
    let one_shot_pending = resp.insert_id_set || resp.insert_id_kept;
    let uncertain = resp.error && resp.status & AUTOCOMMIT == 0;
    let (hold, read_before_release) = hold_for(facts, &h, resp.status, uncertain, one_shot_pending);
    Outcome {
        history: h,
        hold,
        read_before_release,
        one_shot_pending,
    }
}

/// Can this command use up a one-shot `insert_id` set before it (`SET insert_id = N`, taken by
/// the next statement that generates an auto-increment value)? Only one that may insert rows:
/// not a read, a diagnostics read, a `SET`, transaction control, `USE` or `DROP TABLE` that
/// calls no stored code, nor a command without a statement of its own (a prepare, a fetch).
/// After anything else sluice asks the server whether it is still set; after these it knows,
/// without a statement of its own between the client's (which would change `ROW_COUNT()` for a
/// `GET DIAGNOSTICS … = ROW_COUNT` that follows).
pub fn may_use_one_shot(cmd: Command<'_>) -> bool {
    let e = match cmd {
        Command::Query(e) | Command::Execute(e) => e,
        Command::Fetch | Command::Plain => return false,
    };
    let plain = e.statements == 1 && !e.opaque && !e.stored_function;
    let inserts_nothing = matches!(
        e.kind,
        Kind::Query | Kind::Diagnostic | Kind::Set | Kind::Control
    ) || (e.kind == Kind::Other && !e.tables_dropped.is_empty());
    !(plain && inserts_nothing)
}

/// Does this `GET DIAGNOSTICS` read the statement-information item `ROW_COUNT` (the backend's
/// `ROW_COUNT()`, which no rewrite reaches)?
pub fn reads_row_count_item(sql: &[u8], e: &Effects, modes: super::sql::Modes) -> bool {
    e.kind == Kind::Diagnostic
        && e.statements == 1
        && super::sql::tokens(sql, modes)
            .iter()
            .any(|t| matches!(t, super::sql::Tok::Word(w) if w.eq_ignore_ascii_case(b"ROW_COUNT")))
}

/// A statement that makes a backend's `ROW_COUNT()` the session's `row_count` without touching
/// its conditions, `FOUND_ROWS()` or the transaction state's flags (other than `S` for the
/// `VALUES`): `DO 0` counts 0, MariaDB's `VALUES (1)` -1 (10.11, checked); no statement counts N
/// rows without a table (which would empty the diagnostics area).
pub fn row_count_restore(row_count: i64, mariadb: bool) -> Option<&'static str> {
    match row_count {
        0 => Some("DO 0"),
        -1 if mariadb => Some("VALUES (1)"),
        _ => None,
    }
}

/// Can this statement have committed the open transaction before it failed? MariaDB commits
/// implicitly before DDL, `LOCK TABLES`, `BEGIN`, `SET autocommit = 1`, account statements and
/// the like, and code sluice does not see may `COMMIT`; a read, a diagnostics read or one write
/// of rows never does. After such a failure inside a transaction, `@@last_gtid` may be a new
/// GTID that no report carried (an ERR carries none).
pub fn may_commit_implicitly(e: &Effects) -> bool {
    let plain = e.statements == 1 && !e.opaque;
    let never = matches!(e.kind, Kind::Query | Kind::Diagnostic | Kind::SelectInto)
        || (e.kind == Kind::Other && e.clears_diagnostics);
    !(plain && never)
}

/// Why the backend must stay with the session now (if it must), and whether history values must
/// be read from it before it goes back. `uncertain`: the last command failed with autocommit off.
pub fn hold_for(
    facts: Facts,
    h: &History,
    status: u16,
    uncertain: bool,
    one_shot_pending: bool,
) -> (Option<Hold>, bool) {
    let hold = if facts.session_mode {
        Some(Hold::SessionMode)
    } else if status & IN_TRANS != 0 {
        Some(Hold::Transaction)
    } else if uncertain {
        Some(Hold::UncertainTransaction)
    } else if facts.statement_pending {
        Some(Hold::Statement)
    } else if facts.pinned {
        Some(Hold::Pinned)
    } else if h.diag == Diag::Dirty {
        Some(Hold::Diagnostics)
    } else if one_shot_pending {
        Some(Hold::OneShot)
    } else {
        None
    };
    let read = hold.is_none()
        && (h.diag == Diag::Unknown
            || h.last_insert_id == Known::OnBackend
            || h.found_rows == Known::OnBackend);
    (hold, read)
}

impl Outcome {
    /// A release that must first read the history values only the backend knows (see
    /// [`after_read`]).
    pub fn reading(history: History) -> Outcome {
        Outcome {
            history,
            hold: None,
            read_before_release: true,
            one_shot_pending: false,
        }
    }
}

/// Finishes a decision with what the server said to `SELECT @@warning_count, LAST_INSERT_ID(),
/// FOUND_ROWS()` (run because [`Outcome::read_before_release`] asked): the history values become
/// known, and the backend stays only if the diagnostics area still holds conditions. The read
/// itself changed the backend's `ROW_COUNT()` and `FOUND_ROWS()`, so a backend kept now is
/// disturbed.
pub fn after_read(
    mut o: Outcome,
    warning_count: u64,
    last_insert_id: u64,
    found_rows: u64,
) -> Outcome {
    o.history.last_insert_id = Known::Is(last_insert_id);
    if o.history.found_rows == Known::OnBackend {
        o.history.found_rows = Known::Is(found_rows);
    }
    if warning_count == 0 {
        o.history.diag = Diag::Clean;
        o.hold = None;
    } else {
        o.history.diag = Diag::Dirty;
        o.hold = Some(Hold::Diagnostics);
        o.history.foreign = Foreign::ALL;
    }
    o.read_before_release = false;
    o
}

/// Does the server answer a read of `kind` with the session's own value: on the backend the
/// session keeps (always, in session mode), unless the value there is not the session's (see
/// [`History::foreign`])?
pub fn server_answers(held: bool, session_mode: bool, h: &History, kind: Hist) -> bool {
    (held || session_mode)
        && match kind {
            Hist::RowCount | Hist::WarningCount | Hist::ErrorCount => !h.foreign.row_count,
            Hist::FoundRows => !h.foreign.found_rows,
            _ => true,
        }
}

#[cfg(test)]
mod tests;
