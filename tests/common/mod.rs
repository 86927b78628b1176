//! Shared helpers for the integration tests: the suite's MariaDB (started by `scripts/test.sh`),
//! sluice started as a subprocess on a free port, and clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod servers;

/// host:port of the MariaDB the suite runs against (from `scripts/test.sh`).
pub fn mariadb_addr() -> String {
    std::env::var("SLUICE_TEST_MARIADB").unwrap_or_else(|_| {
        panic!(
            "SLUICE_TEST_MARIADB is not set: run the suite with scripts/test.sh, which starts a \
             private MariaDB (or export SLUICE_TEST_MARIADB=127.0.0.1:PORT for one you started \
             with scripts/mariadb.sh start)"
        )
    })
}

pub fn mariadb_port() -> u16 {
    mariadb_addr().rsplit(':').next().unwrap().parse().unwrap()
}

/// A port nothing listens on now, never one this test process handed out before: the kernel may
/// give the same ephemeral port to two binds in a row once the first is closed, and a test that
/// takes one for metrics and then starts sluice on another would get it twice.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh free port in 1000 tries");
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running sluice process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Sluice {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// The default test configuration, with `extra` TOML appended to the top-level section and
/// `pool`/`users` sections given explicitly.
#[derive(Clone)]
pub struct Config {
    pub top: String,
    pub pool: String,
    pub users: String,
    pub backends: Vec<String>,
    /// `[[backends]]` sections written as given (roles, weights), instead of `backends`.
    pub backends_toml: Option<String>,
    /// The `[health]` table's lines.
    pub health: String,
    /// More tables, written last (e.g. `[dns]`).
    pub tables: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            top: "shards = 2\nauth_failure_delay_ms = 100\nshutdown_timeout_ms = 5000\n".into(),
            pool: "mode = \"transaction\"\nsize = 16\nqueue_timeout_ms = 3000\n".into(),
            users: "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n".into(),
            backends: vec![mariadb_addr()],
            backends_toml: None,
            // The health probe's connection (one per backend) logs in as `app`, apart from the
            // dedicated accounts tests count pool connections with.
            health: "user = \"app\"\npassword = \"app\"\n".into(),
            tables: String::new(),
        }
    }
}

impl Config {
    pub fn pool(mut self, pool: &str) -> Self {
        self.pool = pool.into();
        self
    }
    /// Sets top-level `key = value` lines, replacing the defaults' lines for the same keys.
    pub fn top(mut self, extra: &str) -> Self {
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            let key = line.split('=').next().unwrap().trim().to_string();
            let mut kept: Vec<&str> = self
                .top
                .lines()
                .filter(|l| l.split('=').next().unwrap().trim() != key)
                .collect();
            kept.push(line);
            self.top = kept.join("\n") + "\n";
        }
        self
    }
    pub fn users(mut self, users: &str) -> Self {
        self.users = users.into();
        self
    }
    pub fn backends(mut self, b: Vec<String>) -> Self {
        self.backends = b;
        self
    }
    pub fn tables(mut self, toml: &str) -> Self {
        self.tables = toml.into();
        self
    }
    pub fn health(mut self, lines: &str) -> Self {
        self.health = lines.into();
        self
    }
    pub fn backends_toml(mut self, toml: &str) -> Self {
        self.backends_toml = Some(toml.into());
        self
    }
    fn render(&self, port: u16) -> String {
        let mut s = format!(
            "listen = \"127.0.0.1:{port}\"\n{}\n[pool]\n{}\n",
            self.top, self.pool
        );
        match &self.backends_toml {
            Some(t) => s.push_str(t),
            None => {
                for b in &self.backends {
                    s.push_str(&format!("[[backends]]\naddress = \"{b}\"\n"));
                }
            }
        }
        s.push_str(&format!("[health]\n{}\n", self.health));
        s.push_str(&self.tables);
        s.push_str(&self.users);
        s
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sluice-test-{tag}-{}-{:016x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u64::from_le_bytes(b)
}

impl Sluice {
    pub fn start() -> Sluice {
        Sluice::with(Config::default())
    }

    pub fn with(cfg: Config) -> Sluice {
        Sluice::launch(cfg, None, &[], None)
    }

    /// Starts sluice with its open-files limit (soft and hard) set to `nofile`.
    pub fn with_nofile(cfg: Config, nofile: u64) -> Sluice {
        Sluice::launch(cfg, Some(nofile), &[], None)
    }

    /// Starts sluice with these environment variables set (e.g. systemd's `NOTIFY_SOCKET`).
    pub fn with_env(cfg: Config, env: &[(&str, &str)]) -> Sluice {
        Sluice::launch(cfg, None, env, None)
    }

    /// Starts the sluice binary at `exe` (e.g. the one a package installed) instead of the
    /// workspace's.
    pub fn with_binary(cfg: Config, exe: &std::path::Path) -> Sluice {
        Sluice::launch(cfg, None, &[], Some(exe))
    }

    fn launch(
        cfg: Config,
        nofile: Option<u64>,
        env: &[(&str, &str)],
        exe: Option<&std::path::Path>,
    ) -> Sluice {
        // A port free a moment ago may be taken by the time sluice binds it (an outgoing
        // connection's ephemeral port, another suite on the machine): then another port, a
        // few times. Any other failure to start is the test's.
        for _ in 0..3 {
            let mut s = Sluice::spawn(&cfg, nofile, env, exe);
            match s.wait_listening() {
                Ok(()) => return s,
                Err(log)
                    if log.contains(&format!(
                        "listen on 127.0.0.1:{}: Address already in use",
                        s.port
                    )) => {}
                Err(log) => panic!("{log}"),
            }
        }
        panic!("sluice found its listen port taken three times in a row");
    }

    fn spawn(
        cfg: &Config,
        nofile: Option<u64>,
        env: &[(&str, &str)],
        exe: Option<&std::path::Path>,
    ) -> Sluice {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let dir = tmpdir("sluice");
        let conf = dir.join("sluice.toml");
        std::fs::write(&conf, cfg.render(port)).unwrap();
        let log = dir.join("sluice.log");
        let mut cmd =
            Command::new(exe.unwrap_or_else(|| std::path::Path::new(env!("CARGO_BIN_EXE_sluice"))));
        cmd.arg("--config")
            .arg(&conf)
            .arg("--log-level")
            .arg(std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info,sluice=debug".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .envs(env.iter().copied());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start sluice");
        Sluice {
            child: Some(child),
            port,
            dir,
            log,
        }
    }

    /// Waits until sluice says it is ready (every shard listening, the metrics endpoint up:
    /// one shard's listener alone accepts connections earlier); `Err` with what went wrong.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log_text().contains("sluice ready")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "sluice exited ({st}) during start:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "sluice did not listen within 20 s:\n{}",
            self.log_text()
        ))
    }

    pub fn dir_path(&self) -> &std::path::Path {
        &self.dir
    }

    /// Rewrites sluice's configuration file (same listen port) for a reload.
    pub fn rewrite_config(&self, cfg: &Config) {
        std::fs::write(self.dir.join("sluice.toml"), cfg.render(self.port)).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Is the process still running (no crash, no panic exit)?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn url(&self, user: &str, password: &str, db: Option<&str>) -> String {
        format!(
            "mysql://{user}:{password}@127.0.0.1:{}/{}",
            self.port,
            db.unwrap_or("")
        )
    }

    /// A `mysql` crate connection as user app to database app.
    pub fn conn(&self) -> mysql::Conn {
        self.conn_as("app", "app", Some("app"))
    }

    pub fn conn_as(&self, user: &str, pw: &str, db: Option<&str>) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(pw))
            .db_name(db)
            .prefer_socket(false)
            .read_timeout(Some(Duration::from_secs(30)))
            .write_timeout(Some(Duration::from_secs(30)));
        mysql::Conn::new(opts)
            .unwrap_or_else(|e| panic!("connect through sluice: {e}\n{}", self.log_text()))
    }

    /// Sends SIGTERM only (a second one makes sluice exit at once: use [`Sluice::wait_exit`]
    /// after this, not [`Sluice::terminate`]).
    pub fn sigterm(&self) {
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
    }

    /// Waits up to `limit` for the process to exit; its status. Panics (after killing it) when it
    /// is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice ignored SIGTERM for 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what sluice said is the first thing to read.
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().filter(|l| !l.contains("glommio")).collect();
            eprintln!(
                "--- last lines of sluice's log ({}) ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(8);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A direct connection to the suite's MariaDB as root-equivalent `app` (for checks from the
/// server's side: SHOW STATUS, KILL, …).
pub fn direct() -> mysql::Conn {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(mariadb_port())
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("app"))
        .prefer_socket(false);
    mysql::Conn::new(opts).expect("direct connection to MariaDB")
}

/// Runs the `mariadb` command-line client against sluice; returns (exit ok, stdout, stderr).
pub fn mariadb_cli(port: u16, args: &[&str], sql: &str) -> (bool, String, String) {
    let mut child = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-uapp",
            "-papp",
            "--batch",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the mariadb client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for a child with a deadline (killing it when the deadline passes).
pub fn wait_output(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "child did not finish within {limit:?}; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server-side error code and SQLSTATE of a `mysql` crate error.
pub fn server_error(e: &mysql::Error) -> Option<(u16, String, String)> {
    match e {
        mysql::Error::MySqlError(m) => Some((m.code, m.state.clone(), m.message.clone())),
        _ => None,
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`; panics naming `what` when
/// the time is up. For waiting on a condition sluice or the server makes observable.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (10 s at most) until the server runs the statement `sql` (its text exactly, as in
/// `information_schema.PROCESSLIST.INFO`); returns the id of a connection running it.
pub fn wait_for_statement(d: &mut mysql::Conn, sql: &str) -> u64 {
    use mysql::prelude::Queryable;
    wait_for(
        &format!("the server to run {sql:?}"),
        Duration::from_secs(10),
        || {
            d.exec_first::<u64, _, _>(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = ? LIMIT 1",
                (sql,),
            )
            .unwrap()
        },
    )
}

/// Connections the server runs `sql` on right now (the text exactly, as in PROCESSLIST.INFO).
pub fn running(d: &mut mysql::Conn, sql: &str) -> u64 {
    use mysql::prelude::Queryable;
    d.exec_first(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = ?",
        (sql,),
    )
    .unwrap()
    .unwrap_or(0)
}

/// Waits (10 s at most) until the server's connection `id` is gone from its PROCESSLIST (a
/// KILL CONNECTION is asynchronous: the thread ends a little after the KILL is answered).
pub fn wait_thread_gone(d: &mut mysql::Conn, id: u64) {
    use mysql::prelude::Queryable;
    wait_for(
        &format!("the server's connection {id} to end"),
        Duration::from_secs(10),
        || {
            let n: u64 = d
                .query_first(format!(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}"
                ))
                .unwrap()
                .unwrap_or(0);
            (n == 0).then_some(())
        },
    )
}

/// Backend connections MariaDB sees from user `app` other than `exclude_self` (for leak checks).
pub fn backend_threads(direct: &mut mysql::Conn) -> usize {
    use mysql::prelude::Queryable;
    let n: Option<u64> = direct
        .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app' AND ID <> CONNECTION_ID()")
        .unwrap();
    n.unwrap_or(0) as usize
}

/// A bare protocol client on a std socket, for tests that must send what no driver would.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and logs in as app/app (database app); returns the client after the OK.
    pub fn login(port: u16) -> RawClient {
        Self::login_with(
            port,
            sluice::codec::login::BASE_CAPABILITIES | sluice::codec::caps::cap::DEPRECATE_EOF,
        )
    }

    pub fn login_with(port: u16, caps: u32) -> RawClient {
        use sluice::codec::login::{Login, LoginParams, LoginStep};
        let mut c = RawClient::connect(port);
        let (seq, g) = c.read_packet().expect("greeting");
        let greeting = sluice::codec::handshake::Handshake::decode(&g).unwrap();
        let mut login = Login::new(LoginParams {
            user: b"app".to_vec(),
            password: b"app".to_vec(),
            database: Some(b"app".to_vec()),
            collation: 45,
            capabilities: caps,
            ..LoginParams::default()
        });
        let resp = login.respond(&greeting).unwrap();
        c.send(seq.wrapping_add(1), &resp);
        loop {
            let (s, p) = c.read_packet().expect("login answer");
            match login
                .on_packet(&p)
                .unwrap_or_else(|e| panic!("login failed: {e}"))
            {
                LoginStep::Done { .. } => return c,
                LoginStep::Send(v) if v.is_empty() => {}
                LoginStep::Send(v) => c.send(s.wrapping_add(1), &v),
            }
        }
    }

    pub fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut out = Vec::new();
        sluice::codec::frame::encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads what comes next: a packet, the peer closing the connection, or a failed read (the
    /// read timeout — 20 s — included: the peer kept the connection open and said nothing).
    pub fn read(&mut self) -> Incoming {
        use sluice::codec::frame::{scan_packet, Scan};
        use std::io::ErrorKind;
        loop {
            if let Ok(Scan::Complete(span)) = scan_packet(&self.buf, 1 << 30) {
                let mut b = bytes::BytesMut::from(&self.buf[..span.wire_len]);
                self.buf.drain(..span.wire_len);
                let p = sluice::codec::frame::take_packet(&mut b, span);
                return Incoming::Packet(span.last_seq, p.to_vec());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Incoming::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset is the peer closing too (it closed with bytes of ours unread).
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Incoming::Closed
                }
                Err(e) => return Incoming::Failed(e),
            }
        }
    }

    /// Reads one packet; `None` when the peer closed the connection. Panics when the read fails
    /// or times out: silence is not a close.
    pub fn read_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        match self.read() {
            Incoming::Packet(seq, p) => Some((seq, p)),
            Incoming::Closed => None,
            Incoming::Failed(e) => panic!(
                "reading from sluice failed ({e}): no packet and no close within the read timeout"
            ),
        }
    }

    /// The next thing the peer does must be an ERR packet or closing the connection: returns the
    /// ERR's code, or `None` for a close. Panics on any other packet, or when the read fails or
    /// times out (a hang is neither).
    pub fn err_or_close(&mut self) -> Option<u16> {
        match self.read() {
            Incoming::Packet(_, p) if p.first() == Some(&0xFF) && p.len() >= 3 => {
                Some(u16::from_le_bytes([p[1], p[2]]))
            }
            Incoming::Packet(_, p) => panic!("expected an ERR or a close, got the packet {p:?}"),
            Incoming::Closed => None,
            Incoming::Failed(e) => {
                panic!("expected an ERR or a close; the read failed instead ({e}): a hang?")
            }
        }
    }

    /// Sends a COM_QUERY and reads the whole response; returns its packets.
    pub fn query(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut p = vec![3u8];
        p.extend_from_slice(sql.as_bytes());
        self.command(&p)
    }

    /// Sends command `p`, answered as a query is (a result set, OK or ERR), and reads the whole
    /// response; returns its packets.
    pub fn command(&mut self, p: &[u8]) -> Vec<Vec<u8>> {
        use sluice::codec::command::ResponseKind;
        use sluice::codec::response::ResponseTracker;
        self.send(0, p);
        let mut t = ResponseTracker::new(ResponseKind::Query, true);
        let mut out = Vec::new();
        while !t.is_done() {
            let (_, p) = self.read_packet().expect("response packet");
            t.on_packet(p.len(), &p).expect("well-formed response");
            out.push(p);
        }
        out
    }

    /// Has the server closed the connection (EOF or a reset within the read timeout)? `false` if
    /// a packet came instead; panics when the read fails or times out, which is not a close.
    pub fn closed_by_peer(&mut self) -> bool {
        self.read_packet().is_none()
    }
}

/// What [`RawClient::read`] got.
#[derive(Debug)]
pub enum Incoming {
    /// A whole packet: its (last) sequence id and payload.
    Packet(u8, Vec<u8>),
    /// The peer closed the connection (EOF, or a reset).
    Closed,
    /// The read failed: the read timeout passed with nothing from the peer, or another I/O error.
    Failed(std::io::Error),
}

/// Creates (once) a MariaDB account `name` / `pw` with all privileges, so a test can count its own
/// sluice's backend connections from the server's side; returns a `[[users]]` section that makes
/// sluice user app/app use it.
pub fn dedicated_backend_user(name: &str) -> String {
    use mysql::prelude::Queryable;
    let mut d = direct();
    d.query_drop(format!(
        "CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY 'pw'"
    ))
    .unwrap();
    d.query_drop(format!("GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%'"))
        .unwrap();
    format!("[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"{name}\"\nbackend_password = \"pw\"\n")
}

/// Backend connections MariaDB has open for account `name`.
pub fn threads_of(d: &mut mysql::Conn, name: &str) -> u64 {
    use mysql::prelude::Queryable;
    d.query_first(format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{name}'"
    ))
    .unwrap()
    .unwrap_or(0)
}

/// Fetches sluice's Prometheus metrics from `port`.
pub fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    out
}

/// The sum of the values of every metric line starting with `prefix` whose labels contain
/// every one of `labels` (0 when there is none).
pub fn metric_sum(text: &str, prefix: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the first metric line starting with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

/// A MariaDB of the test's own (scripts/mariadb.sh), for tests that restart, stop or freeze the
/// server. Stopped and deleted when dropped.
pub struct PrivateMariaDb {
    pub dir: PathBuf,
    pub port: u16,
    pub pid: u32,
}

impl PrivateMariaDb {
    /// A server with TLS from a CA of the test's own, made in `dir` (with `extra_args`); and
    /// the CA's PEM file, which verifies it for the name `localhost`.
    pub fn start_tls(dir: &std::path::Path, extra_args: &str) -> (PrivateMariaDb, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let (ca, cert, key) = make_certs(dir);
        let db = PrivateMariaDb::start(&format!(
            "--ssl-ca={} --ssl-cert={} --ssl-key={} {extra_args}",
            ca.display(),
            cert.display(),
            key.display()
        ));
        (db, ca)
    }

    pub fn start(extra_args: &str) -> PrivateMariaDb {
        let dir = tmpdir("mariadb");
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/mariadb.sh"))
            .arg("start")
            .arg(&dir)
            .env("MARIADB_EXTRA_ARGS", extra_args)
            .output()
            .expect("scripts/mariadb.sh start");
        assert!(
            out.status.success(),
            "mariadb.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in {text}"))
                .to_string()
        };
        PrivateMariaDb {
            dir,
            port: get("MARIADB_PORT").parse().unwrap(),
            pid: get("MARIADB_PID").parse().unwrap(),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A root connection over the server's Unix socket.
    pub fn root(&self) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(self.dir.join("mariadb.sock").display().to_string()))
            .user(Some("root"))
            .prefer_socket(true);
        mysql::Conn::new(opts).expect("root connection to the private MariaDB")
    }

    /// Stops the server and starts it again on the same port and data.
    pub fn restart(&mut self) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/mariadb.sh"))
            .arg("restart")
            .arg(&self.dir)
            .output()
            .expect("scripts/mariadb.sh restart");
        assert!(
            out.status.success(),
            "restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        self.pid = text
            .lines()
            .find_map(|l| l.strip_prefix("MARIADB_PID="))
            .unwrap()
            .parse()
            .unwrap();
    }

    /// SIGSTOP / SIGCONT: the server stops answering (connections stay open) and resumes.
    /// Freezing waits until every server thread is stopped (the signal is asynchronous).
    pub fn freeze(&self, frozen: bool) {
        unsafe {
            libc::kill(
                self.pid as i32,
                if frozen { libc::SIGSTOP } else { libc::SIGCONT },
            )
        };
        if !frozen {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let all_stopped = || {
            std::fs::read_dir(format!("/proc/{}/task", self.pid)).is_ok_and(|tasks| {
                tasks.flatten().all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the command name in parentheses.
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('T'))
                })
            })
        };
        while !all_stopped() {
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 5 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.freeze(false);
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/mariadb.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
pub fn make_certs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (c, k, a) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&a, ca.pem()).unwrap();
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (a, c, k)
}

/// Runs the mariadb client with `args` against sluice on `port` as user/password; returns
/// (success, stdout, stderr).
pub fn cli(port: u16, user: &str, password: &str, args: &[&str]) -> (bool, String, String) {
    let child = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{port}"),
            &format!("-u{user}"),
            &format!("-p{password}"),
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mariadb client");
    let out = wait_output(child, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
