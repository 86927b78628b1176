//! Readiness for parked client sockets, outside glommio's io_uring.
//!
//! glommio keeps one poll per waiting socket in its ring, and it cancels its preemption timer with
//! an ASYNC_CANCEL on every reactor turn; the kernel's search for that cancel grows with the
//! number of pending polls (measured: 62% of the proxy's CPU with 19,000 idle sockets). So parked
//! client sockets wait in a per-shard epoll set instead, with EPOLLONESHOT: each arming delivers
//! at most one event, and the shard re-arms when it wants to hear from the socket again.
//!
//! The shard reaps events itself with a non-blocking `epoll_wait` ([`Poller::poll_now`]). When a
//! reap finds nothing, it waits for the epoll set's own fd to become readable *in its ring*
//! ([`Poller::ready`], one IORING_OP_POLL_ADD through the vendored glommio's
//! `glommio::net::readable`): a parked socket waking an idle shard costs one kernel event, no
//! helper thread and no cross-thread wake-up. The mailbox carries typed messages from other
//! threads (shutdown, KILL, stats, lending), waking the dispatcher with a glommio waker (glommio
//! accepts wakes from foreign threads: it queues the waker and writes its eventfd only if the
//! executor sleeps).
//!
//! One helper thread remains, and only as the shard's watchdog: it sleeps, and every
//! [`WATCHDOG_EVERY`] looks at the shard. glommio 0.9 sleeps by linking its io_uring rings, and
//! that sleep sometimes misses its wake-ups (glommio issues #326, #494, #547): in a run with a
//! million clients, shards slept for minutes with cross-thread wakes queued and their own timers
//! expired, until anything interrupted the thread. So when a message sits untaken for
//! [`STALE_INBOX`], or the shard's heartbeat (every dispatcher turn and janitor tick) is older
//! than [`STALE_HEARTBEAT`], the watchdog interrupts the shard thread's `io_uring_enter` with a
//! signal whose handler does nothing: glommio takes the EINTR as a wake-up, then runs its queued
//! wakes and expired timers. Kicks are counted (`sluice_shard_kicks_total`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub const READABLE: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Error and hang-up conditions are always reported.
pub const BROKEN: u32 = libc::EPOLLERR as u32 | libc::EPOLLHUP as u32;

/// How often the watcher looks at the shard, whatever else happens.
const WATCHDOG_EVERY: Duration = Duration::from_millis(250);
/// Delivered events or messages untaken this long: the shard missed its wake-up.
const STALE_INBOX: Duration = Duration::from_millis(200);
/// No dispatcher turn and no janitor tick (every second) for this long: the shard is asleep
/// with expired timers.
const STALE_HEARTBEAT: Duration = Duration::from_secs(3);
/// The signal that interrupts a shard thread (its handler does nothing): a real-time signal,
/// so SIGUSR2 is free for an upgrade (`crate::upgrade`). glibc keeps the first two real-time
/// signals for itself; `SIGRTMIN()` is past them.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the no-op handler for [`kick_signal`] (once per process). SA_RESTART keeps other
/// blocking calls transparent; io_uring's wait returns EINTR regardless.
fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask; the handler is
        // async-signal-safe (it does nothing).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// What other threads post to a shard.
pub trait Message: Send + 'static {}
impl<T: Send + 'static> Message for T {}

struct Inbox<M> {
    messages: Vec<M>,
    waker: Option<Waker>,
    /// When the inbox last went from empty to not empty (None while empty).
    pending_since: Option<Instant>,
}

impl<M> Inbox<M> {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

struct Shared<M> {
    inbox: Mutex<Inbox<M>>,
    stopping: Mutex<bool>,
    stop: Condvar,
    /// The shard's thread, for kicks.
    thread: libc::pthread_t,
    /// Milliseconds since `epoch` at the shard's last sign of life.
    heartbeat: AtomicU64,
    epoch: Instant,
    kicks: AtomicU64,
}

impl<M> Shared<M> {
    fn deliver(&self, f: impl FnOnce(&mut Inbox<M>)) {
        let waker = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
            if inbox.is_empty() {
                inbox.pending_since = Some(Instant::now());
            }
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

impl<M> Shared<M> {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Kicks the shard thread if it missed a delivery or its heartbeat stopped.
    fn watchdog(&self, last_kick: &mut Option<Instant>) {
        let stale_inbox = self
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending_since
            .is_some_and(|t| t.elapsed() >= STALE_INBOX);
        let silent = self
            .now_ms()
            .saturating_sub(self.heartbeat.load(Ordering::Relaxed));
        let stale_heart = silent >= STALE_HEARTBEAT.as_millis() as u64;
        if !(stale_inbox || stale_heart) || last_kick.is_some_and(|t| t.elapsed() < STALE_INBOX) {
            return;
        }
        *last_kick = Some(Instant::now());
        self.kicks.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the thread is the shard's executor thread, alive as long as its Poller (which
        // joins this watcher before it is dropped).
        unsafe { libc::pthread_kill(self.thread, kick_signal()) };
    }
}

/// One shard's epoll set, its mailbox and its watchdog thread.
pub struct Poller<M: Message> {
    epoll: OwnedFd,
    shared: Arc<Shared<M>>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl<M: Message> Poller<M> {
    /// Creates the epoll set and starts its watchdog thread, pinned to `core` when given. Must be
    /// called on the shard's own thread (the one the watchdog kicks).
    pub fn new(name: &str, core: Option<core_affinity::CoreId>) -> io::Result<Poller<M>> {
        install_kick_handler();
        // SAFETY: a plain syscall returning a new descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                messages: Vec::new(),
                waker: None,
                pending_since: None,
            }),
            stopping: Mutex::new(false),
            stop: Condvar::new(),
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            heartbeat: AtomicU64::new(0),
            epoch: Instant::now(),
            kicks: AtomicU64::new(0),
        });
        let watched = shared.clone();
        let watchdog = std::thread::Builder::new()
            .name(format!("{name}-dog"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                watch(&watched)
            })?;
        Ok(Poller {
            epoll,
            shared,
            watchdog: Some(watchdog),
        })
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

    /// Takes the messages delivered so far; `Pending` (with the waker stored) when there are
    /// none.
    pub fn poll_take(&self, cx: &mut Context<'_>, messages: &mut Vec<M>) -> Poll<()> {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox.is_empty() {
            inbox.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(messages, &mut inbox.messages);
        inbox.pending_since = None;
        Poll::Ready(())
    }

    /// Waits, in the shard's own ring, until a parked socket has an event for
    /// [`poll_now`](Self::poll_now) or a message has arrived.
    pub async fn ready(&self, messages: &mut Vec<M>) {
        let epfd = self.epoll.as_raw_fd();
        futures_lite::future::or(
            async {
                // An error here (none is expected for an epoll fd) only means the next reap
                // happens at once.
                let _ = glommio::net::readable(epfd).await;
            },
            std::future::poll_fn(|cx| self.poll_take(cx, messages)),
        )
        .await
    }

    /// Takes the messages delivered so far, without waiting.
    pub fn try_take(&self, messages: &mut Vec<M>) {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        messages.append(&mut inbox.messages);
        inbox.pending_since = None;
    }

    /// The shard is alive (called every dispatcher turn and janitor tick).
    pub fn heartbeat(&self) {
        self.shared
            .heartbeat
            .store(self.shared.now_ms(), Ordering::Relaxed);
    }

    /// Times the watchdog interrupted this shard's thread.
    pub fn kicks(&self) -> u64 {
        self.shared.kicks.load(Ordering::Relaxed)
    }

    /// Collects ready events without waiting.
    pub fn poll_now(&self, events: &mut Vec<(u64, u32)>) -> usize {
        let mut buf: [libc::epoll_event; 256] = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: buf holds 256 events.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), buf.as_mut_ptr(), 256, 0) };
        let n = n.max(0) as usize;
        events.extend(buf.iter().take(n).map(|ev| (ev.u64, ev.events)));
        n
    }
}

/// The watchdog: looks at the shard every [`WATCHDOG_EVERY`] until the poller is dropped.
fn watch<M>(shared: &Shared<M>) {
    let mut last_kick = None;
    let mut stopping = shared.stopping.lock().unwrap_or_else(|p| p.into_inner());
    while !*stopping {
        let (s, _) = shared
            .stop
            .wait_timeout(stopping, WATCHDOG_EVERY)
            .unwrap_or_else(|p| p.into_inner());
        stopping = s;
        if *stopping {
            return;
        }
        drop(stopping);
        shared.watchdog(&mut last_kick);
        stopping = shared.stopping.lock().unwrap_or_else(|p| p.into_inner());
    }
}

impl<M: Message> Drop for Poller<M> {
    fn drop(&mut self) {
        *self
            .shared
            .stopping
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.stop.notify_one();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery nobody takes is a missed wake-up: the watchdog kicks the shard thread, and
    /// the kick (a signal into a sleeping glommio executor) is harmless: the executor's own
    /// timer still completes, and the thread carries on.
    #[test]
    fn the_watchdog_kicks_a_shard_that_leaves_its_inbox_untaken() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(move || async move {
                let p: Poller<u32> = Poller::new("test", None).unwrap();
                p.heartbeat();
                tx.send(p.mailbox()).unwrap();
                // Sleep in glommio (io_uring) well past STALE_INBOX without taking the inbox.
                let started = Instant::now();
                glommio::timer::sleep(Duration::from_millis(1200)).await;
                let slept = started.elapsed();
                let mut messages = Vec::new();
                p.try_take(&mut messages);
                (p.kicks(), messages, slept)
            })
            .unwrap();
        let mailbox = rx.recv().unwrap();
        mailbox.post(7);
        let (kicks, messages, slept) = h.join().unwrap();
        assert!(kicks >= 1, "no kick for an inbox left untaken for a second");
        assert_eq!(messages, vec![7]);
        assert!(
            slept >= Duration::from_millis(1200),
            "the timer ran short: {slept:?}"
        );
    }

    #[test]
    fn a_shard_that_takes_its_deliveries_and_beats_is_left_alone() {
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(|| async {
                let p: Poller<u32> = Poller::new("test", None).unwrap();
                let mailbox = p.mailbox();
                let mut messages = Vec::new();
                for i in 0..20 {
                    p.heartbeat();
                    mailbox.post(i);
                    p.try_take(&mut messages);
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                (p.kicks(), messages.len())
            })
            .unwrap();
        assert_eq!(h.join().unwrap(), (0, 20));
    }
}
