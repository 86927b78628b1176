//! sluice: a MySQL-protocol connection-multiplexing proxy, thread-per-core on io_uring (glommio).

pub mod codec;
