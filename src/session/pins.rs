//! Why a session must stay on its backend connection, and when it may leave.
//!
//! Pins come from two sources: what the server reports (the transaction-state tracker's `L` for
//! LOCK TABLES, pending transaction characteristics, a "state changed" report nothing explains)
//! and what [`sql::analyze`](super::sql::analyze) sees in the statement (user variables,
//! temporary tables, SQL-level PREPARE, named locks — MariaDB does not report them for statements
//! that return rows). A pin is released when its state is gone: the last temporary table dropped,
//! the last prepared statement deallocated, the last named lock released, UNLOCK TABLES; user
//! variables, sequence values, stored-function calls and unexplained changes last until
//! COM_RESET_CONNECTION or the end of the session.

use super::sql::Effects;

/// A reason a session is pinned (an index into per-reason metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PinReason {
    UserVariable = 0,
    TemporaryTable,
    SqlPrepare,
    NamedLock,
    LockTables,
    Handler,
    TransactionCharacteristics,
    UnknownStateChange,
    /// NEXTVAL/SETVAL: the session's last value of a sequence lives on the backend.
    Sequence,
    /// A stored function ran: it may hold a named lock the server does not report.
    StoredFunction,
    /// A binary prepared statement reads values only the session's backend has
    /// (`ROW_COUNT()`, `FOUND_ROWS()`, `@@warning_count`, `@@last_gtid`, diagnostics): its text
    /// cannot be rewritten per execute, so the backend stays while it is open.
    HistoryStatement,
    /// A SAVEPOINT with autocommit off and no transaction reported: it lives in the session's
    /// implicit transaction until COMMIT or ROLLBACK.
    Savepoint,
}

/// How many pin reasons there are (the size of per-reason metric arrays).
pub const PIN_REASONS: usize = 12;

impl PinReason {
    pub const ALL: [PinReason; PIN_REASONS] = [
        PinReason::UserVariable,
        PinReason::TemporaryTable,
        PinReason::SqlPrepare,
        PinReason::NamedLock,
        PinReason::LockTables,
        PinReason::Handler,
        PinReason::TransactionCharacteristics,
        PinReason::UnknownStateChange,
        PinReason::Sequence,
        PinReason::StoredFunction,
        PinReason::HistoryStatement,
        PinReason::Savepoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PinReason::UserVariable => "user_variable",
            PinReason::TemporaryTable => "temporary_table",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::NamedLock => "named_lock",
            PinReason::LockTables => "lock_tables",
            PinReason::Handler => "handler",
            PinReason::TransactionCharacteristics => "transaction_characteristics",
            PinReason::UnknownStateChange => "unknown_state_change",
            PinReason::Sequence => "sequence",
            PinReason::StoredFunction => "stored_function",
            PinReason::HistoryStatement => "history_statement",
            PinReason::Savepoint => "savepoint",
        }
    }

    pub fn bit(self) -> u16 {
        1 << self as u8
    }

    /// The reason a statement that is about to run would pin for (checked against the budget).
    pub fn predicted(e: &Effects) -> Option<PinReason> {
        if e.user_var_write {
            Some(PinReason::UserVariable)
        } else if !e.temp_created.is_empty() {
            Some(PinReason::TemporaryTable)
        } else if !e.prepared.is_empty() {
            Some(PinReason::SqlPrepare)
        } else if !e.locks_acquired.is_empty() {
            Some(PinReason::NamedLock)
        } else if e.lock_tables {
            Some(PinReason::LockTables)
        } else if e.handler_open {
            Some(PinReason::Handler)
        } else if e.sequence {
            Some(PinReason::Sequence)
        } else if e.stored_function {
            Some(PinReason::StoredFunction)
        } else {
            None
        }
    }
}

/// What the server said about the statement, as far as pins are concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reported<'a> {
    pub failed: bool,
    pub state_changed: bool,
    pub trx_state: Option<&'a [u8]>,
    pub(crate) trx_characteristics: Option<&'a [u8]>,
    pub in_transaction: bool,
    /// Autocommit is on after the statement.
    pub autocommit: bool,
}

/// A session's pinned state. (Fields are public for an upgrade, which carries them to the
/// successor field by field with the backend connection they pin: `upgrade::shard_side`.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    pub(crate) user_vars: bool,
    pub(crate) temp_tables: Vec<Vec<u8>>,
    /// SQL-level prepared statements by name, with their text when it was a literal.
    pub(crate) sql_prepared: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub(crate) named_locks: Vec<Vec<u8>>,
    pub(crate) lock_tables: bool,
    pub(crate) handler: bool,
    pub(crate) trx_characteristics: bool,
    pub(crate) unknown: bool,
    pub(crate) sequence: bool,
    pub(crate) stored_function: bool,
    /// Binary prepared statements (client ids) that read backend-only history values.
    pub(crate) history_statements: Vec<u32>,
    pub(crate) savepoint: bool,
}

impl Pins {
    /// The reasons currently in force, as a bit set of [`PinReason::bit`].
    pub fn mask(&self) -> u16 {
        let mut m = 0;
        for (on, r) in [
            (self.user_vars, PinReason::UserVariable),
            (!self.temp_tables.is_empty(), PinReason::TemporaryTable),
            (!self.sql_prepared.is_empty(), PinReason::SqlPrepare),
            (!self.named_locks.is_empty(), PinReason::NamedLock),
            (self.lock_tables, PinReason::LockTables),
            (self.handler, PinReason::Handler),
            (
                self.trx_characteristics,
                PinReason::TransactionCharacteristics,
            ),
            (self.unknown, PinReason::UnknownStateChange),
            (self.sequence, PinReason::Sequence),
            (self.stored_function, PinReason::StoredFunction),
            (
                !self.history_statements.is_empty(),
                PinReason::HistoryStatement,
            ),
            (self.savepoint, PinReason::Savepoint),
        ] {
            if on {
                m |= r.bit();
            }
        }
        m
    }

    pub fn is_pinned(&self) -> bool {
        self.mask() != 0
    }

    /// Updates the pins after a statement ran. Additions are applied even when the statement
    /// failed (a conservative pin never leaks state); removals only when it succeeded.
    pub fn after(&mut self, e: &Effects, r: Reported<'_>) {
        if e.user_var_write {
            self.user_vars = true;
        }
        for t in &e.temp_created {
            if !self.temp_tables.contains(t) {
                self.temp_tables.push(t.clone());
            }
        }
        for (name, text) in &e.prepared {
            // A re-PREPARE of a name replaces its text.
            self.sql_prepared.retain(|(n, _)| n != name);
            self.sql_prepared.push((name.clone(), text.clone()));
        }
        self.named_locks.extend(e.locks_acquired.iter().cloned());
        if e.handler_open {
            self.handler = true;
        }
        if e.lock_tables {
            self.lock_tables = true;
        }
        if e.sequence {
            self.sequence = true;
        }
        if e.stored_function {
            self.stored_function = true;
        }
        if !r.failed {
            self.temp_tables.retain(|t| !e.tables_dropped.contains(t));
            self.sql_prepared
                .retain(|(n, _)| !e.deallocated.contains(n));
            for l in &e.locks_released {
                if let Some(i) = self.named_locks.iter().position(|x| x == l) {
                    self.named_locks.remove(i);
                }
            }
            if e.release_all_locks {
                self.named_locks.clear();
            }
        }
        // The server vouches for table locks (transaction-state tracker, 8 characters, 'L'
        // last) it saw taken. Their absence counts only after a statement that may end them: a
        // tracker turned off and on again (a client running its own trackers, `SET
        // session_track_transaction_info = …`) starts from nothing and reports no `L` for tables
        // still locked (a connection with a client's `LOCK TABLES` went back to the pool so).
        if let Some(ts) = r.trx_state {
            let locked = ts.last() == Some(&b'L');
            if locked || e.may_unlock_tables {
                self.lock_tables = locked;
            }
        }
        if e.unlocks_tables && !r.failed {
            self.lock_tables = false;
        }
        // One-shot characteristics (SET TRANSACTION …) pending outside a transaction.
        if let Some(c) = r.trx_characteristics {
            self.trx_characteristics = !c.is_empty() && !r.in_transaction;
        }
        if r.state_changed && !e.explains_state_change {
            self.unknown = true;
        }
        // A savepoint outside a reported transaction (autocommit off) ends with the implicit
        // transaction it lives in: at COMMIT, ROLLBACK, or autocommit turned on.
        if e.savepoint && !r.failed && !r.autocommit {
            self.savepoint = true;
        } else if self.savepoint && ((e.ends_transaction && !r.failed) || r.autocommit) {
            self.savepoint = false;
        }
    }

    /// The text of SQL-level prepared statement `name`: `None` when it is not prepared here,
    /// `Some(None)` when it was prepared from a variable (its text is unknown).
    pub fn prepared_text(&self, name: &[u8]) -> Option<Option<&[u8]>> {
        self.sql_prepared
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_deref())
    }

    /// Marks user variables set (carried from the replica a `GET DIAGNOSTICS` ran on).
    pub fn mark_user_vars(&mut self) {
        self.user_vars = true;
    }

    /// Marks a change nobody can explain (an EXECUTE of a statement prepared from a variable).
    pub fn mark_unknown(&mut self) {
        self.unknown = true;
    }

    /// A binary prepared statement that reads backend-only history values was prepared
    /// (`open`) or closed.
    pub fn history_statement(&mut self, id: u32, open: bool) {
        self.history_statements.retain(|&s| s != id);
        if open {
            self.history_statements.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sql::{analyze, Modes};
    use super::*;

    fn run(p: &mut Pins, sql: &str, r: Reported<'_>) {
        p.after(&analyze(sql.as_bytes(), Modes::default()), r);
    }

    fn ok() -> Reported<'static> {
        Reported::default()
    }

    #[test]
    fn temporary_tables_pin_until_the_last_is_dropped() {
        let mut p = Pins::default();
        run(&mut p, "CREATE TEMPORARY TABLE a (x INT)", ok());
        run(&mut p, "CREATE TEMPORARY TABLE b (x INT)", ok());
        assert_eq!(p.mask(), PinReason::TemporaryTable.bit());
        run(&mut p, "DROP TEMPORARY TABLE a", ok());
        assert!(p.is_pinned());
        run(
            &mut p,
            "DROP TABLE IF EXISTS b",
            Reported {
                failed: true,
                ..ok()
            },
        );
        assert!(p.is_pinned(), "a failed drop removes nothing");
        run(&mut p, "DROP TABLE IF EXISTS b", ok());
        assert!(!p.is_pinned());
    }

    #[test]
    fn a_savepoint_with_autocommit_off_pins_until_the_transaction_ends() {
        let off = Reported {
            autocommit: false,
            ..ok()
        };
        let on = Reported {
            autocommit: true,
            ..ok()
        };
        let mut p = Pins::default();
        run(&mut p, "SAVEPOINT sp1", on);
        assert!(!p.is_pinned(), "with autocommit on it lasts one statement");
        run(&mut p, "SAVEPOINT sp1", off);
        assert_eq!(p.mask(), PinReason::Savepoint.bit());
        run(&mut p, "ROLLBACK TO SAVEPOINT sp1", off);
        run(&mut p, "RELEASE SAVEPOINT sp1", off);
        run(&mut p, "SELECT 1", off);
        assert!(p.is_pinned());
        run(
            &mut p,
            "COMMIT",
            Reported {
                failed: true,
                ..off
            },
        );
        assert!(p.is_pinned(), "a failed COMMIT ends nothing");
        for end in [
            "COMMIT",
            "ROLLBACK",
            "ROLLBACK WORK",
            "START TRANSACTION",
            "BEGIN",
        ] {
            run(&mut p, "SAVEPOINT sp1", off);
            run(&mut p, end, off);
            assert!(!p.is_pinned(), "{end}");
        }
        run(&mut p, "SAVEPOINT sp1", off);
        run(&mut p, "SET autocommit = 1", on);
        assert!(!p.is_pinned());
    }

    #[test]
    fn locks_prepares_and_user_variables() {
        let mut p = Pins::default();
        run(&mut p, "SELECT GET_LOCK('x', 1)", ok());
        run(&mut p, "SELECT GET_LOCK('x', 1)", ok());
        run(&mut p, "SELECT RELEASE_LOCK('x')", ok());
        assert_eq!(p.mask(), PinReason::NamedLock.bit(), "locks are counted");
        run(&mut p, "DO RELEASE_ALL_LOCKS()", ok());
        assert!(!p.is_pinned());
        run(&mut p, "PREPARE s FROM 'SELECT 1'", ok());
        run(&mut p, "DEALLOCATE PREPARE s", ok());
        assert!(!p.is_pinned());
        run(&mut p, "SET @a = 1", ok());
        run(&mut p, "SET @a = NULL", ok());
        assert_eq!(
            p.mask(),
            PinReason::UserVariable.bit(),
            "user variables last until reset"
        );
    }

    #[test]
    fn table_locks_end_only_where_they_can() {
        let report = |ts: &'static [u8]| Reported {
            trx_state: Some(ts),
            ..ok()
        };
        // (statement, its transaction-state report, still pinned for LOCK TABLES?)
        #[rustfmt::skip]
        let after_lock: &[(&str, Option<&'static [u8]>, bool)] = &[
            // A tracker turned off and on again under LOCK TABLES (the client's own trackers)
            // reports a state without L: the tables are still locked (seed 1796610019: the
            // connection went back to the pool with them).
            ("SET session_track_transaction_info = 'STATE'", Some(b"________"), true),
            ("SELECT COUNT(*) FROM t", Some(b"_____R__"), true),
            ("SET session_track_transaction_info = 'STATE'", None, true),
            // The statements that end table locks.
            ("UNLOCK TABLES", Some(b"________"), false),
            ("UNLOCK TABLES", None, false),
            ("BEGIN", Some(b"T_______"), false),
            ("START TRANSACTION", None, false),
            ("LOCK TABLES t2 WRITE", Some(b"_______L"), true),
            ("FLUSH TABLES", Some(b"________"), false),
            ("EXECUTE s", Some(b"________"), false),
            ("SELECT 1; UNLOCK TABLES", Some(b"________"), false),
        ];
        for (sql, ts, pinned) in after_lock {
            let mut p = Pins::default();
            run(&mut p, "LOCK TABLES t READ", report(b"_______L"));
            let r = match ts {
                Some(ts) => report(ts),
                None => ok(),
            };
            run(&mut p, sql, r);
            assert_eq!(p.lock_tables, *pinned, "{sql} {ts:?}");
        }
        // A failed UNLOCK TABLES (a syntax error) ends nothing.
        let mut p = Pins::default();
        run(&mut p, "LOCK TABLES t READ", report(b"_______L"));
        run(
            &mut p,
            "UNLOCK TABLES",
            Reported {
                failed: true,
                ..ok()
            },
        );
        assert!(p.lock_tables);
    }

    #[test]
    fn server_reports_lock_tables_and_characteristics() {
        let mut p = Pins::default();
        run(
            &mut p,
            "LOCK TABLES t READ",
            Reported {
                trx_state: Some(b"_______L"),
                ..ok()
            },
        );
        assert_eq!(p.mask(), PinReason::LockTables.bit());
        run(
            &mut p,
            "UNLOCK TABLES",
            Reported {
                trx_state: Some(b"________"),
                ..ok()
            },
        );
        assert!(!p.is_pinned());
        run(
            &mut p,
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            Reported {
                trx_characteristics: Some(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;"),
                ..ok()
            },
        );
        assert_eq!(p.mask(), PinReason::TransactionCharacteristics.bit());
        run(
            &mut p,
            "COMMIT",
            Reported {
                trx_characteristics: Some(b""),
                ..ok()
            },
        );
        assert!(!p.is_pinned());
    }

    #[test]
    fn unexplained_state_changes_pin() {
        let mut p = Pins::default();
        run(
            &mut p,
            "SET time_zone = '+01:00'",
            Reported {
                state_changed: true,
                ..ok()
            },
        );
        assert!(!p.is_pinned());
        run(
            &mut p,
            "CALL set_things()",
            Reported {
                state_changed: true,
                ..ok()
            },
        );
        assert_eq!(p.mask(), PinReason::UnknownStateChange.bit());
    }

    #[test]
    fn predictions_for_the_budget() {
        let e = analyze(b"SELECT @a := 1", Modes::default());
        assert_eq!(PinReason::predicted(&e), Some(PinReason::UserVariable));
        assert_eq!(
            PinReason::predicted(&analyze(b"SELECT 1", Modes::default())),
            None
        );
    }
}
