//! The normalization rules, all of them. Everything a response says is compared exactly except
//! the values below, each of which is legitimately different between two correct runs of the same
//! session. Status flags, warning counts, insert ids, affected rows, info strings, column
//! definitions, row values and error messages are compared as they are.
//!
//! 1. **Prepared-statement ids.** The server numbers binary and SQL-level prepares on one
//!    per-connection counter, and a proxy that multiplexes statements hands out its own ids; the
//!    client only ever uses the id it was given. Each id in a PREPARE_OK is replaced by `#N`, the
//!    order of its first appearance in the session; an id the client closed (COM_STMT_CLOSE) or
//!    that a reset dropped (COM_RESET_CONNECTION, COM_CHANGE_USER) may be handed out again and
//!    then counts as a new appearance. The id quoted in the messages of ERR 1243 ("Unknown
//!    prepared statement handler (N) given to …") and ERR 1421 ("The statement (N) has no open
//!    cursor") goes through the same table, because it is the id the client sent; so does the
//!    same message where it comes back as a value (`SHOW WARNINGS`, `GET DIAGNOSTICS`).
//! 2. **GTIDs.** `domain-server-sequence` values come from the server's global binary-log
//!    counter, which other sessions (and earlier runs) advance. A value that is entirely
//!    GTID-looking (`\d+-\d+-\d+`, but not a `YYYY-MM-DD` date) in a row field or a tracked
//!    variable (`last_gtid` in session-state blocks, `SELECT @@last_gtid`) is replaced by
//!    `<gtid#N>`, the order of its first appearance in the session. Equal GTIDs stay equal and
//!    distinct ones stay distinct, so a proxy that shows another connection's GTID still differs.
//! 3. **Connection ids.** They are per server (and per proxy). The corpus never shows one in a
//!    result except in the session prologue's `SELECT CONNECTION_ID()`, which is rendered only as
//!    "equals the id in this connection's handshake" or not (see [`Normalizer::connection_id`]).
//! 4. **The outcome of a SLEEP killed by KILL QUERY.** Even when the sidecar sends the KILL only
//!    once the statement shows as `User sleep`, the server ends `SELECT SLEEP(5)` in one of two
//!    ways depending on where its thread is at that instant: SLEEP() returns 1 and the statement
//!    succeeds, or the statement fails with ERR 1317 after the column metadata. Either is
//!    rendered as one `SLEEP INTERRUPTED` line (the terminator's flags go with it); a SLEEP that
//!    was not interrupted (0), an error before the metadata, or any other answer stays as it is.
//! 5. **SESSION_STATE_CHANGED in a classic EOF to a client without CLIENT_SESSION_TRACK.** Such
//!    a client can never learn what changed (the state travels only in OK packets, and not to
//!    it), but the server still raises the flag in classic EOFs whenever one of the trackers the
//!    client cannot see fires, quirks included (the first statement after a tracker is switched
//!    on, a sequence refilling its cache). sluice's backends track everything, so it predicts the
//!    flag from what the statement does (`Trackers::keeps_classic_flag`, table-tested there)
//!    rather than copying it; the bit is not compared for these clients. OK packets, and EOFs to
//!    tracking clients, are compared with it.
//! 6. **Plan- and time-dependent status bits.** SERVER_QUERY_NO_INDEX_USED and
//!    SERVER_QUERY_NO_GOOD_INDEX_USED follow the optimizer's choice, which rests on table
//!    statistics InnoDB recomputes in the background (every run gets freshly created tables, so
//!    two runs of one statement may be planned differently), and SERVER_QUERY_WAS_SLOW follows
//!    the clock. They are cleared before status flags are compared or shown.
//! 7. **The order of system variables within one session-state block.** The server lists the
//!    variables that changed in the order of its own hash of changed variables, which depends on
//!    the session's past (a stored function's call marks the character set variables changed
//!    and back, reordering the next SET NAMES's report); the protocol gives the order no
//!    meaning. Variables are compared sorted by name, in the positions variables took.

use std::collections::HashMap;

/// Per-session normalization state.
#[derive(Debug, Default, Clone)]
pub struct Normalizer {
    gtids: HashMap<Vec<u8>, usize>,
    /// Statement ids the client holds now → their ordinal.
    live_statements: HashMap<u32, usize>,
    /// Every statement id ever seen → its latest ordinal (for ids quoted in error messages).
    seen_statements: HashMap<u32, usize>,
    next_statement: usize,
}

/// Is `b` entirely a GTID (`\d+-\d+-\d+`) and not a date (`\d{4}-\d{2}-\d{2}`)?
pub fn looks_like_gtid(b: &[u8]) -> bool {
    let parts: Vec<&[u8]> = b.split(|&c| c == b'-').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 20 || !p.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    let date = parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2;
    !date
}

impl Normalizer {
    /// Rule 2: the placeholder for a GTID-looking value, or `None` for any other value.
    pub fn gtid(&mut self, value: &[u8]) -> Option<String> {
        if !looks_like_gtid(value) {
            return None;
        }
        let n = self.gtids.len() + 1;
        let id = *self.gtids.entry(value.to_vec()).or_insert(n);
        Some(format!("<gtid#{id}>"))
    }

    /// Rule 1: the ordinal of a statement id from a PREPARE_OK.
    pub fn prepared(&mut self, id: u32) -> String {
        let n = match self.live_statements.get(&id) {
            Some(&n) => n,
            None => {
                self.next_statement += 1;
                self.live_statements.insert(id, self.next_statement);
                self.next_statement
            }
        };
        self.seen_statements.insert(id, n);
        format!("#{n}")
    }

    /// Rule 1: the client closed `id`; the target may hand it out again.
    pub fn closed(&mut self, id: u32) {
        self.live_statements.remove(&id);
    }

    /// Rule 1: a reset dropped every statement.
    pub fn reset(&mut self) {
        self.live_statements.clear();
    }

    /// Rule 1 for ERR 1243 and 1421: the statement id in the message goes through the table;
    /// every other message is kept as it is (escaped for printing).
    pub fn error_message(&mut self, code: u16, msg: &[u8]) -> String {
        let text = crate::record::escape(msg);
        if code != 1243 && code != 1421 {
            return text;
        }
        self.statement_ids_in_text(&text)
    }

    /// Rule 1 for the same messages where they reappear as values (`SHOW WARNINGS`,
    /// `GET DIAGNOSTICS … MESSAGE_TEXT`): `(N)` after "statement handler " or "The statement ".
    pub fn statement_ids_in_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        // Bounded by the text's length: each turn consumes at least one marker.
        loop {
            let hit = ["statement handler (", "The statement ("]
                .iter()
                .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
                .min();
            let Some((at, len)) = hit else {
                out.push_str(rest);
                return out;
            };
            let open = at + len;
            out.push_str(&rest[..open]);
            rest = &rest[open..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || !rest[digits..].starts_with(')') {
                continue;
            }
            match rest[..digits].parse::<u32>() {
                Ok(id) => match self.seen_statements.get(&id) {
                    Some(n) => out.push_str(&format!("#{n}")),
                    // An id never handed out: the client sent it for a prepare that failed;
                    // the runner uses the same made-up id on every target.
                    None => out.push_str(&rest[..digits]),
                },
                Err(_) => out.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
        }
    }

    /// Rule 4: the answer to the KILL QUERY step's `SELECT SLEEP(5)`, with an interrupted sleep
    /// rendered as one line whichever of its two server outcomes it had.
    pub fn interrupted_sleep(lines: Vec<String>) -> Vec<String> {
        const INTERRUPTED: &str =
            "SLEEP INTERRUPTED (SLEEP() = 1, or ERR 1317 after the metadata: the server does either)";
        let is_meta = |l: &String| {
            l.starts_with("RESULT ") || l.starts_with("COLUMN ") || l.starts_with("EOF ")
        };
        let meta = lines.iter().take_while(|l| is_meta(l)).count();
        let rest = &lines[meta..];
        let killed_row = rest.len() == 2 && rest[0] == "ROW ['1']" && rest[1].starts_with("END ");
        let killed_err = rest.len() == 1 && rest[0].starts_with("ERR 1317 ");
        if meta > 0 && (killed_row || killed_err) {
            let mut out = lines[..meta].to_vec();
            out.push(INTERRUPTED.to_string());
            out
        } else {
            lines
        }
    }

    /// Rule 3: the prologue's `SELECT CONNECTION_ID()` value against the handshake's id.
    pub fn connection_id(value: Option<&[u8]>, handshake_id: u32) -> String {
        match value {
            Some(v) if v == handshake_id.to_string().as_bytes() => {
                "CONNECTION_ID() = the handshake's connection id".to_string()
            }
            Some(v) => format!(
                "CONNECTION_ID() = '{}', NOT the handshake's connection id",
                crate::record::escape(v)
            ),
            None => "CONNECTION_ID() returned no value".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtids_map_by_first_appearance_and_dates_are_left_alone() {
        let mut n = Normalizer::default();
        assert_eq!(n.gtid(b"0-1-57").as_deref(), Some("<gtid#1>"));
        assert_eq!(n.gtid(b"0-1-90").as_deref(), Some("<gtid#2>"));
        assert_eq!(n.gtid(b"0-1-57").as_deref(), Some("<gtid#1>"));
        assert_eq!(n.gtid(b"2024-01-05"), None);
        assert_eq!(n.gtid(b"1-2"), None);
        assert_eq!(n.gtid(b"a-1-2"), None);
        assert_eq!(n.gtid(b"-1-2"), None);
    }

    #[test]
    fn both_outcomes_of_an_interrupted_sleep_look_alike() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = Normalizer::interrupted_sleep(v(&[
            "RESULT columns=1",
            "COLUMN x",
            "ROW ['1']",
            "END ok",
        ]));
        let b = Normalizer::interrupted_sleep(v(&[
            "RESULT columns=1",
            "COLUMN x",
            "ERR 1317 #70100 Query execution was interrupted",
        ]));
        assert_eq!(a, b);
        let c = v(&["RESULT columns=1", "COLUMN x", "ROW ['0']", "END ok"]);
        assert_eq!(Normalizer::interrupted_sleep(c.clone()), c);
        let d = v(&["ERR 1317 #70100 Query execution was interrupted"]);
        assert_eq!(Normalizer::interrupted_sleep(d.clone()), d);
    }

    #[test]
    fn statement_ids_are_ordinals_and_closed_ids_may_come_back() {
        let mut n = Normalizer::default();
        assert_eq!(n.prepared(7), "#1");
        assert_eq!(n.prepared(9), "#2");
        // Two live statements with one id is a difference worth seeing: it maps to the same.
        assert_eq!(n.prepared(7), "#1");
        n.closed(7);
        assert_eq!(n.prepared(7), "#3");
        n.reset();
        assert_eq!(n.prepared(9), "#4");
        assert_eq!(
            n.error_message(
                1243,
                b"Unknown prepared statement handler (9) given to mysqld_stmt_execute"
            ),
            "Unknown prepared statement handler (#4) given to mysqld_stmt_execute"
        );
        assert_eq!(n.error_message(1146, b"Table (9)"), "Table (9)");
        assert_eq!(
            n.statement_ids_in_text("The statement (9) has no open cursor; The statement (x)"),
            "The statement (#4) has no open cursor; The statement (x)"
        );
        assert_eq!(
            n.statement_ids_in_text("statement handler (123456)"),
            "statement handler (123456)"
        );
    }
}
