//! The client side: accepting a connection, the handshake and authentication, the command loop
//! of an active session, and relaying responses back.

pub mod answer;
pub mod client;
pub mod command;
pub mod handshake;
pub mod processlist;
pub mod relay;
pub mod session;
pub mod stmt;
