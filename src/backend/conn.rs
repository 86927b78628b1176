//! One upstream connection: a glommio `TcpStream` (backend connections are few, so they live in
//! glommio's ring like any other I/O), its read buffer, the capabilities negotiated, and the
//! session settings currently applied on it.

use crate::buf::ReadBuf;
use crate::codec::caps::{cap, status};
use crate::codec::command::{com, ChangeUser, ResponseKind};
use crate::codec::frame::{encode_packet, scan_packet, take_packet, FrameHeader, Scan};
use crate::codec::handshake::Handshake;
use crate::codec::login::{Login, LoginParams, LoginStep, BASE_CAPABILITIES};
use crate::codec::packets::{ErrPacket, OkPacket, SessionChange};
use crate::codec::response::{ResponseTracker, Role};
use crate::session::state::Settings;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Turns on every session tracker sluice relies on (re-run after each COM_RESET_CONNECTION,
/// which returns them to the server's global defaults).
pub const ENABLE_TRACKERS: &str = "SET SESSION session_track_schema = ON, \
     session_track_state_change = ON, session_track_system_variables = '*', \
     session_track_transaction_info = 'CHARACTERISTICS'";

/// The client flags a backend connection is opened with beyond [`BACKEND_CAPABILITIES`] (they
/// change what the server sends): [`cap::PROFILE`] flags in the low half, MariaDB extended
/// capabilities ([`MARIADB_PROFILE`]) in the high half. Connections are pooled apart by profile.
pub type Profile = u64;

/// MariaDB extended capabilities that change what the server sends and are passed through:
/// extended column metadata.
pub const MARIADB_PROFILE: u32 = crate::codec::caps::mariadb_cap::EXTENDED_METADATA;

/// The profile of a client with these capabilities.
pub fn profile_of(caps: u32, mariadb_caps: u32) -> Profile {
    u64::from(caps & cap::PROFILE) | u64::from(mariadb_caps & MARIADB_PROFILE) << 32
}

/// The profile sluice's own connections use when any will do (a modern client's).
pub const DEFAULT_PROFILE: Profile = cap::DEPRECATE_EOF as Profile;

/// Capabilities of every backend connection; per-client flags from [`cap::PROFILE`] (the framing
/// among them) are added.
pub const BACKEND_CAPABILITIES: u32 =
    BASE_CAPABILITIES | cap::SESSION_TRACK | cap::LOCAL_FILES | cap::MULTI_STATEMENTS;

/// Why a backend operation failed.
#[derive(Debug)]
pub enum BackendError {
    /// I/O or protocol failure: the connection is unusable.
    Broken(String),
    /// The server answered with an ERR; the connection is still usable.
    Server {
        code: u16,
        sql_state: [u8; 5],
        message: String,
    },
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Broken(s) => f.write_str(s),
            BackendError::Server {
                code,
                sql_state,
                message,
            } => write!(
                f,
                "ERROR {code} ({}): {message}",
                String::from_utf8_lossy(sql_state)
            ),
        }
    }
}

pub type BResult<T> = Result<T, BackendError>;

/// How a connect that nothing answered (refused, or no such socket) begins its detail.
const REFUSED: &str = "connection refused";

impl BackendError {
    /// Did a connect find nothing listening (certain evidence the server is not there)?
    pub fn is_refused(&self) -> bool {
        matches!(self, BackendError::Broken(s) if s.starts_with(REFUSED))
    }
}

/// What applying a settings plan did: each part's outcome (a refused part changed nothing).
#[derive(Debug, Default)]
pub struct Applied {
    pub schema: Option<BackendError>,
    pub set: Option<BackendError>,
    pub set_option: Option<BackendError>,
    /// Warnings the SET raised.
    pub warnings: u16,
}

impl Applied {
    pub fn ok(&self) -> bool {
        self.schema.is_none() && self.set.is_none() && self.set_option.is_none()
    }

    /// The first refusal, for the client.
    pub fn first_error(self) -> Option<BackendError> {
        self.schema.or(self.set).or(self.set_option)
    }
}

fn broken(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Broken(format!("{what}: {e}"))
}

/// Where a backend listens: TCP, or a Unix socket on this host (`unix:/path`), which costs the
/// kernel far less per packet than loopback TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl BackendAddr {
    /// Parses `host:port` (resolved now) or `unix:/path`.
    pub fn resolve(s: &str) -> Result<BackendAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(BackendAddr::Unix(path.into()));
        }
        use std::net::ToSocketAddrs;
        s.to_socket_addrs()
            .map_err(|e| format!("cannot resolve {s}: {e}"))?
            .next()
            .map(BackendAddr::Tcp)
            .ok_or_else(|| format!("{s} resolves to no address"))
    }
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Tcp(a) => write!(f, "{a}"),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A backend socket of either kind, possibly wrapped in TLS.
enum Stream {
    Tcp(TcpStream),
    Unix(glommio::net::UnixStream),
    Tls(Box<TlsStream>),
    /// Only while the plain stream is being wrapped in TLS.
    Detached,
}

/// rustls over a glommio stream: ciphertext moves through `inner`, plaintext through rustls.
struct TlsStream {
    inner: Stream,
    conn: rustls::ClientConnection,
    raw: Vec<u8>,
}

impl TlsStream {
    /// Sends whatever rustls has queued.
    async fn flush(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out)?;
            Box::pin(self.inner.write_all(&out)).await?;
        }
        Ok(())
    }

    /// Reads one batch of ciphertext and processes it; `false` at end of stream.
    async fn pull(&mut self) -> std::io::Result<bool> {
        let n = Box::pin(self.inner.read(&mut self.raw)).await?;
        if n == 0 {
            return Ok(false);
        }
        let mut slice = &self.raw[..n];
        while !slice.is_empty() {
            self.conn.read_tls(&mut slice)?;
            self.conn
                .process_new_packets()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        Ok(true)
    }

    async fn handshake(&mut self) -> std::io::Result<()> {
        while self.conn.is_handshaking() {
            self.flush().await?;
            if self.conn.is_handshaking() && self.conn.wants_read() && !self.pull().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.flush().await
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Read;
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.flush().await?;
            if !self.pull().await? {
                return Ok(0);
            }
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.conn.writer().write_all(buf)?;
        self.flush().await
    }
}

impl Stream {
    async fn connect(addr: &BackendAddr) -> std::io::Result<(Stream, std::os::fd::RawFd)> {
        match addr {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect(*a).await?;
                let _ = s.set_nodelay(true);
                let fd = s.as_raw_fd();
                Ok((Stream::Tcp(s), fd))
            }
            BackendAddr::Unix(p) => {
                // A Unix-socket connect completes (or fails) at once; glommio takes the socket
                // over from std (its own stream does not expose the fd, needed for health probes).
                use std::os::fd::{FromRawFd, IntoRawFd};
                let s = std::os::unix::net::UnixStream::connect(p)?;
                s.set_nonblocking(true)?;
                let fd = s.into_raw_fd();
                // SAFETY: `fd` is a connected socket we own; glommio takes ownership.
                let g = unsafe { glommio::net::UnixStream::from_raw_fd(fd) };
                Ok((Stream::Unix(g), fd))
            }
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
            Stream::Tls(t) => t.read(buf).await,
            Stream::Detached => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
            Stream::Tls(t) => t.write_all(buf).await,
            Stream::Detached => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&self) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both).await;
            }
            Stream::Unix(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both).await;
            }
            Stream::Tls(t) => Box::pin(t.inner.shutdown()).await,
            Stream::Detached => {}
        }
    }

    /// Wraps this stream in TLS and runs the handshake.
    async fn upgrade(
        self,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> std::io::Result<Stream> {
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut t = TlsStream {
            inner: self,
            conn,
            raw: vec![0; 16 << 10],
        };
        t.handshake().await?;
        Ok(Stream::Tls(Box::new(t)))
    }
}

/// Credentials and identity for opening backend connections.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    pub backend: u16,
    pub address: BackendAddr,
    pub user: Vec<u8>,
    pub password: Vec<u8>,
    /// Client flags this connection carries (see [`Profile`]).
    pub profile: Profile,
    pub timeout: Duration,
    /// Relayed client commands give up after this long without an answer (None: wait).
    pub query_timeout: Option<Duration>,
    /// TLS towards this backend, and the name its certificate must carry.
    pub tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// A statement prepared on this connection, shared by every client that prepared the same text
/// under the same settings.
pub struct Prepared {
    pub settings: Rc<Settings>,
    pub sql: Rc<[u8]>,
    pub id: u32,
    last_used: u64,
}

pub struct BackendConn {
    stream: Stream,
    /// The socket's fd (for non-blocking health probes).
    fd: std::os::fd::RawFd,
    pub rbuf: ReadBuf,
    pub backend: u16,
    pub profile: Profile,
    pub caps: u32,
    /// The server's connection (thread) id, for KILL QUERY.
    pub thread_id: u32,
    /// Status flags from the last OK/EOF.
    pub status: u16,
    /// Settings applied on this connection (relative to a fresh one).
    pub settings: Rc<Settings>,
    /// Multi-statements are on (COM_SET_OPTION state).
    pub multi_statements: bool,
    /// The connection's LAST_INSERT_ID, when sluice knows it (`None` after a statement that may
    /// have changed it, until it is read).
    pub last_insert_id: Option<u64>,
    /// The connection's `@@last_gtid` as its tracker last reported it.
    pub last_gtid: Box<str>,
    /// A packet being written (kept between commands: no allocation per packet).
    out: Vec<u8>,
    /// A copy of a response packet the relay looks at while it writes to the client (kept
    /// between commands, as `out`).
    pub scratch: Vec<u8>,
    /// The session whose statement ran here last, when nothing of sluice's ran after it (its
    /// ROW_COUNT() and the like are that session's); 0: nobody's. Every command of sluice's own
    /// (the methods below) clears it.
    pub history_owner: u32,
    /// A statement of this session (client connection id) that may have switched schemas failed
    /// here: the server may hold a schema report back until its next report
    /// (`session::schema_report`). Not carried across an upgrade.
    pub schema_mark: Option<u32>,
    /// The transaction state its tracker last reported (8 characters), sluice's own
    /// statements' reports included.
    pub trx_state: Box<[u8]>,
    /// The transaction state the client holding it has heard (or would have, had it tracked
    /// it): without the flags sluice's own statements added (`trackers::client_trx_state`).
    pub trx_client: Box<[u8]>,
    /// Warnings of the last of sluice's own commands (a replayed SET may raise some).
    pub last_warnings: u16,
    pub created: Instant,
    pub last_used: Instant,
    /// The backend's connection generation when this connection was opened
    /// (`Backend::conn_gen`): a name that moves (see `backend::dns`) or a RECONNECT retires
    /// connections of older generations.
    pub gen: u64,
    /// A query sent ahead of the next command whose answer (one value) has not been read yet,
    /// and since when (see [`BackendConn::send_ahead`]).
    pub ahead: Option<Instant>,
    /// The greeting's nonce and the plugin the login ended with (COM_CHANGE_USER reuses both).
    nonce: Vec<u8>,
    auth_plugin: Vec<u8>,
    /// Statements prepared here (bounded; least recently used ones are closed).
    prepared: Vec<Prepared>,
    prepared_tick: u64,
    /// Bounds on waiting for the server: sluice's own commands, relayed ones.
    op_timeout: Duration,
    query_timeout: Option<Duration>,
}

/// Everything sluice knows about a connection besides its socket: what an upgrade hands to
/// the successor process with the socket's descriptor (see `crate::upgrade`).
#[derive(Debug, Clone)]
pub struct Parts {
    pub backend: u16,
    /// A Unix-domain socket (else TCP).
    pub unix: bool,
    pub profile: Profile,
    pub caps: u32,
    pub thread_id: u32,
    pub status: u16,
    pub settings: Rc<Settings>,
    pub multi_statements: bool,
    pub last_insert_id: Option<u64>,
    pub last_gtid: Box<str>,
    pub history_owner: u32,
    pub trx_state: Box<[u8]>,
    pub last_warnings: u16,
    /// Since it was opened.
    pub age: Duration,
    pub nonce: Vec<u8>,
    pub auth_plugin: Vec<u8>,
    /// Statements prepared on it: settings, text, the server's id.
    pub prepared: Vec<(Rc<Settings>, Rc<[u8]>, u32)>,
}

impl BackendConn {
    /// A command of sluice's own starts: what the connection holds of a session's statement
    /// (its history values, a schema report it may hold back) is nobody's any more.
    fn own_command(&mut self) {
        self.history_owner = 0;
        self.schema_mark = None;
    }

    /// The OK or terminator of one of sluice's own statements: its status, and the transaction
    /// state it reports (a result set or a read of a system variable inside the client's
    /// transaction adds flags the client must not hear of: see `trackers::client_trx_state`).
    fn note_end(&mut self, st: u16, p: &[u8]) {
        self.status = st;
        if st & status::SESSION_STATE_CHANGED == 0 || !self.deprecate_eof() {
            return;
        }
        if let Ok(ok) = OkPacket::decode(p, self.caps) {
            for c in ok.session_changes().flatten() {
                if let SessionChange::TransactionState(s) = c {
                    self.trx_state = s.into();
                }
            }
        }
    }

    /// May this connection move to another process now? Plaintext (a TLS session's keys and
    /// sequence numbers live in this process's rustls object), no query sent ahead, nothing in
    /// its read buffer, and nothing unread from the server in the kernel either (a peek).
    pub fn movable(&self) -> bool {
        !matches!(self.stream, Stream::Tls(_) | Stream::Detached)
            && self.ahead.is_none()
            && self.is_healthy()
    }

    /// Does the connection run over TLS?
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// What sluice knows about it (see [`Parts`]).
    pub fn parts(&self) -> Parts {
        Parts {
            backend: self.backend,
            unix: matches!(self.stream, Stream::Unix(_)),
            profile: self.profile,
            caps: self.caps,
            thread_id: self.thread_id,
            status: self.status,
            settings: self.settings.clone(),
            multi_statements: self.multi_statements,
            last_insert_id: self.last_insert_id,
            last_gtid: self.last_gtid.clone(),
            history_owner: self.history_owner,
            trx_state: self.trx_state.clone(),
            last_warnings: self.last_warnings,
            age: self.created.elapsed(),
            nonce: self.nonce.clone(),
            auth_plugin: self.auth_plugin.clone(),
            prepared: self
                .prepared
                .iter()
                .map(|p| (p.settings.clone(), p.sql.clone(), p.id))
                .collect(),
        }
    }

    /// A duplicate of the socket's descriptor (close-on-exec), to pass to another process:
    /// the connection stays open while either is (dropping this `BackendConn` closes only its
    /// own descriptor; it never shuts the socket down).
    pub fn dup_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        // SAFETY: `fd` is this connection's open socket for as long as `self` lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) }.try_clone_to_owned()
    }

    /// A connection another process opened and handed over (its socket `fd`, what it knew
    /// `p`), on this executor; `gen` is its backend's connection generation here. Must run on
    /// a glommio executor thread.
    pub fn adopt(fd: std::os::fd::OwnedFd, p: Parts, spec: &ConnectSpec, gen: u64) -> BackendConn {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is a connected socket we own; glommio takes ownership.
        let stream = unsafe {
            if p.unix {
                Stream::Unix(glommio::net::UnixStream::from_raw_fd(raw))
            } else {
                Stream::Tcp(TcpStream::from_raw_fd(raw))
            }
        };
        let now = Instant::now();
        let mut c = BackendConn {
            stream,
            fd: raw,
            rbuf: ReadBuf::with_capacity(16 << 10),
            backend: p.backend,
            profile: p.profile,
            caps: p.caps,
            thread_id: p.thread_id,
            status: p.status,
            settings: p.settings,
            multi_statements: p.multi_statements,
            last_insert_id: p.last_insert_id,
            last_gtid: p.last_gtid,
            out: Vec::new(),
            scratch: Vec::new(),
            history_owner: p.history_owner,
            schema_mark: None,
            trx_client: p.trx_state.clone(),
            trx_state: p.trx_state,
            last_warnings: p.last_warnings,
            created: now.checked_sub(p.age).unwrap_or(now),
            last_used: now,
            gen,
            ahead: None,
            nonce: p.nonce,
            auth_plugin: p.auth_plugin,
            prepared: Vec::new(),
            prepared_tick: 0,
            op_timeout: spec.timeout,
            query_timeout: spec.query_timeout,
        };
        for (settings, sql, id) in p.prepared {
            c.prepared_tick += 1;
            c.prepared.push(Prepared {
                settings,
                sql,
                id,
                last_used: c.prepared_tick,
            });
        }
        c
    }

    /// Opens, authenticates and prepares (trackers on) a connection.
    pub async fn connect(spec: &ConnectSpec, fresh: Rc<Settings>) -> BResult<BackendConn> {
        let fut = Self::connect_inner(spec, fresh);
        match glommio::timer::timeout(spec.timeout, async { Ok(fut.await) }).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Broken(format!(
                "no answer within {} ms",
                spec.timeout.as_millis()
            ))),
        }
    }

    async fn connect_inner(spec: &ConnectSpec, fresh: Rc<Settings>) -> BResult<BackendConn> {
        let (stream, fd) = Stream::connect(&spec.address).await.map_err(|e| {
            use std::io::ErrorKind::{ConnectionRefused, NotFound};
            if matches!(e.kind(), ConnectionRefused | NotFound) {
                broken(REFUSED, e)
            } else {
                broken("connect", e)
            }
        })?;
        let mut c = BackendConn {
            stream,
            fd,
            rbuf: ReadBuf::with_capacity(16 << 10),
            backend: spec.backend,
            profile: spec.profile,
            caps: 0,
            thread_id: 0,
            status: 0,
            settings: fresh,
            multi_statements: true,
            last_insert_id: Some(0),
            last_gtid: "".into(),
            out: Vec::new(),
            scratch: Vec::new(),
            history_owner: 0,
            schema_mark: None,
            trx_state: Box::from(&b"________"[..]),
            trx_client: Box::from(&b"________"[..]),
            last_warnings: 0,
            created: Instant::now(),
            last_used: Instant::now(),
            gen: 0,
            ahead: None,
            nonce: Vec::new(),
            auth_plugin: crate::codec::auth::NATIVE_PASSWORD.to_vec(),
            prepared: Vec::new(),
            prepared_tick: 0,
            op_timeout: spec.timeout,
            query_timeout: spec.query_timeout,
        };
        let (seq, greeting) = c.read_packet().await?;
        let hs = Handshake::decode(&greeting).map_err(|e| broken("greeting", e))?;
        c.thread_id = hs.connection_id;
        c.nonce = hs.nonce.clone();
        let mut login = Login::new(LoginParams {
            user: spec.user.clone(),
            password: spec.password.clone(),
            database: None,
            collation: crate::bootstrap::BACKEND_COLLATION,
            capabilities: BACKEND_CAPABILITIES
                | spec.profile as u32
                | if spec.tls.is_some() { cap::SSL } else { 0 },
            mariadb_capabilities: (spec.profile >> 32) as u32,
            attributes: vec![(b"program_name".to_vec(), b"sluice".to_vec())],
            secure_transport: spec.tls.is_some(),
        });
        if spec.tls.is_some() && hs.capabilities & cap::SSL == 0 {
            return Err(BackendError::Broken(
                "TLS is configured for this backend but the server does not offer it".into(),
            ));
        }
        let resp = login.respond(&hs).map_err(|e| broken("login", e))?;
        c.caps = login.capabilities();
        let need =
            cap::SESSION_TRACK | cap::PROTOCOL_41 | (spec.profile as u32 & cap::DEPRECATE_EOF);
        if c.caps & need != need {
            return Err(BackendError::Broken(
                "server lacks CLIENT_SESSION_TRACK or CLIENT_DEPRECATE_EOF (MySQL 5.7+ or MariaDB 10.2+ needed)".into(),
            ));
        }
        let mut seq = seq.wrapping_add(1);
        if let Some((config, name)) = spec.tls.clone() {
            // SSLRequest (the response's fixed 32-byte prefix), TLS, then the response over it.
            c.write_packet(seq, &resp[..crate::codec::handshake::SSL_REQUEST_LEN])
                .await?;
            seq = seq.wrapping_add(1);
            let plain = std::mem::replace(&mut c.stream, Stream::Detached);
            c.stream = plain
                .upgrade(config, name)
                .await
                .map_err(|e| broken("TLS handshake", e))?;
        }
        c.write_packet(seq, &resp).await?;
        c.status = c.finish_login(&mut login, "login").await?;
        c.auth_plugin = login.plugin().to_vec();
        c.query_ok(ENABLE_TRACKERS).await?;
        Ok(c)
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd
    }

    /// The connection uses CLIENT_DEPRECATE_EOF framing (else classic EOF packets).
    pub fn deprecate_eof(&self) -> bool {
        self.caps & cap::DEPRECATE_EOF != 0
    }

    /// Reads at least one more byte into the buffer.
    /// Reads at least one more byte for one of sluice's own commands (bounded by the connect
    /// timeout: a server that stops answering must not hold a pool connection forever).
    pub async fn fill(&mut self) -> BResult<()> {
        self.fill_within(Some(self.op_timeout)).await
    }

    /// Reads at least one more byte of a relayed client command's response (bounded by
    /// `pool.query_timeout_ms` when set).
    pub async fn fill_query(&mut self) -> BResult<()> {
        self.fill_within(self.query_timeout).await
    }

    async fn fill_within(&mut self, limit: Option<Duration>) -> BResult<()> {
        let spare = self.rbuf.spare(8192);
        let read = self.stream.read(spare);
        let n = match limit {
            None => read.await.map_err(|e| broken("read", e))?,
            Some(t) => match glommio::timer::timeout(t, async { Ok(read.await) }).await {
                Ok(r) => r.map_err(|e| broken("read", e))?,
                Err(_) => {
                    return Err(BackendError::Broken(format!(
                        "no answer within {} ms",
                        t.as_millis()
                    )))
                }
            },
        };
        if n == 0 {
            return Err(BackendError::Broken("connection closed by server".into()));
        }
        self.rbuf.commit(n);
        Ok(())
    }

    /// Reads one whole logical packet (for sluice's own commands; client responses are streamed).
    pub async fn read_packet(&mut self) -> BResult<(u8, bytes::Bytes)> {
        loop {
            match scan_packet(self.rbuf.data(), 1 << 30).map_err(|e| broken("packet", e))? {
                Scan::Complete(span) => {
                    let mut tmp = bytes::BytesMut::from(&self.rbuf.data()[..span.wire_len]);
                    self.rbuf.consume(span.wire_len);
                    return Ok((span.last_seq, take_packet(&mut tmp, span)));
                }
                Scan::Incomplete { .. } => self.fill().await?,
            }
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> BResult<()> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| broken("write", e))
    }

    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> BResult<()> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_packet(&mut out, seq, payload);
        let r = self.write_all(&out).await;
        // A huge packet's buffer is not kept.
        if out.capacity() <= 64 << 10 {
            self.out = out;
        }
        r
    }

    /// Runs one of sluice's own commands whose response is OK or ERR, consuming the whole
    /// response; returns the OK's status and raw session state block.
    pub async fn command_ok(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> BResult<(u16, Vec<u8>)> {
        self.write_packet(0, payload).await?;
        self.finish_ok(kind).await
    }

    /// Reads the response to a command sent earlier and expects OK (any result sets are
    /// discarded).
    pub async fn finish_ok(&mut self, kind: ResponseKind) -> BResult<(u16, Vec<u8>)> {
        self.own_command();
        self.last_warnings = 0;
        let mut t = ResponseTracker::new(kind, self.deprecate_eof());
        let mut result = Ok((self.status, Vec::new()));
        while !t.is_done() {
            let (_, p) = self.read_packet().await?;
            match t
                .on_packet(p.len(), &p)
                .map_err(|e| broken("response", e))?
            {
                // COM_SET_OPTION answers a classic connection with an EOF.
                Role::Ok { status: st, .. }
                    if p.first() == Some(&0xFE) && !self.deprecate_eof() =>
                {
                    self.status = st;
                    result = result.map(|(_, s)| (st, s));
                }
                Role::Ok { status: st, .. } => {
                    self.note_end(st, &p);
                    let ok = OkPacket::decode(&p, self.caps).map_err(|e| broken("OK", e))?;
                    self.last_warnings = ok.warnings;
                    if let Ok((_, state)) = &mut result {
                        state.extend_from_slice(ok.session_state);
                    }
                    result = result.map(|(_, s)| (st, s));
                }
                Role::RowsEnd { status: st, .. } => self.note_end(st, &p),
                Role::Err => {
                    let e = ErrPacket::decode(&p).map_err(|e| broken("ERR", e))?;
                    result = Err(BackendError::Server {
                        code: e.code,
                        sql_state: e.sql_state,
                        message: String::from_utf8_lossy(e.message).into_owned(),
                    });
                }
                Role::LocalInfile => {
                    return Err(BackendError::Broken(
                        "unexpected LOCAL INFILE request".into(),
                    ))
                }
                _ => {}
            }
        }
        result
    }

    pub async fn query_ok(&mut self, sql: &str) -> BResult<(u16, Vec<u8>)> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        crate::codec::command::encode_query(&mut p, sql.as_bytes());
        self.command_ok(&p, ResponseKind::Query).await
    }

    /// Applies a settings plan in one round trip: COM_INIT_DB, one SET statement and
    /// COM_SET_OPTION, pipelined, then their answers read in order. A broken connection is an
    /// error; the server refusing a part is reported per part.
    pub async fn apply(
        &mut self,
        schema: Option<&str>,
        set: Option<&str>,
        set_option: Option<u16>,
    ) -> BResult<Applied> {
        self.own_command();
        let mut out = Vec::with_capacity(256);
        if let Some(db) = schema {
            let mut p = vec![com::INIT_DB];
            p.extend_from_slice(db.as_bytes());
            encode_packet(&mut out, 0, &p);
        }
        if let Some(sql) = set {
            let mut p = Vec::with_capacity(sql.len() + 1);
            crate::codec::command::encode_query(&mut p, sql.as_bytes());
            encode_packet(&mut out, 0, &p);
        }
        if let Some(opt) = set_option {
            let mut p = vec![com::SET_OPTION];
            p.extend_from_slice(&opt.to_le_bytes());
            encode_packet(&mut out, 0, &p);
        }
        let mut applied = Applied::default();
        if out.is_empty() {
            return Ok(applied);
        }
        self.write_all(&out).await?;
        let refused = |r: BResult<(u16, Vec<u8>)>| match r {
            Ok(_) => Ok(None),
            Err(e @ BackendError::Server { .. }) => Ok(Some(e)),
            Err(e) => Err(e),
        };
        if schema.is_some() {
            applied.schema = refused(self.finish_ok(ResponseKind::OkErr).await)?;
        }
        if set.is_some() {
            applied.set = refused(self.finish_ok(ResponseKind::Query).await)?;
            applied.warnings = self.last_warnings;
        }
        if set_option.is_some() {
            applied.set_option = refused(self.finish_ok(ResponseKind::SetOption).await)?;
        }
        Ok(applied)
    }

    /// Runs a query returning one row; its values as text (NULL as `None`).
    pub async fn query_row(&mut self, sql: &str) -> BResult<Vec<Option<String>>> {
        self.query_rows(sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| BackendError::Broken(format!("no row for {sql}")))
    }

    /// Runs a query; its rows' values as text (NULL as `None`).
    pub async fn query_rows(&mut self, sql: &str) -> BResult<Vec<Vec<Option<String>>>> {
        Ok(self.query_rows_and_collation(sql).await?.0)
    }

    /// Runs a query returning one value (first column of the first row).
    pub async fn query_value(&mut self, sql: &str) -> BResult<Option<String>> {
        Ok(self.query_value_and_collation(sql).await?.0)
    }

    /// Runs a query returning one value (first column of the first row), with the collation
    /// id its column carries.
    pub async fn query_value_and_collation(
        &mut self,
        sql: &str,
    ) -> BResult<(Option<String>, Option<u16>)> {
        let (row, collation) = self.query_row_and_collation(sql).await?;
        Ok((row.into_iter().next().flatten(), collation))
    }

    /// Runs a query; the values of its first row (empty without one), with the collation id its
    /// first column carries.
    pub async fn query_row_and_collation(
        &mut self,
        sql: &str,
    ) -> BResult<(Vec<Option<String>>, Option<u16>)> {
        let (rows, collation) = self.query_rows_and_collation(sql).await?;
        Ok((rows.into_iter().next().unwrap_or_default(), collation))
    }

    /// Runs a query; its rows' values as text (NULL as `None`), with the collation id its first
    /// column carries.
    async fn query_rows_and_collation(
        &mut self,
        sql: &str,
    ) -> BResult<(Vec<Vec<Option<String>>>, Option<u16>)> {
        self.own_command();
        let mut p = Vec::with_capacity(sql.len() + 1);
        crate::codec::command::encode_query(&mut p, sql.as_bytes());
        self.write_packet(0, &p).await?;
        self.read_rows_and_collation().await
    }

    /// Sends a query returning one value without waiting for its answer: the next command is
    /// written behind it (one round trip for both), and its answer is read first with
    /// [`BackendConn::read_ahead`]. A connection with an answer still unread never goes back
    /// to a pool (`Lease::release` closes it).
    pub async fn send_ahead(&mut self, sql: &str) -> BResult<()> {
        self.own_command();
        let mut p = Vec::with_capacity(sql.len() + 1);
        crate::codec::command::encode_query(&mut p, sql.as_bytes());
        self.write_packet(0, &p).await?;
        self.ahead = Some(Instant::now());
        Ok(())
    }

    /// The answer to the query sent with [`BackendConn::send_ahead`]: its value, and how long
    /// it took from sending.
    pub async fn read_ahead(&mut self) -> BResult<(Option<String>, Duration)> {
        let since = self.ahead.take().unwrap_or_else(Instant::now);
        let (rows, _) = self.read_rows_and_collation().await?;
        let v = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten());
        Ok((v, since.elapsed()))
    }

    /// Reads a command's whole answer and drops it (a read whose answer must not reach the
    /// client); the ERR it may end with is not an error here.
    pub async fn discard_response(&mut self, kind: ResponseKind) -> BResult<()> {
        let mut t = ResponseTracker::new(kind, self.deprecate_eof());
        while !t.is_done() {
            let (_, p) = self.read_packet().await?;
            match t
                .on_packet(p.len(), &p)
                .map_err(|e| broken("response", e))?
            {
                Role::RowsEnd { status: st, .. } | Role::Ok { status: st, .. } => {
                    self.note_end(st, &p)
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn read_rows_and_collation(
        &mut self,
    ) -> BResult<(Vec<Vec<Option<String>>>, Option<u16>)> {
        let mut t = ResponseTracker::new(ResponseKind::Query, self.deprecate_eof());
        let extended = (self.profile >> 32) as u32 & MARIADB_PROFILE != 0;
        let mut rows = Vec::new();
        let mut collation = None;
        let mut err = None;
        while !t.is_done() {
            let (_, p) = self.read_packet().await?;
            match t
                .on_packet(p.len(), &p)
                .map_err(|e| broken("response", e))?
            {
                Role::ColumnDef { .. } if collation.is_none() => {
                    collation = column_collation(&p, extended);
                }
                Role::Row { .. } => {
                    let mut r = crate::codec::wire::Reader::new(&p);
                    let mut values = Vec::new();
                    while !r.is_empty() {
                        if r.peek_u8() == Some(0xFB) {
                            r.skip(1, "NULL").map_err(|e| broken("row", e))?;
                            values.push(None);
                        } else {
                            let v = r.lenenc_bytes("value").map_err(|e| broken("row", e))?;
                            values.push(Some(String::from_utf8_lossy(v).into_owned()));
                        }
                    }
                    rows.push(values);
                }
                Role::RowsEnd { status: st, .. } | Role::Ok { status: st, .. } => {
                    self.note_end(st, &p)
                }
                Role::Err => {
                    let e = ErrPacket::decode(&p).map_err(|e| broken("ERR", e))?;
                    err = Some(BackendError::Server {
                        code: e.code,
                        sql_state: e.sql_state,
                        message: String::from_utf8_lossy(e.message).into_owned(),
                    });
                }
                _ => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok((rows, collation)),
        }
    }

    /// COM_RESET_CONNECTION, then the trackers back on, in one round trip (pipelined).
    pub async fn reset(&mut self, fresh: Rc<Settings>) -> BResult<()> {
        let mut out = Vec::with_capacity(128);
        encode_packet(&mut out, 0, &[com::RESET_CONNECTION]);
        let mut q = Vec::with_capacity(ENABLE_TRACKERS.len() + 1);
        crate::codec::command::encode_query(&mut q, ENABLE_TRACKERS.as_bytes());
        encode_packet(&mut out, 0, &q);
        self.write_all(&out).await?;
        let r1 = self.finish_ok(ResponseKind::OkErr).await;
        let r2 = self.finish_ok(ResponseKind::Query).await;
        r1?;
        r2?;
        // The schema survives COM_RESET_CONNECTION on MariaDB and MySQL.
        let schema = self.settings.schema.clone();
        self.settings = if schema.is_some() {
            Rc::new(Settings {
                schema,
                vars: Vec::new(),
            })
        } else {
            fresh
        };
        // COM_RESET_CONNECTION leaves the COM_SET_OPTION multi-statements setting as it was
        // (MariaDB 10.11, checked), so `multi_statements` is kept. The server closed every
        // prepared statement and forgot the session's history.
        self.prepared.clear();
        self.last_insert_id = Some(0);
        Ok(())
    }

    /// Reads the server's answers to a login or COM_CHANGE_USER already sent, and writes what
    /// `login` says to, until the server accepts it; returns the status flags of its OK. A
    /// refusal passes through as [`BackendError::Server`]; anything else is `what`, broken.
    async fn finish_login(&mut self, login: &mut Login, what: &str) -> BResult<u16> {
        loop {
            let (s, p) = self.read_packet().await?;
            match login.on_packet(&p) {
                Ok(LoginStep::Done { status }) => return Ok(status),
                Ok(LoginStep::Send(v)) if v.is_empty() => {}
                Ok(LoginStep::Send(v)) => self.write_packet(s.wrapping_add(1), &v).await?,
                Err(crate::codec::login::LoginError::Server {
                    code,
                    sql_state,
                    message,
                }) => {
                    return Err(BackendError::Server {
                        code,
                        sql_state,
                        message,
                    })
                }
                Err(e) => return Err(broken(what, e)),
            }
        }
    }

    /// COM_CHANGE_USER back to the pool's own credentials without a schema: the only way to
    /// deselect a schema. Trackers are re-enabled afterwards.
    pub async fn change_user_clear(
        &mut self,
        spec: &ConnectSpec,
        fresh: Rc<Settings>,
    ) -> BResult<()> {
        self.own_command();
        let params = LoginParams {
            user: spec.user.clone(),
            password: spec.password.clone(),
            ..LoginParams::default()
        };
        let (mut login, scramble) =
            Login::change_user(params, self.caps, &self.auth_plugin, self.nonce.clone())
                .map_err(|e| broken("change user", e))?;
        let cu = ChangeUser {
            username: spec.user.clone(),
            auth_response: scramble,
            database: Vec::new(),
            collation: Some(u16::from(crate::bootstrap::BACKEND_COLLATION)),
            auth_plugin: Some(self.auth_plugin.clone()),
            attributes: Vec::new(),
        };
        let mut p = Vec::new();
        cu.encode(&mut p, self.caps);
        self.write_packet(0, &p).await?;
        self.status = self.finish_login(&mut login, "change user").await?;
        self.query_ok(ENABLE_TRACKERS).await?;
        self.settings = fresh;
        // COM_CHANGE_USER does not restore the handshake's multi-statements flag either.
        self.prepared.clear();
        self.last_insert_id = Some(0);
        Ok(())
    }

    /// The id of `sql` prepared here under `settings`, if it is, other than the ids in `avoid`
    /// (statements a cursor of the session is open on: a second client statement with the
    /// same text must not share them).
    pub fn prepared_id(
        &mut self,
        settings: &Rc<Settings>,
        sql: &Rc<[u8]>,
        avoid: &[u32],
    ) -> Option<u32> {
        self.prepared_tick += 1;
        let tick = self.prepared_tick;
        let p = self.prepared.iter_mut().find(|p| {
            Rc::ptr_eq(&p.settings, settings)
                && (Rc::ptr_eq(&p.sql, sql) || p.sql == *sql)
                && !avoid.contains(&p.id)
        })?;
        p.last_used = tick;
        Some(p.id)
    }

    /// Records a statement the server prepared here. An older statement with the same key is
    /// replaced (its id returned for the caller to close) unless it is in `busy` (a cursor is
    /// open on it): then both stay.
    pub fn remember_prepared(
        &mut self,
        settings: Rc<Settings>,
        sql: Rc<[u8]>,
        id: u32,
        busy: &[u32],
    ) -> Option<u32> {
        self.prepared_tick += 1;
        let tick = self.prepared_tick;
        if let Some(p) = self
            .prepared
            .iter_mut()
            .find(|p| Rc::ptr_eq(&p.settings, &settings) && p.sql == sql && !busy.contains(&p.id))
        {
            let old = std::mem::replace(&mut p.id, id);
            p.last_used = tick;
            return (old != id).then_some(old);
        }
        self.prepared.push(Prepared {
            settings,
            sql,
            id,
            last_used: tick,
        });
        None
    }

    /// Makes room for one more statement under `cap`: removes the least recently used entries
    /// (never one `keep` protects) and returns their ids for the caller to close.
    pub fn evict_prepared(&mut self, cap: usize, keep: impl Fn(&Prepared) -> bool) -> Vec<u32> {
        let mut closed = Vec::new();
        while self.prepared.len() >= cap.max(1) {
            let victim = self
                .prepared
                .iter()
                .enumerate()
                .filter(|(_, p)| !keep(p))
                .min_by_key(|(_, p)| p.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => closed.push(self.prepared.swap_remove(i).id),
                None => break,
            }
        }
        closed
    }

    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }

    /// Closes statements on the server (COM_STMT_CLOSE has no response), pipelined in one write.
    pub async fn close_statements(&mut self, ids: &[u32]) -> BResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(ids.len() * 9);
        for id in ids {
            let mut p = vec![com::STMT_CLOSE];
            p.extend_from_slice(&id.to_le_bytes());
            encode_packet(&mut out, 0, &p);
        }
        self.write_all(&out).await
    }

    /// Prepares `sql` for sluice's own use (the response is read and dropped); returns its id.
    pub async fn prepare_quiet(&mut self, sql: &[u8]) -> BResult<u32> {
        self.own_command();
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql);
        self.write_packet(0, &p).await?;
        let mut t = ResponseTracker::new(ResponseKind::Prepare, self.deprecate_eof());
        let mut result = Err(BackendError::Broken("no PREPARE_OK".into()));
        while !t.is_done() {
            let (_, p) = self.read_packet().await?;
            match t
                .on_packet(p.len(), &p)
                .map_err(|e| broken("prepare response", e))?
            {
                Role::PrepareOk { statement_id, .. } => result = Ok(statement_id),
                Role::Err => {
                    let e = ErrPacket::decode(&p).map_err(|e| broken("ERR", e))?;
                    result = Err(BackendError::Server {
                        code: e.code,
                        sql_state: e.sql_state,
                        message: String::from_utf8_lossy(e.message).into_owned(),
                    });
                }
                _ => {}
            }
        }
        result
    }

    /// Is the connection still quiet and open? (A server that closed an idle connection has sent
    /// EOF or an error packet; either way it must not be reused.)
    pub fn is_healthy(&self) -> bool {
        self.rbuf.is_empty() && crate::net::is_quiet_and_open(self.raw_fd())
    }

    /// Transaction open or other in-flight server state that ties the connection to its client.
    pub fn in_transaction(&self) -> bool {
        self.status & status::IN_TRANS != 0
    }

    /// Parses the frame header at the front of the read buffer, if present.
    pub fn peek_header(&self) -> Option<FrameHeader> {
        FrameHeader::parse(self.rbuf.data())
    }

    /// Says COM_QUIT and waits (up to a second) for the server to close its end, so that a slot
    /// handed to another shard is free on the server too.
    pub async fn quit(mut self) {
        let r = glommio::timer::timeout(Duration::from_secs(1), async {
            let _ = self.write_packet(0, &[com::QUIT]).await;
            while self.fill().await.is_ok() {
                let n = self.rbuf.len();
                self.rbuf.consume(n);
            }
            Ok(())
        })
        .await;
        let _: Result<(), _> = r;
    }

    /// Shuts the socket down so the server notices at once (glommio closes it on drop).
    pub async fn close(self) {
        self.stream.shutdown().await;
    }
}

/// The collation id of a column definition (`extended`: MariaDB's extended metadata follows its
/// names).
fn column_collation(def: &[u8], extended: bool) -> Option<u16> {
    let fixed = crate::codec::packets::column_fixed_part(def, extended)?;
    Some(u16::from_le_bytes([*fixed.get(1)?, *fixed.get(2)?]))
}
