//! Is a backend the same kind of server as the one sluice learned at start? Pure: two catalogs
//! in (what the instance runs with, [`crate::shared::Shared::server`], and what the backend just
//! told [`crate::bootstrap::probe`]), the differences that matter out. The prober
//! (`shard::probe`) asks when it first reaches a backend and at each reconnect, and does not
//! admit a backend with differences (health `incompatible`).
//!
//! What matters is what would change what sluice replays onto the backend or answers in the
//! server's name; each check says why:
//! - **Product and release series** (MariaDB 10.11, MySQL 8.0): sluice presents the first
//!   backend's version in its own greeting, and clients pick features and SQL from it. A patch
//!   level (10.11.6 vs 10.11.8) or a build suffix (`-log`, `+maria~deb12`) does not matter: a
//!   series is stable, and whatever a patch changes that sluice depends on shows up in the checks
//!   below.
//! - **Capabilities sluice offers its clients**: a backend missing one (session tracking,
//!   DEPRECATE_EOF, MariaDB's extended metadata) would send what the client did not negotiate.
//!   Capabilities it has beyond them are never offered, so they do not matter.
//! - **Every variable sluice would replay** (session scope, not read-only in the instance's
//!   catalog, not one of sluice's own) must be session-settable there too: a `SET` of one
//!   that is missing or read-only fails there. Variables only the backend has do not matter:
//!   sluice never replays them (as with backends listed at start, whose catalogs are
//!   intersected), so a patch upgrade that adds one is admitted.
//! - **Collations sluice knows** (id → name) and each character set's default: sluice turns
//!   a client's handshake collation into `SET NAMES` with them and stamps its own answers with
//!   the defaults. Collations only the backend has do not matter.
//! - **`lower_case_table_names` on or off**: sluice compares table names (temporary tables) the
//!   way the server does.
//! - **The column definitions of the history values sluice answers itself** (`LAST_INSERT_ID()`
//!   and the like): its answers carry them.
//!
//! Not compared: the server's default collation in its greeting (`character_set_server`, a
//! setting), a fresh connection's session values (settings such as `sql_mode` differ between
//! servers of the same kind; see the README's "Not there yet"), stored routines (data, refreshed
//! while running). When no backend answered at start (sluice runs on default values), there is
//! nothing to compare with: every backend is admitted.

use crate::bootstrap::ServerInfo;
use crate::session::state::VarClass;
use std::fmt;

/// How many differences a refusal names (the rest are counted).
pub const NAMED: usize = 3;

/// One difference that keeps a backend out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Another product or release series.
    Release { ours: String, theirs: String },
    /// Capability flags sluice offers its clients that the backend lacks (`MariaDB`: the
    /// extended ones).
    Capabilities { mariadb: bool, missing: u32 },
    /// The backend's variable table could not be read (the instance's was).
    VariablesUnknown,
    /// A variable sluice replays that the backend cannot set in a session: read-only there
    /// (`exists`), or with no session scope at all.
    NotSettable { name: String, exists: bool },
    /// A collation sluice knows is missing there or has another name.
    Collation {
        id: u16,
        ours: String,
        theirs: Option<String>,
    },
    /// A character set's default collation differs (or the charset is missing).
    DefaultCollation {
        charset: String,
        ours: u16,
        theirs: Option<u16>,
    },
    /// `lower_case_table_names` is on here and off there (or the reverse).
    TableNameCase { ours: bool },
    /// The column definition of a history value sluice answers differs.
    HistoryColumn { value: String },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Release { ours, theirs } => write!(f, "server {theirs}, not {ours}"),
            Difference::Capabilities { mariadb, missing } => write!(
                f,
                "lacks {}capabilities 0x{missing:x}",
                if *mariadb { "MariaDB " } else { "" }
            ),
            Difference::VariablesUnknown => write!(f, "its variables could not be read"),
            Difference::NotSettable { name, exists: true } => {
                write!(f, "variable {name} is read-only there")
            }
            Difference::NotSettable {
                name,
                exists: false,
            } => write!(f, "no session variable {name}"),
            Difference::Collation { id, ours, theirs } => match theirs {
                Some(t) => write!(f, "collation {id} is {t}, not {ours}"),
                None => write!(f, "no collation {id} ({ours})"),
            },
            Difference::DefaultCollation {
                charset,
                ours,
                theirs,
            } => match theirs {
                Some(t) => write!(f, "default collation of {charset} is {t}, not {ours}"),
                None => write!(f, "no character set {charset}"),
            },
            Difference::TableNameCase { ours } => write!(
                f,
                "lower_case_table_names is {} there",
                if *ours { "0" } else { "not 0" }
            ),
            Difference::HistoryColumn { value } => {
                write!(f, "{value} has another column type")
            }
        }
    }
}

/// A server's product and release series, from its version string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub mariadb: bool,
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let product = if self.mariadb { "MariaDB" } else { "MySQL" };
        write!(f, "{product} {}.{}", self.major, self.minor)
    }
}

impl Release {
    /// Parses `10.11.6-MariaDB-log`, MariaDB's `5.5.5-10.11.6-MariaDB…` (the prefix old clients
    /// need), `8.0.36`, `8.0.36-28` (Percona: MySQL). `None` when no `X.Y` leads it.
    pub fn parse(version: &[u8]) -> Option<Release> {
        let s = String::from_utf8_lossy(version);
        let mariadb = s.to_ascii_lowercase().contains("mariadb");
        let s = s.strip_prefix("5.5.5-").unwrap_or(&s);
        let mut parts = s.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Release {
            mariadb,
            major,
            minor,
        })
    }
}

/// The differences between what the instance runs with (`ours`) and what a backend showed
/// (`theirs`) that keep the backend out; empty when it is compatible. Sorted (variables and
/// collations by name and id) so a refusal reads the same each time.
pub fn compare(ours: &ServerInfo, theirs: &ServerInfo) -> Vec<Difference> {
    let mut out = Vec::new();
    if ours.is_fallback() {
        return out;
    }
    match (
        Release::parse(&ours.version),
        Release::parse(&theirs.version),
    ) {
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => out.push(Difference::Release {
            ours: a.to_string(),
            theirs: b.to_string(),
        }),
        _ if ours.version == theirs.version => {}
        _ => out.push(Difference::Release {
            ours: String::from_utf8_lossy(&ours.version).into_owned(),
            theirs: String::from_utf8_lossy(&theirs.version).into_owned(),
        }),
    }
    let missing = ours.client_capabilities() & !theirs.capabilities;
    if missing != 0 {
        out.push(Difference::Capabilities {
            mariadb: false,
            missing,
        });
    }
    let missing = ours.client_mariadb_capabilities() & !theirs.mariadb_capabilities;
    if missing != 0 {
        out.push(Difference::Capabilities {
            mariadb: true,
            missing,
        });
    }
    match (ours.vars.settable(), theirs.vars.settable()) {
        (Some(a), Some(b)) => {
            let mut names: Vec<&str> = a
                .iter()
                .map(|n| &**n)
                .filter(|n| !b.contains(*n) && ours.vars.class(n) != VarClass::Ignore)
                .collect();
            names.sort_unstable();
            out.extend(names.into_iter().map(|n| Difference::NotSettable {
                name: n.to_string(),
                exists: theirs.vars.fresh_value(n).is_some(),
            }));
        }
        (Some(_), None) => out.push(Difference::VariablesUnknown),
        // The instance could not read its own: it replays every reported variable but the
        // known read-only ones, whatever the server; nothing learned to compare.
        (None, _) => {}
    }
    let mut ids: Vec<(&u16, _)> = ours.collations.iter().collect();
    ids.sort_unstable_by_key(|(id, _)| **id);
    for (id, c) in ids {
        let t = theirs.collations.get(id);
        if t != Some(c) {
            out.push(Difference::Collation {
                id: *id,
                ours: c.name.clone(),
                theirs: t.map(|t| t.name.clone()),
            });
        }
    }
    let mut sets: Vec<(&String, &u16)> = ours.default_collations.iter().collect();
    sets.sort_unstable();
    for (cs, id) in sets {
        let t = theirs.default_collations.get(cs).copied();
        if t != Some(*id) {
            out.push(Difference::DefaultCollation {
                charset: cs.clone(),
                ours: *id,
                theirs: t,
            });
        }
    }
    if ours.fold_table_names != theirs.fold_table_names {
        out.push(Difference::TableNameCase {
            ours: ours.fold_table_names,
        });
    }
    let mut hist: Vec<String> = ours
        .templates
        .iter()
        .filter(|(k, t)| theirs.templates.get(*k).is_some_and(|o| o != *t))
        .map(|(k, _)| format!("{k:?}"))
        .collect();
    hist.sort_unstable();
    out.extend(
        hist.into_iter()
            .map(|value| Difference::HistoryColumn { value }),
    );
    out
}

/// What a refusal says: the first [`NAMED`] differences, then how many more.
pub fn summary(diffs: &[Difference]) -> String {
    let mut s = diffs
        .iter()
        .take(NAMED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if diffs.len() > NAMED {
        s.push_str(&format!("; and {} more", diffs.len() - NAMED));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Collation;
    use crate::codec::caps::{cap, mariadb_cap};
    use crate::session::state::VarCatalog;

    /// `(name, scope, read_only)` rows of a small MariaDB 10.11-like variable table.
    const VARS: &[(&str, &str, bool)] = &[
        ("sql_mode", "SESSION", false),
        ("time_zone", "SESSION", false),
        ("innodb_lock_wait_timeout", "SESSION", false),
        ("wait_timeout", "SESSION", false),
        ("last_gtid", "SESSION ONLY", true),
        ("session_track_schema", "SESSION", false),
        ("max_connections", "GLOBAL", false),
    ];

    fn catalog(rows: &[(&str, &str, bool)]) -> VarCatalog {
        VarCatalog::from_rows(rows.iter().map(|&(n, s, ro)| (n, s, ro, Some("1"))))
    }

    /// A MariaDB 10.11 instance as `bootstrap::probe` would learn it.
    fn server() -> ServerInfo {
        let mut s = ServerInfo::fallback();
        s.version = b"5.5.5-10.11.6-MariaDB-0+deb12u1-log".to_vec();
        s.capabilities = cap::PROXYABLE | cap::SSL;
        s.mariadb_capabilities = mariadb_cap::EXTENDED_METADATA | mariadb_cap::PROGRESS;
        s.vars = catalog(VARS);
        s.source = "127.0.0.1:3306".into();
        s
    }

    fn without(
        rows: &[(&'static str, &'static str, bool)],
        name: &str,
    ) -> Vec<(&'static str, &'static str, bool)> {
        rows.iter().copied().filter(|r| r.0 != name).collect()
    }

    #[test]
    fn differences_that_matter_and_those_that_do_not() {
        type Case = (&'static str, fn(&mut ServerInfo), &'static [&'static str]);
        let cases: &[Case] = &[
            ("the same server", |_| {}, &[]),
            (
                "another patch level and build",
                |s| s.version = b"5.5.5-10.11.8-MariaDB-log".to_vec(),
                &[],
            ),
            (
                "MariaDB without the 5.5.5- prefix",
                |s| s.version = b"10.11.2-MariaDB".to_vec(),
                &[],
            ),
            (
                "another release series",
                |s| s.version = b"11.4.2-MariaDB".to_vec(),
                &["server MariaDB 11.4, not MariaDB 10.11"],
            ),
            (
                "MySQL",
                |s| s.version = b"8.0.36".to_vec(),
                &["server MySQL 8.0, not MariaDB 10.11"],
            ),
            (
                "another default collation in the greeting (character_set_server)",
                |s| s.collation = 8,
                &[],
            ),
            (
                "capabilities beyond ours, and no TLS",
                |s| {
                    s.capabilities = (cap::PROXYABLE | cap::COMPRESS) & !cap::SSL;
                    s.mariadb_capabilities |= mariadb_cap::CACHE_METADATA;
                },
                &[],
            ),
            (
                "no session tracking",
                |s| s.capabilities &= !cap::SESSION_TRACK,
                &["lacks capabilities 0x800000"],
            ),
            (
                "no extended metadata",
                |s| s.mariadb_capabilities = mariadb_cap::PROGRESS,
                &["lacks MariaDB capabilities 0x8"],
            ),
            (
                "a settable variable missing",
                |s| s.vars = catalog(&without(VARS, "innodb_lock_wait_timeout")),
                &["no session variable innodb_lock_wait_timeout"],
            ),
            (
                "a settable variable read-only there",
                |s| {
                    let mut rows = without(VARS, "time_zone");
                    rows.push(("time_zone", "SESSION", true));
                    s.vars = catalog(&rows);
                },
                &["variable time_zone is read-only there"],
            ),
            (
                "a settable variable global-only there",
                |s| {
                    let mut rows = without(VARS, "sql_mode");
                    rows.push(("sql_mode", "GLOBAL", false));
                    s.vars = VarCatalog::from_rows(
                        rows.iter()
                            .map(|&(n, sc, ro)| (n, sc, ro, (sc != "GLOBAL").then_some("1"))),
                    );
                },
                &["no session variable sql_mode"],
            ),
            (
                "a connection variable missing (sluice applies it too)",
                |s| s.vars = catalog(&without(VARS, "wait_timeout")),
                &["no session variable wait_timeout"],
            ),
            (
                "variables only the backend has, and a read-only one missing",
                |s| {
                    let mut rows = without(VARS, "last_gtid");
                    rows.push(("innodb_snapshot_isolation", "SESSION", false));
                    s.vars = catalog(&rows);
                },
                &[],
            ),
            (
                "sluice's own tracker variable missing (never replayed)",
                |s| s.vars = catalog(&without(VARS, "session_track_schema")),
                &[],
            ),
            (
                "the variable table unreadable there",
                |s| s.vars = VarCatalog::default(),
                &["its variables could not be read"],
            ),
            (
                "a collation renamed, one missing",
                |s| {
                    s.collations.get_mut(&46).unwrap().name = "utf8mb4_nopad_bin".into();
                    s.collations.remove(&224);
                },
                &[
                    "collation 46 is utf8mb4_nopad_bin, not utf8mb4_bin",
                    "no collation 224 (utf8mb4_unicode_ci)",
                ],
            ),
            (
                "collations only the backend has",
                |s| {
                    s.collations.insert(
                        2048,
                        Collation {
                            charset: "utf8mb4".into(),
                            name: "utf8mb4_uca1400_ai_ci".into(),
                        },
                    );
                },
                &[],
            ),
            (
                "another default collation for a charset",
                |s| {
                    s.default_collations.insert("utf8mb4".into(), 224);
                    s.default_collations.remove("latin1");
                },
                &[
                    "no character set latin1",
                    "default collation of utf8mb4 is 224, not 45",
                ],
            ),
            (
                "lower_case_table_names",
                |s| s.fold_table_names = true,
                &["lower_case_table_names is not 0 there"],
            ),
            (
                "a history value typed differently",
                |s| {
                    let t = s
                        .templates
                        .get_mut(&crate::session::sql::Hist::RowCount)
                        .unwrap();
                    t[7] = 0x03;
                },
                &["RowCount has another column type"],
            ),
            (
                "several at once, in order",
                |s| {
                    s.version = b"8.0.36".to_vec();
                    s.vars = catalog(&without(&without(VARS, "sql_mode"), "time_zone"));
                },
                &[
                    "server MySQL 8.0, not MariaDB 10.11",
                    "no session variable sql_mode",
                    "no session variable time_zone",
                ],
            ),
        ];
        let ours = server();
        for (name, change, want) in cases {
            let mut theirs = server();
            change(&mut theirs);
            let got: Vec<String> = compare(&ours, &theirs)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, *want, "case: {name}");
        }
    }

    #[test]
    fn an_instance_on_default_values_admits_everything() {
        let mut theirs = server();
        theirs.version = b"8.0.36".to_vec();
        theirs.collations.clear();
        assert_eq!(compare(&ServerInfo::fallback(), &theirs), vec![]);
    }

    #[test]
    fn an_instance_that_could_not_read_its_variables_compares_the_rest() {
        let mut ours = server();
        ours.vars = VarCatalog::default();
        let mut theirs = server();
        theirs.vars = catalog(&without(VARS, "sql_mode"));
        assert_eq!(compare(&ours, &theirs), vec![]);
        theirs.version = b"11.4.2-MariaDB".to_vec();
        assert_eq!(compare(&ours, &theirs).len(), 1);
    }

    #[test]
    fn release_series_are_parsed_from_real_version_strings() {
        let r = |m, a, b| {
            Some(Release {
                mariadb: m,
                major: a,
                minor: b,
            })
        };
        let cases: &[(&[u8], Option<Release>)] = &[
            (b"5.5.5-10.11.6-MariaDB-0+deb12u1-log", r(true, 10, 11)),
            (b"10.11.6-MariaDB", r(true, 10, 11)),
            (b"11.4.2-MariaDB-ubu2404", r(true, 11, 4)),
            (b"8.0.36", r(false, 8, 0)),
            (b"8.0.36-28", r(false, 8, 0)),
            (b"8.4.0-log", r(false, 8, 4)),
            (b"5.7.44-log", r(false, 5, 7)),
            (b"garbage", None),
            (b"", None),
        ];
        for (v, want) in cases {
            assert_eq!(Release::parse(v), *want, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn a_summary_names_the_first_differences_and_counts_the_rest() {
        let d = |n: &str| Difference::NotSettable {
            name: n.into(),
            exists: false,
        };
        assert_eq!(summary(&[d("a")]), "no session variable a");
        assert_eq!(
            summary(&[d("a"), d("b"), d("c"), d("d"), d("e")]),
            "no session variable a; no session variable b; no session variable c; and 2 more"
        );
    }
}
