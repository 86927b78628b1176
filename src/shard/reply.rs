//! A one-shot reply channel across threads: one side sends a value once, the other awaits it,
//! either as a glommio task ([`Reply1::recv`]) or as a plain thread ([`Reply1::recv_blocking`]).
//!
//! It carries the answer of a [`ShardMsg::Kill`](super::ShardMsg::Kill) back to whoever asked
//! (a session's task on another shard, or a plain thread), and the result of a helper
//! thread a task waits for (SHOW PROCESSLIST's gathering, the health probe's catalog read). A
//! mutex and a condition variable rather than a channel: the receiver may be a task or a plain
//! thread, and a value is sent once, so a slot, a waker and a condvar are all it needs.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

/// A one-shot reply slot filled on one thread and awaited on another: by a glommio task
/// ([`Reply1::recv`]) or by a plain thread ([`Reply1::recv_blocking`]).
pub struct Reply1<T> {
    inner: Arc<(Mutex<Slot1<T>>, std::sync::Condvar)>,
}

/// The value, once sent, and the task waiting for it.
type Slot1<T> = (Option<T>, Option<Waker>);

impl<T> Clone for Reply1<T> {
    fn clone(&self) -> Self {
        Reply1 {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Reply1<T> {
    fn default() -> Self {
        Reply1 {
            inner: Arc::new((Mutex::new((None, None)), std::sync::Condvar::new())),
        }
    }
}

impl<T> Reply1<T> {
    pub fn send(&self, v: T) {
        let w = {
            let mut g = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
            g.0 = Some(v);
            g.1.take()
        };
        self.inner.1.notify_all();
        if let Some(w) = w {
            w.wake();
        }
    }

    pub async fn recv(&self) -> T {
        poll_fn(|cx| {
            let mut g = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
            match g.0.take() {
                Some(v) => Poll::Ready(v),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits on a plain thread, up to `timeout`.
    pub fn recv_blocking(&self, timeout: Duration) -> Option<T> {
        let g = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self
            .inner
            .1
            .wait_timeout_while(g, timeout, |v| v.0.is_none())
            .unwrap_or_else(|p| p.into_inner());
        g.0.take()
    }
}
