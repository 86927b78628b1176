//! A session script: the client commands one session sends, in order, as plain data. The
//! generator writes scripts, the runner plays them against a target, and reproducers print them
//! one command per line.

use std::fmt;

/// A typed parameter of a binary-protocol execute.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// MYSQL_TYPE_LONGLONG, signed.
    Int(i64),
    /// MYSQL_TYPE_VAR_STRING.
    Str(String),
    /// MYSQL_TYPE_NULL (and the bit in the NULL bitmap).
    Null,
    /// MYSQL_TYPE_DOUBLE.
    Double(f64),
    /// MYSQL_TYPE_DATE: year, month, day.
    Date(u16, u8, u8),
    /// MYSQL_TYPE_DATETIME: year, month, day, hour, minute, second.
    DateTime(u16, u8, u8, u8, u8, u8),
    /// Sent earlier with COM_STMT_SEND_LONG_DATA: the type goes in the execute, the value does not
    /// (MYSQL_TYPE_BLOB).
    LongData,
}

impl Param {
    /// The `int<2>` type word of the parameter (type byte, then the unsigned flag byte).
    pub fn type_code(&self) -> u8 {
        match self {
            Param::Int(_) => 0x08,
            Param::Str(_) => 0xfd,
            Param::Null => 0x06,
            Param::Double(_) => 0x05,
            Param::Date(..) => 0x0a,
            Param::DateTime(..) => 0x0c,
            Param::LongData => 0xfc,
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Int(i) => write!(f, "{i}"),
            Param::Str(s) => write!(f, "'{s}'"),
            Param::Null => f.write_str("NULL"),
            Param::Double(d) => write!(f, "{d:?}"),
            Param::Date(y, m, d) => write!(f, "DATE {y:04}-{m:02}-{d:02}"),
            Param::DateTime(y, mo, d, h, mi, s) => {
                write!(f, "DATETIME {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
            }
            Param::LongData => f.write_str("<long data>"),
        }
    }
}

/// One client command. Statement handles (`h`) are the script's own numbers for binary prepared
/// statements; the runner maps them to whatever ids the target hands out.
///
/// SQL text may hold `{RUN}`, replaced at run time by a tag unique to the run (lock names, so a
/// lock leaked by one run cannot block the next; they only ever appear under an alias).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The prologue of every session: log in (greeting and login OK are recorded), then
    /// `SELECT CONNECTION_ID()`, whose value is compared only as "equals the handshake's id" and
    /// kept as the target for the session's `KILL QUERY` steps.
    Connect,
    /// COM_QUERY.
    Query(String),
    /// COM_INIT_DB.
    InitDb(String),
    /// COM_PING.
    Ping,
    /// COM_SET_OPTION: multi-statements on (true) or off.
    SetOption(bool),
    /// COM_RESET_CONNECTION.
    ResetConnection,
    /// COM_CHANGE_USER to the same user, with this schema (or none).
    ChangeUser { schema: Option<String> },
    /// COM_STMT_PREPARE, remembered as handle `h`.
    Prepare { h: usize, sql: String },
    /// COM_STMT_EXECUTE of handle `h`; `cursor` asks for CURSOR_TYPE_READ_ONLY.
    Execute {
        h: usize,
        params: Vec<Param>,
        cursor: bool,
    },
    /// COM_STMT_FETCH of `rows` rows from handle `h`'s cursor.
    Fetch { h: usize, rows: u32 },
    /// COM_STMT_SEND_LONG_DATA for parameter `param` of handle `h` (no response).
    LongData { h: usize, param: u16, data: String },
    /// COM_STMT_RESET.
    StmtReset { h: usize },
    /// COM_STMT_CLOSE (no response).
    StmtClose { h: usize },
    /// `SELECT SLEEP(5) /* marker */` while a sidecar connection to the same target sends
    /// `KILL QUERY <this session's id>` once the statement is seen running.
    KillQuery,
}

impl Step {
    /// Does the step produce a response at all?
    pub fn has_response(&self) -> bool {
        !matches!(self, Step::LongData { .. } | Step::StmtClose { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Connect => f.write_str("login; COM_QUERY SELECT CONNECTION_ID()"),
            Step::Query(sql) => write!(f, "COM_QUERY {sql}"),
            Step::InitDb(db) => write!(f, "COM_INIT_DB {db}"),
            Step::Ping => f.write_str("COM_PING"),
            Step::SetOption(on) => write!(
                f,
                "COM_SET_OPTION MULTI_STATEMENTS_{}",
                if *on { "ON" } else { "OFF" }
            ),
            Step::ResetConnection => f.write_str("COM_RESET_CONNECTION"),
            Step::ChangeUser { schema } => write!(
                f,
                "COM_CHANGE_USER app schema={}",
                schema.as_deref().unwrap_or("(none)")
            ),
            Step::Prepare { h, sql } => write!(f, "COM_STMT_PREPARE s{h}: {sql}"),
            Step::Execute { h, params, cursor } => {
                write!(f, "COM_STMT_EXECUTE s{h}")?;
                if *cursor {
                    f.write_str(" CURSOR_TYPE_READ_ONLY")?;
                }
                f.write_str(" (")?;
                for (i, p) in params.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(")")
            }
            Step::Fetch { h, rows } => write!(f, "COM_STMT_FETCH s{h} rows={rows}"),
            Step::LongData { h, param, data } => {
                write!(f, "COM_STMT_SEND_LONG_DATA s{h} param={param} '{data}'")
            }
            Step::StmtReset { h } => write!(f, "COM_STMT_RESET s{h}"),
            Step::StmtClose { h } => write!(f, "COM_STMT_CLOSE s{h}"),
            Step::KillQuery => f.write_str(
                "COM_QUERY SELECT SLEEP(5) /* dt-marker */  <- sidecar: KILL QUERY <this session's id> once running",
            ),
        }
    }
}

/// Which capabilities a session negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// CLIENT_DEPRECATE_EOF (today's drivers).
    Modern,
    /// No DEPRECATE_EOF: classic EOF packets after definitions and rows.
    Classic,
    /// DEPRECATE_EOF and CLIENT_SESSION_TRACK: OK packets carry session-state blocks.
    Tracking,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Modern => "modern",
            Profile::Classic => "classic",
            Profile::Tracking => "tracking",
        }
    }
}

/// A whole session: where it lives, how it connects, what it sends.
#[derive(Debug, Clone)]
pub struct Script {
    /// Session index in the run (its schemas are `<prefix>_<index>` and `<prefix>_<index>_b`).
    pub index: usize,
    pub profile: Profile,
    /// The schema the session logs in with.
    pub schema: String,
    pub steps: Vec<Step>,
}

impl Script {
    /// The script up to and including step `upto`, one command per line.
    pub fn listing(&self, upto: usize) -> String {
        let mut s = String::new();
        for (i, st) in self.steps.iter().enumerate().take(upto.saturating_add(1)) {
            s.push_str(&format!("  #{i:<3} {st}\n"));
        }
        s
    }
}
