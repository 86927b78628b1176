//! Response-boundary tracking: given the command a client sent, tell what each packet the server
//! sends back is, and when the response is complete.
//!
//! Peek, don't parse: the tracker decides a packet's role from its first byte and length, and
//! asks for the whole payload only for the few packets it must decode (the first packet of a
//! result, terminators, ERR). Rows and column definitions pass through unread. A row can begin
//! with 0xFE too; the length tells it from a terminator (see [`is_terminator`]).

use super::caps::status;
use super::command::ResponseKind;
use super::packets::{is_terminator, EofPacket, OkPacket, EOF, ERR, LOCAL_INFILE, OK};
use super::wire::Reader;
use super::{CodecError, Result};

/// What a packet of a response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An OK that ends a result; `more` when another result follows.
    Ok { status: u16, more: bool },
    /// An ERR: it ends the whole response.
    Err,
    /// The server asks for the client's file (LOAD DATA LOCAL INFILE).
    LocalInfile,
    /// The column count that starts a result set.
    ColumnCount(u64),
    /// A column (or prepared-statement parameter) definition; `last` marks the last one of its
    /// block in a prepare response.
    ColumnDef { last: bool },
    /// A classic EOF after column or parameter definitions (from servers without DEPRECATE_EOF).
    DefsEof { status: u16 },
    /// A row. `first_after_defs` marks the first row of a result set (where a classic client
    /// expects an EOF before it).
    Row { first_after_defs: bool },
    /// The terminator after the rows; `no_rows` when it follows the definitions directly.
    RowsEnd {
        status: u16,
        warnings: u16,
        more: bool,
        no_rows: bool,
    },
    /// The terminator after the definitions of a result whose rows stay on the server in a cursor.
    CursorOpened { status: u16, warnings: u16 },
    /// COM_STMT_PREPARE succeeded.
    PrepareOk {
        statement_id: u32,
        columns: u16,
        params: u16,
        warnings: u16,
    },
    /// The string answer of COM_STATISTICS.
    Statistics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first packet of a result (or of the whole response).
    First,
    ColumnDefs {
        left: u64,
    },
    /// Classic protocol: the EOF after the definitions.
    DefsEof,
    Rows {
        seen_row: bool,
    },
    PrepareParams {
        left: u16,
        columns: u16,
    },
    PrepareParamsEof {
        columns: u16,
    },
    PrepareColumns {
        left: u16,
    },
    PrepareColumnsEof,
    FieldList,
    /// Waiting for the client to send its file; no server packet may arrive now.
    InfileData,
    /// After the file: OK or ERR.
    InfileResult,
    Done,
}

/// Tracks one response. Create one per command with [`ResponseTracker::new`], then feed every
/// packet (continuation frames of a long packet excluded) to [`ResponseTracker::on_packet`].
#[derive(Debug, Clone)]
pub struct ResponseTracker {
    kind: ResponseKind,
    deprecate_eof: bool,
    state: State,
    /// Binary rows (COM_STMT_EXECUTE, COM_STMT_FETCH) rather than text rows.
    binary: bool,
    status: Option<u16>,
}

impl ResponseTracker {
    /// `deprecate_eof`: whether the connection the response comes from negotiated
    /// CLIENT_DEPRECATE_EOF.
    pub fn new(kind: ResponseKind, deprecate_eof: bool) -> Self {
        let state = match kind {
            ResponseKind::None => State::Done,
            ResponseKind::Fetch => State::Rows { seen_row: true },
            ResponseKind::FieldList => State::FieldList,
            _ => State::First,
        };
        let binary = matches!(kind, ResponseKind::Execute | ResponseKind::Fetch);
        ResponseTracker {
            kind,
            deprecate_eof,
            state,
            binary,
            status: None,
        }
    }

    /// The response is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The server is waiting for LOCAL INFILE data from the client.
    pub fn awaiting_infile(&self) -> bool {
        self.state == State::InfileData
    }

    /// The client has sent its file (the empty packet that ends it); the server's OK/ERR follows.
    pub fn infile_sent(&mut self) {
        if self.state == State::InfileData {
            self.state = State::InfileResult;
        }
    }

    /// The last status flags the response reported, if any packet carried them.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Does the packet starting with `first`, whose frame is `len` bytes long, need its whole
    /// payload for [`on_packet`](Self::on_packet)? Rows and definitions do not.
    pub fn needs_whole(&self, first: u8, len: usize) -> bool {
        match self.state {
            State::First
            | State::InfileResult
            | State::DefsEof
            | State::PrepareParamsEof { .. } => true,
            State::PrepareColumnsEof => true,
            State::Rows { .. } | State::FieldList | State::ColumnDefs { .. } => {
                first == ERR || is_terminator(first, len, self.deprecate_eof)
            }
            State::PrepareParams { .. } | State::PrepareColumns { .. } => first == ERR,
            State::InfileData | State::Done => false,
        }
    }

    /// Classifies the next packet and advances. `payload` is the whole payload when
    /// [`needs_whole`](Self::needs_whole) said so, otherwise at least its first byte; `len` is the
    /// packet's (first frame's) length.
    pub fn on_packet(&mut self, len: usize, payload: &[u8]) -> Result<Role> {
        let first = *payload
            .first()
            .ok_or(CodecError::truncated("response packet"))?;
        let role = match self.state {
            State::Done => return Err(CodecError::invalid("packet after the end of a response")),
            State::InfileData => {
                return Err(CodecError::invalid(
                    "server packet during LOCAL INFILE upload",
                ))
            }
            State::First => self.first_packet(first, payload)?,
            State::InfileResult => match first {
                OK => self.ok(payload)?,
                ERR => self.err(),
                _ => return Err(CodecError::invalid("response to LOCAL INFILE data")),
            },
            State::ColumnDefs { left } => {
                if first == ERR {
                    self.err()
                } else {
                    let left = left - 1;
                    self.state = if left > 0 {
                        State::ColumnDefs { left }
                    } else if self.deprecate_eof {
                        State::Rows { seen_row: false }
                    } else {
                        State::DefsEof
                    };
                    Role::ColumnDef { last: left == 0 }
                }
            }
            State::DefsEof => {
                if first == ERR {
                    self.err()
                } else {
                    let eof = self.eof(payload)?;
                    if self.kind == ResponseKind::Execute && eof.status & status::CURSOR_EXISTS != 0
                    {
                        self.state = State::Done;
                    } else {
                        self.state = State::Rows { seen_row: false };
                    }
                    Role::DefsEof { status: eof.status }
                }
            }
            State::Rows { seen_row } => {
                if first == ERR {
                    self.err()
                } else if is_terminator(first, len, self.deprecate_eof) {
                    let (st, warnings) = self.terminator(payload)?;
                    let cursor = !seen_row
                        && self.deprecate_eof
                        && self.kind == ResponseKind::Execute
                        && st & status::CURSOR_EXISTS != 0;
                    if cursor {
                        self.state = State::Done;
                        Role::CursorOpened {
                            status: st,
                            warnings,
                        }
                    } else {
                        let more = st & status::MORE_RESULTS_EXISTS != 0;
                        self.state = if more { State::First } else { State::Done };
                        Role::RowsEnd {
                            status: st,
                            warnings,
                            more,
                            no_rows: !seen_row && self.kind != ResponseKind::Fetch,
                        }
                    }
                } else if self.binary && first != OK {
                    return Err(CodecError::invalid("binary row header"));
                } else {
                    self.state = State::Rows { seen_row: true };
                    Role::Row {
                        first_after_defs: !seen_row && self.kind != ResponseKind::Fetch,
                    }
                }
            }
            State::FieldList => {
                if first == ERR {
                    self.err()
                } else if is_terminator(first, len, self.deprecate_eof) {
                    let (st, warnings) = self.terminator(payload)?;
                    self.state = State::Done;
                    Role::RowsEnd {
                        status: st,
                        warnings,
                        more: false,
                        no_rows: false,
                    }
                } else {
                    Role::ColumnDef { last: false }
                }
            }
            State::PrepareParams { left, columns } => {
                if first == ERR {
                    self.err()
                } else {
                    let left = left - 1;
                    self.state = match (left, self.deprecate_eof) {
                        (0, false) => State::PrepareParamsEof { columns },
                        (0, true) => self.prepare_columns(columns),
                        _ => State::PrepareParams { left, columns },
                    };
                    Role::ColumnDef { last: left == 0 }
                }
            }
            State::PrepareParamsEof { columns } => {
                let eof = self.eof(payload)?;
                self.state = self.prepare_columns(columns);
                Role::DefsEof { status: eof.status }
            }
            State::PrepareColumns { left } => {
                if first == ERR {
                    self.err()
                } else {
                    let left = left - 1;
                    self.state = match (left, self.deprecate_eof) {
                        (0, false) => State::PrepareColumnsEof,
                        (0, true) => State::Done,
                        _ => State::PrepareColumns { left },
                    };
                    Role::ColumnDef { last: left == 0 }
                }
            }
            State::PrepareColumnsEof => {
                let eof = self.eof(payload)?;
                self.state = State::Done;
                Role::DefsEof { status: eof.status }
            }
        };
        Ok(role)
    }

    fn first_packet(&mut self, first: u8, payload: &[u8]) -> Result<Role> {
        use ResponseKind as K;
        Ok(match (self.kind, first) {
            (_, ERR) => self.err(),
            (K::Statistics, _) => {
                self.state = State::Done;
                Role::Statistics
            }
            (K::Prepare, OK) => {
                let mut r = Reader::new(payload);
                r.skip(1, "PREPARE_OK header")?;
                let statement_id = r.u32("PREPARE_OK statement id")?;
                let columns = r.u16("PREPARE_OK column count")?;
                let params = r.u16("PREPARE_OK parameter count")?;
                // Older servers stop after the counts; filler and warnings are optional.
                let warnings = if r.remaining() >= 3 {
                    r.skip(1, "PREPARE_OK filler")?;
                    r.u16("PREPARE_OK warnings")?
                } else {
                    0
                };
                self.state = if params > 0 {
                    State::PrepareParams {
                        left: params,
                        columns,
                    }
                } else {
                    self.prepare_columns(columns)
                };
                Role::PrepareOk {
                    statement_id,
                    columns,
                    params,
                    warnings,
                }
            }
            (K::Prepare, _) => return Err(CodecError::invalid("COM_STMT_PREPARE response")),
            (K::OkErr, OK) | (K::Query, OK) | (K::Execute, OK) => self.ok(payload)?,
            (K::SetOption, OK | EOF) => {
                let (st, _) = if first == OK {
                    (self.ok_status(payload)?, 0)
                } else {
                    self.terminator(payload)?
                };
                self.status = Some(st);
                self.state = State::Done;
                Role::Ok {
                    status: st,
                    more: false,
                }
            }
            (K::Query, LOCAL_INFILE) => {
                self.state = State::InfileData;
                Role::LocalInfile
            }
            (K::Query | K::Execute, _) => {
                let n = Reader::new(payload).lenenc_int("column count")?;
                if n == 0 {
                    return Err(CodecError::invalid("column count"));
                }
                self.state = State::ColumnDefs { left: n };
                Role::ColumnCount(n)
            }
            _ => return Err(CodecError::invalid("response packet for this command")),
        })
    }

    fn prepare_columns(&self, columns: u16) -> State {
        if columns > 0 {
            State::PrepareColumns { left: columns }
        } else {
            State::Done
        }
    }

    fn err(&mut self) -> Role {
        self.state = State::Done;
        Role::Err
    }

    fn ok_status(&self, payload: &[u8]) -> Result<u16> {
        // Status flags are all sluice needs; the session-track capability does not change where
        // they are.
        Ok(OkPacket::decode(payload, 0)?.status)
    }

    fn ok(&mut self, payload: &[u8]) -> Result<Role> {
        let st = self.ok_status(payload)?;
        self.status = Some(st);
        let more = st & status::MORE_RESULTS_EXISTS != 0
            && matches!(self.kind, ResponseKind::Query | ResponseKind::Execute);
        self.state = if more { State::First } else { State::Done };
        Ok(Role::Ok { status: st, more })
    }

    fn eof(&mut self, payload: &[u8]) -> Result<EofPacket> {
        if payload.first() != Some(&EOF) {
            return Err(CodecError::invalid("EOF after definitions"));
        }
        let eof = EofPacket::decode(payload)?;
        self.status = Some(eof.status);
        Ok(eof)
    }

    /// Status and warnings of a terminator: an OK-shaped packet under DEPRECATE_EOF, else an EOF.
    fn terminator(&mut self, payload: &[u8]) -> Result<(u16, u16)> {
        let (st, w) = if self.deprecate_eof {
            let ok = OkPacket::decode(payload, 0)?;
            (ok.status, ok.warnings)
        } else {
            let eof = EofPacket::decode(payload)?;
            (eof.status, eof.warnings)
        };
        self.status = Some(st);
        Ok((st, w))
    }
}

#[cfg(test)]
mod tests;
