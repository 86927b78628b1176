//! Schema checks at login: may this account use the schema the client names? A backend is
//! asked (COM_INIT_DB on a pooled connection, as the server would check it) unless the same
//! (account, schema) passed within [`SCHEMA_TTL`]; and while a check runs, other logins for the
//! same pair wait for its answer instead of each taking a backend (a single flight: a reconnect
//! storm of one application is one check).
//!
//! Owns the shard's `schemas` (pairs verified, and when) and `schema_checks` (the flights in
//! the air: a [`Flight`] each, landed by a [`Landing`] whatever ends the check). The janitor
//! forgets expired pairs ([`Shard::forget_old_schemas`]).

use super::Shard;
use crate::error::Reply;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a verified schema name is trusted without asking a backend again.
const SCHEMA_TTL: Duration = Duration::from_secs(10);

/// (pool user, schema): what a schema check vouches for.
pub(super) type SchemaKey = (u32, Box<str>);

/// The outcome of a check that other tasks of the shard wait for.
#[derive(Default)]
pub(super) struct Flight {
    result: RefCell<Option<Result<(), Reply>>>,
    landed: Cell<bool>,
    wakers: RefCell<Vec<std::task::Waker>>,
}

impl Flight {
    /// The check's result, or `None` if it was abandoned.
    async fn wait(&self) -> Option<Result<(), Reply>> {
        std::future::poll_fn(|cx| {
            if self.landed.get() {
                return std::task::Poll::Ready(self.result.borrow().clone());
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

/// Lands a [`Flight`]: removes it from the shard's map and wakes its waiters with the result
/// (none if the check was abandoned: its task dropped mid-way).
struct Landing<'a> {
    shard: &'a Shard,
    key: &'a SchemaKey,
    flight: &'a Rc<Flight>,
}

impl Landing<'_> {
    fn land(self, r: Result<(), Reply>) {
        *self.flight.result.borrow_mut() = Some(r);
        // Drop does the rest.
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.shard.schema_checks.borrow_mut().remove(self.key);
        self.flight.landed.set(true);
        for w in self.flight.wakers.take() {
            w.wake();
        }
    }
}

impl Shard {
    /// Verifies that `user` may use schema `db`, asking a backend unless it did recently.
    pub(crate) async fn check_schema(self: &Rc<Self>, user: u32, db: &str) -> Result<(), Reply> {
        let key = (user, Box::<str>::from(db));
        if self
            .schemas
            .borrow()
            .get(&key)
            .is_some_and(|t| t.elapsed() < SCHEMA_TTL)
        {
            return Ok(());
        }
        let running = self.schema_checks.borrow().get(&key).cloned();
        if let Some(flight) = running {
            if let Some(r) = flight.wait().await {
                return r;
            }
            // The check was abandoned (its login timed out): run one of our own.
        }
        let flight = Rc::new(Flight::default());
        self.schema_checks
            .borrow_mut()
            .insert(key.clone(), flight.clone());
        // Whatever ends the check (even this future being dropped) lands the flight.
        let landing = Landing {
            shard: self,
            key: &key,
            flight: &flight,
        };
        let r = self.check_schema_on_backend(user, db).await;
        if r.is_ok() {
            self.schemas
                .borrow_mut()
                .insert(key.clone(), Instant::now());
        }
        landing.land(r.clone());
        r
    }

    async fn check_schema_on_backend(self: &Rc<Self>, user: u32, db: &str) -> Result<(), Reply> {
        let pool = self.pool(user, self.pick_backend());
        let deadline = Instant::now() + Duration::from_millis(self.cfg().pool.queue_timeout_ms);
        let mut lease = pool
            .checkout(crate::backend::conn::DEFAULT_PROFILE, &self.fresh, deadline)
            .await
            .map_err(|e| {
                e.reply()
                    .unwrap_or_else(|| Reply::new(9002, b"HY000", "sluice: backend unavailable"))
            })?;
        let mut p = vec![crate::codec::command::com::INIT_DB];
        p.extend_from_slice(db.as_bytes());
        match lease
            .conn()
            .command_ok(&p, crate::codec::command::ResponseKind::OkErr)
            .await
        {
            Ok(_) => {
                let mut s = (*lease.get().settings).clone();
                s.schema = Some(db.into());
                lease.conn().settings = self.interner.intern(s);
                lease.release();
                Ok(())
            }
            Err(crate::backend::conn::BackendError::Server {
                code,
                sql_state,
                message,
            }) => {
                lease.release();
                Err(Reply::new(code, &sql_state, message))
            }
            Err(e) => Err(Reply::new(
                9002,
                b"HY000",
                format!("sluice: backend unavailable: {e}"),
            )),
        }
    }

    /// Forgets verified pairs older than [`SCHEMA_TTL`] (a janitor's chore).
    pub(super) fn forget_old_schemas(&self) {
        self.schemas
            .borrow_mut()
            .retain(|_, t| t.elapsed() < SCHEMA_TTL);
    }
}
