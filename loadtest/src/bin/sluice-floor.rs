//! `sluice-floor`: the floor relay of benchmark B3 (`../shared/BENCHMARKS.md`).
//!
//! A byte-forwarding TCP proxy with nothing in it but the hop: no protocol parsing, one upstream
//! connection per client connection (1:1), one thread per core. It is what a userspace hop costs
//! on this box at the least, so sluice's throughput and CPU per query are judged against it in
//! the same run (`scripts/bench-b3.sh`). It is written the leanest way we know here, so it is a
//! floor and not a strawman:
//!
//! - one thread per core (pinned, as sluice's shards are), each with its own `SO_REUSEPORT`
//!   listener and its own edge-triggered `epoll` set: the kernel spreads connections over the
//!   threads and nothing is shared between them but three statistics counters touched once per
//!   connection;
//! - non-blocking sockets, plain `recv`/`send` (no splice: for small request/response messages
//!   a pipe round trip costs more than a copy), `TCP_NODELAY` on both sides;
//! - each socket is registered once (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`) and never
//!   modified: no `epoll_ctl` on the hot path;
//! - a read shorter than the buffer means the socket is drained (epoll(7)), so a request costs
//!   `epoll_wait`, one `recv` and one `send`; the `recv` that would return `EAGAIN` is skipped
//!   unless the peer has half-closed (`EPOLLRDHUP` seen), in which case reads go on until EOF.
//!
//! Each direction has its own buffer (`--buffer` bytes). A partial write keeps the rest in the
//! buffer, stops reading from the source (backpressure) and waits for `EPOLLOUT` on the
//! destination. End of stream on one side is passed on as `shutdown(SHUT_WR)` once that
//! direction's buffer is flushed; the pair is closed when both directions have ended, or at once
//! on any error (reset, refused upstream).
//!
//! ```text
//! sluice-floor --listen 127.0.0.1:6034 --upstream 127.0.0.1:3306 [--threads N]
//! sluice-floor --listen 127.0.0.1:6034 --upstream unix:/run/mysqld/mysqld.sock
//! ```
//!
//! SIGINT/SIGTERM print the counters on stderr and exit (the kernel closes every socket).
//!
//! `--glommio` runs the same relay on glommio instead (one executor per thread, pinned, ring
//! depth and I/O memory as sluice's shards; one task per connection copying both ways through
//! glommio's `TcpStream`/`UnixStream`): not a floor, a measure of what the runtime adds to it.

use clap::Parser;
use std::ffi::CString;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The floor relay of benchmark B3: a 1:1 byte-forwarding TCP proxy (no parsing), one
/// edge-triggered epoll loop per thread with SO_REUSEPORT listeners.
#[derive(Debug, Parser)]
#[command(name = "sluice-floor", version, max_term_width = 100)]
struct Cli {
    /// Address to listen on, HOST:PORT.
    #[arg(
        short,
        long,
        default_value = "127.0.0.1:6034",
        value_name = "HOST:PORT"
    )]
    listen: String,
    /// Where to relay each client connection: HOST:PORT, or unix:/path for a Unix socket.
    #[arg(short, long, value_name = "HOST:PORT|unix:PATH")]
    upstream: String,
    /// Relay threads, each with its own listener and epoll set; 0 = one per available core.
    #[arg(short, long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Bytes of buffer per direction of each connection.
    #[arg(long, default_value_t = 16384, value_name = "BYTES")]
    buffer: usize,
    /// Listen backlog of each thread's socket.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    backlog: i32,
    /// Do not pin thread i to core i (sluice pins its shards; so does the floor by default).
    #[arg(long)]
    no_pin: bool,
    /// Relay with glommio executors and streams instead of raw epoll (for comparison).
    #[arg(long)]
    glommio: bool,
}

#[derive(Clone, Debug)]
enum Upstream {
    Tcp(SocketAddr),
    Unix(CString),
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    closed: AtomicU64,
    upstream_failed: AtomicU64,
    /// Connections accepted and closed at once because this process was out of descriptors.
    refused: AtomicU64,
    /// Sends that found the destination full (the rest waited for EPOLLOUT): rare on the hot
    /// path, so counting them costs nothing, and the tests check backpressure happened.
    blocked_sends: AtomicU64,
}

fn main() {
    let cli = Cli::parse();
    let upstream = match cli.upstream.strip_prefix("unix:") {
        Some(path) => match CString::new(path) {
            Ok(p) if !path.is_empty() => Upstream::Unix(p),
            _ => fail(&format!(
                "bad unix socket path in --upstream {}",
                cli.upstream
            )),
        },
        None => match cli.upstream.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Upstream::Tcp(a),
            _ => fail(&format!("cannot resolve --upstream {}", cli.upstream)),
        },
    };
    let listen = match cli.listen.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => fail(&format!("cannot resolve --listen {}", cli.listen)),
    };
    if cli.buffer < 1024 {
        fail("--buffer must be at least 1024 bytes");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if cli.threads == 0 { cores } else { cli.threads };
    raise_nofile();

    // SIGINT/SIGTERM are blocked in every thread (the relay threads inherit the mask) and
    // awaited by the main thread alone, so a signal never interrupts a relay syscall.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    let stats = Arc::new(Stats::default());
    // Every listener (and epoll set, or glommio executor) is made before the banner, so the
    // port is fully up (all threads share it) and the descriptors are all open by then.
    let mut lfds = Vec::with_capacity(threads);
    for _ in 0..threads {
        match listener(listen, cli.backlog) {
            Ok(fd) => lfds.push(fd),
            Err(e) => fail(&format!("cannot listen on {listen}: {e}")),
        }
    }
    if cli.glommio {
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, lfd) in lfds.into_iter().enumerate() {
            let pin = (!cli.no_pin).then_some(i % cores);
            let (up, stats, tx) = (upstream.clone(), stats.clone(), tx.clone());
            uring::spawn(i, lfd, up, cli.buffer, stats, pin, tx);
        }
        drop(tx);
        for _ in 0..threads {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail(&e),
                Err(_) => fail("a glommio executor exited during start-up"),
            }
        }
    } else {
        let mut relays = Vec::with_capacity(threads);
        for lfd in lfds {
            match Relay::new(lfd, upstream.clone(), cli.buffer, stats.clone()) {
                Ok(r) => relays.push(r),
                Err(e) => fail(&format!("cannot make an epoll set: {e}")),
            }
        }
        for (i, mut relay) in relays.into_iter().enumerate() {
            let pin = (!cli.no_pin).then_some(i % cores);
            std::thread::Builder::new()
                .name(format!("floor-{i}"))
                .spawn(move || {
                    if let Some(core) = pin {
                        pin_to(core);
                    }
                    if let Err(e) = relay.run() {
                        fail(&format!("relay thread {i}: {e}"));
                    }
                })
                .unwrap_or_else(|e| fail(&format!("cannot start a thread: {e}")));
        }
    }
    eprintln!(
        "sluice-floor: listening on {listen}, relaying to {}, {threads} thread(s){}{}",
        cli.upstream,
        if cli.no_pin { "" } else { ", pinned" },
        if cli.glommio { ", glommio" } else { "" }
    );

    let mut sig = 0;
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!(
        "sluice-floor: signal {sig}: {} connections accepted, {} closed, {} upstream connects failed, {} refused at the fd limit, \
         {} sends waited for EPOLLOUT",
        stats.accepted.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        stats.upstream_failed.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.blocked_sends.load(Ordering::Relaxed)
    );
    std::process::exit(0);
}

fn fail(msg: &str) -> ! {
    eprintln!("sluice-floor: {msg}");
    std::process::exit(2);
}

fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn pin_to(core: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        // Best effort, as glommio's Placement::Fixed would fail loudly but a cpuset may forbid it.
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn set_int_opt(fd: i32, level: i32, name: i32, v: i32) -> io::Result<()> {
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// A sockaddr for an IP address, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn family(addr: SocketAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A non-blocking SO_REUSEPORT listener.
fn listener(addr: SocketAddr, backlog: i32) -> io::Result<i32> {
    let fd = cvt(unsafe {
        libc::socket(
            family(addr),
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let setup = || -> io::Result<()> {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        let (ss, len) = sockaddr(addr);
        cvt(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
        cvt(unsafe { libc::listen(fd, backlog) })?;
        Ok(())
    };
    setup().inspect_err(|_| unsafe {
        libc::close(fd);
    })?;
    Ok(fd)
}

/// Connects a new non-blocking upstream socket. Returns the fd and whether the connect is still
/// in progress (TCP; completion is signalled by EPOLLOUT and checked with SO_ERROR).
fn connect_upstream(up: &Upstream) -> io::Result<(i32, bool)> {
    match up {
        Upstream::Tcp(addr) => {
            let fd = cvt(unsafe {
                libc::socket(
                    family(*addr),
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            })?;
            let _ = set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            let (ss, len) = sockaddr(*addr);
            let r =
                unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
            if r == 0 {
                Ok((fd, false))
            } else if errno() == libc::EINPROGRESS {
                Ok((fd, true))
            } else {
                let e = io::Error::last_os_error();
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
        Upstream::Unix(path) => {
            let fd = cvt(unsafe {
                libc::socket(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            })?;
            let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let bytes = path.as_bytes();
            if bytes.len() >= sun.sun_path.len() {
                unsafe { libc::close(fd) };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "unix path too long",
                ));
            }
            for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
            // A non-blocking Unix connect either completes at once or fails with EAGAIN when the
            // server's backlog is full; that is rare, and retried briefly here (this thread's
            // other connections wait, which is fine for a benchmark relay).
            for _ in 0..200 {
                let r = unsafe {
                    libc::connect(
                        fd,
                        (&sun as *const libc::sockaddr_un).cast(),
                        len as libc::socklen_t,
                    )
                };
                if r == 0 {
                    return Ok((fd, false));
                }
                if errno() != libc::EAGAIN {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let e = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            Err(e)
        }
    }
}

const EV_IN: u32 = libc::EPOLLIN as u32;
const EV_OUT: u32 = libc::EPOLLOUT as u32;
const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
const EV_HUP: u32 = libc::EPOLLHUP as u32;
const EV_ERR: u32 = libc::EPOLLERR as u32;
const EV_ET: u32 = libc::EPOLLET as u32;
/// epoll data of the listener; a connection's side is `slot << 1 | side`.
const LISTENER: u64 = u64::MAX;
const CLIENT: usize = 0;
const UPSTREAM: usize = 1;

/// One direction of a pair: bytes read from `fd[src]`, not yet written to the other side.
struct Dir {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source has half-closed, or reported an error/hang-up: read until EOF or EAGAIN,
    /// never stop at a short read.
    rdhup: bool,
    /// The source reached end of stream.
    eof: bool,
    /// shutdown(SHUT_WR) was done on the destination (after eof, buffer flushed).
    shut: bool,
}

impl Dir {
    fn new(size: usize) -> Dir {
        Dir {
            buf: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            rdhup: false,
            eof: false,
            shut: false,
        }
    }
    /// Something to write once the destination is writable.
    fn waiting_out(&self) -> bool {
        self.start < self.end || (self.eof && !self.shut)
    }
}

struct Conn {
    /// [client, upstream].
    fd: [i32; 2],
    /// dir[s] carries bytes read from side s to side 1 − s.
    dir: [Dir; 2],
    /// The upstream TCP connect is in progress.
    connecting: bool,
}

enum Pump {
    /// Waiting for the source to be readable or the destination writable.
    Wait,
    /// Both directions ended, or an error: close the pair.
    Close,
}

struct Relay {
    ep: i32,
    lfd: i32,
    /// Kept open so that at EMFILE a pending connection can still be accepted and closed,
    /// instead of sitting in the backlog (the edge-triggered listener would not fire again).
    spare: i32,
    upstream: Upstream,
    buffer: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots closed during the current batch of events, reusable only after it (a later
    /// event of the same batch may still name them).
    freed: Vec<usize>,
    stats: Arc<Stats>,
}

impl Relay {
    fn new(lfd: i32, upstream: Upstream, buffer: usize, stats: Arc<Stats>) -> io::Result<Relay> {
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let spare = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        let r = Relay {
            ep,
            lfd,
            spare,
            upstream,
            buffer,
            conns: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            stats,
        };
        r.add(lfd, EV_IN | EV_ET, LISTENER)?;
        Ok(r)
    }

    fn add(&self, fd: i32, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        cvt(unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let n =
                unsafe { libc::epoll_wait(self.ep, events.as_mut_ptr(), events.len() as i32, -1) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return Err(io::Error::last_os_error());
            }
            for ev in &events[..n as usize] {
                let (flags, data) = (ev.events, ev.u64);
                if data == LISTENER {
                    self.accept();
                } else {
                    self.event((data >> 1) as usize, (data & 1) as usize, flags);
                }
            }
            self.free.append(&mut self.freed);
        }
    }

    fn accept(&mut self) {
        loop {
            let cfd = unsafe {
                libc::accept4(
                    self.lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if cfd < 0 {
                match errno() {
                    libc::EINTR | libc::ECONNABORTED => continue,
                    libc::EMFILE | libc::ENFILE if self.spare >= 0 => {
                        // Refuse one connection with the spare descriptor, then look again.
                        unsafe {
                            libc::close(self.spare);
                            let c =
                                libc::accept(self.lfd, std::ptr::null_mut(), std::ptr::null_mut());
                            if c >= 0 {
                                libc::close(c);
                            }
                            self.spare =
                                libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                        }
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    _ => return, // EAGAIN (drained) or a listener error
                }
            }
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = set_int_opt(cfd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            let (ufd, connecting) = match connect_upstream(&self.upstream) {
                Ok(x) => x,
                Err(_) => {
                    self.stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
                    self.stats.closed.fetch_add(1, Ordering::Relaxed);
                    unsafe { libc::close(cfd) };
                    continue;
                }
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            self.conns[slot] = Some(Conn {
                fd: [cfd, ufd],
                dir: [Dir::new(self.buffer), Dir::new(self.buffer)],
                connecting,
            });
            let interest = EV_IN | EV_OUT | EV_RDHUP | EV_ET;
            let key = (slot as u64) << 1;
            if self.add(cfd, interest, key | CLIENT as u64).is_err()
                || self.add(ufd, interest, key | UPSTREAM as u64).is_err()
            {
                self.close(slot);
            }
            // Whatever is already readable or writable is reported by the first epoll_wait
            // (registration on a ready socket produces an event in edge-triggered mode too).
        }
    }

    fn event(&mut self, slot: usize, side: usize, flags: u32) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return; // closed earlier in this batch
        };
        if side == UPSTREAM && conn.connecting {
            if flags & (EV_OUT | EV_ERR | EV_HUP) == 0 {
                return;
            }
            let mut err: i32 = 0;
            let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
            let r = unsafe {
                libc::getsockopt(
                    conn.fd[UPSTREAM],
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut i32).cast(),
                    &mut len,
                )
            };
            if r < 0 || err != 0 {
                self.stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
                self.close(slot);
                return;
            }
            conn.connecting = false;
            // Bytes the client sent meanwhile were left unread (not with MySQL, where the
            // server speaks first; one recv that finds nothing otherwise).
            if let Pump::Close = pump(conn, CLIENT, &self.stats) {
                self.close(slot);
                return;
            }
        }
        // Readable (or hung up/in error: the read reports it): carry bytes from this side.
        if flags & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 {
            if flags & (EV_RDHUP | EV_HUP | EV_ERR) != 0 {
                conn.dir[side].rdhup = true;
            }
            if let Pump::Close = pump(conn, side, &self.stats) {
                self.close(slot);
                return;
            }
        }
        // Writable: finish what the other direction left in its buffer.
        if flags & (EV_OUT | EV_HUP | EV_ERR) != 0 && conn.dir[1 - side].waiting_out() {
            if let Pump::Close = pump(conn, 1 - side, &self.stats) {
                self.close(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            unsafe {
                // close() also removes the descriptors from the epoll set.
                libc::close(conn.fd[CLIENT]);
                libc::close(conn.fd[UPSTREAM]);
            }
            self.stats.closed.fetch_add(1, Ordering::Relaxed);
            self.freed.push(slot);
        }
    }
}

/// Moves bytes from side `s` to side `1 − s` until the source is drained or the destination
/// full.
fn pump(conn: &mut Conn, s: usize, stats: &Stats) -> Pump {
    if conn.connecting {
        // The upstream is not connected yet: the client's bytes stay in the kernel until it is
        // (the connect's EPOLLOUT pumps them); upstream bytes cannot exist yet.
        return Pump::Wait;
    }
    let (src, dst) = (conn.fd[s], conn.fd[1 - s]);
    let d = &mut conn.dir[s];
    // The last read was shorter than the buffer: the source is drained (epoll(7)), unless it
    // has half-closed, whose EOF must still be read.
    let mut drained = false;
    loop {
        while d.start < d.end {
            let n = unsafe {
                libc::send(
                    dst,
                    d.buf[d.start..].as_ptr().cast(),
                    d.end - d.start,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    // The rest stays in the buffer and nothing more is read from the source
                    // (backpressure); EPOLLOUT on the destination resumes here.
                    libc::EAGAIN => {
                        stats.blocked_sends.fetch_add(1, Ordering::Relaxed);
                        return Pump::Wait;
                    }
                    _ => return Pump::Close,
                }
            }
            d.start += n as usize;
        }
        d.start = 0;
        d.end = 0;
        if d.eof {
            if !d.shut {
                unsafe { libc::shutdown(dst, libc::SHUT_WR) };
                d.shut = true;
            }
            return if conn.dir[1 - s].shut {
                Pump::Close
            } else {
                Pump::Wait
            };
        }
        if drained && !d.rdhup {
            return Pump::Wait;
        }
        let n = unsafe { libc::recv(src, d.buf.as_mut_ptr().cast(), d.buf.len(), 0) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return Pump::Wait,
                _ => return Pump::Close,
            }
        }
        if n == 0 {
            d.eof = true;
        } else {
            d.end = n as usize;
            drained = d.end < d.buf.len();
        }
    }
}

/// `--glommio`: the same relay on glommio executors and streams.
mod uring {
    use super::{Stats, Upstream};
    use futures_lite::io::{AsyncRead, AsyncWrite};
    use glommio::net::{TcpListener, TcpStream, UnixStream};
    use glommio::{LocalExecutorBuilder, Placement};
    use std::io;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::pin::Pin;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::Sender;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    /// As sluice's shards (src/server.rs): a deep ring, little registered I/O memory (memlock is
    /// 8 MiB here, and nothing does file I/O).
    const RING_DEPTH: usize = 4096;
    const IO_MEMORY: usize = 256 << 10;

    pub fn spawn(
        i: usize,
        lfd: i32,
        upstream: Upstream,
        buffer: usize,
        stats: Arc<Stats>,
        pin: Option<usize>,
        ready: Sender<Result<(), String>>,
    ) {
        let placement = pin.map_or(Placement::Unbound, Placement::Fixed);
        let started = LocalExecutorBuilder::new(placement)
            .name(&format!("floor-{i}"))
            .ring_depth(RING_DEPTH)
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                // SAFETY: lfd is a listening TCP socket this executor now owns.
                let listener = unsafe { TcpListener::from_raw_fd(lfd) };
                let _ = ready.send(Ok(()));
                loop {
                    let client = match listener.accept().await {
                        Ok(c) => c,
                        Err(_) => continue,
                    };
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let (upstream, stats) = (upstream.clone(), stats.clone());
                    glommio::spawn_local(async move {
                        let _ = client.set_nodelay(true);
                        let ok = match &upstream {
                            Upstream::Tcp(addr) => match TcpStream::connect(*addr).await {
                                Ok(u) => {
                                    let _ = u.set_nodelay(true);
                                    relay(client, u, buffer).await;
                                    true
                                }
                                Err(_) => false,
                            },
                            Upstream::Unix(path) => {
                                let path = std::ffi::OsStr::from_bytes(path.as_bytes());
                                match UnixStream::connect(path).await {
                                    Ok(u) => {
                                        relay(client, u, buffer).await;
                                        true
                                    }
                                    Err(_) => false,
                                }
                            }
                        };
                        if !ok {
                            stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.closed.fetch_add(1, Ordering::Relaxed);
                    })
                    .detach();
                }
            });
        if let Err(e) = started {
            super::fail(&format!("cannot start glommio executor {i}: {e}"));
        }
    }

    /// One direction: bytes read from one stream, not yet written to the other.
    struct Half {
        buf: Box<[u8]>,
        start: usize,
        end: usize,
        eof: bool,
        done: bool,
    }

    impl Half {
        fn new(size: usize) -> Half {
            Half {
                buf: vec![0u8; size].into_boxed_slice(),
                start: 0,
                end: 0,
                eof: false,
                done: false,
            }
        }

        /// Copies until the source blocks or ends (then closes the destination's write side).
        fn poll<R, W>(
            &mut self,
            cx: &mut Context<'_>,
            src: &mut R,
            dst: &mut W,
        ) -> Poll<io::Result<()>>
        where
            R: AsyncRead + Unpin,
            W: AsyncWrite + Unpin,
        {
            loop {
                while self.start < self.end {
                    match Pin::new(&mut *dst).poll_write(cx, &self.buf[self.start..self.end]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                        }
                        Poll::Ready(Ok(n)) => self.start += n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                self.start = 0;
                self.end = 0;
                if self.eof {
                    return match Pin::new(&mut *dst).poll_close(cx) {
                        Poll::Ready(_) => {
                            self.done = true;
                            Poll::Ready(Ok(()))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                match Pin::new(&mut *src).poll_read(cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => self.eof = true,
                    Poll::Ready(Ok(n)) => self.end = n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }

    /// Both directions in one task, until both ended or either failed; then both are dropped
    /// (closed).
    async fn relay<A, B>(mut a: A, mut b: B, buffer: usize)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut ab, mut ba) = (Half::new(buffer), Half::new(buffer));
        let _ = futures_lite::future::poll_fn(|cx| {
            if !ab.done {
                if let Poll::Ready(Err(e)) = ab.poll(cx, &mut a, &mut b) {
                    return Poll::Ready(Err(e));
                }
            }
            if !ba.done {
                if let Poll::Ready(Err(e)) = ba.poll(cx, &mut b, &mut a) {
                    return Poll::Ready(Err(e));
                }
            }
            if ab.done && ba.done {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
