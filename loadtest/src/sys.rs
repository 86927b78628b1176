//! Thin, safe-ish wrappers over the Linux syscalls the generator uses: epoll (with nanosecond
//! timeouts via `epoll_pwait2`), non-blocking IPv4 TCP sockets with explicit source binds, process
//! limits, fork/socketpair, signals. Errors are raw errno values; [`errno_name`] makes them
//! readable for error kinds.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub type Errno = i32;

pub fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Symbolic name of the errno values a network client meets; others print as `E<number>`.
pub fn errno_name(e: Errno) -> String {
    let s = match e {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EPIPE => "EPIPE",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::ENOTCONN => "ENOTCONN",
        _ => return format!("E{e}"),
    };
    s.to_string()
}

fn cvt(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

pub fn close(fd: i32) {
    unsafe {
        libc::close(fd);
    }
}

// ---------------------------------------------------------------- epoll

pub struct Epoll {
    fd: i32,
}

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const ERR: u32 = libc::EPOLLERR as u32;
pub const HUP: u32 = libc::EPOLLHUP as u32;

impl Epoll {
    pub fn new() -> Result<Epoll, Errno> {
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, data: u64) -> Result<(), Errno> {
        let mut ev = libc::epoll_event { events, u64: data };
        cvt(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) }).map(|_| ())
    }
    pub fn add(&self, fd: i32, events: u32, data: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }
    pub fn modify(&self, fd: i32, events: u32, data: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }
    pub fn del(&self, fd: i32) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits at most `timeout` (nanosecond resolution); returns the number of events filled.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> usize {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(3600) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd,
                events.as_mut_ptr(),
                events.len() as i32,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            0 // EINTR (a signal) or a transient error: the caller's loop simply runs again.
        } else {
            n as usize
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}

// ---------------------------------------------------------------- TCP

fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A non-blocking, close-on-exec IPv4 TCP socket with TCP_NODELAY, and SO_REUSEADDR so an explicit
/// source (address, port) whose previous connection is in TIME_WAIT can be bound again (the kernel
/// still refuses a duplicate 4-tuple at connect time, with EADDRNOTAVAIL).
pub fn tcp_socket() -> Result<i32, Errno> {
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let one: libc::c_int = 1;
    for (level, opt) in [
        (libc::SOL_SOCKET, libc::SO_REUSEADDR),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    ] {
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(fd)
}

pub fn bind_v4(fd: i32, a: SocketAddrV4) -> Result<(), Errno> {
    let sa = sockaddr_v4(a);
    cvt(unsafe {
        libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Starts a non-blocking connect: `Ok(())` when it is under way (or done).
pub fn connect_v4(fd: i32, a: SocketAddrV4) -> Result<(), Errno> {
    let sa = sockaddr_v4(a);
    match cvt(unsafe {
        libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    }) {
        Ok(_) => Ok(()),
        Err(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pending socket error (SO_ERROR), 0 if none.
pub fn so_error(fd: i32) -> Errno {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        );
    }
    v
}

/// Has the TCP handshake completed (from this side's point of view)?
pub fn is_connected(fd: i32) -> bool {
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe { libc::getpeername(fd, &mut sa as *mut _ as *mut libc::sockaddr, &mut len) == 0 }
}

pub fn send(fd: i32, b: &[u8]) -> Result<usize, Errno> {
    let n = unsafe {
        libc::send(
            fd,
            b.as_ptr() as *const libc::c_void,
            b.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

pub fn recv(fd: i32, b: &mut [u8]) -> Result<usize, Errno> {
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr() as *mut libc::c_void,
            b.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// Looks at an idle socket without consuming anything.
pub fn peek(fd: i32, b: &mut [u8]) -> Result<usize, Errno> {
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr() as *mut libc::c_void,
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

// ---------------------------------------------------------------- processes

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
    }
    rl.rlim_cur
}

/// A connected pair of Unix stream sockets (close-on-exec).
pub fn socketpair() -> Result<(i32, i32), Errno> {
    let mut fds = [0i32; 2];
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok((fds[0], fds[1]))
}

pub enum Fork {
    Child,
    Parent(libc::pid_t),
}

pub fn fork() -> Result<Fork, Errno> {
    match unsafe { libc::fork() } {
        -1 => Err(errno()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// In a worker: die with the parent, ignore the terminal's Ctrl-C (the parent handles it and
/// tells the workers to wind down), and use fine timer slack for precise pacing.
pub fn worker_process_setup(parent: libc::pid_t) {
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        if libc::getppid() != parent {
            libc::_exit(3);
        }
    }
}

pub fn exit_now(code: i32) -> ! {
    unsafe { libc::_exit(code) }
}

pub fn getpid() -> libc::pid_t {
    unsafe { libc::getpid() }
}

/// Non-blocking waitpid: `Some(status)` if the child has exited.
pub fn try_wait(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        Some(status)
    } else if r < 0 {
        Some(-1) // not our child any more (already reaped)
    } else {
        None
    }
}

pub fn kill(pid: libc::pid_t, sig: i32) {
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn stderr_is_tty() -> bool {
    unsafe { libc::isatty(2) == 1 }
}

/// Writes all of `b` to a blocking fd (retrying on EINTR).
pub fn write_all(fd: i32, mut b: &[u8]) -> Result<(), Errno> {
    while !b.is_empty() {
        let n = unsafe {
            libc::send(
                fd,
                b.as_ptr() as *const libc::c_void,
                b.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        b = &b[n as usize..];
    }
    Ok(())
}

/// poll(2) on a set of fds for readability; returns the indices that are readable (or hung up).
pub fn poll_readable(fds: &[i32], timeout: Duration) -> Vec<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    if n <= 0 {
        return Vec::new();
    }
    pfds.iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect()
}

// ---------------------------------------------------------------- signals

/// Number of SIGINT/SIGTERM received by this process.
pub static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// The coordinator counts SIGINT/SIGTERM instead of dying, and ignores SIGPIPE.
pub fn install_parent_signals() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0; // no SA_RESTART: let poll() return early
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

pub fn signals() -> u32 {
    SIGNALS.load(Ordering::SeqCst)
}
