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
    pub fn from_name(s: &str) -> Option<Profile> {
        match s {
            "modern" => Some(Profile::Modern),
            "classic" => Some(Profile::Classic),
            "tracking" => Some(Profile::Tracking),
            _ => None,
        }
    }

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

/// The marker the KILL QUERY step prints as (see its `Display`).
const KILL_LINE: &str = "COM_QUERY SELECT SLEEP(5) /* dt-marker */";

/// Splits a parameter list `a, 'b, c', NULL` at top-level commas.
fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn parse_param(p: &str) -> Result<Param, String> {
    let nums = |s: &str, sep: &[char]| -> Result<Vec<u16>, String> {
        s.split(sep)
            .map(|x| x.parse::<u16>().map_err(|e| format!("{p}: {e}")))
            .collect()
    };
    if p == "NULL" {
        Ok(Param::Null)
    } else if p == "<long data>" {
        Ok(Param::LongData)
    } else if let Some(q) = p.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
        Ok(Param::Str(q.to_string()))
    } else if let Some(d) = p.strip_prefix("DATE ") {
        match nums(d, &['-'])?.as_slice() {
            [y, m, d] => Ok(Param::Date(*y, *m as u8, *d as u8)),
            _ => Err(format!("bad DATE {p:?}")),
        }
    } else if let Some(d) = p.strip_prefix("DATETIME ") {
        match nums(d, &['-', ' ', ':'])?.as_slice() {
            [y, mo, d, h, mi, s] => Ok(Param::DateTime(
                *y, *mo as u8, *d as u8, *h as u8, *mi as u8, *s as u8,
            )),
            _ => Err(format!("bad DATETIME {p:?}")),
        }
    } else if let Ok(i) = p.parse::<i64>() {
        Ok(Param::Int(i))
    } else {
        p.parse::<f64>()
            .map(Param::Double)
            .map_err(|_| format!("unknown parameter {p:?}"))
    }
}

/// `s<N>` → N.
fn handle(s: &str) -> Result<usize, String> {
    s.trim_end_matches(':')
        .strip_prefix('s')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("expected a statement handle sN, got {s:?}"))
}

/// Parses one command line as [`Step`]'s `Display` writes it (so a reproducer's script can be
/// pasted into a file and run with `--script`).
pub fn parse_step(line: &str) -> Result<Step, String> {
    let line = line.trim();
    if line.starts_with("login;") {
        return Ok(Step::Connect);
    }
    if line.starts_with(KILL_LINE) {
        return Ok(Step::KillQuery);
    }
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok(match cmd {
        "COM_QUERY" => Step::Query(rest.to_string()),
        "COM_INIT_DB" => Step::InitDb(rest.to_string()),
        "COM_PING" => Step::Ping,
        "COM_RESET_CONNECTION" => Step::ResetConnection,
        "COM_SET_OPTION" => Step::SetOption(rest.trim() == "MULTI_STATEMENTS_ON"),
        "COM_CHANGE_USER" => {
            let schema = rest
                .split_once("schema=")
                .map(|(_, s)| s.trim())
                .filter(|s| *s != "(none)")
                .map(str::to_string);
            Step::ChangeUser { schema }
        }
        "COM_STMT_PREPARE" => {
            let (h, sql) = rest
                .split_once(' ')
                .ok_or_else(|| format!("no SQL in {line:?}"))?;
            Step::Prepare {
                h: handle(h)?,
                sql: sql.to_string(),
            }
        }
        "COM_STMT_EXECUTE" => {
            let (h, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let cursor = rest.trim_start().starts_with("CURSOR_TYPE_READ_ONLY");
            let inner = rest
                .find('(')
                .zip(rest.rfind(')'))
                .filter(|(a, b)| a < b)
                .map(|(a, b)| &rest[a + 1..b])
                .unwrap_or("");
            let params = split_params(inner)
                .iter()
                .map(|p| parse_param(p))
                .collect::<Result<_, _>>()?;
            Step::Execute {
                h: handle(h)?,
                params,
                cursor,
            }
        }
        "COM_STMT_FETCH" => {
            let (h, rows) = rest
                .split_once(" rows=")
                .ok_or("COM_STMT_FETCH sN rows=N")?;
            Step::Fetch {
                h: handle(h)?,
                rows: rows.trim().parse().map_err(|e| format!("rows: {e}"))?,
            }
        }
        "COM_STMT_SEND_LONG_DATA" => {
            let (h, rest) = rest.split_once(" param=").ok_or("… sN param=N 'data'")?;
            let (param, data) = rest.split_once(' ').ok_or("… sN param=N 'data'")?;
            Step::LongData {
                h: handle(h)?,
                param: param.parse().map_err(|e| format!("param: {e}"))?,
                data: data
                    .trim()
                    .trim_start_matches('\'')
                    .trim_end_matches('\'')
                    .to_string(),
            }
        }
        "COM_STMT_RESET" => Step::StmtReset { h: handle(rest)? },
        "COM_STMT_CLOSE" => Step::StmtClose { h: handle(rest)? },
        _ => return Err(format!("unknown command {cmd:?}")),
    })
}

/// Parses a script file: one command per line as reproducers list them (a leading `#N` index
/// is allowed and ignored; so are blank lines and lines starting with `//`). The login
/// prologue is added when the first command is not it.
pub fn parse_listing(
    text: &str,
    index: usize,
    profile: Profile,
    schema: &str,
) -> Result<Script, String> {
    let mut steps = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            line = rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
        }
        steps.push(parse_step(line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    if steps.first() != Some(&Step::Connect) {
        steps.insert(0, Step::Connect);
    }
    Ok(Script {
        index,
        profile,
        schema: schema.to_string(),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_reads_back_from_its_listing() {
        for seed in 0..5 {
            for k in 0..10 {
                let s = crate::gen::generate(seed, k, 150, "dt");
                let text = s.listing(usize::MAX);
                let back = parse_listing(&text, k, s.profile, &s.schema).unwrap();
                assert_eq!(back.steps, s.steps, "seed {seed} session {k}");
            }
        }
    }
}
