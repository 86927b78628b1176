//! Upstream connections: connect, authenticate, reset; the per-shard pool with its checkout guard
//! and waiting queue.

pub mod conn;
pub mod pool;
