// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2020 Datadog, Inc.
//
//! This module provides glommio's networking support.
use crate::sys;
use nix::sys::socket::{MsgFlags, SockaddrLike};
use std::{io, os::unix::io::RawFd};

fn yolo_accept(fd: RawFd) -> Option<io::Result<RawFd>> {
    let flags =
        nix::fcntl::OFlag::from_bits(nix::fcntl::fcntl(fd, nix::fcntl::F_GETFL).unwrap()).unwrap();
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let r = sys::accept_syscall(fd);
    nix::fcntl::fcntl(fd, nix::fcntl::F_SETFL(flags)).unwrap();
    match r {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_send(fd: RawFd, buf: &[u8]) -> Option<io::Result<usize>> {
    match sys::send_syscall(fd, buf.as_ptr(), buf.len(), MsgFlags::MSG_DONTWAIT.bits()) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_peek(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recvmsg<T: SockaddrLike>(
    fd: RawFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Option<io::Result<(usize, T)>> {
    match sys::recvmsg_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (flags | MsgFlags::MSG_DONTWAIT).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_sendmsg(
    fd: RawFd,
    buf: &[u8],
    addr: &impl nix::sys::socket::SockaddrLike,
) -> Option<io::Result<usize>> {
    match sys::sendmsg_syscall(
        fd,
        buf.as_ptr(),
        buf.len(),
        addr,
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

mod datagram;
mod stream;
mod tcp_socket;
mod udp_socket;
mod unix;
pub use self::{
    stream::{Buffered, Preallocated},
    tcp_socket::{AcceptedTcpStream, TcpListener, TcpStream},
    udp_socket::UdpSocket,
    unix::{AcceptedUnixStream, UnixDatagram, UnixListener, UnixStream},
};

/// Waits, through this executor's ring, until `fd` is readable or has an error or a hang-up
/// pending (an IORING_OP_POLL_ADD). For file descriptors glommio does not own: the caller keeps
/// the descriptor open until the future completes or is dropped (dropping it cancels the poll).
///
/// Added for sluice (see `vendor/glommio/SLUICE.md`): glommio 0.9 has this only crate-private.
pub async fn readable(fd: std::os::unix::io::RawFd) -> io::Result<()> {
    let source = crate::executor().reactor().poll_read_ready(fd);
    source.collect_rw().await.map(|_| ())
}

/// A reusable wait for readability (or writability) of a file descriptor glommio does not own:
/// like [`readable`], but each wait after one that completed submits the same poll again
/// instead of allocating a new source, and a wait given up before its poll completed leaves
/// that poll pending for the next wait to take over. Dropping it cancels a pending poll, as
/// dropping [`readable`]'s future does.
///
/// Added for sluice (see `vendor/glommio/SLUICE.md`): a hot client session waits for its next
/// command this way after every command.
#[derive(Debug)]
pub struct Readiness {
    fd: std::os::unix::io::RawFd,
    write: bool,
    source: Option<crate::sys::Source>,
}

impl Readiness {
    /// Waits for `fd` to be readable.
    pub fn readable(fd: std::os::unix::io::RawFd) -> Readiness {
        Readiness {
            fd,
            write: false,
            source: None,
        }
    }

    /// Waits for `fd` to be writable.
    pub fn writable(fd: std::os::unix::io::RawFd) -> Readiness {
        Readiness {
            fd,
            write: true,
            source: None,
        }
    }

    /// Waits until the descriptor is ready (or has an error, or hung up).
    pub async fn wait(&mut self) -> io::Result<()> {
        let reactor = crate::executor().reactor();
        let source = match self.source.take() {
            Some(pending) if pending.in_flight() => pending,
            Some(done) if reactor.rearm_poll_ready(&done, self.write) => done,
            _ if self.write => reactor.poll_write_ready(self.fd),
            _ => reactor.poll_read_ready(self.fd),
        };
        let source = &*self.source.insert(source);
        futures_lite::future::poll_fn(|cx| match source.result() {
            Some(r) => std::task::Poll::Ready(r.map(|_| ())),
            None => {
                source.add_waiter_single(cx.waker());
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// Like [`readable`], for writability.
pub async fn writable(fd: std::os::unix::io::RawFd) -> io::Result<()> {
    let source = crate::executor().reactor().poll_write_ready(fd);
    source.collect_rw().await.map(|_| ())
}
