//! Upstream connections: connect, authenticate, reset; the per-shard pool with its checkout guard
//! and waiting queue; which backend serves (router) and whether it works (health).

pub mod board;
pub mod budget;
pub mod compat;
pub mod conn;
pub mod dns;
pub mod gtid;
pub mod health;
pub mod pool;
pub mod registry;
pub mod router;
