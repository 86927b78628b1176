//! Plays one session script against one target (MariaDB directly, or a proxy in front of it) and
//! records its transcript: for every step, the normalized lines of everything the target sent
//! back. The `KILL QUERY` step runs a sidecar connection to the same target beside the session.

use crate::client::{session_capabilities, ClientError, Conn, Credentials, RawPacket};
use crate::normalize::Normalizer;
use crate::record::{self, escape, ColumnType};
use crate::script::{Param, Profile, Script, Step};
use serde::Serialize;
use sluice::codec::command::{com, ResponseKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a run plays its sessions.
#[derive(Debug, Clone)]
pub struct PlayConfig {
    pub creds: Credentials,
    /// The MariaDB itself (the sidecar watches its PROCESSLIST for the statement to kill).
    pub direct: String,
    /// Replaces `{RUN}` in SQL and tags KILL markers; unique per run.
    pub run_tag: String,
    /// Bounds every read and write of a session.
    pub timeout: Duration,
    /// How long the sidecar waits to see the statement running before giving up.
    pub kill_wait: Duration,
}

/// What a session's run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transcript {
    /// One entry per step played: its normalized response lines.
    pub entries: Vec<Vec<String>>,
    /// The step at which the client had to stop, and why (timeout, closed connection, …).
    pub stopped: Option<(usize, String)>,
}

/// A binary prepared statement as the session knows it on this target.
#[derive(Debug, Clone, Default)]
struct Handle {
    /// The id the target gave (kept after close/reset: a stale id is what a client would send).
    id: Option<u32>,
    params: u16,
    /// The parameter types last sent to the server, if any.
    bound: Option<Vec<u8>>,
    /// The column types of the result set the last execute opened a cursor on.
    cursor_columns: Vec<ColumnType>,
}

struct Session<'a> {
    script: &'a Script,
    cfg: &'a PlayConfig,
    addr: &'a str,
    conn: Option<Conn>,
    norm: Normalizer,
    handles: HashMap<usize, Handle>,
    /// The session's connection id as the target reported it (for KILL QUERY).
    conn_id: Option<u32>,
}

/// Capabilities for a profile.
pub fn profile_capabilities(p: Profile) -> u32 {
    match p {
        Profile::Modern => session_capabilities(true, false),
        Profile::Classic => session_capabilities(false, false),
        Profile::Tracking => session_capabilities(true, true),
    }
}

/// Plays `script` against `addr`.
pub fn play(script: &Script, addr: &str, cfg: &PlayConfig) -> Transcript {
    let mut s = Session {
        script,
        cfg,
        addr,
        conn: None,
        norm: Normalizer::default(),
        handles: HashMap::new(),
        conn_id: None,
    };
    let mut t = Transcript::default();
    for (i, step) in script.steps.iter().enumerate() {
        match s.step(i, step) {
            Ok(lines) => t.entries.push(lines),
            Err(e) => {
                t.entries.push(vec![format!("CLIENT STOPPED: {e}")]);
                t.stopped = Some((i, e.to_string()));
                break;
            }
        }
    }
    if let Some(c) = s.conn.take() {
        c.quit();
    }
    t
}

/// The COM_STMT_EXECUTE payload. `bound`: the types the server has from an earlier execute;
/// the new-params-bound flag is 1 (and types are sent) on the first execute and whenever a
/// non-NULL parameter's type differs from what was bound, else 0.
fn execute_payload(
    id: u32,
    nparams: u16,
    params: &[Param],
    cursor: bool,
    bound: Option<&[u8]>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut ps: Vec<Param> = params.iter().take(usize::from(nparams)).cloned().collect();
    ps.resize(usize::from(nparams), Param::Null);
    let mut p = vec![com::STMT_EXECUTE];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(u8::from(cursor)); // CURSOR_TYPE_READ_ONLY or CURSOR_TYPE_NO_CURSOR
    p.extend_from_slice(&1u32.to_le_bytes()); // iteration count
    if ps.is_empty() {
        return (p, None);
    }
    let mut bitmap = vec![0u8; ps.len().div_ceil(8)];
    for (i, x) in ps.iter().enumerate() {
        if *x == Param::Null {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    p.extend_from_slice(&bitmap);
    let types: Vec<u8> = ps.iter().map(Param::type_code).collect();
    let compatible = bound.is_some_and(|b| {
        b.len() == types.len()
            && ps
                .iter()
                .zip(b)
                .all(|(x, &t)| *x == Param::Null || x.type_code() == t)
    });
    let new_bound = if compatible {
        p.push(0);
        None
    } else {
        p.push(1);
        for &t in &types {
            p.push(t);
            p.push(0); // signed
        }
        Some(types)
    };
    for x in &ps {
        match x {
            Param::Int(i) => p.extend_from_slice(&i.to_le_bytes()),
            Param::Str(s) => {
                sluice::codec::wire::put_lenenc_bytes(&mut p, s.as_bytes());
            }
            Param::Double(d) => p.extend_from_slice(&d.to_bits().to_le_bytes()),
            Param::Date(y, m, d) => {
                p.push(4);
                p.extend_from_slice(&y.to_le_bytes());
                p.push(*m);
                p.push(*d);
            }
            Param::DateTime(y, mo, d, h, mi, s) => {
                p.push(7);
                p.extend_from_slice(&y.to_le_bytes());
                p.extend_from_slice(&[*mo, *d, *h, *mi, *s]);
            }
            Param::Null | Param::LongData => {}
        }
    }
    (p, new_bound)
}

/// A statement id for a handle whose prepare failed: the same on every target, so the server's
/// "unknown handler" message is the same too.
fn made_up_id(h: usize) -> u32 {
    0x7FFF_0000u32.wrapping_add(h as u32)
}

impl Session<'_> {
    fn conn(&mut self) -> Result<&mut Conn, ClientError> {
        self.conn
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("no connection (the prologue failed)".into()))
    }

    fn sql(&self, sql: &str) -> String {
        sql.replace("{RUN}", &self.cfg.run_tag)
    }

    fn render(
        &mut self,
        packets: &[(crate::client::PacketRole, RawPacket)],
        binary: bool,
        fetch_columns: &[ColumnType],
    ) -> Result<(Vec<String>, record::Learned), ClientError> {
        let caps = self.conn()?.caps;
        Ok(record::render(
            &mut self.norm,
            caps,
            packets,
            binary,
            fetch_columns,
        ))
    }

    fn simple(&mut self, payload: &[u8], kind: ResponseKind) -> Result<Vec<String>, ClientError> {
        let packets = self.conn()?.command(payload, kind)?;
        Ok(self.render(&packets, false, &[])?.0)
    }

    fn step(&mut self, i: usize, step: &Step) -> Result<Vec<String>, ClientError> {
        match step {
            Step::Connect => self.connect(),
            Step::Query(sql) => {
                let mut p = vec![com::QUERY];
                p.extend_from_slice(self.sql(sql).as_bytes());
                self.simple(&p, ResponseKind::Query)
            }
            Step::InitDb(db) => {
                let mut p = vec![com::INIT_DB];
                p.extend_from_slice(db.as_bytes());
                self.simple(&p, ResponseKind::OkErr)
            }
            Step::Ping => self.simple(&[com::PING], ResponseKind::OkErr),
            Step::SetOption(on) => {
                let v: u16 = if *on { 0 } else { 1 };
                let mut p = vec![com::SET_OPTION];
                p.extend_from_slice(&v.to_le_bytes());
                self.simple(&p, ResponseKind::SetOption)
            }
            Step::ResetConnection => {
                let packets = self
                    .conn()?
                    .command(&[com::RESET_CONNECTION], ResponseKind::OkErr)?;
                let (lines, learned) = self.render(&packets, false, &[])?;
                if !learned.error {
                    self.forget_statements();
                }
                Ok(lines)
            }
            Step::ChangeUser { schema } => {
                let packets = self.conn()?.change_user(schema.as_deref())?;
                let (lines, learned) = self.render(&packets, false, &[])?;
                if !learned.error {
                    self.forget_statements();
                }
                Ok(lines)
            }
            Step::Prepare { h, sql } => {
                let mut p = vec![com::STMT_PREPARE];
                p.extend_from_slice(self.sql(sql).as_bytes());
                let packets = self.conn()?.command(&p, ResponseKind::Prepare)?;
                let (lines, learned) = self.render(&packets, false, &[])?;
                let entry = self.handles.entry(*h).or_default();
                *entry = Handle::default();
                if let Some((id, params)) = learned.prepared {
                    entry.id = Some(id);
                    entry.params = params;
                }
                Ok(lines)
            }
            Step::Execute { h, params, cursor } => {
                let hd = self.handles.get(h).cloned().unwrap_or_default();
                let id = hd.id.unwrap_or_else(|| made_up_id(*h));
                let (payload, new_bound) =
                    execute_payload(id, hd.params, params, *cursor, hd.bound.as_deref());
                let packets = self.conn()?.command(&payload, ResponseKind::Execute)?;
                let (lines, learned) = self.render(&packets, true, &[])?;
                let entry = self.handles.entry(*h).or_default();
                if let Some(b) = new_bound {
                    entry.bound = Some(b);
                }
                if learned.cursor_opened {
                    entry.cursor_columns = learned.columns;
                }
                Ok(lines)
            }
            Step::Fetch { h, rows } => {
                let hd = self.handles.get(h).cloned().unwrap_or_default();
                let id = hd.id.unwrap_or_else(|| made_up_id(*h));
                let mut p = vec![com::STMT_FETCH];
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(&rows.to_le_bytes());
                let packets = self.conn()?.command(&p, ResponseKind::Fetch)?;
                Ok(self.render(&packets, true, &hd.cursor_columns)?.0)
            }
            Step::LongData { h, param, data } => {
                let id = self.id_of(*h);
                let mut p = vec![com::STMT_SEND_LONG_DATA];
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(&param.to_le_bytes());
                p.extend_from_slice(data.as_bytes());
                self.conn()?.command(&p, ResponseKind::None)?;
                Ok(vec!["(no response)".into()])
            }
            Step::StmtReset { h } => {
                let id = self.id_of(*h);
                let mut p = vec![com::STMT_RESET];
                p.extend_from_slice(&id.to_le_bytes());
                let lines = self.simple(&p, ResponseKind::OkErr)?;
                if let Some(hd) = self.handles.get_mut(h) {
                    // Types are sent again after a reset (as libmariadb does).
                    hd.bound = None;
                }
                Ok(lines)
            }
            Step::StmtClose { h } => {
                let id = self.id_of(*h);
                let mut p = vec![com::STMT_CLOSE];
                p.extend_from_slice(&id.to_le_bytes());
                self.conn()?.command(&p, ResponseKind::None)?;
                self.norm.closed(id);
                Ok(vec!["(no response)".into()])
            }
            Step::KillQuery => self.kill_query(i),
        }
    }

    fn id_of(&self, h: usize) -> u32 {
        self.handles
            .get(&h)
            .and_then(|x| x.id)
            .unwrap_or_else(|| made_up_id(h))
    }

    fn forget_statements(&mut self) {
        self.norm.reset();
        for h in self.handles.values_mut() {
            h.bound = None;
            h.cursor_columns.clear();
        }
    }

    fn connect(&mut self) -> Result<Vec<String>, ClientError> {
        let conn = Conn::connect(
            self.addr,
            &self.cfg.creds,
            Some(&self.script.schema),
            profile_capabilities(self.script.profile),
            self.cfg.timeout,
        )?;
        let g = &conn.greeting;
        let mut lines = vec![format!(
            "GREETING server_version='{}' negotiated_capabilities=0x{:08x} status={} collation={}",
            escape(&g.server_version),
            conn.caps,
            record::status_text(g.status),
            g.collation
        )];
        let login_ok = conn.login_ok.clone();
        let caps = conn.caps;
        let handshake_id = g.connection_id;
        self.conn = Some(conn);
        let ok = record::render(
            &mut self.norm,
            caps,
            &[(
                crate::client::PacketRole::AuthResult,
                RawPacket {
                    // The login OK's sequence id is not that of a command response.
                    seq: 0,
                    payload: login_ok.payload,
                },
            )],
            false,
            &[],
        )
        .0;
        lines.extend(ok.into_iter().map(|l| format!("LOGIN {l}")));
        let mut p = vec![com::QUERY];
        p.extend_from_slice(b"SELECT CONNECTION_ID()");
        let packets = self.conn()?.command(&p, ResponseKind::Query)?;
        let (rendered, learned) = self.render(&packets, false, &[])?;
        // Rule 3 of crate::normalize: the value only as "equals the handshake's id".
        for l in rendered {
            if l.starts_with("ROW ") {
                lines.push(format!(
                    "ROW {}",
                    Normalizer::connection_id(learned.first_value.as_deref(), handshake_id)
                ));
            } else {
                lines.push(l);
            }
        }
        self.conn_id = learned
            .first_value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse().ok());
        Ok(lines)
    }

    fn kill_query(&mut self, i: usize) -> Result<Vec<String>, ClientError> {
        let marker = format!("dt-marker-{}-{}-{i}", self.cfg.run_tag, self.script.index);
        let mut p = vec![com::QUERY];
        p.extend_from_slice(format!("SELECT SLEEP(5) /* {marker} */").as_bytes());
        let done = AtomicBool::new(false);
        let cfg = self.cfg;
        let addr = self.addr;
        let conn_id = self.conn_id;
        let (session_result, sidecar_lines) = std::thread::scope(|s| {
            let side = s.spawn(|| sidecar(cfg, addr, conn_id, &marker, &done));
            let r = self.conn().and_then(|c| c.command(&p, ResponseKind::Query));
            done.store(true, Ordering::Release);
            let lines = side
                .join()
                .unwrap_or_else(|_| vec!["SIDECAR panicked".to_string()]);
            (r, lines)
        });
        let packets = session_result?;
        // Rule 4 of crate::normalize.
        let mut lines = Normalizer::interrupted_sleep(self.render(&packets, false, &[])?.0);
        lines.extend(sidecar_lines);
        Ok(lines)
    }
}

/// The sidecar of a KILL QUERY step: a second connection to the same target that sends
/// `KILL QUERY <session id>` once the marked statement shows in the server's PROCESSLIST
/// (polled on a direct connection, never a blind sleep). Returns its transcript lines.
fn sidecar(
    cfg: &PlayConfig,
    target: &str,
    conn_id: Option<u32>,
    marker: &str,
    done: &AtomicBool,
) -> Vec<String> {
    let Some(id) = conn_id else {
        return vec!["SIDECAR no connection id from the prologue; no KILL sent".into()];
    };
    let caps = session_capabilities(true, false);
    let mut killer = match Conn::connect(target, &cfg.creds, None, caps, cfg.timeout) {
        Ok(c) => c,
        Err(e) => return vec![format!("SIDECAR cannot connect to the target: {e}")],
    };
    let mut poller = match Conn::connect(&cfg.direct, &cfg.creds, None, caps, cfg.timeout) {
        Ok(c) => c,
        Err(e) => return vec![format!("SIDECAR cannot connect to the server: {e}")],
    };
    // Split so the poll's own text does not match (adjacent literals are concatenated). The
    // statement must be inside SLEEP ('User sleep'): a KILL that lands earlier (while the
    // statement is still being opened) ends it with ERR 1317 before any metadata, which a run
    // cannot reproduce; one that lands in the sleep has the outcomes of normalize rule 4.
    let (head, tail) = marker.split_at(6);
    let poll = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{head}' '{tail} %' AND STATE = 'User sleep' AND ID <> CONNECTION_ID()"
    );
    let deadline = Instant::now() + cfg.kill_wait;
    let mut lines = Vec::new();
    loop {
        if done.load(Ordering::Acquire) {
            lines.push(
                "SIDECAR the statement ended before it was seen running; no KILL sent".into(),
            );
            break;
        }
        match poller.simple_query(&poll) {
            Ok(rows) => {
                let seen = rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.as_deref())
                    .is_some_and(|v| v != b"0");
                if seen {
                    let mut p = vec![com::QUERY];
                    p.extend_from_slice(format!("KILL QUERY {id}").as_bytes());
                    match killer.command(&p, ResponseKind::Query) {
                        Ok(packets) => {
                            lines.push(
                                "SIDECAR saw the statement running; KILL QUERY <session id>:"
                                    .into(),
                            );
                            let mut norm = Normalizer::default();
                            let (l, _) =
                                record::render(&mut norm, killer.caps, &packets, false, &[]);
                            lines.extend(l.into_iter().map(|l| format!("SIDECAR {l}")));
                        }
                        Err(e) => lines.push(format!("SIDECAR KILL QUERY failed: {e}")),
                    }
                    break;
                }
            }
            Err(e) => {
                lines.push(format!("SIDECAR PROCESSLIST poll failed: {e}"));
                break;
            }
        }
        if Instant::now() > deadline {
            lines.push(format!(
                "SIDECAR the statement was not seen running within {:?}; no KILL sent",
                cfg.kill_wait
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killer.quit();
    poller.quit();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_params_bound_only_when_types_change() {
        let (p, bound) =
            execute_payload(7, 2, &[Param::Int(1), Param::Str("a".into())], false, None);
        // cmd, id, flags, iterations, bitmap, flag=1, 2 types, values.
        assert_eq!(&p[..10], &[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(p[10], 0); // no NULLs
        assert_eq!(p[11], 1);
        assert_eq!(&p[12..16], &[0x08, 0, 0xfd, 0]);
        let bound = bound.unwrap();
        let (p2, b2) = execute_payload(7, 2, &[Param::Int(5), Param::Null], true, Some(&bound));
        assert_eq!(p2[5], 1); // cursor
        assert_eq!(p2[10], 0b10);
        assert_eq!(p2[11], 0);
        assert!(b2.is_none());
        assert_eq!(p2.len(), 12 + 8);
        let (p3, b3) = execute_payload(
            7,
            2,
            &[Param::Double(1.0), Param::Null],
            false,
            Some(&bound),
        );
        assert_eq!(p3[11], 1);
        assert!(b3.is_some());
        // Missing parameters are sent as NULL, extra ones dropped.
        let (p4, _) = execute_payload(7, 1, &[], false, None);
        assert_eq!(p4[10], 1);
        let (p5, _) = execute_payload(7, 0, &[Param::Int(1)], false, None);
        assert_eq!(p5.len(), 10);
    }
}
