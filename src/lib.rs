//! sluice: a MySQL-protocol connection-multiplexing proxy, thread-per-core on io_uring (glommio).
//!
//! Module map:
//! - [`codec`]: the pure wire protocol (no I/O);
//! - [`session`]: pure per-client semantics (settings the server reports, pins);
//! - [`shard`]: the per-core runtime (poller, session table, dispatcher);
//! - [`frontend`]: accept, handshake, the command loop, response relay;
//! - [`backend`]: upstream connections and the pool;
//! - [`config`], [`auth`], [`error`], [`bootstrap`], [`shared`], [`server`].

pub mod admin;
pub mod alloc_count;
pub mod auth;
pub mod backend;
pub mod bootstrap;
pub mod buf;
pub mod codec;
pub mod config;
pub mod console;
pub mod error;
pub mod frontend;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod reload;
pub mod server;
pub mod session;
pub mod shard;
pub mod shared;
pub mod shm;
pub mod supervisor;
pub mod tls;
pub mod upgrade;
pub mod users;
