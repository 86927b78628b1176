//! How sluice writes its own reads of session variables on a client's backend after the client's
//! command, so that the server's `FOUND_ROWS()` stays what the client's statements left it.
//!
//! A `SELECT` of sluice's own replaces the backend's `FOUND_ROWS()` with its one row. sluice then
//! knows the session's value only by reading it in the same statement, and the backend no longer
//! holds it: code sluice does not see into (a `CALL`, an `EXECUTE`, a stored function) that runs
//! there next and sets no `FOUND_ROWS()` of its own leaves sluice's 1 in place, which the server
//! then answers (in session mode too, where sluice answers nothing itself; difftest seed
//! 1796710048 session 20: a `SET NAMES` read, then a `CALL` running no SELECT).
//!
//! MariaDB's table value constructor `VALUES (…)` returns its row without counting it:
//! `FOUND_ROWS()` after it is the one before (10.11, checked), and like a table-less `SELECT` it
//! leaves the diagnostics area, sets `ROW_COUNT()` to -1 and, inside a transaction, `S`; it sets
//! the state's `s` flag only for the variables a table-less `SELECT` sets it for (not
//! `@@collation_connection`, a variable the binary log carries; yes for `@@insert_id`,
//! `@@last_gtid`, the trackers; checked), and its string columns carry the results collation as
//! the `SELECT`'s do (checked after `SET NAMES x COLLATE y`, results in another character set,
//! `binary` and NULL). Other servers (MySQL 8 writes it `VALUES ROW(…)`) read with a `SELECT`
//! whose last column is `FOUND_ROWS()`, the value the read replaces.

/// One read: its text, and whether it asks `FOUND_ROWS()`, as its last column, because it
/// replaces it on the backend (a read whose `FOUND_ROWS()` sluice knows without asking may
/// replace it without asking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnRead {
    pub sql: String,
    pub asks_found_rows: bool,
}

impl OwnRead {
    /// A read of `items` (a select list of `@@` variables and functions that read no table) on
    /// a MariaDB server or another.
    pub fn of(items: &str, mariadb: bool) -> OwnRead {
        if mariadb {
            OwnRead {
                sql: format!("VALUES ({items})"),
                asks_found_rows: false,
            }
        } else {
            OwnRead {
                sql: format!("SELECT {items}, FOUND_ROWS()"),
                asks_found_rows: true,
            }
        }
    }

    /// The backend's `FOUND_ROWS()` before the read, from the read's row (when it asked).
    pub fn found_rows(&self, row: &[Option<String>]) -> Option<u64> {
        if !self.asks_found_rows {
            return None;
        }
        row.last()?.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (items, mariadb, sql, row, found rows learned)
    type Case = (
        &'static str,
        bool,
        &'static str,
        Vec<Option<String>>,
        Option<u64>,
    );

    #[test]
    fn reads_are_written_per_server() {
        let v = |s: &str| Some(s.to_string());
        let table: &[Case] = &[
            (
                "@@collation_connection",
                true,
                "VALUES (@@collation_connection)",
                vec![v("latin1_swedish_ci")],
                None,
            ),
            (
                "@@collation_connection",
                false,
                "SELECT @@collation_connection, FOUND_ROWS()",
                vec![v("latin1_swedish_ci"), v("2")],
                Some(2),
            ),
            (
                "@@insert_id",
                true,
                "VALUES (@@insert_id)",
                // A read whose own value is a number: never taken for FOUND_ROWS().
                vec![v("7")],
                None,
            ),
            (
                "@@insert_id",
                false,
                "SELECT @@insert_id, FOUND_ROWS()",
                vec![v("7"), v("0")],
                Some(0),
            ),
            (
                "@@a, DATABASE()",
                false,
                "SELECT @@a, DATABASE(), FOUND_ROWS()",
                vec![v("x"), None, None],
                None,
            ),
            ("@@a", false, "SELECT @@a, FOUND_ROWS()", vec![], None),
        ];
        for (items, mariadb, sql, row, found) in table {
            let r = OwnRead::of(items, *mariadb);
            assert_eq!(r.sql, *sql, "{items} mariadb={mariadb}");
            assert_eq!(r.asks_found_rows, !mariadb, "{items}");
            assert_eq!(r.found_rows(row), *found, "{items} mariadb={mariadb}");
        }
    }
}
