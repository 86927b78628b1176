//! Pure per-client semantics: the session settings the server reports (schema and system
//! variables), their replay on another backend, and the reasons a session must stay pinned.

pub mod effects;
pub mod own_read;
pub mod pins;
pub mod route;
pub mod schema_report;
pub mod sql;
pub mod state;
pub mod stmts;
pub mod trackers;
pub mod uservars;
