//! Readiness for parked client sockets, outside glommio's io_uring.
//!
//! glommio keeps one poll per waiting socket in its ring, and it cancels its preemption timer with
//! an ASYNC_CANCEL on every reactor turn; the kernel's search for that cancel grows with the
//! number of pending polls (measured: 62% of the proxy's CPU with 19,000 idle sockets). So idle
//! client sockets wait in a per-shard epoll set instead, with EPOLLONESHOT: each arming delivers
//! at most one event, and the shard re-arms when it wants to hear from the socket again.
//!
//! While the shard is busy it reaps events itself with a non-blocking `epoll_wait`
//! ([`Poller::poll_now`]). When a reap finds nothing, the shard *arms* a watcher thread, which
//! blocks in `epoll_wait` and hands ready tokens to the shard through a [`Mailbox`], waking the
//! shard's dispatcher task with a glommio waker (glommio accepts wakes from foreign threads: it
//! queues the waker and writes its eventfd only if the executor sleeps). After one delivery the
//! watcher disarms itself, so a loaded shard pays no cross-thread hop. The same mailbox carries
//! typed messages from other threads (shutdown, KILL, stats).
//!
//! Alternatives turned down: one glommio task and `Source` per client (~900 B each and the cancel
//! cost above); a second io_uring with multishot polls (its completion fd would still need a
//! bridge into glommio, and it is more code for the same hop).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

pub const READABLE: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Error and hang-up conditions are always reported.
pub const BROKEN: u32 = libc::EPOLLERR as u32 | libc::EPOLLHUP as u32;

/// Token reserved for the watcher's own stop eventfd.
const STOP_TOKEN: u64 = u64::MAX;

/// What other threads post to a shard.
pub trait Message: Send + 'static {}
impl<T: Send + 'static> Message for T {}

struct Inbox<M> {
    events: Vec<(u64, u32)>,
    messages: Vec<M>,
    waker: Option<Waker>,
}

struct Shared<M> {
    inbox: Mutex<Inbox<M>>,
    stopping: AtomicBool,
    /// The shard asked the watcher to wait for events on its behalf.
    armed: Mutex<bool>,
    arm: Condvar,
}

impl<M> Shared<M> {
    fn deliver(&self, f: impl FnOnce(&mut Inbox<M>)) {
        let waker = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut inbox);
            inbox.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A handle other threads use to post messages to a shard.
pub struct Mailbox<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox {
            shared: self.shared.clone(),
        }
    }
}

impl<M: Message> Mailbox<M> {
    pub fn post(&self, msg: M) {
        self.shared.deliver(|inbox| inbox.messages.push(msg));
    }
}

/// One shard's epoll set, its watcher thread and its mailbox.
pub struct Poller<M: Message> {
    epoll: OwnedFd,
    stop: OwnedFd,
    shared: Arc<Shared<M>>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl<M: Message> Poller<M> {
    /// Creates the epoll set and starts its watcher thread, pinned to `core` when given.
    pub fn new(name: &str, core: Option<core_affinity::CoreId>) -> io::Result<Poller<M>> {
        // SAFETY: plain syscalls returning new descriptors we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let stop = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?)
        };
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                events: Vec::new(),
                messages: Vec::new(),
                waker: None,
            }),
            stopping: AtomicBool::new(false),
            armed: Mutex::new(false),
            arm: Condvar::new(),
        });
        let mut p = Poller {
            epoll,
            stop,
            shared,
            watcher: None,
        };
        p.ctl(
            libc::EPOLL_CTL_ADD,
            p.stop.as_raw_fd(),
            STOP_TOKEN,
            libc::EPOLLIN as u32,
        )?;
        let epfd = p.epoll.as_raw_fd();
        let shared = p.shared.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("{name}-poll"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                watch(epfd, &shared)
            })?;
        p.watcher = Some(watcher);
        Ok(p)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: valid epoll fd and event struct.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Starts watching `fd` for `interest`, once.
    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            token,
            interest | libc::EPOLLONESHOT as u32,
        )
    }

    /// Re-arms a watched `fd` for one more event.
    pub fn rearm(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd,
            token,
            interest | libc::EPOLLONESHOT as u32,
        )
    }

    /// Stops watching `fd` (closing it does the same).
    pub fn remove(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    pub fn mailbox(&self) -> Mailbox<M> {
        Mailbox {
            shared: self.shared.clone(),
        }
    }

    /// Takes everything delivered so far; `Pending` (with the waker stored) when there is nothing.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        events: &mut Vec<(u64, u32)>,
        messages: &mut Vec<M>,
    ) -> Poll<()> {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox.events.is_empty() && inbox.messages.is_empty() {
            inbox.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(events, &mut inbox.events);
        std::mem::swap(messages, &mut inbox.messages);
        Poll::Ready(())
    }

    /// Takes whatever was delivered so far, without waiting.
    pub fn try_take(&self, events: &mut Vec<(u64, u32)>, messages: &mut Vec<M>) {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        events.append(&mut inbox.events);
        messages.append(&mut inbox.messages);
    }

    /// Asks the watcher thread to wait for the next events (the shard is about to sleep).
    pub fn arm(&self) {
        let mut armed = self.shared.armed.lock().unwrap_or_else(|p| p.into_inner());
        if !*armed {
            *armed = true;
            self.shared.arm.notify_one();
        }
    }

    /// Collects ready events without waiting (the shard polls this itself while it is busy, so
    /// a loaded shard does not pay the watcher's wake-up hop).
    pub fn poll_now(&self, events: &mut Vec<(u64, u32)>) -> usize {
        let mut buf: [libc::epoll_event; 256] = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: buf holds 256 events.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), buf.as_mut_ptr(), 256, 0) };
        let mut got = 0;
        for ev in buf.iter().take(n.max(0) as usize) {
            let token = ev.u64;
            if token != STOP_TOKEN {
                events.push((token, ev.events));
                got += 1;
            }
        }
        got
    }
}

fn watch<M>(epfd: RawFd, shared: &Shared<M>) {
    let mut buf: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        {
            let mut armed = shared.armed.lock().unwrap_or_else(|p| p.into_inner());
            while !*armed && !shared.stopping.load(Ordering::Acquire) {
                armed = shared.arm.wait(armed).unwrap_or_else(|p| p.into_inner());
            }
        }
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: buf holds 1024 events.
        let n = unsafe { libc::epoll_wait(epfd, buf.as_mut_ptr(), buf.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let ready = &buf[..n as usize];
        *shared.armed.lock().unwrap_or_else(|p| p.into_inner()) = false;
        shared.deliver(|inbox| {
            inbox.events.extend(
                ready
                    .iter()
                    .filter(|e| e.u64 != STOP_TOKEN)
                    .map(|e| (e.u64, e.events)),
            );
        });
    }
}

impl<M: Message> Drop for Poller<M> {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        {
            let _armed = self.shared.armed.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.arm.notify_one();
        }
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}
