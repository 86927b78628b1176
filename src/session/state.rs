//! Session settings as the server reports them through its session trackers, and the statement
//! that makes one backend connection's settings equal to a client's.
//!
//! A [`Settings`] value is the difference from a fresh backend connection: the current schema and
//! every system variable that was changed, with the value the server reported. Settings are
//! immutable and interned per shard, so a million clients with the same settings share one
//! allocation and comparing a client with a backend is usually a pointer comparison.

use crate::codec::packets::SessionChange;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// The selected schema (`None`: none selected).
    pub schema: Option<Box<str>>,
    /// Changed system variables, sorted by name, as the server reported them.
    pub vars: Vec<(Box<str>, Box<str>)>,
}

/// Variables sluice itself sets on every backend connection; a client's values for them are not
/// recorded or replayed.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("session_track_")
}

/// How sluice treats a system variable the server reports changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarClass {
    /// Session-settable: recorded and replayed on whichever backend serves the session.
    Replay,
    /// Replayed, and it governs the client's own connection at sluice too (`wait_timeout`,
    /// `interactive_timeout`, `net_read_timeout`, `net_write_timeout`).
    Connection,
    /// `last_insert_id` / `identity`: the session's LAST_INSERT_ID, a history value carried by
    /// sluice (see [`super::effects`]), never a setting.
    LastInsertId,
    /// `insert_id`: a one-shot value for the next insert; the backend stays until it is used.
    OneShot,
    /// `last_gtid`: the session's last GTID, a read-only history value.
    LastGtid,
    /// Never recorded: sluice's own trackers, and whatever the server says a session cannot set.
    Ignore,
}

/// Variables that govern the client's connection itself.
pub const CONNECTION_VARS: [&str; 4] = [
    "interactive_timeout",
    "net_read_timeout",
    "net_write_timeout",
    "wait_timeout",
];

/// What the server says about its session variables: which a session may set (read from
/// `information_schema.SYSTEM_VARIABLES` at start: session scope, not read-only) and what a
/// fresh connection holds. Decided by the server, not by a list in sluice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VarCatalog {
    /// Session-settable variables; `None` when the server's table could not be read (then every
    /// reported variable is replayed except the read-only ones sluice knows of).
    settable: Option<HashSet<Box<str>>>,
    /// A fresh backend connection's session values.
    fresh: std::collections::HashMap<Box<str>, Box<str>>,
}

/// Read-only variables the server reports, for servers whose variable table sluice cannot read.
const KNOWN_READ_ONLY: [&str; 4] = [
    "last_gtid",
    "warning_count",
    "error_count",
    "in_transaction",
];

impl VarCatalog {
    /// A catalog from the server's `(name, scope, read_only, session_value)` rows.
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = (&'a str, &'a str, bool, Option<&'a str>)>,
    ) -> VarCatalog {
        let mut settable = HashSet::new();
        let mut fresh = std::collections::HashMap::new();
        for (name, scope, read_only, value) in rows {
            let name = name.to_ascii_lowercase();
            let session =
                scope.eq_ignore_ascii_case("SESSION") || scope.eq_ignore_ascii_case("SESSION ONLY");
            if session && !read_only {
                settable.insert(name.clone().into_boxed_str());
            }
            if let Some(v) = value {
                fresh.insert(name.into_boxed_str(), v.into());
            }
        }
        VarCatalog {
            settable: Some(settable),
            fresh,
        }
    }

    /// Only what both catalogs allow (several backends must all accept a replay).
    pub fn intersect(&mut self, other: &VarCatalog) {
        if let (Some(a), Some(b)) = (&mut self.settable, &other.settable) {
            a.retain(|n| b.contains(n));
        } else if self.settable.is_none() {
            self.settable = other.settable.clone();
        }
        if self.fresh.is_empty() {
            self.fresh = other.fresh.clone();
        }
    }

    pub fn is_known(&self) -> bool {
        self.settable.is_some()
    }

    /// The session-settable variables, if the server told (compared between backends by
    /// `backend::compat`).
    pub fn settable(&self) -> Option<&HashSet<Box<str>>> {
        self.settable.as_ref()
    }

    /// A fresh connection's value of `name`, if the server told.
    pub fn fresh_value(&self, name: &str) -> Option<&str> {
        self.fresh.get(name).map(|v| &**v)
    }

    pub fn class(&self, name: &str) -> VarClass {
        match name {
            "last_insert_id" | "identity" => return VarClass::LastInsertId,
            "insert_id" => return VarClass::OneShot,
            "last_gtid" => return VarClass::LastGtid,
            _ => {}
        }
        if is_reserved(name) || !is_identifier(name) {
            return VarClass::Ignore;
        }
        let settable = match &self.settable {
            Some(s) => s.contains(name),
            None => !KNOWN_READ_ONLY.contains(&name),
        };
        if !settable {
            VarClass::Ignore
        } else if CONNECTION_VARS.contains(&name) {
            VarClass::Connection
        } else {
            VarClass::Replay
        }
    }
}

/// The character set variables a fresh backend connection takes from its handshake collation
/// (not from the global defaults, which `SET x = DEFAULT` would give).
/// Not a server variable: the collation `character_set_results` carries inside the server when
/// it is not its character set's default. No variable shows it, yet it names the collation of
/// every converted result column; only the handshake and `SET NAMES x COLLATE y` set it (any
/// other change of `character_set_results` returns it to the default), so sluice replays it
/// with `SET NAMES`.
pub const RESULTS_COLLATION: &str = "character_set_results/collation";

/// Not a server variable either: the collation `character_set_client` carries inside the
/// server. `@@character_set_client` shows only its character set, yet a string parameter bound
/// by COM_STMT_EXECUTE takes this collation when no conversion is needed (the client's and the
/// connection's character sets are the same; MariaDB 10.11 `Item_param::CONVERSION_INFO::set`),
/// and with it, for example, the BINARY flag of a `SELECT ?` column (checked against MariaDB
/// 10.11: after `SET NAMES utf8mb4 COLLATE utf8mb4_bin` the flag is set, after a following
/// `SET character_set_client = utf8mb4` it is not). Like the results collation, only the
/// handshake and `SET NAMES x COLLATE y` give it a collation that is not its character set's
/// default (any other assignment of `character_set_client` returns it to the default; an
/// assignment by number, `SET character_set_client = 46`, also gives the default, checked), so
/// sluice replays it with `SET NAMES` and then leaves `character_set_client` alone.
pub const CLIENT_COLLATION: &str = "character_set_client/collation";

pub const CHARSET_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

/// What a fresh backend connection's charset variables hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshCharset {
    pub charset: String,
    pub collation: String,
}

impl FreshCharset {
    fn value(&self, name: &str) -> Option<&str> {
        match name {
            "collation_connection" => Some(&self.collation),
            n if CHARSET_VARS.contains(&n) => Some(&self.charset),
            _ => None,
        }
    }
}

impl Settings {
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| self.vars[i].1.as_ref())
    }

    pub fn set_var(&mut self, name: &str, value: &str) {
        match self.vars.binary_search_by(|(n, _)| n.as_ref().cmp(name)) {
            Ok(i) => self.vars[i].1 = value.into(),
            Err(i) => self.vars.insert(i, (name.into(), value.into())),
        }
    }

    /// Settings for a client that logged in with a collation other than the backends'.
    /// A handshake's settings: `collation` (of `charset`; `default` tells whether it is the
    /// character set's default) for the connection and, inside the server, for results.
    pub fn for_collation(
        charset: &str,
        collation: &str,
        default: bool,
        fresh: &FreshCharset,
    ) -> Settings {
        let mut s = Settings::default();
        if charset != fresh.charset || collation != fresh.collation {
            for v in CHARSET_VARS {
                s.set_var(
                    v,
                    if v == "collation_connection" {
                        collation
                    } else {
                        charset
                    },
                );
            }
        }
        if !default {
            s.set_var(RESULTS_COLLATION, collation);
            s.set_var(CLIENT_COLLATION, collation);
        }
        s
    }

    /// Records the results collation a server showed (`None`: its character set's default, or
    /// no conversion of results at all).
    pub fn set_results_collation(&mut self, collation: Option<&str>) {
        match collation {
            Some(c) => self.set_var(RESULTS_COLLATION, c),
            None => self.vars.retain(|(n, _)| &**n != RESULTS_COLLATION),
        }
    }

    /// Records the collation `character_set_client` carries (`None`: its character set's
    /// default).
    pub fn set_client_collation(&mut self, collation: Option<&str>) {
        match collation {
            Some(c) => self.set_var(CLIENT_COLLATION, c),
            None => self.vars.retain(|(n, _)| &**n != CLIENT_COLLATION),
        }
    }

    /// Applies the changes an OK packet reported, keeping only what the catalog says is a
    /// replayable setting; `temporary` names variables whose reports are one statement's values
    /// (`SET STATEMENT … FOR`). A value equal to a fresh connection's is removed: it is no
    /// difference. Returns `true` if anything changed.
    pub fn apply<'a>(
        &mut self,
        changes: impl IntoIterator<Item = SessionChange<'a>>,
        catalog: &VarCatalog,
        temporary: &[Vec<u8>],
    ) -> bool {
        let mut changed = false;
        for c in changes {
            match c {
                SessionChange::SystemVariable { name, value } => {
                    let (Ok(name), Ok(value)) =
                        (std::str::from_utf8(name), std::str::from_utf8(value))
                    else {
                        continue;
                    };
                    if temporary
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
                    {
                        continue;
                    }
                    if !matches!(catalog.class(name), VarClass::Replay | VarClass::Connection) {
                        continue;
                    }
                    if name == "character_set_results" {
                        // Back to its default collation, unless the statement was a SET NAMES
                        // with COLLATE (which the caller learns from the server).
                        changed |= self.remove_var(RESULTS_COLLATION);
                    }
                    if name == "character_set_client" {
                        // Likewise (see CLIENT_COLLATION).
                        changed |= self.remove_var(CLIENT_COLLATION);
                    }
                    let is_fresh =
                        !CHARSET_VARS.contains(&name) && catalog.fresh_value(name) == Some(value);
                    if is_fresh {
                        changed |= self.remove_var(name);
                    } else if self.var(name) != Some(value) {
                        self.set_var(name, value);
                        changed = true;
                    }
                }
                SessionChange::Schema(s) => {
                    // The schema tracker reports an empty name when the current schema was
                    // dropped: the session has none.
                    let s = (!s.is_empty()).then(|| String::from_utf8_lossy(s));
                    if self.schema.as_deref() != s.as_deref() {
                        self.schema = s.map(Into::into);
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        changed
    }

    fn remove_var(&mut self, name: &str) -> bool {
        match self.vars.binary_search_by(|(n, _)| n.as_ref().cmp(name)) {
            Ok(i) => {
                self.vars.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Variables that decide what a statement's text means when the server prepares it (with the
/// schema): a statement prepared lazily on another backend is prepared under the same ones.
pub const PREPARE_VARS: [&str; 5] = [
    "character_set_client",
    "character_set_connection",
    "collation_connection",
    "sql_mode",
    "old_mode",
];

impl Settings {
    /// The schema and the [`PREPARE_VARS`] of these settings.
    pub fn for_prepare(&self) -> Settings {
        Settings {
            schema: self.schema.clone(),
            vars: self
                .vars
                .iter()
                .filter(|(n, _)| PREPARE_VARS.contains(&&**n))
                .cloned()
                .collect(),
        }
    }

    /// These settings with the schema and [`PREPARE_VARS`] of `p` instead of their own (the
    /// schema only when `p` has one: a schema cannot be left without COM_CHANGE_USER, which would
    /// end a transaction).
    pub fn with_prepare(&self, p: &Settings) -> Settings {
        let mut s = Settings {
            schema: p.schema.clone().or_else(|| self.schema.clone()),
            vars: self
                .vars
                .iter()
                .filter(|(n, _)| !PREPARE_VARS.contains(&&**n))
                .cloned()
                .collect(),
        };
        for (n, v) in &p.vars {
            s.set_var(n, v);
        }
        // Another character_set_client is assigned by name, which gives it its default
        // collation (and keeping this one could name a collation of another character set).
        if s.var("character_set_client") != self.var("character_set_client") {
            s.set_client_collation(None);
        }
        s
    }
}

/// What must run on a backend connection to give it a client's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// COM_INIT_DB with this schema.
    pub schema: Option<Box<str>>,
    /// The backend has a schema and the client has none: only COM_CHANGE_USER clears it.
    pub clear_schema: bool,
    /// One `SET @@SESSION.x = …, …` statement.
    pub set: Option<String>,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        self.schema.is_none() && !self.clear_schema && self.set.is_none()
    }

    /// Adds the session's LAST_INSERT_ID to the SET statement (it is settable, so it is carried
    /// exactly wherever the session's next statement reads it).
    pub fn carry_last_insert_id(&mut self, v: u64) {
        let a = format!("@@SESSION.last_insert_id = {v}");
        match &mut self.set {
            Some(set) => {
                set.push_str(", ");
                set.push_str(&a);
            }
            None => self.set = Some(format!("SET {a}")),
        }
    }
}

/// Plans the commands that turn a backend's `current` settings into the client's `wanted` ones.
pub fn plan(current: &Settings, wanted: &Settings, fresh: &FreshCharset) -> SyncPlan {
    let mut plan = SyncPlan::default();
    match (&current.schema, &wanted.schema) {
        (a, Some(b)) if a.as_deref() != Some(b) => plan.schema = Some(b.clone()),
        (Some(_), None) => plan.clear_schema = true,
        _ => {}
    }
    let mut assignments: Vec<(&str, String)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (cv, wv) = (&current.vars, &wanted.vars);
    let charset_value = |s: &'_ Settings, name: &str| -> Option<String> {
        s.var(name)
            .or_else(|| fresh.value(name))
            .map(|v| sql_value(name, v))
    };
    while i < cv.len() || j < wv.len() {
        let (name, value): (&str, Option<&str>) = match (cv.get(i), wv.get(j)) {
            (Some(c), Some(w)) if c.0 == w.0 => {
                i += 1;
                j += 1;
                if c.1 == w.1 {
                    continue;
                }
                (&w.0, Some(&w.1))
            }
            (Some(c), Some(w)) if c.0 < w.0 => {
                i += 1;
                (&c.0, None)
            }
            (Some(c), None) => {
                i += 1;
                (&c.0, None)
            }
            (_, Some(w)) => {
                j += 1;
                (&w.0, Some(&w.1))
            }
            (None, None) => break,
        };
        if name == RESULTS_COLLATION || name == CLIENT_COLLATION {
            continue;
        }
        let rhs = match value.or_else(|| fresh.value(name)) {
            Some(v) => sql_value(name, v),
            None => "DEFAULT".to_string(),
        };
        assignments.push((name, rhs));
    }
    // Setting max_join_size to anything but DEFAULT turns sql_big_selects off on the server:
    // after it, sql_big_selects is set again to what the session has, even when the two
    // connections agreed on it.
    if assignments.iter().any(|(n, _)| *n == "max_join_size")
        && !assignments.iter().any(|(n, _)| *n == "sql_big_selects")
    {
        let rhs = match wanted
            .var("sql_big_selects")
            .or_else(|| fresh.value("sql_big_selects"))
        {
            Some(v) => sql_value("sql_big_selects", v),
            None => "DEFAULT".to_string(),
        };
        assignments.push(("sql_big_selects", rhs));
    }
    let mut set: Vec<String> = Vec::new();
    // An assignment of character_set_results (character_set_client) by name above returns its
    // hidden collation to the default, even to the same character set: the backend has none
    // then.
    let assigned = |name: &str| assignments.iter().any(|(n, _)| *n == name);
    let (had, wants) = (
        current
            .var(RESULTS_COLLATION)
            .filter(|_| !assigned("character_set_results")),
        wanted.var(RESULTS_COLLATION),
    );
    let (had_client, wants_client) = (
        current
            .var(CLIENT_COLLATION)
            .filter(|_| !assigned("character_set_client")),
        wanted.var(CLIENT_COLLATION),
    );
    // Only SET NAMES x COLLATE y gives results or the client a collation that is not the
    // character set's default (both y, and the connection (x, y)). Both wanted means the same
    // y: nothing else sets either.
    let names = match (wants, wants_client) {
        (Some(y), _) if had != wants => Some((y, "character_set_results")),
        (_, Some(y)) if had_client != wants_client => Some((y, "character_set_client")),
        _ => None,
    };
    if let Some((y, of)) = names {
        let x = wanted.var(of).unwrap_or(&fresh.charset);
        set.push(format!("NAMES {} COLLATE {}", quote(x), quote(y)));
        // The other character set variables follow by name; an assignment of
        // character_set_results or character_set_client returns it to its default collation,
        // so the one that keeps y is left alone.
        assignments.retain(|(n, _)| !CHARSET_VARS.contains(n));
        for name in CHARSET_VARS {
            let keeps = match name {
                "character_set_results" => wants == Some(y),
                "character_set_client" => wants_client == Some(y),
                _ => false,
            };
            if keeps {
                continue;
            }
            if let Some(rhs) = charset_value(wanted, name) {
                assignments.push((name, rhs));
            }
        }
    } else {
        // Any assignment of character_set_results (character_set_client) returns it to its
        // default collation.
        for (had, wants, name) in [
            (had, wants, "character_set_results"),
            (had_client, wants_client, "character_set_client"),
        ] {
            if had.is_some() && wants.is_none() && !assignments.iter().any(|(n, _)| *n == name) {
                if let Some(rhs) = charset_value(wanted, name) {
                    assignments.push((name, rhs));
                }
            }
        }
    }
    set.extend(
        assignments
            .iter()
            .map(|(name, rhs)| format!("@@SESSION.{name} = {rhs}")),
    );
    if !set.is_empty() {
        plan.set = Some(format!("SET {}", set.join(", ")));
    }
    plan
}

/// A reported value as SQL: numbers bare (numeric variables refuse quoted values), an empty
/// character set as NULL, everything else as a string literal.
fn sql_value(name: &str, v: &str) -> String {
    let numeric = {
        let d = v.strip_prefix('-').unwrap_or(v);
        !d.is_empty()
            && d.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && d.bytes().filter(|&b| b == b'.').count() <= 1
            && !d.starts_with('.')
            && !d.ends_with('.')
    };
    if numeric {
        return v.to_string();
    }
    if v.is_empty() && name.starts_with("character_set_") {
        return "NULL".to_string();
    }
    quote(v)
}

/// A string literal that means `v` whatever the backend's character set and sql_mode.
/// Printable ASCII without backslashes is quoted (quotes doubled); anything else becomes a hex
/// literal. The statement is lexed in the backend's current `character_set_client`, which another
/// client may have set to gbk, big5 or sjis: there a value's byte 0x5C can be the second half of
/// a multi-byte character, so backslash escaping would come out unbalanced and let a crafted
/// value end its literal early. Hex digits and printable ASCII mean the same in every charset
/// sluice can meet, and need no backslash.
pub fn quote(v: &str) -> String {
    let plain = v.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
    if plain {
        format!("'{}'", v.replace('\'', "''"))
    } else {
        let mut out = String::with_capacity(2 * v.len() + 3);
        out.push_str("X'");
        for b in v.bytes() {
            out.push_str(&format!("{b:02X}"));
        }
        out.push('\'');
        out
    }
}

/// One shard's interned values: equal values share one `Rc` (settings, SQL texts).
pub struct Interner<T: ?Sized + Eq + std::hash::Hash> {
    set: RefCell<HashSet<Rc<T>>>,
}

impl<T: ?Sized + Eq + std::hash::Hash> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            set: RefCell::new(HashSet::new()),
        }
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Interner<T> {
    /// The shared copy of `v` (made from `make` the first time).
    pub fn intern_with(&self, v: &T, make: impl FnOnce() -> Rc<T>) -> Rc<T> {
        let mut set = self.set.borrow_mut();
        if let Some(existing) = set.get(v) {
            return existing.clone();
        }
        let rc = make();
        set.insert(rc.clone());
        rc
    }

    /// Drops entries nobody uses any more.
    pub fn sweep(&self) {
        self.set.borrow_mut().retain(|s| Rc::strong_count(s) > 1);
    }

    pub fn len(&self) -> usize {
        self.set.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Interner<Settings> {
    pub fn intern(&self, s: Settings) -> Rc<Settings> {
        let mut set = self.set.borrow_mut();
        if let Some(existing) = set.get(&s) {
            return existing.clone();
        }
        let rc = Rc::new(s);
        set.insert(rc.clone());
        rc
    }
}

impl Interner<[u8]> {
    pub fn intern_bytes(&self, b: &[u8]) -> Rc<[u8]> {
        self.intern_with(b, || Rc::from(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> FreshCharset {
        FreshCharset {
            charset: "utf8mb4".into(),
            collation: "utf8mb4_general_ci".into(),
        }
    }

    fn settings(schema: Option<&str>, vars: &[(&str, &str)]) -> Settings {
        let mut s = Settings {
            schema: schema.map(Into::into),
            vars: vec![],
        };
        for (n, v) in vars {
            s.set_var(n, v);
        }
        s
    }

    #[test]
    fn equal_settings_need_nothing() {
        let a = settings(Some("app"), &[("time_zone", "+01:00")]);
        assert!(plan(&a, &a.clone(), &fresh()).is_empty());
    }

    #[test]
    fn differences_become_one_statement_with_defaults_for_removed_vars() {
        let backend = settings(
            Some("a"),
            &[
                ("sql_mode", "ANSI"),
                ("time_zone", "+01:00"),
                ("wait_timeout", "5"),
            ],
        );
        let client = settings(
            Some("b"),
            &[
                ("autocommit", "OFF"),
                ("time_zone", "+02:00"),
                ("sql_select_limit", "100"),
            ],
        );
        let p = plan(&backend, &client, &fresh());
        assert_eq!(p.schema.as_deref(), Some("b"));
        assert_eq!(
            p.set.as_deref(),
            Some(
                "SET @@SESSION.autocommit = 'OFF', @@SESSION.sql_mode = DEFAULT, \
                 @@SESSION.sql_select_limit = 100, @@SESSION.time_zone = '+02:00', \
                 @@SESSION.wait_timeout = DEFAULT"
            )
        );
    }

    #[test]
    fn max_join_size_is_followed_by_the_sessions_sql_big_selects() {
        // The server turns sql_big_selects off whenever max_join_size is set.
        let backend = settings(None, &[("sql_big_selects", "ON")]);
        let client = settings(
            None,
            &[("max_join_size", "1000000"), ("sql_big_selects", "ON")],
        );
        assert_eq!(
            plan(&backend, &client, &fresh()).set.as_deref(),
            Some("SET @@SESSION.max_join_size = 1000000, @@SESSION.sql_big_selects = 'ON'")
        );
        let client = settings(None, &[("max_join_size", "1000000")]);
        assert_eq!(
            plan(&Settings::default(), &client, &fresh()).set.as_deref(),
            Some("SET @@SESSION.max_join_size = 1000000, @@SESSION.sql_big_selects = DEFAULT")
        );
    }

    #[test]
    fn charset_vars_return_to_the_handshake_charset_not_the_global_default() {
        let backend = settings(
            None,
            &[
                ("character_set_client", "latin1"),
                ("collation_connection", "latin1_swedish_ci"),
            ],
        );
        let p = plan(&backend, &Settings::default(), &fresh());
        assert_eq!(
            p.set.as_deref(),
            Some("SET @@SESSION.character_set_client = 'utf8mb4', @@SESSION.collation_connection = 'utf8mb4_general_ci'")
        );
        let backend = settings(None, &[("character_set_results", "latin1")]);
        let client = settings(None, &[("character_set_results", "")]);
        assert_eq!(
            plan(&backend, &client, &fresh()).set.as_deref(),
            Some("SET @@SESSION.character_set_results = NULL")
        );
    }

    #[test]
    fn a_schemaless_client_on_a_backend_with_a_schema_needs_a_clear() {
        let p = plan(&settings(Some("app"), &[]), &Settings::default(), &fresh());
        assert!(p.clear_schema);
        assert!(p.schema.is_none());
    }

    #[test]
    fn literals_cannot_be_unbalanced_by_the_backend_charset() {
        assert_eq!(quote("it's"), "'it''s'");
        // A backslash, a NUL or any non-ASCII byte: hex, so gbk's 0x81 0x5C pair never forms.
        assert_eq!(quote(r"a\b"), "X'615C62'");
        assert_eq!(quote("\u{4E01}\\"), "X'E4B8815C'");
        assert_eq!(quote("a\0"), "X'6100'");
        assert_eq!(sql_value("max_statement_time", "0.500000"), "0.500000");
        assert_eq!(sql_value("time_zone", "+01:00"), "'+01:00'");
        assert_eq!(sql_value("x", "-5"), "-5");
        assert_eq!(sql_value("x", "1.2.3"), "'1.2.3'");
        assert_eq!(sql_value("sql_mode", ""), "''");
    }

    #[test]
    fn apply_records_reported_changes_and_skips_reserved_ones() {
        let mut s = Settings::default();
        let cat = VarCatalog::default();
        let changed = s.apply(
            [
                SessionChange::SystemVariable {
                    name: b"time_zone",
                    value: b"+01:00",
                },
                SessionChange::SystemVariable {
                    name: b"session_track_system_variables",
                    value: b"",
                },
                SessionChange::SystemVariable {
                    name: b"bad name;",
                    value: b"x",
                },
                SessionChange::Schema(b"app"),
                SessionChange::StateChange(true),
            ],
            &cat,
            &[],
        );
        assert!(changed);
        assert_eq!(s, settings(Some("app"), &[("time_zone", "+01:00")]));
        assert!(!s.apply([SessionChange::Schema(b"app")], &cat, &[]));
        // A dropped current schema is reported as an empty name: no schema.
        assert!(s.apply([SessionChange::Schema(b"")], &cat, &[]));
        assert_eq!(s.schema, None);
    }

    fn catalog() -> VarCatalog {
        VarCatalog::from_rows([
            ("TIME_ZONE", "SESSION", false, Some("SYSTEM")),
            (
                "SQL_SELECT_LIMIT",
                "SESSION",
                false,
                Some("18446744073709551615"),
            ),
            ("WAIT_TIMEOUT", "SESSION", false, Some("28800")),
            ("LAST_GTID", "SESSION ONLY", true, Some("")),
            ("MAX_ALLOWED_PACKET", "SESSION", true, Some("67108864")),
            ("READ_ONLY", "GLOBAL", false, Some("OFF")),
            ("LAST_INSERT_ID", "SESSION ONLY", false, Some("0")),
        ])
    }

    #[test]
    fn the_server_decides_what_is_replayed() {
        let cat = catalog();
        assert_eq!(cat.class("time_zone"), VarClass::Replay);
        assert_eq!(cat.class("wait_timeout"), VarClass::Connection);
        assert_eq!(cat.class("last_gtid"), VarClass::LastGtid);
        assert_eq!(cat.class("last_insert_id"), VarClass::LastInsertId);
        assert_eq!(cat.class("identity"), VarClass::LastInsertId);
        assert_eq!(cat.class("insert_id"), VarClass::OneShot);
        // Read-only for a session, global-only, unknown to the server: never replayed.
        assert_eq!(cat.class("max_allowed_packet"), VarClass::Ignore);
        assert_eq!(cat.class("read_only"), VarClass::Ignore);
        assert_eq!(cat.class("no_such_variable"), VarClass::Ignore);
        assert_eq!(cat.class("session_track_schema"), VarClass::Ignore);
        // Without the server's table only the known read-only variables are kept out.
        let unknown = VarCatalog::default();
        assert_eq!(unknown.class("no_such_variable"), VarClass::Replay);
        assert_eq!(unknown.class("warning_count"), VarClass::Ignore);
        let mut s = Settings::default();
        s.apply(
            [
                SessionChange::SystemVariable {
                    name: b"last_gtid",
                    value: b"0-1-5",
                },
                SessionChange::SystemVariable {
                    name: b"last_insert_id",
                    value: b"5",
                },
                SessionChange::SystemVariable {
                    name: b"wait_timeout",
                    value: b"50",
                },
            ],
            &cat,
            &[],
        );
        assert_eq!(s, settings(None, &[("wait_timeout", "50")]));
    }

    #[test]
    fn fresh_values_and_one_statement_values_are_no_difference() {
        let cat = catalog();
        let mut s = settings(None, &[("sql_select_limit", "9")]);
        // SET STATEMENT sql_select_limit = 3 FOR …: the server reports 3 for one statement.
        assert!(!s.apply(
            [SessionChange::SystemVariable {
                name: b"sql_select_limit",
                value: b"3",
            }],
            &cat,
            &[b"sql_select_limit".to_vec()],
        ));
        // A procedure that restores the default: the variable is at its fresh value again.
        assert!(s.apply(
            [SessionChange::SystemVariable {
                name: b"sql_select_limit",
                value: b"18446744073709551615",
            }],
            &cat,
            &[],
        ));
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn last_insert_id_is_carried_in_the_set_statement() {
        let mut p = plan(&Settings::default(), &Settings::default(), &fresh());
        p.carry_last_insert_id(42);
        assert_eq!(p.set.as_deref(), Some("SET @@SESSION.last_insert_id = 42"));
        let mut p = plan(
            &Settings::default(),
            &settings(None, &[("time_zone", "+01:00")]),
            &fresh(),
        );
        p.carry_last_insert_id(7);
        assert_eq!(
            p.set.as_deref(),
            Some("SET @@SESSION.time_zone = '+01:00', @@SESSION.last_insert_id = 7")
        );
    }

    #[test]
    fn for_collation_sets_all_four_charset_vars_only_when_different() {
        assert_eq!(
            Settings::for_collation("utf8mb4", "utf8mb4_general_ci", true, &fresh()),
            Settings::default()
        );
        let s = Settings::for_collation("latin1", "latin1_swedish_ci", true, &fresh());
        assert_eq!(s.var("character_set_results"), Some("latin1"));
        assert_eq!(s.var("collation_connection"), Some("latin1_swedish_ci"));
        assert_eq!(s.vars.len(), 4);
        // A collation not its character set's default is the results collation too, and the
        // client's.
        let s = Settings::for_collation("utf8mb4", "utf8mb4_unicode_ci", false, &fresh());
        assert_eq!(s.var(RESULTS_COLLATION), Some("utf8mb4_unicode_ci"));
        assert_eq!(s.var(CLIENT_COLLATION), Some("utf8mb4_unicode_ci"));
        assert_eq!(s.vars.len(), 6);
    }

    #[test]
    fn a_results_collation_is_replayed_with_set_names() {
        let plain = Settings::for_collation("latin1", "latin1_swedish_ci", true, &fresh());
        let german = Settings::for_collation("latin1", "latin1_german1_ci", false, &fresh());
        let f = fresh();
        // Into it: SET NAMES, then the connection's own variables again (not
        // character_set_client: the handshake gave it the collation too).
        assert_eq!(
            plan(&Settings::default(), &german, &f).set.as_deref(),
            Some(
                "SET NAMES 'latin1' COLLATE 'latin1_german1_ci', \
                 @@SESSION.character_set_connection = 'latin1', \
                 @@SESSION.collation_connection = 'latin1_german1_ci'"
            )
        );
        // Out of it: an assignment of character_set_results, even to the same character set.
        assert_eq!(
            plan(&german, &plain, &f).set.as_deref(),
            Some(
                "SET @@SESSION.collation_connection = 'latin1_swedish_ci', \
                 @@SESSION.character_set_results = 'latin1', \
                 @@SESSION.character_set_client = 'latin1'"
            )
        );
        assert_eq!(
            plan(&german, &Settings::default(), &f).set.as_deref(),
            Some(
                "SET @@SESSION.character_set_client = 'utf8mb4', \
                 @@SESSION.character_set_connection = 'utf8mb4', \
                 @@SESSION.character_set_results = 'utf8mb4', \
                 @@SESSION.collation_connection = 'utf8mb4_general_ci'"
            )
        );
        assert_eq!(plan(&german, &german, &f).set, None);
        let mut s = german.clone();
        s.set_results_collation(None);
        s.set_client_collation(None);
        assert_eq!(s, {
            let mut p = plain.clone();
            p.set_var("collation_connection", "latin1_german1_ci");
            p
        });
    }

    /// The client's collation (`CLIENT_COLLATION`) and the results' are replayed with one SET
    /// NAMES; whichever of the two a session does not want back in its collation is assigned
    /// by name afterwards (which returns it to the character set's default).
    #[test]
    fn a_client_collation_is_replayed_with_set_names() {
        let f = fresh();
        // SET NAMES utf8mb4 COLLATE utf8mb4_bin: all of it.
        let mut bin = Settings::default();
        for v in CHARSET_VARS {
            bin.set_var(
                v,
                if v == "collation_connection" {
                    "utf8mb4_bin"
                } else {
                    "utf8mb4"
                },
            );
        }
        bin.set_results_collation(Some("utf8mb4_bin"));
        bin.set_client_collation(Some("utf8mb4_bin"));
        // …then SET character_set_results = utf8mb4: the client keeps it.
        let mut client_only = bin.clone();
        client_only.set_results_collation(None);
        // …or SET character_set_client = utf8mb4: results keep it.
        let mut results_only = bin.clone();
        results_only.set_client_collation(None);
        let cases: [(&Settings, &Settings, Option<&str>); 6] = [
            (
                &Settings::default(),
                &bin,
                Some(
                    "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin', \
                     @@SESSION.character_set_connection = 'utf8mb4', \
                     @@SESSION.collation_connection = 'utf8mb4_bin'",
                ),
            ),
            (
                &Settings::default(),
                &client_only,
                Some(
                    "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin', \
                     @@SESSION.character_set_connection = 'utf8mb4', \
                     @@SESSION.character_set_results = 'utf8mb4', \
                     @@SESSION.collation_connection = 'utf8mb4_bin'",
                ),
            ),
            (
                &Settings::default(),
                &results_only,
                Some(
                    "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin', \
                     @@SESSION.character_set_client = 'utf8mb4', \
                     @@SESSION.character_set_connection = 'utf8mb4', \
                     @@SESSION.collation_connection = 'utf8mb4_bin'",
                ),
            ),
            (
                &bin,
                &client_only,
                Some("SET @@SESSION.character_set_results = 'utf8mb4'"),
            ),
            (
                &bin,
                &results_only,
                Some("SET @@SESSION.character_set_client = 'utf8mb4'"),
            ),
            (
                &results_only,
                &bin,
                Some(
                    "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin', \
                     @@SESSION.character_set_connection = 'utf8mb4', \
                     @@SESSION.collation_connection = 'utf8mb4_bin'",
                ),
            ),
        ];
        for (i, (from, to, want)) in cases.iter().enumerate() {
            assert_eq!(plan(from, to, &f).set.as_deref(), *want, "case {i}");
        }
        // The same character set written differently (a fresh connection's, unset) is still
        // assigned by name, which loses the collation: SET NAMES again.
        let mut bin_unset = bin.clone();
        bin_unset
            .vars
            .retain(|(n, _)| &**n != "character_set_client");
        assert_eq!(
            plan(&bin, &bin_unset, &f).set.as_deref(),
            Some(
                "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin', \
                 @@SESSION.character_set_connection = 'utf8mb4', \
                 @@SESSION.collation_connection = 'utf8mb4_bin'"
            )
        );
        // Switched to a statement's prepare-time character set, the client has its default
        // collation (never `latin1` with `utf8mb4_bin`).
        let mut latin1 = Settings::default();
        latin1.set_var("character_set_client", "latin1");
        let p = bin.with_prepare(&latin1);
        assert_eq!(p.var(CLIENT_COLLATION), None);
        assert_eq!(p.var(RESULTS_COLLATION), Some("utf8mb4_bin"));
        assert_eq!(bin.with_prepare(&bin.for_prepare()), bin);
        // A report of character_set_client returns it to the default.
        let cat = VarCatalog::default();
        let mut s = bin.clone();
        s.apply(
            [SessionChange::SystemVariable {
                name: b"character_set_client",
                value: b"utf8mb4",
            }],
            &cat,
            &[],
        );
        assert_eq!(s.var(CLIENT_COLLATION), None);
        assert_eq!(s.var(RESULTS_COLLATION), Some("utf8mb4_bin"));
    }

    #[test]
    fn interner_shares_and_sweeps() {
        let i: Interner<Settings> = Interner::default();
        let a = i.intern(settings(Some("x"), &[]));
        let b = i.intern(settings(Some("x"), &[]));
        assert!(Rc::ptr_eq(&a, &b));
        drop((a, b));
        i.sweep();
        assert!(i.is_empty());
        let t: Interner<[u8]> = Interner::default();
        let x = t.intern_bytes(b"SELECT 1");
        assert!(Rc::ptr_eq(&x, &t.intern_bytes(b"SELECT 1")));
    }
}
