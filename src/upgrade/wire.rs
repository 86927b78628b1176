//! The handover channel between an old process and its successor: a `SOCK_SEQPACKET` socketpair
//! (message boundaries kept, in order), descriptors passed with `SCM_RIGHTS`. The message
//! encoding is pure ([`encode`], [`decode`]); [`Channel`] does the blocking I/O.
//!
//! A message is sent as packets of at most [`CHUNK`] bytes, each `kind: int<1>`, `more: int<1>`,
//! then a piece of the payload; descriptors ride on the first packet. (A session with many
//! prepared statements can exceed what one datagram may carry, so records are not bounded by it.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Payload bytes per packet.
pub const CHUNK: usize = 32 << 10;
/// Descriptors one message may carry (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 64;
/// A message longer than this is refused (a record's own bound plus headroom).
const MAX_MESSAGE: usize = super::record::MAX_RECORD + 1024;

/// What the two processes say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Old → new, first: the connection-id layout and each shard's last id handed out; the
    /// listeners ride along, one per `true` in `listeners` (a shard that stopped accepting has
    /// none), then one per entry of `others` (what each is: [`super::Role`] as a byte).
    Hello {
        workers: u32,
        shards: u32,
        next_ids: Vec<u32>,
        listeners: Vec<bool>,
        others: Vec<u8>,
    },
    /// New → old: every shard listens; the successor takes sessions now. `server_known`: a
    /// backend answered its start (otherwise it runs on a default server identity).
    /// `records`: the newest session-record version it reads (absent, from a sluice that
    /// predates the byte: 1); sessions move with their backend connection only to a successor
    /// that reads `record::VERSION_BACKEND`. `admin`: it answers [`Msg::Admin`] on the KILL
    /// line (absent, from a sluice that predates the byte: no).
    Ready {
        pid: u32,
        server_known: bool,
        records: u8,
        admin: bool,
    },
    /// New → old: the successor gives up (the old keeps everything).
    Failed { why: String },
    /// Old → new: one parked session's record; its socket rides along.
    Session { record: Vec<u8> },
    /// New → old: the session `conn_id` was adopted, or refused (then the old keeps it).
    Adopted {
        conn_id: u32,
        refused: Option<String>,
    },
    /// Old → new: nothing more comes.
    Done,
    /// Supervisor → old worker: the handover channel to its successor rides along.
    Handover,
    /// Either process → the other, on the KILL line ([`super::peer`]): KILL [QUERY] `conn_id`
    /// there, for the user named `by` (`None`: the admin console, which may kill any); the
    /// channel for the answer rides along.
    Kill {
        conn_id: u32,
        query: bool,
        by: Option<String>,
    },
    /// The answer to a [`Msg::Kill`], on the channel that came with it: `None` for OK, else
    /// the ERR (code, SQLSTATE, message) a client would be sent.
    Killed { err: Option<(u16, [u8; 5], String)> },
    /// Either process → the other, on the KILL line, once the other said it answers these
    /// ([`super::peer`]): the admin request `line` (`CLIENTS`, `STATS`, `KILL WHERE …`) for that
    /// process alone; the channel for the answer rides along.
    Admin { line: String },
    /// The answer to a [`Msg::Admin`], on the channel that came with it.
    AdminAnswer { text: String },
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const READY: u8 = 2;
    pub const FAILED: u8 = 3;
    pub const SESSION: u8 = 4;
    pub const ADOPTED: u8 = 5;
    pub const DONE: u8 = 6;
    pub const HANDOVER: u8 = 7;
    pub const KILL: u8 = 8;
    pub const KILLED: u8 = 9;
    pub const ADMIN: u8 = 10;
    pub const ADMIN_ANSWER: u8 = 11;
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// `(kind, payload)` of a message.
pub fn encode(m: &Msg) -> (u8, Vec<u8>) {
    match m {
        Msg::Hello {
            workers,
            shards,
            next_ids,
            listeners,
            others,
        } => {
            let mut v = Vec::new();
            v.extend_from_slice(&workers.to_le_bytes());
            v.extend_from_slice(&shards.to_le_bytes());
            v.extend_from_slice(&(next_ids.len() as u32).to_le_bytes());
            for n in next_ids {
                v.extend_from_slice(&n.to_le_bytes());
            }
            v.extend_from_slice(&(listeners.len() as u32).to_le_bytes());
            v.extend(listeners.iter().map(|&l| u8::from(l)));
            v.extend_from_slice(others);
            (kind::HELLO, v)
        }
        Msg::Ready {
            pid,
            server_known,
            records,
            admin,
        } => {
            let mut v = pid.to_le_bytes().to_vec();
            v.push(u8::from(*server_known));
            v.push(*records);
            v.push(u8::from(*admin));
            (kind::READY, v)
        }
        Msg::Failed { why } => (kind::FAILED, why.as_bytes().to_vec()),
        Msg::Session { record } => (kind::SESSION, record.clone()),
        Msg::Adopted { conn_id, refused } => {
            let mut v = conn_id.to_le_bytes().to_vec();
            if let Some(why) = refused {
                v.extend_from_slice(why.as_bytes());
            }
            (kind::ADOPTED, v)
        }
        Msg::Done => (kind::DONE, Vec::new()),
        Msg::Handover => (kind::HANDOVER, Vec::new()),
        Msg::Kill { conn_id, query, by } => {
            let mut v = conn_id.to_le_bytes().to_vec();
            v.push(u8::from(*query));
            v.push(u8::from(by.is_some()));
            if let Some(name) = by {
                v.extend_from_slice(name.as_bytes());
            }
            (kind::KILL, v)
        }
        Msg::Killed { err } => {
            let mut v = Vec::new();
            if let Some((code, state, message)) = err {
                v.extend_from_slice(&code.to_le_bytes());
                v.extend_from_slice(state);
                v.extend_from_slice(message.as_bytes());
            }
            (kind::KILLED, v)
        }
        Msg::Admin { line } => (kind::ADMIN, line.as_bytes().to_vec()),
        Msg::AdminAnswer { text } => (kind::ADMIN_ANSWER, text.as_bytes().to_vec()),
    }
}

/// The message of `kind` with `payload`, or why not.
pub fn decode(kind: u8, p: &[u8]) -> Result<Msg, String> {
    let short = || format!("handover message {kind}: too short");
    match kind {
        kind::HELLO => {
            let workers = u32_at(p, 0).ok_or_else(short)?;
            let shards = u32_at(p, 4).ok_or_else(short)?;
            let n = u32_at(p, 8).ok_or_else(short)? as usize;
            if n > 4096 {
                return Err("handover hello: too many shards".into());
            }
            let next_ids = (0..n)
                .map(|i| u32_at(p, 12 + 4 * i).ok_or_else(short))
                .collect::<Result<Vec<_>, _>>()?;
            let at = 12 + 4 * n;
            let l = u32_at(p, at).ok_or_else(short)? as usize;
            let listeners = p
                .get(at + 4..(at + 4).saturating_add(l))
                .ok_or_else(short)?
                .iter()
                .map(|&b| b != 0)
                .collect();
            let others = p[at + 4 + l..].to_vec();
            Ok(Msg::Hello {
                workers,
                shards,
                next_ids,
                listeners,
                others,
            })
        }
        kind::READY => Ok(Msg::Ready {
            pid: u32_at(p, 0).ok_or_else(short)?,
            server_known: p.get(4).is_none_or(|&b| b != 0),
            records: p.get(5).copied().unwrap_or(1),
            admin: p.get(6).is_some_and(|&b| b != 0),
        }),
        kind::FAILED => Ok(Msg::Failed {
            why: String::from_utf8_lossy(p).into_owned(),
        }),
        kind::SESSION => Ok(Msg::Session { record: p.to_vec() }),
        kind::ADOPTED => Ok(Msg::Adopted {
            conn_id: u32_at(p, 0).ok_or_else(short)?,
            refused: (p.len() > 4).then(|| String::from_utf8_lossy(&p[4..]).into_owned()),
        }),
        kind::DONE => Ok(Msg::Done),
        kind::HANDOVER => Ok(Msg::Handover),
        // `conn_id: int<4>`, `query: int<1>`, `by_user: int<1>` (0: the admin), then the
        // user's name (an empty name is a user's too: a database may list an anonymous one).
        kind::KILL => Ok(Msg::Kill {
            conn_id: u32_at(p, 0).ok_or_else(short)?,
            query: *p.get(4).ok_or_else(short)? != 0,
            by: match *p.get(5).ok_or_else(short)? {
                0 => None,
                _ => Some(
                    String::from_utf8(p[6..].to_vec())
                        .map_err(|_| "handover KILL: the user's name is not UTF-8".to_string())?,
                ),
            },
        }),
        // Empty: OK; else `code: int<2>`, `sqlstate: string<5>`, the message.
        kind::KILLED if p.is_empty() => Ok(Msg::Killed { err: None }),
        kind::KILLED => {
            let code = p.get(..2).ok_or_else(short)?;
            let state: [u8; 5] = p
                .get(2..7)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?;
            Ok(Msg::Killed {
                err: Some((
                    u16::from_le_bytes([code[0], code[1]]),
                    state,
                    String::from_utf8_lossy(&p[7..]).into_owned(),
                )),
            })
        }
        kind::ADMIN => Ok(Msg::Admin {
            line: String::from_utf8(p.to_vec())
                .map_err(|_| "handover admin request: not UTF-8".to_string())?,
        }),
        kind::ADMIN_ANSWER => Ok(Msg::AdminAnswer {
            text: String::from_utf8_lossy(p).into_owned(),
        }),
        k => Err(format!("handover message of unknown kind {k}")),
    }
}

/// One end of the handover socketpair.
pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair: (the old process's end, the successor's end). Both close-on-exec; the
/// spawner clears the flag on the successor's end in the child only.
pub fn pair() -> io::Result<(Channel, Channel)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two fresh descriptors we own.
    Ok(unsafe {
        (
            Channel {
                fd: OwnedFd::from_raw_fd(fds[0]),
            },
            Channel {
                fd: OwnedFd::from_raw_fd(fds[1]),
            },
        )
    })
}

/// `sockaddr_un` for the abstract name `name` (no NUL byte, at most 107 bytes).
fn abstract_addr(name: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = name.as_bytes();
    if b.len() + 1 > a.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    for (i, &c) in b.iter().enumerate() {
        a.sun_path[i + 1] = c as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + b.len();
    Ok((a, len as libc::socklen_t))
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall returning a new descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening `SOCK_SEQPACKET` socket at an abstract name: where a supervisor meets the
/// worker it upgrades.
pub struct Rendezvous {
    fd: OwnedFd,
}

impl Rendezvous {
    pub fn bind(name: &str) -> io::Result<Rendezvous> {
        let fd = seqpacket()?;
        let (a, len) = abstract_addr(name)?;
        // SAFETY: a valid sockaddr_un of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) } != 0
            || unsafe { libc::listen(fd.as_raw_fd(), 1) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Rendezvous { fd })
    }

    /// Waits up to `timeout` for one connection from a process of this user.
    pub fn accept(&self, timeout: Duration) -> io::Result<Channel> {
        let listening = Channel {
            fd: self.fd.try_clone()?,
        };
        if !listening.wait_readable(timeout)? {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "nobody came"));
        }
        // SAFETY: accept4 on a listening socket; the result is ours.
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let c = Channel {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let mut cred = libc::ucred {
            pid: 0,
            uid: u32::MAX,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt into a ucred of the right size.
        let r = unsafe {
            libc::getsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                &mut cred as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        // SAFETY: getuid has no preconditions.
        if r != 0 || cred.uid != unsafe { libc::getuid() } {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a process of another user",
            ));
        }
        Ok(c)
    }
}

/// Connects to a [`Rendezvous`].
pub fn connect(name: &str) -> io::Result<Channel> {
    let fd = seqpacket()?;
    let (a, len) = abstract_addr(name)?;
    // SAFETY: a valid sockaddr_un of `len` bytes.
    if unsafe { libc::connect(fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Channel { fd })
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Channel {
    /// Takes ownership of an inherited descriptor (the successor's end).
    ///
    /// # Safety
    /// `fd` must be an open descriptor nothing else owns.
    pub unsafe fn from_raw(fd: RawFd) -> Channel {
        Channel {
            fd: OwnedFd::from_raw_fd(fd),
        }
    }

    /// Sends `m` with `fds` (at most [`MAX_FDS`]).
    pub fn send(&self, m: &Msg, fds: &[RawFd]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors",
            ));
        }
        let (kind, payload) = encode(m);
        let mut chunks: Vec<&[u8]> = payload.chunks(CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, c) in chunks.iter().enumerate() {
            let head = [kind, u8::from(i != last)];
            self.send_packet(&head, c, if i == 0 { fds } else { &[] })?;
        }
        Ok(())
    }

    fn send_packet(&self, head: &[u8; 2], body: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: 2,
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ];
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: msghdr zeroed then filled with pointers to live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = 2;
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space;
            // SAFETY: the control buffer has room for one header with fds.len() descriptors.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr() as *const u8,
                    libc::CMSG_DATA(c),
                    fds.len() * 4,
                );
            }
        }
        loop {
            // SAFETY: msg describes valid buffers for the call's duration.
            let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Waits up to `timeout` for a message. `Ok(None)`: the timeout passed. The other end
    /// closing is an error (`UnexpectedEof`).
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
        let until = Instant::now() + timeout;
        let mut payload = Vec::new();
        let mut fds = Vec::new();
        let mut kind = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if !self.wait_readable(left)? {
                if kind.is_none() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handover message cut short",
                ));
            }
            let (k, more) = self.recv_packet(&mut payload, &mut fds)?;
            if kind.is_some_and(|p| p != k) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handover packets of two messages interleaved",
                ));
            }
            kind = Some(k);
            if payload.len() > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handover message too large",
                ));
            }
            if !more {
                let m = decode(k, &payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return Ok(Some((m, fds)));
            }
        }
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r >= 0 {
                return Ok(r > 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one packet: appends its body to `payload`, its descriptors to `fds`; returns
    /// (kind, more).
    fn recv_packet(&self, payload: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) -> io::Result<(u8, bool)> {
        let mut buf = vec![0u8; CHUNK + 2];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS * 4) as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: msghdr zeroed then pointed at live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        let n = loop {
            // SAFETY: msg describes valid buffers; received descriptors are close-on-exec.
            let r = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        // Take ownership of every descriptor first, so none leaks whatever follows.
        // SAFETY: walking the control messages the kernel wrote into cbuf.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / 4 {
                        let mut raw = [0u8; 4];
                        std::ptr::copy_nonoverlapping(data.add(i * 4), raw.as_mut_ptr(), 4);
                        fds.push(OwnedFd::from_raw_fd(i32::from_ne_bytes(raw)));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handover packet truncated",
            ));
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other process closed the handover channel",
            ));
        }
        if n < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handover packet without a header",
            ));
        }
        payload.extend_from_slice(&buf[2..n]);
        Ok((buf[0], buf[1] != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let cases = vec![
            Msg::Hello {
                workers: 1,
                shards: 2,
                next_ids: vec![7, 0],
                listeners: vec![true, false],
                others: vec![1, 2],
            },
            Msg::Ready {
                pid: 4242,
                server_known: true,
                records: 2,
                admin: true,
            },
            Msg::Ready {
                pid: 1,
                server_known: false,
                records: 1,
                admin: false,
            },
            Msg::Failed { why: "no".into() },
            Msg::Session {
                record: vec![1, 2, 3],
            },
            Msg::Adopted {
                conn_id: 9,
                refused: None,
            },
            Msg::Adopted {
                conn_id: 9,
                refused: Some("user gone".into()),
            },
            Msg::Done,
            Msg::Handover,
            Msg::Kill {
                conn_id: 65539,
                query: true,
                by: Some("app".into()),
            },
            Msg::Kill {
                conn_id: 7,
                query: false,
                by: None,
            },
            Msg::Kill {
                conn_id: 7,
                query: false,
                by: Some(String::new()),
            },
            Msg::Killed { err: None },
            Msg::Killed {
                err: Some((1094, *b"HY000", "Unknown thread id: 7".into())),
            },
            Msg::Killed {
                err: Some((1095, *b"HY000", String::new())),
            },
            Msg::Admin {
                line: "KILL WHERE USER app".into(),
            },
            Msg::AdminAnswer {
                text: "[{\"id\":7}]".into(),
            },
            Msg::AdminAnswer {
                text: String::new(),
            },
        ];
        // A Ready from a sluice that predates the admin byte (or the records byte).
        assert_eq!(
            decode(kind::READY, &[7, 0, 0, 0, 1, 2]),
            Ok(Msg::Ready {
                pid: 7,
                server_known: true,
                records: 2,
                admin: false,
            })
        );
        for m in cases {
            let (k, p) = encode(&m);
            assert_eq!(decode(k, &p), Ok(m));
        }
        for k in 0..=255u8 {
            for p in [&[][..], &[1, 2, 3], &[0xff; 20]] {
                let _ = decode(k, p);
            }
        }
    }

    #[test]
    fn large_messages_and_descriptors_cross() {
        let (a, b) = pair().unwrap();
        let big = Msg::Session {
            record: (0..3 * CHUNK + 5).map(|i| i as u8).collect(),
        };
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send(&big, &[w.as_raw_fd()]).unwrap();
        a.send(&Msg::Done, &[]).unwrap();
        let (m, fds) = b.recv(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(m, big);
        assert_eq!(fds.len(), 1);
        // The descriptor received is the same socket.
        use std::io::{Read, Write};
        let mut passed = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
        passed.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        (&r).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        assert_eq!(
            b.recv(Duration::from_secs(5)).unwrap().map(|x| x.0),
            Some(Msg::Done)
        );
        assert!(b.recv(Duration::from_millis(10)).unwrap().is_none());
        drop(a);
        assert_eq!(
            b.recv(Duration::from_secs(5)).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
