//! A client's own session trackers, and which of the session-state items a backend reports it
//! would have received directly.
//!
//! sluice runs every backend connection with all trackers on (it needs them to follow the
//! session), so a backend reports more than a client asked for: `last_gtid` after each write,
//! "state changed" after a SET, the transaction state. A client that negotiated
//! CLIENT_SESSION_TRACK gets exactly what its own `session_track_*` variables select — the
//! server's defaults until it changes them — and nothing else.

use crate::codec::packets::{session_track, SessionChange};
use crate::codec::wire::{put_lenenc_bytes, Reader};
use crate::codec::Result;

/// The tracker variables, in the order sluice reads and restores them.
pub const TRACKER_VARS: [&str; 4] = [
    "session_track_system_variables",
    "session_track_schema",
    "session_track_state_change",
    "session_track_transaction_info",
];

/// The select list reading the session's [`TRACKER_VARS`] (read as
/// [`super::own_read::OwnRead`] says).
pub const TRACKER_ITEMS: &str = "@@session_track_system_variables, \
     @@session_track_schema, @@session_track_state_change, @@session_track_transaction_info";

/// Reads the session's [`TRACKER_VARS`] without an `@@` read or a function the server counts as
/// unsafe for the binary log: inside a transaction, either would set the transaction state's
/// `s` flag, which MariaDB reports to a client tracking the state only when it first appears
/// (the client's own next unsafe statement would then go unreported). One row per variable:
/// name, value, `DATABASE()`; see [`tracker_rows`].
pub const READ_TRACKERS_QUIETLY: &str = "SELECT VARIABLE_NAME, VARIABLE_VALUE, DATABASE() \
     FROM information_schema.SESSION_VARIABLES WHERE VARIABLE_NAME IN \
     ('SESSION_TRACK_SYSTEM_VARIABLES', 'SESSION_TRACK_SCHEMA', 'SESSION_TRACK_STATE_CHANGE', \
     'SESSION_TRACK_TRANSACTION_INFO')";

/// The rows of [`READ_TRACKERS_QUIETLY`] as [`TRACKER_ITEMS`] would have read them (in
/// [`TRACKER_VARS`] order, booleans as `0` / `1`), and the schema. `None` when a variable is
/// missing or a row is malformed.
#[allow(clippy::type_complexity)]
pub fn tracker_rows(rows: &[Vec<Option<String>>]) -> Option<([Option<String>; 4], Option<String>)> {
    let mut values: [Option<String>; 4] = Default::default();
    let mut schema = None;
    for row in rows {
        let [Some(name), value, db] = row.as_slice() else {
            return None;
        };
        let i = TRACKER_VARS
            .iter()
            .position(|v| v.eq_ignore_ascii_case(name))?;
        let value = value.clone().unwrap_or_default();
        values[i] = Some(match i {
            1 | 2 if value.eq_ignore_ascii_case("ON") => "1".to_string(),
            1 | 2 if value.eq_ignore_ascii_case("OFF") => "0".to_string(),
            _ => value,
        });
        schema = db.clone();
    }
    values
        .iter()
        .all(Option::is_some)
        .then_some((values, schema))
}

/// Sets a backend's trackers to a client's own `values` (as read by [`TRACKER_ITEMS`]; `None`:
/// the server's defaults, which a direct connection starts with).
pub fn restore_sql(values: Option<&[Option<String>; 4]>) -> String {
    let mut sql = String::from("SET SESSION ");
    for (i, name) in TRACKER_VARS.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(name);
        sql.push_str(" = ");
        match values.and_then(|v| v[i].as_deref()) {
            // Booleans read back as 0 / 1, which only a number sets.
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => sql.push_str(v),
            Some(v) => sql.push_str(&crate::session::state::quote(v)),
            None => sql.push_str("DEFAULT"),
        }
    }
    sql
}

/// What a statement answered with a result set may have changed that a tracker follows
/// (see [`Trackers::keeps_classic_flag`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EofHint {
    /// It assigns user variables.
    pub user_vars: bool,
    /// It may write rows (a sequence, a stored function, a statement sluice cannot see into).
    pub may_write: bool,
}

impl EofHint {
    pub fn of(e: &crate::session::sql::Effects) -> EofHint {
        EofHint {
            user_vars: e.user_var_write,
            may_write: e.sequence || e.stored_function || e.opaque,
        }
    }
}

/// `session_track_transaction_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrxInfo {
    #[default]
    Off,
    State,
    Characteristics,
}

/// What one client's trackers select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trackers {
    /// `session_track_system_variables = '*'`.
    pub all_vars: bool,
    /// The listed variables (lowercase), when not all.
    pub vars: Vec<Box<str>>,
    pub schema: bool,
    pub state_change: bool,
    pub trx: TrxInfo,
}

impl Default for Trackers {
    /// MariaDB 10.11's defaults.
    fn default() -> Self {
        Trackers {
            all_vars: false,
            vars: [
                "autocommit",
                "character_set_client",
                "character_set_connection",
                "character_set_results",
                "time_zone",
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            schema: true,
            state_change: false,
            trx: TrxInfo::Off,
        }
    }
}

fn on(v: &str) -> bool {
    v.eq_ignore_ascii_case("ON") || v == "1"
}

impl Trackers {
    /// Trackers that select everything (what sluice's own backends run with).
    pub fn everything() -> Trackers {
        Trackers {
            all_vars: true,
            vars: Vec::new(),
            schema: true,
            state_change: true,
            trx: TrxInfo::Characteristics,
        }
    }

    /// Applies a `session_track_*` value (from the server's defaults or the client's SET);
    /// returns `false` for any other variable.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match name {
            "session_track_system_variables" => {
                let list: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                self.all_vars = list.contains(&"*");
                self.vars = list
                    .into_iter()
                    .filter(|v| *v != "*")
                    .map(|v| v.to_ascii_lowercase().into())
                    .collect();
            }
            "session_track_schema" => self.schema = on(value),
            "session_track_state_change" => self.state_change = on(value),
            "session_track_transaction_info" => {
                self.trx = if value.eq_ignore_ascii_case("CHARACTERISTICS") {
                    TrxInfo::Characteristics
                } else if value.eq_ignore_ascii_case("STATE") {
                    TrxInfo::State
                } else {
                    TrxInfo::Off
                }
            }
            _ => return false,
        }
        true
    }

    /// Would the client's trackers have reported this item?
    pub fn keeps(&self, c: &SessionChange<'_>) -> bool {
        match c {
            SessionChange::SystemVariable { name, .. } => {
                self.all_vars
                    || self
                        .vars
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(name))
            }
            SessionChange::Schema(_) => self.schema,
            SessionChange::StateChange(_) => self.state_change,
            SessionChange::TransactionState(_) => self.trx != TrxInfo::Off,
            SessionChange::TransactionCharacteristics(_) => self.trx == TrxInfo::Characteristics,
            SessionChange::Gtids(_) | SessionChange::Other(_) => true,
        }
    }

    pub fn tracks_var(&self, name: &str) -> bool {
        self.all_vars || self.vars.iter().any(|v| v.eq_ignore_ascii_case(name))
    }

    /// Does a classic EOF (which carries no state, only the flag) that the backend flagged
    /// SESSION_STATE_CHANGED keep the flag for this client? The backend's trackers follow
    /// everything, so its flag says only that something changed: what a result-set statement
    /// can change is judged from what it does (`hint`) and whether the client follows that.
    pub fn keeps_classic_flag(&self, hint: EofHint, in_trx: bool) -> bool {
        let everything = self.all_vars
            && self.schema
            && self.state_change
            && self.trx == TrxInfo::Characteristics;
        everything
            // A user variable assigned by the statement (`SELECT @a := 1`).
            || (self.state_change && hint.user_vars)
            // A write (a sequence, a stored function's) moves last_gtid.
            || (hint.may_write && self.tracks_var("last_gtid"))
            // Reads and writes inside a transaction move its state.
            || (in_trx && self.trx != TrxInfo::Off)
    }

    /// The entries of a session-state block the client's trackers select, as raw bytes
    /// (`None` when the block can pass unchanged). A client tracking a list of variables hears
    /// them in the list's order, as the server reports them; sluice's backends track all
    /// variables, which the server reports in another order.
    pub fn filter(&self, block: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut r = Reader::new(block);
        let mut out = Vec::new();
        let mut dropped = false;
        // The kept variable entries with their rank in the client's list (a server's block
        // starts with them).
        let mut vars: Vec<(usize, &[u8])> = Vec::new();
        while !r.is_empty() {
            let start = r.clone().rest();
            let ty = r.u8("session state type")?;
            let data = r.lenenc_bytes("session state data")?;
            let entry_len = start.len() - r.clone().rest().len();
            let mut d = Reader::new(data);
            let c = match ty {
                session_track::SYSTEM_VARIABLES => SessionChange::SystemVariable {
                    name: d.lenenc_bytes("tracked variable name")?,
                    value: d.lenenc_bytes("tracked variable value")?,
                },
                session_track::SCHEMA => SessionChange::Schema(d.lenenc_bytes("tracked schema")?),
                session_track::STATE_CHANGE => SessionChange::StateChange(data == b"1"),
                session_track::GTIDS => SessionChange::Gtids(data),
                session_track::TRANSACTION_CHARACTERISTICS => {
                    SessionChange::TransactionCharacteristics(data)
                }
                session_track::TRANSACTION_STATE => SessionChange::TransactionState(data),
                other => SessionChange::Other(other),
            };
            if !self.keeps(&c) {
                dropped = true;
            } else if let (SessionChange::SystemVariable { name, .. }, false) = (&c, self.all_vars)
            {
                let rank = self
                    .vars
                    .iter()
                    .position(|v| v.as_bytes().eq_ignore_ascii_case(name))
                    .unwrap_or(usize::MAX);
                vars.push((rank, &start[..entry_len]));
            } else {
                out.extend_from_slice(&start[..entry_len]);
            }
        }
        let ordered = vars.windows(2).all(|w| w[0].0 <= w[1].0);
        if !dropped && ordered {
            return Ok(None);
        }
        vars.sort_by_key(|v| v.0);
        let mut sorted: Vec<u8> = vars.iter().flat_map(|v| v.1.iter().copied()).collect();
        sorted.extend_from_slice(&out);
        Ok(Some(sorted))
    }
}

/// The transaction state a client's own connection would report, given what it heard last
/// (`client`), what the backend reported before (`backend`, sluice's own statements included)
/// and what it reports now. Inside a transaction the state only gains flags, and sluice's own
/// statements there (a SELECT of history values, of the trackers, of a collation) add some the
/// client's connection would not have (`S`: a result set was sent; `s`: an unsafe statement,
/// such as a read of a system variable): a flag is the client's when this report is the first
/// to show it. Outside a transaction (or on a malformed state) the report stands.
pub fn client_trx_state(client: &[u8], backend: &[u8], reported: &[u8]) -> Box<[u8]> {
    let well_formed = |s: &[u8]| s.len() == TRX_STATE_LEN;
    if !(well_formed(client) && well_formed(backend) && well_formed(reported))
        || reported[0] == b'_'
    {
        return reported.into();
    }
    reported
        .iter()
        .zip(backend)
        .zip(client)
        .map(|((&r, &b), &c)| match (r, b == r) {
            (b'_', _) => b'_',
            (_, true) => c,
            (_, false) => r,
        })
        .collect()
}

/// The transaction state's length, and where its "result set sent" flag is.
pub const TRX_STATE_LEN: usize = 8;
pub const TRX_RESULT_SET: usize = 6;

/// The first entry of a session-state block that `pick` (given its type and data) takes: where
/// it is, and what `pick` made of it.
pub fn find_entry<'a, T>(
    block: &'a [u8],
    mut pick: impl FnMut(u8, &'a [u8]) -> Result<Option<T>>,
) -> Result<Option<(std::ops::Range<usize>, T)>> {
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let start = block.len() - r.clone().rest().len();
        let ty = r.u8("session state type")?;
        let data = r.lenenc_bytes("session state data")?;
        if let Some(t) = pick(ty, data)? {
            return Ok(Some((start..block.len() - r.clone().rest().len(), t)));
        }
    }
    Ok(None)
}

/// Where a block's transaction-state entry is.
pub fn find_trx_state(block: &[u8]) -> Result<Option<std::ops::Range<usize>>> {
    let found = find_entry(block, |ty, _| {
        Ok((ty == session_track::TRANSACTION_STATE).then_some(()))
    })?;
    Ok(found.map(|(at, ())| at))
}

/// Adds a transaction-state entry (the 8-character state, e.g. `________`) to a well-formed
/// block where MariaDB puts it: its transaction tracker reports last, the state before the
/// characteristics, so before a `trx_characteristics` entry, else at the end.
pub fn encode_trx_state(out: &mut Vec<u8>, state: &[u8]) {
    let mut data = Vec::with_capacity(state.len() + 1);
    put_lenenc_bytes(&mut data, state);
    let mut entry = Vec::with_capacity(data.len() + 2);
    entry.push(session_track::TRANSACTION_STATE);
    put_lenenc_bytes(&mut entry, &data);
    let at = characteristics_at(out).unwrap_or(out.len());
    out.splice(at..at, entry);
}

/// Where the block's `trx_characteristics` entry starts, if it has one.
fn characteristics_at(block: &[u8]) -> Option<usize> {
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let start = block.len() - r.clone().rest().len();
        let ty = r.u8("session state type").ok()?;
        r.lenenc_bytes("session state data").ok()?;
        if ty == session_track::TRANSACTION_CHARACTERISTICS {
            return Some(start);
        }
    }
    None
}

/// Encodes one system-variable entry (for tests and fakes).
/// The block with the value of variable `name` (where reported) replaced by `value`; `None`
/// when nothing changes.
pub fn replace_var(block: &[u8], name: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut r = Reader::new(block);
    let mut out = Vec::with_capacity(block.len());
    let mut replaced = false;
    while !r.is_empty() {
        let start = r.clone().rest();
        let ty = r.u8("session state type")?;
        let data = r.lenenc_bytes("session state data")?;
        let entry = &start[..start.len() - r.clone().rest().len()];
        if ty == session_track::SYSTEM_VARIABLES {
            let mut d = Reader::new(data);
            let n = d.lenenc_bytes("tracked variable name")?;
            let v = d.lenenc_bytes("tracked variable value")?;
            if n.eq_ignore_ascii_case(name) && v != value {
                encode_var(&mut out, n, value);
                replaced = true;
                continue;
            }
        }
        out.extend_from_slice(entry);
    }
    Ok(replaced.then_some(out))
}

/// Where variable `name`'s entry is in `block`, and its value.
pub fn find_var<'a>(
    block: &'a [u8],
    name: &[u8],
) -> Result<Option<(std::ops::Range<usize>, &'a [u8])>> {
    find_entry(block, |ty, data| {
        if ty != session_track::SYSTEM_VARIABLES {
            return Ok(None);
        }
        let mut d = Reader::new(data);
        let n = d.lenenc_bytes("tracked variable name")?;
        let v = d.lenenc_bytes("tracked variable value")?;
        Ok(n.eq_ignore_ascii_case(name).then_some(v))
    })
}

/// Where a report's leading variable entries end (the server lists variables first).
pub fn after_variables(block: &[u8]) -> Result<usize> {
    let mut r = Reader::new(block);
    let mut at = 0;
    while !r.is_empty() {
        if r.clone().u8("session state type")? != session_track::SYSTEM_VARIABLES {
            break;
        }
        r.u8("session state type")?;
        r.lenenc_bytes("session state data")?;
        at = block.len() - r.clone().rest().len();
    }
    Ok(at)
}

/// `block` with an entry for variable `name` after its leading variable entries (where the
/// server lists variables).
pub fn insert_var(block: &[u8], name: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    let at = after_variables(block)?;
    let mut out = Vec::with_capacity(block.len() + name.len() + value.len() + 4);
    out.extend_from_slice(&block[..at]);
    encode_var(&mut out, name, value);
    out.extend_from_slice(&block[at..]);
    Ok(out)
}

pub fn encode_var(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let mut data = Vec::new();
    put_lenenc_bytes(&mut data, name);
    put_lenenc_bytes(&mut data, value);
    out.push(session_track::SYSTEM_VARIABLES);
    put_lenenc_bytes(out, &data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackers_read_quietly_come_out_as_an_at_at_read_would() {
        let row = |n: &str, v: Option<&str>, db: Option<&str>| {
            vec![
                Some(n.to_string()),
                v.map(String::from),
                db.map(String::from),
            ]
        };
        let s = |v: &str| Some(v.to_string());
        // Any order; booleans as 0 / 1; an empty list stays empty.
        let rows = [
            row("SESSION_TRACK_TRANSACTION_INFO", Some("STATE"), Some("app")),
            row("SESSION_TRACK_SCHEMA", Some("ON"), Some("app")),
            row("SESSION_TRACK_STATE_CHANGE", Some("OFF"), Some("app")),
            row("SESSION_TRACK_SYSTEM_VARIABLES", Some(""), Some("app")),
        ];
        assert_eq!(
            tracker_rows(&rows),
            Some(([s(""), s("1"), s("0"), s("STATE")], s("app")))
        );
        // No schema selected.
        let rows = [
            row("session_track_system_variables", Some("*"), None),
            row("session_track_schema", Some("OFF"), None),
            row("session_track_state_change", Some("ON"), None),
            row("session_track_transaction_info", Some("OFF"), None),
        ];
        assert_eq!(
            tracker_rows(&rows),
            Some(([s("*"), s("0"), s("1"), s("OFF")], None))
        );
        // A variable missing, an unknown one, a short row: not understood.
        assert_eq!(tracker_rows(&rows[..3]), None);
        let mut odd = rows.to_vec();
        odd[0] = row("session_track_gtids", Some("OFF"), None);
        assert_eq!(tracker_rows(&odd), None);
        assert_eq!(tracker_rows(&[vec![s("session_track_schema")]]), None);
    }

    #[test]
    fn the_clients_transaction_state_lacks_what_sluices_statements_added() {
        // (the client's last, the backend's last, reported now) => the client's now
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);
        let cases: [Case; 8] = [
            // sluice's SELECT added s and S; the client's INSERT adds W.
            (b"T_______", b"T____sS_", b"T___WsS_", b"T___W___"),
            // The client's own SELECT showed S first: it is the client's.
            (b"T_______", b"T_______", b"T_____S_", b"T_____S_"),
            (b"T_____S_", b"T____sS_", b"T_r__sS_", b"T_r___S_"),
            // The transaction ends: blank, whatever was heard.
            (b"T___W___", b"T___WsS_", b"________", b"________"),
            // A new one starts (ROLLBACK AND CHAIN, BEGIN after COMMIT).
            (b"________", b"________", b"T_______", b"T_______"),
            (b"I_______", b"I____sS_", b"T____sS_", b"T_______"),
            // Malformed: the report stands.
            (b"T_______", b"T____sS_", b"T___W", b"T___W"),
            (b"", b"T____sS_", b"T___WsS_", b"T___WsS_"),
        ];
        for (client, backend, reported, want) in cases {
            assert_eq!(
                &*client_trx_state(client, backend, reported),
                want,
                "{:?} {:?} {:?}",
                String::from_utf8_lossy(client),
                String::from_utf8_lossy(backend),
                String::from_utf8_lossy(reported)
            );
        }
    }

    #[test]
    fn the_transaction_state_goes_where_the_server_puts_it() {
        let chars = |out: &mut Vec<u8>| {
            out.push(session_track::TRANSACTION_CHARACTERISTICS);
            put_lenenc_bytes(out, &[0]);
        };
        let state = |out: &mut Vec<u8>| {
            out.push(session_track::TRANSACTION_STATE);
            put_lenenc_bytes(out, b"\x08________");
        };
        // After a variable, before the characteristics (MariaDB: trx_state, then
        // trx_characteristics, after every other tracker's entries).
        let mut got = Vec::new();
        encode_var(&mut got, b"autocommit", b"ON");
        chars(&mut got);
        encode_trx_state(&mut got, b"________");
        let mut want = Vec::new();
        encode_var(&mut want, b"autocommit", b"ON");
        state(&mut want);
        chars(&mut want);
        assert_eq!(got, want);
        // Without characteristics: at the end; an empty block: alone.
        let mut got = Vec::new();
        encode_var(&mut got, b"autocommit", b"ON");
        encode_trx_state(&mut got, b"________");
        let mut want = Vec::new();
        encode_var(&mut want, b"autocommit", b"ON");
        state(&mut want);
        assert_eq!(got, want);
        let mut got = Vec::new();
        encode_trx_state(&mut got, b"________");
        let mut want = Vec::new();
        state(&mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn a_classic_eof_keeps_the_state_flag_only_for_what_the_client_follows() {
        let defaults = Trackers::default();
        let mut gtid = Trackers::default();
        gtid.set("session_track_system_variables", "*");
        let mut state = Trackers::default();
        state.set("session_track_state_change", "ON");
        let mut trx = Trackers::default();
        trx.set("session_track_transaction_info", "STATE");
        let write = EofHint {
            may_write: true,
            ..EofHint::default()
        };
        let user_vars = EofHint {
            user_vars: true,
            ..EofHint::default()
        };
        let none = EofHint::default();
        let table: [(&Trackers, EofHint, bool, bool); 10] = [
            (&Trackers::everything(), none, false, true),
            (&defaults, none, false, false),
            (&defaults, write, false, false),
            (&defaults, user_vars, false, false),
            (&defaults, none, true, false),
            (&gtid, write, false, true),
            (&gtid, user_vars, false, false),
            (&state, user_vars, false, true),
            (&trx, none, true, true),
            (&trx, none, false, false),
        ];
        for (i, (t, hint, in_trx, keeps)) in table.into_iter().enumerate() {
            assert_eq!(t.keeps_classic_flag(hint, in_trx), keeps, "row {i}");
        }
    }

    #[test]
    fn a_reported_variable_takes_the_sessions_own_value() {
        let b = block();
        let out = replace_var(&b, b"LAST_GTID", b"")
            .unwrap()
            .expect("replaced");
        let mut want = Vec::new();
        encode_var(&mut want, b"last_gtid", b"");
        want.extend_from_slice(&b[2 + 1 + 9 + 1 + 5..]);
        assert_eq!(out, want);
        assert_eq!(replace_var(&b, b"last_gtid", b"0-1-5").unwrap(), None);
        assert_eq!(replace_var(&b, b"sql_mode", b"").unwrap(), None);
        assert!(replace_var(&[0, 9, 1], b"x", b"").is_err());
    }

    #[test]
    fn a_clients_trackers_are_restored_as_it_set_them_or_to_the_defaults() {
        assert_eq!(
            restore_sql(None),
            "SET SESSION session_track_system_variables = DEFAULT, session_track_schema = \
             DEFAULT, session_track_state_change = DEFAULT, session_track_transaction_info = \
             DEFAULT"
        );
        let values = [
            Some("time_zone,it's".to_string()),
            Some("0".to_string()),
            None,
            Some("STATE".to_string()),
        ];
        assert_eq!(
            restore_sql(Some(&values)),
            "SET SESSION session_track_system_variables = 'time_zone,it''s', \
             session_track_schema = 0, session_track_state_change = DEFAULT, \
             session_track_transaction_info = 'STATE'"
        );
    }

    fn block() -> Vec<u8> {
        let mut b = Vec::new();
        encode_var(&mut b, b"last_gtid", b"0-1-5");
        encode_var(&mut b, b"time_zone", b"+01:00");
        b.push(session_track::STATE_CHANGE);
        put_lenenc_bytes(&mut b, b"1");
        b.push(session_track::SCHEMA);
        let mut s = Vec::new();
        put_lenenc_bytes(&mut s, b"app");
        put_lenenc_bytes(&mut b, &s);
        b.push(session_track::TRANSACTION_STATE);
        let mut t = Vec::new();
        put_lenenc_bytes(&mut t, b"________");
        put_lenenc_bytes(&mut b, &t);
        b
    }

    #[test]
    fn defaults_keep_what_the_server_reports_by_default() {
        let t = Trackers::default();
        let out = t.filter(&block()).unwrap().expect("some dropped");
        let mut want = Vec::new();
        encode_var(&mut want, b"time_zone", b"+01:00");
        want.push(session_track::SCHEMA);
        let mut s = Vec::new();
        put_lenenc_bytes(&mut s, b"app");
        put_lenenc_bytes(&mut want, &s);
        assert_eq!(out, want);
    }

    #[test]
    fn a_client_that_tracks_everything_gets_everything() {
        let mut t = Trackers::default();
        assert!(t.set("session_track_system_variables", "*"));
        assert!(t.set("session_track_state_change", "ON"));
        assert!(t.set("session_track_transaction_info", "STATE"));
        assert_eq!(t.filter(&block()).unwrap(), None);
        assert!(!t.set("time_zone", "UTC"));
        t.set("session_track_schema", "OFF");
        t.set("session_track_system_variables", "");
        assert!(!t.all_vars && t.vars.is_empty());
        let out = t.filter(&block()).unwrap().unwrap();
        assert_eq!(out[0], session_track::STATE_CHANGE);
    }

    #[test]
    fn listed_variables_come_in_the_lists_order() {
        let mut b = Vec::new();
        encode_var(&mut b, b"character_set_connection", b"latin1");
        encode_var(&mut b, b"character_set_client", b"latin1");
        encode_var(&mut b, b"character_set_results", b"latin1");
        b.push(session_track::STATE_CHANGE);
        put_lenenc_bytes(&mut b, b"1");
        let mut want = Vec::new();
        encode_var(&mut want, b"character_set_client", b"latin1");
        encode_var(&mut want, b"character_set_connection", b"latin1");
        encode_var(&mut want, b"character_set_results", b"latin1");
        assert_eq!(Trackers::default().filter(&b).unwrap(), Some(want));
        assert_eq!(Trackers::everything().filter(&b).unwrap(), None);
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let t = Trackers::default();
        let b = block();
        for cut in 0..b.len() {
            let _ = t.filter(&b[..cut]);
        }
        assert!(t.filter(&[0, 5, 1]).is_err());
    }

    #[test]
    fn a_variable_is_found_and_inserted_after_the_variables() {
        let mut block = Vec::new();
        encode_var(&mut block, b"autocommit", b"OFF");
        encode_var(&mut block, b"last_gtid", b"0-1-7");
        let schema_at = block.len();
        block.extend_from_slice(&[session_track::SCHEMA, 2, 1, b'a']);
        let (at, v) = find_var(&block, b"LAST_GTID").unwrap().unwrap();
        assert_eq!(v, b"0-1-7");
        let mut rest = block.clone();
        rest.drain(at);
        assert!(find_var(&rest, b"last_gtid").unwrap().is_none());
        let again = insert_var(&rest, b"last_gtid", b"0-1-7").unwrap();
        assert_eq!(again, block, "after the variables, before the schema");
        assert_eq!(schema_at, block.len() - 4);
        assert!(find_var(&[], b"last_gtid").unwrap().is_none());
        assert!(
            find_var(&[0, 9], b"x").is_err(),
            "a cut entry is an error, not a panic"
        );
    }
}
