//! What sluice learns from its backends before it accepts clients: the server version string,
//! capabilities and default collation it will present in its own greeting (so clients detect the
//! same features as when they talk to the database directly), and the collation table that maps a
//! client's handshake collation id to `SET NAMES` arguments.
//!
//! This runs once, on the main thread, before any executor starts; a blocking socket is the
//! simplest correct tool here. The health prober runs the same [`probe`] on a helper thread
//! when it first reaches a backend and at each reconnect, and compares what it learns with what
//! the instance runs with (see `backend::compat`).

use crate::codec::caps::cap;
use crate::codec::command::{self, ResponseKind};
use crate::codec::frame::{encode_packet, scan_packet, take_packet, Scan};
use crate::codec::handshake::Handshake;
use crate::codec::login::{Login, LoginParams, LoginStep, BASE_CAPABILITIES};
use crate::codec::packets::ErrPacket;
use crate::codec::response::{ResponseTracker, Role};
use crate::codec::wire::Reader;
use crate::session::sql::Hist;
use crate::session::state::VarCatalog;
use bytes::BytesMut;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A collation the server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collation {
    pub charset: String,
    pub name: String,
}

/// The server's stored functions (lowercased names), refreshed while sluice runs: a call to one
/// may take a named lock the server does not report, so it pins the session.
#[derive(Debug, Default)]
pub struct Routines {
    version: AtomicU64,
    set: Mutex<Arc<HashSet<Vec<u8>>>>,
}

impl Routines {
    pub fn new(set: HashSet<Vec<u8>>) -> Routines {
        Routines {
            version: AtomicU64::new(1),
            set: Mutex::new(Arc::new(set)),
        }
    }

    /// A version number that changes whenever the set does (cheap to poll).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Arc<HashSet<Vec<u8>>> {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, set: HashSet<Vec<u8>>) {
        let mut g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if **g != set {
            *g = Arc::new(set);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The fixed part of a column definition the server sends for a history value (`SELECT
/// LAST_INSERT_ID()` and the like), captured at start so sluice's own answers carry the server's
/// exact types, lengths and flags: `int<lenenc> 0x0c, charset int<2>, length int<4>, type int<1>,
/// flags int<2>, decimals int<1>, filler int<2>`.
pub type ColumnTemplate = [u8; 13];

/// The server identity sluice presents to clients.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: Vec<u8>,
    pub capabilities: u32,
    pub mariadb_capabilities: u32,
    pub collation: u8,
    pub collations: HashMap<u16, Collation>,
    /// Each character set's default collation id (what a result column in that charset carries).
    pub default_collations: HashMap<String, u16>,
    /// Which variables a session may set, and a fresh connection's values.
    pub vars: VarCatalog,
    /// The column definitions of history values, as the server sends them.
    pub templates: HashMap<Hist, ColumnTemplate>,
    pub routines: Arc<Routines>,
    /// `lower_case_table_names` is not 0.
    pub fold_table_names: bool,
    /// What a new session's trackers select (the server's `session_track_*` defaults).
    pub default_trackers: crate::session::trackers::Trackers,
    /// Where this came from ("127.0.0.1:3306", or "defaults" when no backend answered).
    pub source: String,
    /// What could not be read and was taken from the defaults instead (empty when everything
    /// was read): enough to run with, not to judge another server by (see
    /// [`crate::backend::compat`]).
    pub unread: Vec<&'static str>,
}

/// [`ServerInfo::source`] when no backend answered.
const FALLBACK_SOURCE: &str = "defaults";

/// The collation sluice's own backend connections use: utf8mb4_general_ci, which every MySQL 5.5+
/// and MariaDB server has.
pub const BACKEND_COLLATION: u8 = 45;

impl ServerInfo {
    /// Is the server MariaDB (its version says so), rather than MySQL?
    pub fn is_mariadb(&self) -> bool {
        self.version
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"MariaDB"))
    }

    /// What sluice presents when no backend answered at start.
    pub fn fallback() -> ServerInfo {
        let mut collations = HashMap::new();
        for (id, cs, name) in [
            (8u16, "latin1", "latin1_swedish_ci"),
            (33, "utf8mb3", "utf8mb3_general_ci"),
            (45, "utf8mb4", "utf8mb4_general_ci"),
            (46, "utf8mb4", "utf8mb4_bin"),
            (63, "binary", "binary"),
            (224, "utf8mb4", "utf8mb4_unicode_ci"),
            (255, "utf8mb4", "utf8mb4_0900_ai_ci"),
        ] {
            collations.insert(
                id,
                Collation {
                    charset: cs.into(),
                    name: name.into(),
                },
            );
        }
        let default_collations = [
            ("latin1", 8),
            ("utf8mb3", 33),
            ("utf8mb4", 45),
            ("binary", 63),
        ]
        .into_iter()
        .map(|(c, id)| (c.to_string(), id))
        .collect();
        ServerInfo {
            version: b"5.5.5-10.11.0-MariaDB-sluice".to_vec(),
            capabilities: cap::PROXYABLE & !cap::LONG_PASSWORD,
            mariadb_capabilities: 0,
            collation: BACKEND_COLLATION,
            collations,
            default_collations,
            vars: VarCatalog::default(),
            templates: default_templates(),
            routines: Arc::default(),
            fold_table_names: false,
            default_trackers: Default::default(),
            source: FALLBACK_SOURCE.into(),
            unread: Vec::new(),
        }
    }

    /// Is this [`ServerInfo::fallback`] (no backend answered at start)?
    pub fn is_fallback(&self) -> bool {
        self.source == FALLBACK_SOURCE
    }

    /// Capabilities sluice offers clients: the backend's, minus what sluice does not proxy.
    pub fn client_capabilities(&self) -> u32 {
        (self.capabilities & cap::PROXYABLE)
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
    }

    /// MariaDB extended capabilities sluice offers: extended column metadata (backend
    /// connections are opened with the client's choice and pooled apart), not the ones whose
    /// packets sluice does not translate (progress reports, bulk execution, cached metadata).
    pub fn client_mariadb_capabilities(&self) -> u32 {
        self.mariadb_capabilities & crate::backend::conn::MARIADB_PROFILE
    }
}

/// A blocking socket of either kind.
trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

struct Blocking {
    s: Box<dyn Io>,
    buf: BytesMut,
}

impl Blocking {
    fn read_packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            match scan_packet(&self.buf, 1 << 30).map_err(|e| e.to_string())? {
                Scan::Complete(span) => {
                    let p = take_packet(&mut self.buf, span);
                    return Ok((span.last_seq, p.to_vec()));
                }
                Scan::Incomplete { need } => {
                    let mut chunk = vec![0u8; need.max(4096)];
                    let n = self.s.read(&mut chunk).map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("connection closed by server".into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<(), String> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        encode_packet(&mut out, seq, payload);
        self.s.write_all(&out).map_err(|e| e.to_string())
    }

    /// Runs a query and returns its text rows (NULL as None).
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        self.query_full(sql).map(|(_, rows)| rows)
    }

    /// Runs a query and returns its column definitions (raw) and text rows.
    #[allow(clippy::type_complexity)]
    fn query_full(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<Vec<u8>>, Vec<Vec<Option<String>>>), String> {
        let mut columns = Vec::new();
        let mut p = Vec::new();
        command::encode_query(&mut p, sql.as_bytes());
        self.write_packet(0, &p)?;
        let mut t = ResponseTracker::new(ResponseKind::Query, false);
        let mut rows = Vec::new();
        while !t.is_done() {
            let (_, p) = self.read_packet()?;
            match t.on_packet(p.len(), &p).map_err(|e| e.to_string())? {
                Role::Err => {
                    let e = ErrPacket::decode(&p).map_err(|e| e.to_string())?;
                    return Err(format!(
                        "{}: {}",
                        e.code,
                        String::from_utf8_lossy(e.message)
                    ));
                }
                Role::ColumnDef { .. } => columns.push(p),
                Role::Row { .. } => {
                    let mut r = Reader::new(&p);
                    let mut row = Vec::new();
                    while !r.is_empty() {
                        if r.peek_u8() == Some(0xFB) {
                            r.skip(1, "NULL").map_err(|e| e.to_string())?;
                            row.push(None);
                        } else {
                            let v = r.lenenc_bytes("column").map_err(|e| e.to_string())?;
                            row.push(Some(String::from_utf8_lossy(v).into_owned()));
                        }
                    }
                    rows.push(row);
                }
                _ => {}
            }
        }
        Ok((columns, rows))
    }
}

/// Connects to `address` with the given credentials and learns the server's identity.
/// TLS for a blocking connection: the client config and the name to verify.
pub type BlockingTls = Option<(
    std::sync::Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
)>;

/// Opens a blocking connection to `address` and logs in (over TLS when `tls` is given).
fn connect(
    address: &str,
    user: &str,
    password: &str,
    timeout: Duration,
    tls: &BlockingTls,
) -> Result<(Blocking, Handshake), String> {
    let s: Box<dyn Io> = match crate::backend::conn::BackendAddr::resolve(address)? {
        crate::backend::conn::BackendAddr::Tcp(addr) => {
            let s = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("connect {address}: {e}"))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            Box::new(s)
        }
        crate::backend::conn::BackendAddr::Unix(path) => {
            let s = std::os::unix::net::UnixStream::connect(&path)
                .map_err(|e| format!("connect {address}: {e}"))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            Box::new(s)
        }
    };
    let mut c = Blocking {
        s,
        buf: BytesMut::new(),
    };
    let (seq, g) = c.read_packet()?;
    let greeting = Handshake::decode(&g).map_err(|e| format!("greeting from {address}: {e}"))?;
    let mut login = Login::new(LoginParams {
        user: user.as_bytes().to_vec(),
        password: password.as_bytes().to_vec(),
        collation: BACKEND_COLLATION,
        capabilities: BASE_CAPABILITIES | if tls.is_some() { cap::SSL } else { 0 },
        secure_transport: tls.is_some(),
        ..LoginParams::default()
    });
    let resp = login.respond(&greeting).map_err(|e| e.to_string())?;
    let mut seq = seq.wrapping_add(1);
    if let Some((config, name)) = tls {
        c.write_packet(seq, &resp[..crate::codec::handshake::SSL_REQUEST_LEN])?;
        seq = seq.wrapping_add(1);
        let conn = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(|e| format!("TLS to {address}: {e}"))?;
        let plain = std::mem::replace(&mut c.s, Box::new(std::io::empty()));
        c.s = Box::new(rustls::StreamOwned::new(conn, plain));
    }
    c.write_packet(seq, &resp)?;
    loop {
        let (s, p) = c.read_packet()?;
        seq = s.wrapping_add(1);
        match login
            .on_packet(&p)
            .map_err(|e| format!("login to {address} as {user}: {e}"))?
        {
            LoginStep::Done { .. } => break,
            LoginStep::Send(v) if v.is_empty() => {}
            LoginStep::Send(v) => c.write_packet(seq, &v)?,
        }
    }
    Ok((c, greeting))
}

/// Connects to `address` with the given credentials and learns the server's identity.
pub fn probe(
    address: &str,
    user: &str,
    password: &str,
    timeout: Duration,
    tls: &BlockingTls,
) -> Result<ServerInfo, String> {
    let (mut c, greeting) = connect(address, user, password, timeout, tls)?;
    let mut unread = Vec::new();
    let mut collations = HashMap::new();
    let mut default_collations = HashMap::new();
    for row in c.query(
        "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME, IS_DEFAULT FROM information_schema.COLLATIONS",
    )? {
        if let [Some(id), Some(cs), Some(name), default] = &row[..] {
            if let Ok(id) = id.parse::<u16>() {
                if default.as_deref() == Some("Yes") {
                    default_collations.insert(cs.clone(), id);
                }
                collations.insert(
                    id,
                    Collation {
                        charset: cs.clone(),
                        name: name.clone(),
                    },
                );
            }
        }
    }
    // This connection is fresh (sluice's handshake collation, nothing set): its session values
    // are what every new backend connection holds.
    let vars = match c.query(
        "SELECT VARIABLE_NAME, VARIABLE_SCOPE, READ_ONLY, SESSION_VALUE FROM information_schema.SYSTEM_VARIABLES",
    ) {
        Ok(rows) => VarCatalog::from_rows(rows.iter().filter_map(|r| match &r[..] {
            [Some(n), Some(scope), Some(ro), v] => {
                Some((n.as_str(), scope.as_str(), ro == "YES", v.as_deref()))
            }
            _ => None,
        })),
        Err(e) => {
            tracing::warn!(backend = address, error = %e, "cannot read the server's variables; replaying every reported variable but the known read-only ones");
            unread.push("variables");
            VarCatalog::default()
        }
    };
    let fold_table_names = match c.query("SELECT @@lower_case_table_names") {
        Ok(r) => r
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .is_some_and(|v| v != "0"),
        Err(_) => {
            unread.push("lower_case_table_names");
            false
        }
    };
    let mut templates = default_templates();
    for (kind, expr) in TEMPLATE_EXPRS {
        match c.query_full(&format!("SELECT {expr}")) {
            Ok((cols, _)) => {
                if let Some(t) = cols.first().and_then(|d| column_template(d)) {
                    templates.insert(kind, t);
                }
            }
            Err(_) => unread.push("history value columns"),
        }
    }
    let routines = load_routines(&mut c).unwrap_or_default();
    let mut default_trackers = crate::session::trackers::Trackers::default();
    for name in [
        "session_track_system_variables",
        "session_track_schema",
        "session_track_state_change",
        "session_track_transaction_info",
    ] {
        if let Some(v) = vars.fresh_value(name) {
            default_trackers.set(name, v);
        }
    }
    Ok(ServerInfo {
        version: greeting.server_version,
        capabilities: greeting.capabilities,
        mariadb_capabilities: greeting.mariadb_capabilities,
        collation: greeting.collation,
        collations,
        default_collations,
        vars,
        templates,
        routines: Arc::new(Routines::new(routines)),
        fold_table_names,
        default_trackers,
        source: address.to_string(),
        unread,
    })
}

/// The history values sluice answers itself, and how to ask the server for each.
const TEMPLATE_EXPRS: [(Hist, &str); 9] = [
    (Hist::LastInsertId, "LAST_INSERT_ID()"),
    (Hist::Identity, "@@identity"),
    (Hist::InsertId, "@@insert_id"),
    (Hist::RowCount, "ROW_COUNT()"),
    (Hist::FoundRows, "FOUND_ROWS()"),
    (Hist::WarningCount, "@@warning_count"),
    (Hist::ErrorCount, "@@error_count"),
    (Hist::LastGtid, "@@last_gtid"),
    (Hist::ConnectionId, "CONNECTION_ID()"),
];

/// The fixed part of a column definition (what follows its six strings).
fn column_template(def: &[u8]) -> Option<ColumnTemplate> {
    crate::codec::packets::column_fixed_part(def, false)?
        .get(..13)?
        .try_into()
        .ok()
}

/// MariaDB 10.11's column definitions for the history values, for when a server did not answer.
fn default_templates() -> HashMap<Hist, ColumnTemplate> {
    // 0x0c, charset (63 binary), length, type, flags, decimals, filler.
    let int = |len: u8, ty: u8, flags: u8| [0x0c, 63, 0, len, 0, 0, 0, ty, flags, 0, 0, 0, 0];
    [
        (Hist::LastInsertId, int(21, 0x08, 0xa1)),
        (Hist::Identity, int(21, 0x08, 0xa0)),
        (Hist::InsertId, int(21, 0x08, 0xa0)),
        (Hist::RowCount, int(21, 0x08, 0x81)),
        (Hist::FoundRows, int(21, 0x08, 0x81)),
        (Hist::WarningCount, int(21, 0x08, 0xa0)),
        (Hist::ErrorCount, int(21, 0x08, 0xa0)),
        (
            Hist::LastGtid,
            [0x0c, 45, 0, 0, 0, 0, 0, 0xfd, 0, 0, 0x27, 0, 0],
        ),
        (Hist::ConnectionId, int(10, 0x03, 0xa1)),
    ]
    .into_iter()
    .collect()
}

fn load_routines(c: &mut Blocking) -> Result<HashSet<Vec<u8>>, String> {
    Ok(c.query(ROUTINES_QUERY)?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .map(String::into_bytes)
        .collect())
}

/// The query that lists the server's stored functions (lowercased names).
pub const ROUTINES_QUERY: &str =
    "SELECT LOWER(ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_TYPE = 'FUNCTION'";

/// A user authenticated against the backend's own `mysql_native_password` hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUser {
    pub name: String,
    pub native: [u8; 20],
}

/// Reads the `mysql_native_password` users from the backend's `mysql.user`. A user whose rows
/// (one per host) carry different hashes is left out: sluice does not match hosts, so it cannot
/// tell which applies.
pub fn load_db_users(
    address: &str,
    user: &str,
    password: &str,
    timeout: Duration,
    tls: &BlockingTls,
) -> Result<Vec<DbUser>, String> {
    let (mut c, _) = connect(address, user, password, timeout, tls)?;
    let rows = c.query("SELECT User, authentication_string, plugin FROM mysql.user")?;
    let mut by_name: std::collections::BTreeMap<String, Option<[u8; 20]>> = Default::default();
    for row in rows {
        let [Some(name), hash, plugin] = &row[..] else {
            continue;
        };
        let native = plugin
            .as_deref()
            .is_none_or(|p| p.is_empty() || p == "mysql_native_password");
        let parsed = hash
            .as_deref()
            .filter(|h| native && h.starts_with('*'))
            .and_then(|h| crate::auth::Credential::parse(h, Some("mysql_native_password")).ok())
            .and_then(|c| c.native);
        let Some(h) = parsed else { continue };
        by_name
            .entry(name.clone())
            .and_modify(|e| {
                if *e != Some(h) {
                    *e = None;
                }
            })
            .or_insert(Some(h));
    }
    Ok(by_name
        .into_iter()
        .filter_map(|(name, h)| h.map(|native| DbUser { name, native }))
        .collect())
}
