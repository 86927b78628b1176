//! A small blocking client for the coordinator's chores: creating and filling the test table,
//! and reading a server's status variables. Same login machine as the workers.

use crate::proto::{quit_packet, Event, Failure, LoginConfig, Phase, Proto};
use sluice::codec::command::{encode_query, ResponseKind};
use sluice::codec::frame::{encode_packet, scan_packet, Scan, HEADER_LEN};
use sluice::codec::packets::ErrPacket;
use sluice::codec::response::{ResponseTracker, Role};
use sluice::codec::wire::Reader;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct SyncConn {
    s: TcpStream,
    proto: Proto,
    rbuf: Vec<u8>,
}

pub type Row = Vec<Option<String>>;

fn io_failure(e: std::io::Error, phase: Phase) -> Failure {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => match phase {
            Phase::Query => Failure::QueryTimeout,
            _ => Failure::LoginTimeout,
        },
        std::io::ErrorKind::UnexpectedEof => Failure::Closed { phase },
        _ => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Failure::Refused,
            Some(n) => Failure::Io { errno: n, phase },
            None => Failure::Protocol {
                phase,
                what: e.to_string(),
            },
        },
    }
}

impl SyncConn {
    pub fn connect(
        addr: SocketAddr,
        login: &LoginConfig,
        timeout: Duration,
    ) -> Result<SyncConn, Failure> {
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => Failure::ConnectTimeout,
            _ => io_failure(e, Phase::Connect),
        })?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(timeout))
            .and_then(|_| s.set_write_timeout(Some(timeout)))
            .map_err(|e| io_failure(e, Phase::Connect))?;
        let mut c = SyncConn {
            s,
            proto: Proto::new(),
            rbuf: Vec::new(),
        };
        let mut out = Vec::new();
        loop {
            c.fill(Phase::Login)?;
            out.clear();
            let ev = c.proto.on_data(&mut c.rbuf, login, &mut out)?;
            c.s.write_all(&out)
                .map_err(|e| io_failure(e, Phase::Login))?;
            if ev == Event::LoggedIn {
                return Ok(c);
            }
        }
    }

    fn fill(&mut self, phase: Phase) -> Result<(), Failure> {
        let mut tmp = [0u8; 16384];
        let n = self.s.read(&mut tmp).map_err(|e| io_failure(e, phase))?;
        if n == 0 {
            return Err(Failure::Closed { phase });
        }
        self.rbuf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// Runs one statement; returns its text rows (of every result set). ERR is a
    /// `Failure::Query`.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, Failure> {
        let mut payload = Vec::new();
        encode_query(&mut payload, sql.as_bytes());
        let mut out = Vec::new();
        encode_packet(&mut out, 0, &payload);
        self.s
            .write_all(&out)
            .map_err(|e| io_failure(e, Phase::Query))?;
        let mut tracker = ResponseTracker::new(ResponseKind::Query, self.proto.deprecate_eof());
        let mut rows = Vec::new();
        let mut err = None;
        let protocol = |what: String| Failure::Protocol {
            phase: Phase::Query,
            what,
        };
        while !tracker.is_done() {
            let span =
                match scan_packet(&self.rbuf, 64 << 20).map_err(|e| protocol(e.to_string()))? {
                    Scan::Incomplete { .. } => {
                        self.fill(Phase::Query)?;
                        continue;
                    }
                    Scan::Complete(span) if span.frames == 1 => span,
                    Scan::Complete(_) => return Err(protocol("multi-frame packet".into())),
                };
            let payload = self.rbuf[HEADER_LEN..span.wire_len].to_vec();
            self.rbuf.drain(..span.wire_len);
            match tracker
                .on_packet(payload.len(), &payload)
                .map_err(|e| protocol(e.to_string()))?
            {
                Role::Row { .. } => rows.push(parse_text_row(&payload).map_err(protocol)?),
                Role::Err => {
                    let e = ErrPacket::decode(&payload).map_err(|e| protocol(e.to_string()))?;
                    err = Some(Failure::Query {
                        code: e.code,
                        message: String::from_utf8_lossy(e.message).into_owned(),
                    });
                }
                Role::LocalInfile => return Err(protocol("LOCAL INFILE request".into())),
                _ => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    pub fn quit(mut self) {
        let _ = self.s.write_all(&quit_packet());
    }
}

/// A text-protocol row: one `string<lenenc>` per column, 0xFB for NULL.
pub fn parse_text_row(payload: &[u8]) -> Result<Row, String> {
    let mut r = Reader::new(payload);
    let mut row = Vec::new();
    while !r.is_empty() {
        if r.peek_u8() == Some(0xfb) {
            r.skip(1, "NULL").map_err(|e| e.to_string())?;
            row.push(None);
        } else {
            let b = r.lenenc_bytes("column value").map_err(|e| e.to_string())?;
            row.push(Some(String::from_utf8_lossy(b).into_owned()));
        }
    }
    Ok(row)
}

/// Creates `sluice_load` if missing and inserts the rows 1..=size that are missing.
/// Returns the number of rows inserted.
pub fn prepare_table(c: &mut SyncConn, size: u64) -> Result<u64, Failure> {
    c.query(
        "CREATE TABLE IF NOT EXISTS sluice_load (id INT NOT NULL PRIMARY KEY, \
         v VARCHAR(64) NOT NULL) ENGINE=InnoDB",
    )?;
    let rows = c.query(&format!(
        "SELECT COUNT(*) FROM sluice_load WHERE id BETWEEN 1 AND {size}"
    ))?;
    let have: u64 = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if have >= size {
        return Ok(0);
    }
    const BATCH: u64 = 1000;
    let mut start = 1;
    while start <= size {
        let end = (start + BATCH - 1).min(size);
        let mut sql = String::from("INSERT IGNORE INTO sluice_load (id, v) VALUES ");
        for id in start..=end {
            if id > start {
                sql.push(',');
            }
            sql.push_str(&format!("({id},'value-{id:08}')"));
        }
        c.query(&sql)?;
        start = end + 1;
    }
    Ok(size - have)
}

/// Threads_connected of a server, minus our own connection.
pub fn threads_connected(addr: SocketAddr, login: &LoginConfig) -> Result<u64, Failure> {
    let mut c = SyncConn::connect(addr, login, Duration::from_secs(5))?;
    let rows = c.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")?;
    c.quit();
    let n: u64 = rows
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|s| s.parse().ok())
        .ok_or(Failure::Protocol {
            phase: Phase::Query,
            what: "no Threads_connected row".into(),
        })?;
    Ok(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows() {
        assert_eq!(
            parse_text_row(&[2, b'4', b'2', 0xfb, 0]).unwrap(),
            vec![Some("42".into()), None, Some(String::new())]
        );
        assert!(parse_text_row(&[5, b'x']).is_err());
    }
}
