//! `sluice-load`: the load generator that reproduces sluice's benchmarks (a million idle
//! clients, idle-vs-active latency, point-select throughput, short transactions, connect storms)
//! against sluice or MySQL/MariaDB directly.
//!
//! Architecture: a coordinator process forks worker processes, because one process may hold only
//! ~20,000 descriptors here. Each worker is a single-threaded epoll loop (no threads, no async
//! runtime) driving non-blocking sockets through the codec's pure state machines; connections
//! bind explicit (address, port) pairs spread over 127.0.0.0/8. A logged-in idle connection
//! leaves epoll and keeps no buffer: it costs its descriptor and 4 bytes. The coordinator talks
//! to each worker over a socketpair (commands down; progress, histograms and results up), shows
//! progress, samples the RSS of the processes under test and the kernel slab, and writes the
//! report.

mod cli;
mod coord;
mod hist;
mod ipc;
mod pace;
mod plan;
mod proto;
mod report;
mod sample;
mod syncconn;
mod sys;
mod worker;

use clap::Parser;

fn main() {
    // clap exits with status 2 on usage errors and 0 for --help/--version.
    let cli = cli::Cli::parse();
    let nofile = sys::raise_nofile();
    let cfg = match cli.resolve(nofile) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-load: {e}");
            std::process::exit(2);
        }
    };
    if cfg.source_bind {
        if let Err(e) =
            plan::AddrPlan::new(cfg.src_base, cfg.per_ip, cfg.src_port_lo, cfg.src_port_hi)
        {
            eprintln!("sluice-load: {e}");
            std::process::exit(2);
        }
    }
    sys::install_parent_signals();
    let code = coord::run(&cfg);
    std::process::exit(code);
}
