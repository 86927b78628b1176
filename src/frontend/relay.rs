//! Relaying one command: send it to the backend, then stream the response to the client.
//!
//! Rows and column definitions pass through as opaque frames (a frame larger than the buffer is
//! forwarded piece by piece as it arrives); only OK/ERR/EOF packets are decoded. A backend
//! connection speaks the client's framing (classic EOF packets or CLIENT_DEPRECATE_EOF: it is part
//! of the pool profile), so packets pass as the server wrote them; only session-tracking payloads
//! are cut to what the client's trackers select (or removed, for clients without
//! CLIENT_SESSION_TRACK). Everything the server reported along the way is collected in
//! [`Observed`].
//!
//! Translating between framings was turned down: the EOF a classic client expects after column
//! definitions carries status flags the server decides only then (NO_INDEX_USED,
//! MORE_RESULTS_EXISTS, CURSOR_EXISTS, PS_OUT_PARAMS), which a proxy cannot know from a
//! DEPRECATE_EOF stream; a guess desynchronises a client that takes a stale CURSOR_EXISTS for an
//! opened cursor.

use super::client::ClientIo;
use crate::backend::conn::{BackendConn, BackendError};
use crate::codec::caps::{cap, status};
use crate::codec::command::ResponseKind;
use crate::codec::frame::{put_header, FrameHeader, HEADER_LEN, MAX_FRAME};
use crate::codec::packets::{OkPacket, SessionChange, EOF, OK};
use crate::codec::response::{ResponseTracker, Role};
use crate::error::{Error, Reply};
use crate::session::schema_report::{self, Action, Entry, Held, Turn};
use crate::session::trackers::TrxInfo;
use std::time::Duration;

/// A session change the server reported: `(Some(variable), value)`, or `(None, schema)`.
pub type Change = (Option<Box<[u8]>>, Box<[u8]>);

/// What the server reported while answering one command.
#[derive(Debug, Default)]
pub struct Observed {
    /// Status flags of the last OK/EOF.
    pub status: Option<u16>,
    /// Session changes the server reported, in order.
    pub changes: Vec<Change>,
    /// A "state changed" tracker item (user variables, temporary tables, PREPARE, …).
    pub state_changed: bool,
    /// The last transaction-state tracker value ("T_______", "_______L", …).
    pub trx_state: Option<Vec<u8>>,
    /// The last transaction-characteristics tracker value ("" when none are pending).
    pub trx_characteristics: Option<Vec<u8>>,
    /// character_set_connection was reported (MariaDB does not always report the collation).
    pub charset_changed: bool,
    /// Affected rows and last insert id of the last OK.
    pub last_ok: Option<(u64, u64)>,
    /// The response ended with an ERR (its code).
    pub error: Option<u16>,
    /// Some result reported warnings.
    pub warnings: bool,
    /// Some OK carried an insert id.
    pub insert_id: bool,
    /// The last result was a result set (for FOUND_ROWS/ROW_COUNT bookkeeping).
    pub result_set: bool,
    /// Rows in the last result set.
    pub rows: u64,
    /// Result sets in the response (several for a multi-statement text or a CALL).
    pub result_sets: u32,
    /// COM_STMT_PREPARE: the server's statement id, columns and parameters.
    pub prepared: Option<(u32, u16, u16)>,
    /// The client changed its own session trackers: what they select now.
    pub trackers: Option<crate::session::trackers::Trackers>,
    /// A cursor was opened (COM_STMT_EXECUTE with a cursor flag).
    pub cursor_opened: bool,
    /// A classic EOF said the session state changed (without saying how).
    pub classic_state_changed: bool,
    /// The response was an ERR withheld from the client (see [`RelayCtx::withhold_error`]):
    /// its code. Nothing was sent to the client.
    pub withheld_error: Option<u16>,
    /// A causal wait was sent ahead of the command (`BackendConn::send_ahead`): whether the
    /// replica had applied the session's write in time (`MASTER_GTID_WAIT` answered 0), and how
    /// long the wait took. When it had not, the command's answer was read and dropped: nothing
    /// was sent to the client.
    pub causal: Option<(bool, Duration)>,
    /// The backend reported session state (which flushes any schema report it held back).
    pub reported: bool,
    /// The session's schema report after the command (see [`SchemaCtx`]).
    pub schema: Option<Held>,
}

/// How relaying failed.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    /// The client was already told (an ERR was sent in place of the rest of the response).
    pub told_client: bool,
    /// An ERR may still be sent: the client is at a packet boundary, at this sequence id.
    pub next_seq: Option<u8>,
    /// The session survives this failure (overrides [`Error::closes_session`]): its backend was
    /// lost between transactions, with nothing pinned to it.
    pub keep_session: bool,
}

impl Failure {
    pub fn new(error: Error, next_seq: Option<u8>) -> Failure {
        Failure {
            error,
            told_client: false,
            next_seq,
            keep_session: false,
        }
    }

    pub fn ends_session(&self) -> bool {
        !self.keep_session && self.error.closes_session()
    }
}

/// The `last_gtid` report the client's own connection would be holding back, for a client that
/// tracks `last_gtid`: a statement that committed implicitly and then failed marked it, and the
/// ERR reported nothing (see `command::after_command`). A report from sluice's backend that
/// carries the value the connection already held is that mark flushed, not the statement's own
/// commit (each commit reports a new GTID): it reaches the client only with a report the
/// client's connection makes anyway, as the server writes every marked tracker into one.
pub struct GtidCtx {
    /// The session's own `@@last_gtid`.
    pub session: Box<str>,
    /// The client's connection holds the report back.
    pub pending: std::cell::Cell<bool>,
}

/// Timeouts and limits for one relay.
pub struct RelayCtx<'a> {
    pub client_caps: u32,
    /// The client's own session trackers (what the server would follow for it, whether or not
    /// it negotiated CLIENT_SESSION_TRACK to hear of it).
    pub trackers: &'a crate::session::trackers::Trackers,
    pub client_timeout: Option<Duration>,
    /// Sequence id of the first response packet (the number of frames in the command).
    pub first_seq: u8,
    pub backend_name: &'a str,
    /// COM_STMT_PREPARE: the statement id the client sees in place of the server's.
    pub prepare_id: Option<u32>,
    /// The session's own `last_gtid`, when the backend may report its own instead (it starts
    /// tracking last_gtid for the client).
    pub own_gtid: Option<Box<str>>,
    /// See [`GtidCtx`].
    pub gtid: Option<GtidCtx>,
    /// What the statement may change that a tracker follows (for classic EOFs).
    pub eof_hint: crate::session::trackers::EofHint,
    /// An ERR answering the command outright (its first packet) whose code this accepts is not
    /// sent to the client but reported as [`Observed::withheld_error`]: the caller runs the
    /// command elsewhere (a routed read a replica could not answer).
    pub withhold_error: Option<fn(u16) -> bool>,
}

/// What the relay needs to follow the schema report of a client that tracks its schema: what
/// the backend may flush, or the client's own connection would be holding
/// (`session::schema_report`).
pub struct SchemaCtx<'a> {
    pub held: Held,
    /// The backend connection carries this session's mark.
    pub mine: bool,
    /// The session's schema before the command.
    pub before: &'a [u8],
    /// What the command may do to the schema tracker; `None`: judged from `text` when needed.
    pub turn: Option<Turn>,
    /// A text command's SQL, how to read it, and whether its analysis found code sluice cannot
    /// see into.
    pub text: &'a [u8],
    pub modes: crate::session::sql::Modes,
    pub opaque: bool,
}

impl SchemaCtx<'_> {
    pub fn turn(&mut self) -> Turn {
        *self
            .turn
            .get_or_insert_with(|| Turn::of_text(self.text, self.modes, self.before, self.opaque))
    }
}

const FLUSH_AT: usize = 64 << 10;

struct Relay<'a, 'b> {
    io: &'a mut ClientIo,
    be: &'a mut BackendConn,
    ctx: &'a RelayCtx<'b>,
    /// The session's schema report as the response goes.
    schema: Option<SchemaCtx<'b>>,
    /// The transaction state the client's connection reports with the packet at hand, when it
    /// may differ from the backend's (`trackers::client_trx_state`).
    trx_view: Option<Box<[u8]>>,
    /// Next sequence id the client expects.
    next_client_seq: u8,
    /// Part of a frame has been sent to the client: no packet may be inserted now.
    mid_frame: bool,
    obs: Observed,
}

fn lost(be_name: &str, e: BackendError) -> Error {
    Error::BackendLost {
        backend: be_name.to_string(),
        detail: e.to_string(),
    }
}

impl Relay<'_, '_> {
    async fn ensure(&mut self, n: usize) -> Result<(), Error> {
        while self.be.rbuf.len() < n {
            self.be
                .fill_query()
                .await
                .map_err(|e| lost(self.ctx.backend_name, e))?;
        }
        Ok(())
    }

    async fn maybe_flush(&mut self) -> Result<(), Error> {
        if self.io.wbuf.len() >= FLUSH_AT {
            self.io.flush(self.ctx.client_timeout).await?;
        }
        Ok(())
    }

    /// Queues a whole backend packet (already buffered) unchanged except for its sequence id.
    fn forward_whole(&mut self, h: FrameHeader) {
        let seq = h.seq;
        put_header(&mut self.io.wbuf, h.len, seq);
        self.io
            .wbuf
            .extend_from_slice(&self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + h.len]);
        self.be.rbuf.consume(HEADER_LEN + h.len);
        self.next_client_seq = seq.wrapping_add(1);
    }

    /// Queues a replacement for the current backend packet (which is consumed).
    fn replace(&mut self, h: FrameHeader, payload: &[u8]) {
        let seq = h.seq;
        put_header(&mut self.io.wbuf, payload.len(), seq);
        self.io.wbuf.extend_from_slice(payload);
        self.be.rbuf.consume(HEADER_LEN + h.len);
        self.next_client_seq = seq.wrapping_add(1);
    }

    /// Streams a frame to the client as its bytes arrive.
    async fn forward_stream(&mut self, h: FrameHeader) -> Result<(), Error> {
        let seq = h.seq;
        put_header(&mut self.io.wbuf, h.len, seq);
        self.next_client_seq = seq.wrapping_add(1);
        self.be.rbuf.consume(HEADER_LEN);
        let mut left = h.len;
        self.mid_frame = left > 0;
        while left > 0 {
            if self.be.rbuf.is_empty() {
                self.be
                    .fill_query()
                    .await
                    .map_err(|e| lost(self.ctx.backend_name, e))?;
            }
            let n = left.min(self.be.rbuf.len());
            self.io.wbuf.extend_from_slice(&self.be.rbuf.data()[..n]);
            self.be.rbuf.consume(n);
            left -= n;
            self.maybe_flush().await?;
        }
        self.mid_frame = false;
        Ok(())
    }

    /// [`observe_ok`](Self::observe_ok) on the packet `h` at the front of the backend's read
    /// buffer (copied into the connection's scratch buffer, which is kept: no allocation).
    fn observe_ok_at(&mut self, h: FrameHeader) -> Result<(), Error> {
        let mut payload = std::mem::take(&mut self.be.scratch);
        payload.clear();
        payload.extend_from_slice(&self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + h.len]);
        let r = self.observe_ok(&payload).map(|_| ());
        self.be.scratch = payload;
        r
    }

    fn observe_ok(&mut self, payload: &[u8]) -> Result<OkPacket<'static>, Error> {
        let ok = OkPacket::decode(payload, self.be.caps).map_err(|e| {
            lost(
                self.ctx.backend_name,
                BackendError::Broken(format!("OK packet: {e}")),
            )
        })?;
        self.obs.status = Some(ok.status);
        self.be.status = ok.status;
        if ok.warnings > 0 {
            self.obs.warnings = true;
        }
        if payload[0] == OK {
            self.obs.last_ok = Some((ok.affected_rows, ok.last_insert_id));
            if ok.last_insert_id != 0 {
                self.obs.insert_id = true;
            }
        }
        if !ok.session_state.is_empty() {
            for c in ok.session_changes() {
                let c = c.map_err(|e| {
                    lost(
                        self.ctx.backend_name,
                        BackendError::Broken(format!("session state: {e}")),
                    )
                })?;
                match c {
                    SessionChange::StateChange(true) => self.obs.state_changed = true,
                    SessionChange::TransactionState(s) => {
                        self.trx_view = Some(crate::session::trackers::client_trx_state(
                            &self.be.trx_client,
                            &self.be.trx_state,
                            s,
                        ));
                        self.be.trx_state = s.into();
                        self.obs.trx_state = Some(s.to_vec())
                    }
                    SessionChange::TransactionCharacteristics(s) => {
                        self.obs.trx_characteristics = Some(s.to_vec())
                    }
                    SessionChange::SystemVariable { name, value } => {
                        if name == b"character_set_connection" || name == b"character_set_results" {
                            self.obs.charset_changed = true;
                        }
                        self.obs.changes.push((Some(name.into()), value.into()));
                    }
                    SessionChange::Schema(s) => self.obs.changes.push((None, s.into())),
                    _ => {}
                }
            }
        }
        // A result set sent inside a transaction: the client's connection says so (sluice's
        // backend may have said it already, for a statement of sluice's own).
        // (No allocation unless the client's state changes: once per transaction.) Not for a
        // statement run under the client's own trackers (`own_gtid`: `SHOW VARIABLES` and the
        // like): the backend's report is the client's connection's then, flag or no flag. Nor
        // for a procedure's OUT parameters (the row of a `PS_OUT_PARAMS` result: MariaDB 10.11
        // flags none for it, checked).
        if self.obs.result_set
            && ok.status & status::IN_TRANS != 0
            && ok.status & status::PS_OUT_PARAMS == 0
            && self.ctx.own_gtid.is_none()
        {
            use crate::session::trackers::{TRX_RESULT_SET, TRX_STATE_LEN};
            let lacks =
                |v: &[u8]| v.len() == TRX_STATE_LEN && v[0] != b'_' && v[TRX_RESULT_SET] == b'_';
            match &mut self.trx_view {
                Some(v) if lacks(v) => v[TRX_RESULT_SET] = b'S',
                Some(_) => {}
                None if lacks(&self.be.trx_client) => {
                    let mut v = self.be.trx_client.clone();
                    v[TRX_RESULT_SET] = b'S';
                    self.trx_view = Some(v);
                }
                None => {}
            }
        }
        // Only the status and counters are needed past this point.
        Ok(OkPacket {
            affected_rows: ok.affected_rows,
            last_insert_id: ok.last_insert_id,
            status: ok.status,
            warnings: ok.warnings,
            info: &[],
            session_state: &[],
        })
    }

    /// Sends an OK-shaped packet (header `OK`, or `EOF` for a terminator) on to a client that
    /// uses the same format: session-tracking data removed for clients that did not ask for it,
    /// and cut to what the client's own trackers select for those that did.
    fn emit_ok(&mut self, h: FrameHeader) -> Result<(), Error> {
        let payload = &self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + h.len];
        let broken = |e: crate::codec::CodecError| {
            lost(
                self.ctx.backend_name,
                BackendError::Broken(format!("OK packet: {e}")),
            )
        };
        let ok = OkPacket::decode(payload, self.be.caps).map_err(broken)?;
        let tracking = self.ctx.client_caps & cap::SESSION_TRACK != 0;
        let current = self.obs.trackers.as_ref().unwrap_or(self.ctx.trackers);
        // The transaction state the client's connection reports now, if it reports one.
        // A statement on the client's trackers (run under them: `own_gtid`; or turning them on)
        // hears the state even unchanged, as from the server; any other report of an unchanged
        // state is one sluice's own statements caused, and is dropped (an empty `trx`).
        let on_trackers = || {
            self.obs.trackers.is_some()
                || self.ctx.own_gtid.is_some()
                || ok.session_changes().any(|c| {
                    matches!(c, Ok(SessionChange::SystemVariable { name, .. })
                        if name.starts_with(b"session_track_"))
                })
        };
        let trx = match self.trx_view.take() {
            Some(view) if view != self.be.trx_client => {
                self.be.trx_client = view.clone();
                Some(view)
            }
            Some(view) if on_trackers() => Some(view),
            Some(_) => Some(Box::default()),
            None => None,
        };
        let mut trx = trx.filter(|_| tracking && current.trx != TrxInfo::Off);
        if ok.session_state.is_empty()
            && ok.status & status::SESSION_STATE_CHANGED == 0
            && trx.as_ref().is_none_or(|v| v.is_empty())
        {
            self.forward_whole(h);
            return Ok(());
        }
        if ok.status & status::SESSION_STATE_CHANGED != 0 {
            self.obs.reported = true;
        }
        // A statement that changes the client's trackers is reported under the new ones.
        for c in ok.session_changes() {
            if let Ok(SessionChange::SystemVariable { name, value }) = c {
                if name.starts_with(b"session_track_") {
                    let t = self
                        .obs
                        .trackers
                        .get_or_insert_with(|| self.ctx.trackers.clone());
                    t.set(
                        &String::from_utf8_lossy(name),
                        &String::from_utf8_lossy(value),
                    );
                }
            }
        }
        let current = self.obs.trackers.as_ref().unwrap_or(self.ctx.trackers);
        let mut filtered = if tracking {
            current.filter(ok.session_state).map_err(broken)?
        } else {
            Some(Vec::new())
        };
        // A client that starts tracking the transaction state hears the current one at once,
        // as the server tells it (sluice's backends track it all along, so theirs says nothing).
        let was = self.ctx.trackers.trx;
        let now = self.obs.trackers.as_ref().map(|t| t.trx);
        if let (true, TrxInfo::Off, Some(TrxInfo::State | TrxInfo::Characteristics)) =
            (tracking, was, now)
        {
            let mut block = filtered.unwrap_or_else(|| ok.session_state.to_vec());
            // Outside a transaction the state is blank (the last report may be the end of one).
            let state: &[u8] = if self.be.status & status::IN_TRANS == 0 {
                b"________"
            } else {
                &self.be.trx_client
            };
            crate::session::trackers::encode_trx_state(&mut block, state);
            filtered = Some(block);
            // That is the report: the client's state is not edited again below.
            trx = None;
        }
        if let (true, Some(g)) = (tracking, &self.ctx.own_gtid) {
            let block = filtered.as_deref().unwrap_or(ok.session_state);
            if let Some(b) =
                crate::session::trackers::replace_var(block, b"last_gtid", g.as_bytes())
                    .map_err(broken)?
            {
                filtered = Some(b);
            }
        }
        // A `last_gtid` report a failed statement left (see `GtidCtx`).
        if let (true, Some(g)) = (tracking, &self.ctx.gtid) {
            let block = filtered.as_deref().unwrap_or(ok.session_state);
            let held = &*self.be.last_gtid;
            match crate::session::trackers::find_var(block, b"last_gtid").map_err(broken)? {
                Some((at, v)) if !held.is_empty() && v == held.as_bytes() => {
                    let own = v == g.session.as_bytes();
                    if own && block.len() > at.len() {
                        g.pending.set(false);
                    } else {
                        let mut b = block.to_vec();
                        b.drain(at);
                        filtered = Some(b);
                        g.pending.set(own || g.pending.get());
                    }
                }
                Some(_) => g.pending.set(false),
                None if g.pending.get() && !block.is_empty() => {
                    filtered = Some(
                        crate::session::trackers::insert_var(
                            block,
                            b"last_gtid",
                            g.session.as_bytes(),
                        )
                        .map_err(broken)?,
                    );
                    g.pending.set(false);
                }
                None => {}
            }
        }
        // The schema report the backend flushes, or the client's connection would.
        if let (true, true, Some(sc)) = (tracking, current.schema, self.schema.as_mut()) {
            let block = filtered.as_deref().unwrap_or(ok.session_state);
            let found = schema_report::find(block).map_err(broken)?;
            let entry = match &found {
                None => Entry::None,
                Some((_, v)) if *v == sc.before => Entry::Same,
                Some(_) => Entry::Changed,
            };
            let rest = block.len() > found.as_ref().map_or(0, |(at, _)| at.len());
            let explained = entry == Entry::Same && sc.turn().may_switch;
            match (sc.held.report(sc.mine, explained, entry, rest), found) {
                (Action::Drop, Some((at, _))) => {
                    let mut b = block.to_vec();
                    b.drain(at);
                    filtered = Some(b);
                }
                (Action::Add, _) => {
                    filtered = Some(schema_report::insert(block, sc.before).map_err(broken)?)
                }
                _ => {}
            }
            // A report flushes the connection: the session's mark, if any, is resolved.
            sc.mine = false;
        }
        // The transaction state as the client's connection reports it: without what sluice's
        // own statements added, and not at all when that leaves it unchanged (empty `trx`).
        if let Some(view) = trx {
            let block = filtered.as_deref().unwrap_or(ok.session_state);
            let at = crate::session::trackers::find_trx_state(block).map_err(broken)?;
            let mut b = block.to_vec();
            if let Some(at) = at {
                b.drain(at);
            }
            if !view.is_empty() {
                crate::session::trackers::encode_trx_state(&mut b, &view);
            }
            filtered = Some(b);
        }
        let Some(filtered) = filtered else {
            self.forward_whole(h);
            return Ok(());
        };
        // A change of the transaction's characteristics under STATE-level tracking: the server
        // flags it with nothing to say.
        let flag_only = tracking
            && filtered.is_empty()
            && current.trx == TrxInfo::State
            && ok
                .session_changes()
                .any(|c| matches!(c, Ok(SessionChange::TransactionCharacteristics(_))));
        let ok = OkPacket {
            session_state: &filtered,
            ..ok
        };
        let mut out = Vec::with_capacity(16 + ok.info.len() + ok.session_state.len());
        if flag_only {
            ok.encode_flag_only(&mut out, payload[0]);
        } else {
            ok.encode(&mut out, payload[0], self.ctx.client_caps);
        }
        self.replace(h, &out);
        Ok(())
    }

    /// Sends a classic EOF on. It cannot carry session state, only the flag that some changed:
    /// the flag stays only when the client's trackers select everything sluice's backends track
    /// (otherwise what changed may be nothing the client asked to hear of).
    fn emit_eof(&mut self, h: FrameHeader, st: u16) {
        self.obs.classic_state_changed |= st & status::SESSION_STATE_CHANGED != 0;
        let keep = self
            .ctx
            .trackers
            .keeps_classic_flag(self.ctx.eof_hint, st & status::IN_TRANS != 0);
        if st & status::SESSION_STATE_CHANGED == 0 || keep || h.len < 5 {
            self.forward_whole(h);
            return;
        }
        let mut p = self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + h.len].to_vec();
        p[3..5].copy_from_slice(&(st & !status::SESSION_STATE_CHANGED).to_le_bytes());
        self.replace(h, &p);
    }

    async fn run(&mut self, payload: &[u8], kind: ResponseKind) -> Result<(), Error> {
        self.be
            .write_packet(0, payload)
            .await
            .map_err(|e| lost(self.ctx.backend_name, e))?;
        if self.be.ahead.is_some() {
            // The causal wait sent ahead of this command answers first.
            let applied = match self.be.read_ahead().await {
                Ok((v, took)) => (v.as_deref() == Some("0"), took),
                Err(BackendError::Server { .. }) => (false, Duration::ZERO),
                Err(e) => return Err(lost(self.ctx.backend_name, e)),
            };
            self.obs.causal = Some(applied);
            if !applied.0 {
                // Run too early to see the session's write: its answer is not the client's.
                return self
                    .be
                    .discard_response(kind)
                    .await
                    .map_err(|e| lost(self.ctx.backend_name, e));
            }
        }
        let classic = !self.be.deprecate_eof();
        let mut t = ResponseTracker::new(kind, !classic);
        let mut continued = false;
        while !t.is_done() {
            self.ensure(HEADER_LEN).await?;
            let h = FrameHeader::parse(self.be.rbuf.data()).expect("header present");
            if continued {
                // A later frame of a long packet: opaque.
                continued = h.len == MAX_FRAME;
                self.forward_stream(h).await?;
                continue;
            }
            if h.len == 0 {
                return Err(lost(
                    self.ctx.backend_name,
                    BackendError::Broken("empty packet in a response".into()),
                ));
            }
            self.ensure(HEADER_LEN + 1).await?;
            let first = self.be.rbuf.data()[HEADER_LEN];
            let whole = t.needs_whole(first, h.len);
            if whole {
                self.ensure(HEADER_LEN + h.len).await?;
            }
            let avail = (self.be.rbuf.len() - HEADER_LEN).min(h.len);
            let role = t
                .on_packet(h.len, &self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + avail])
                .map_err(|e| {
                    lost(
                        self.ctx.backend_name,
                        BackendError::Broken(format!("response: {e}")),
                    )
                })?;
            continued = h.len == MAX_FRAME;
            match role {
                // A classic EOF (COM_SET_OPTION's answer, a terminator after rows): status and
                // warnings only, passed on as they are.
                Role::Ok { status: st, .. } | Role::RowsEnd { status: st, .. }
                    if classic && first == EOF =>
                {
                    if let Role::RowsEnd { warnings, .. } = role {
                        self.obs.warnings |= warnings > 0;
                        self.obs.last_ok = None;
                    } else {
                        self.obs.result_set = false;
                    }
                    self.obs.status = Some(st);
                    self.be.status = st;
                    self.emit_eof(h, st);
                }
                Role::Ok { .. } => {
                    self.obs.result_set = false;
                    self.observe_ok_at(h)?;
                    self.emit_ok(h)?;
                }
                Role::RowsEnd { .. } | Role::CursorOpened { .. } => {
                    // The last result is rows now, not an OK (ROW_COUNT() is -1 after it).
                    self.observe_ok_at(h)?;
                    self.obs.last_ok = None;
                    self.obs.cursor_opened |= matches!(role, Role::CursorOpened { .. });
                    self.emit_ok(h)?;
                }
                Role::DefsEof { status: st } => {
                    // Classic framing: the EOF after definitions; with CURSOR_EXISTS in an
                    // execute's answer, the rows stay on the server in a cursor.
                    self.obs.status = Some(st);
                    self.be.status = st;
                    if kind == ResponseKind::Execute
                        && st & status::CURSOR_EXISTS != 0
                        && t.is_done()
                    {
                        self.obs.cursor_opened = true;
                    }
                    self.emit_eof(h, st);
                }
                Role::Row { .. } => {
                    self.obs.rows += 1;
                    self.forward_stream(h).await?;
                }
                Role::ColumnDef { .. } => self.forward_stream(h).await?,
                Role::ColumnCount(_) => {
                    self.obs.result_set = true;
                    self.obs.result_sets += 1;
                    self.obs.rows = 0;
                    self.forward_whole(h);
                }
                Role::PrepareOk {
                    statement_id,
                    columns,
                    params,
                    warnings,
                } => {
                    self.obs.prepared = Some((statement_id, columns, params));
                    self.obs.warnings |= warnings > 0;
                    match self.ctx.prepare_id {
                        Some(id) => {
                            let mut p =
                                self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + h.len].to_vec();
                            p[1..5].copy_from_slice(&id.to_le_bytes());
                            self.replace(h, &p);
                        }
                        None => self.forward_whole(h),
                    }
                }
                Role::Err => {
                    let code = crate::codec::packets::ErrPacket::decode(
                        &self.be.rbuf.data()[HEADER_LEN..HEADER_LEN + h.len],
                    )
                    .map(|e| e.code)
                    .ok();
                    let first = self.next_client_seq == self.ctx.first_seq && !self.mid_frame;
                    if let (true, Some(c), Some(withhold)) = (first, code, self.ctx.withhold_error)
                    {
                        if withhold(c) {
                            self.be.rbuf.consume(HEADER_LEN + h.len);
                            self.obs.withheld_error = Some(c);
                            continue;
                        }
                    }
                    self.obs.error = code.or(Some(0));
                    self.forward_whole(h);
                }
                Role::LocalInfile => self.local_infile(h, &mut t).await?,
                Role::Statistics => self.forward_whole(h),
            }
            self.maybe_flush().await?;
        }
        self.io.flush(self.ctx.client_timeout).await
    }

    /// LOAD DATA LOCAL INFILE: hand the server's request to the client and relay its file, or
    /// refuse on the client's behalf when it did not enable local files.
    async fn local_infile(&mut self, h: FrameHeader, t: &mut ResponseTracker) -> Result<(), Error> {
        if self.ctx.client_caps & cap::LOCAL_FILES == 0 {
            // An empty file ends the server's request; the client is told the statement is not
            // allowed, as a server would tell it.
            let client_seq = h.seq;
            self.be.rbuf.consume(HEADER_LEN + h.len);
            self.be
                .write_packet(h.seq.wrapping_add(1), &[])
                .await
                .map_err(|e| lost(self.ctx.backend_name, e))?;
            t.infile_sent();
            // Drain the server's answer to the empty file.
            while !t.is_done() {
                let (_, p) = self
                    .be
                    .read_packet()
                    .await
                    .map_err(|e| lost(self.ctx.backend_name, e))?;
                let _ = t.on_packet(p.len(), &p);
                if p.first() == Some(&OK) {
                    if let Ok(ok) = OkPacket::decode(&p, self.be.caps) {
                        self.be.status = ok.status;
                    }
                }
            }
            let r = Reply::new(1148, b"42000", "The used command is not allowed with this MariaDB version (the client did not enable LOCAL INFILE)");
            let mut out = Vec::new();
            r.encode(&mut out);
            self.next_client_seq = self.io.queue(client_seq, &out);
            self.obs.error = Some(1148);
            return Ok(());
        }
        self.forward_whole(h);
        self.io.flush(self.ctx.client_timeout).await?;
        // The client's file, frame by frame, until its empty frame.
        loop {
            while self.io.rbuf.len() < HEADER_LEN {
                self.io
                    .fill(self.ctx.client_timeout, "reading LOCAL INFILE data")
                    .await?;
            }
            let ch = FrameHeader::parse(self.io.rbuf.data()).expect("header present");
            let mut hdr = Vec::with_capacity(HEADER_LEN);
            put_header(&mut hdr, ch.len, ch.seq);
            self.io.rbuf.consume(HEADER_LEN);
            self.be
                .write_all(&hdr)
                .await
                .map_err(|e| lost(self.ctx.backend_name, e))?;
            let mut left = ch.len;
            while left > 0 {
                if self.io.rbuf.is_empty() {
                    self.io
                        .fill(self.ctx.client_timeout, "reading LOCAL INFILE data")
                        .await?;
                }
                let n = left.min(self.io.rbuf.len());
                let chunk = self.io.rbuf.data()[..n].to_vec();
                self.io.rbuf.consume(n);
                self.be
                    .write_all(&chunk)
                    .await
                    .map_err(|e| lost(self.ctx.backend_name, e))?;
                left -= n;
            }
            if ch.len == 0 {
                break;
            }
        }
        t.infile_sent();
        Ok(())
    }
}

/// Sends `payload` (a whole command) to the backend and relays the response to the client.
pub async fn relay<'a>(
    io: &mut ClientIo,
    be: &mut BackendConn,
    payload: &[u8],
    kind: ResponseKind,
    ctx: &RelayCtx<'a>,
    schema: Option<SchemaCtx<'a>>,
) -> Result<Observed, Failure> {
    let mut r = Relay {
        io,
        be,
        ctx,
        next_client_seq: ctx.first_seq,
        mid_frame: false,
        obs: Observed::default(),
        schema,
        trx_view: None,
    };
    let ended = r.run(payload, kind).await;
    r.obs.schema = r.schema.as_ref().map(|s| s.held);
    match ended {
        Ok(()) => Ok(r.obs),
        Err(error) => {
            let next_seq = (!r.mid_frame).then_some(r.next_client_seq);
            Err(Failure::new(error, next_seq))
        }
    }
}
