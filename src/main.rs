//! The `sluice` command: run the proxy, check a configuration, or hash a password.

use clap::{Parser, Subcommand};
use sluice::config::{Config, LogFormat, Overrides};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "MySQL-protocol connection-multiplexing proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Configuration file (TOML).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Client-facing address (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Backend address host:port (repeatable; replaces the configured backends).
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// Number of shards (0 = one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Log format: human or json.
    #[arg(long, value_parser = parse_format)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "sluice=debug".
    #[arg(long)]
    log_level: Option<String>,
    /// Internal: run as worker INDEX/COUNT/SUPERVISOR_PID of a multi-process instance.
    #[arg(long, hide = true)]
    worker: Option<String>,
    /// Internal: the descriptor of the supervisor's shared login region (failed-login counts).
    #[arg(long, hide = true)]
    login_guard_fd: Option<i32>,
    /// Internal: the descriptor of the supervisor's health board (backend health, one view).
    #[arg(long, hide = true)]
    health_board_fd: Option<i32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration file and report every problem.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the hashes of a password (read from the terminal or standard input) for the config.
    HashPassword,
    /// Upgrade a running instance without dropping its clients: it starts the binary now at its
    /// path, with its arguments, and hands its listeners and clients over (SIGUSR2 does the
    /// same; see the README, "Upgrading without dropping clients").
    Upgrade {
        /// The pid of the instance.
        #[arg(
            long,
            conflicts_with = "pid_file",
            required_unless_present = "pid_file"
        )]
        pid: Option<u32>,
        /// A file holding the pid (e.g. written by the service manager).
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Send a request to a running instance's admin socket (every worker's), print the answers:
    /// `BACKENDS`, `BACKEND ADD <address> [any|primary|replica] [weight] [TLS …]`,
    /// `BACKEND DRAIN|UNDRAIN|MAINTENANCE|REMOVE <id or address>`, `STATS`.
    Ctl {
        /// The pid of the instance (its supervisor's with workers).
        #[arg(long)]
        pid: u32,
        /// The request, e.g. BACKEND DRAIN 127.0.0.1:3306
        #[arg(required = true, num_args = 1..)]
        request: Vec<String>,
    },
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{s:?} is not a log format (human or json)")),
    }
}

fn load(path: &std::path::Path, overrides: &Overrides) -> Result<Config, String> {
    let mut cfg = Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    cfg.apply(overrides);
    cfg.validate()
        .map_err(|e| format!("{}:\n{e}", path.display()))?;
    Ok(cfg)
}

/// `INDEX/COUNT/SUPERVISOR_PID`.
fn parse_worker(s: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<u32> = s
        .split('/')
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{s:?}: expected INDEX/COUNT/PID"))
        })
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [i, n, pid] if i < n => Ok((i, n, pid)),
        _ => Err(format!(
            "{s:?}: expected INDEX/COUNT/PID with INDEX < COUNT"
        )),
    }
}

fn read_password() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
        // Turn off echo while the password is typed.
        // SAFETY: termios calls on stdin with a local struct.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        let have = unsafe { libc::tcgetattr(0, &mut term) } == 0;
        if have {
            let mut quiet = term;
            quiet.c_lflag &= !libc::ECHO;
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
        }
        let mut line = String::new();
        let r = stdin.lock().read_line(&mut line);
        if have {
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &term) };
        }
        eprintln!();
        r?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// Benchmarks only: counts heap allocations for `/metrics` (see `sluice::alloc_count`).
#[cfg(feature = "count-allocs")]
#[global_allocator]
static COUNTING: sluice::alloc_count::Counting = sluice::alloc_count::Counting;

fn main() -> ExitCode {
    #[cfg(feature = "count-allocs")]
    COUNTING.install();
    // Before anything can replace the file: an upgrade runs whatever is at this path then.
    sluice::upgrade::remember_exe();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        backends: cli.backends.clone(),
        shards: cli.shards,
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
    };
    match cli.command {
        Some(Cmd::CheckConfig { file }) => match load(&file, &overrides) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Some(Cmd::HashPassword) => match read_password() {
            Ok(pw) => {
                print!("{}", sluice::auth::hash_lines(pw.as_bytes()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot read the password: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Upgrade { pid, pid_file }) => {
            let pid = match (pid, pid_file) {
                (Some(p), _) => p,
                (None, f) => match f
                    .as_deref()
                    .ok_or_else(|| "--pid or --pid-file is required".to_string())
                    .and_then(|f| std::fs::read_to_string(f).map_err(|e| e.to_string()))
                    .and_then(|t| t.trim().parse::<u32>().map_err(|e| e.to_string()))
                {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("sluice upgrade: pid file: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            // Not 0 nor above i32::MAX: kill(2) would read those as process groups.
            if pid == 0 || pid > i32::MAX as u32 {
                eprintln!("sluice upgrade: {pid} is not a process id");
                return ExitCode::from(2);
            }
            // SAFETY: sends a signal; no memory is involved.
            if unsafe { libc::kill(pid as i32, libc::SIGUSR2) } != 0 {
                eprintln!(
                    "sluice upgrade: cannot signal pid {pid}: {}",
                    std::io::Error::last_os_error()
                );
                return ExitCode::FAILURE;
            }
            println!("sluice upgrade: asked process {pid} to upgrade (its log says how it went)");
            ExitCode::SUCCESS
        }
        Some(Cmd::Ctl { pid, request }) => {
            let line = request.join(" ");
            let mut status = ExitCode::SUCCESS;
            // Workers are numbered from 0; the first that does not answer ends the list.
            for worker in 0.. {
                match sluice::admin::request(pid, worker, &line) {
                    Ok(answer) => {
                        if answer.starts_with("ERR") {
                            status = ExitCode::FAILURE;
                        }
                        println!("{answer}");
                    }
                    Err(e) if worker == 0 => {
                        eprintln!("sluice ctl: no sluice instance with pid {pid} answers: {e}");
                        return ExitCode::FAILURE;
                    }
                    Err(_) => break,
                }
            }
            status
        }
        None => {
            // Before any thread starts: SIGUSR2 (an upgrade) waits for the main loop.
            sluice::upgrade::block_trigger();
            let Some(path) = cli.config.as_deref() else {
                eprintln!("sluice: --config FILE is required (see config/sluice.example.toml)");
                return ExitCode::from(2);
            };
            let cfg = match load(path, &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            sluice::server::init_logging(&cfg);
            // systemd's NOTIFY_SOCKET, read once (workers are started without it).
            sluice::notify::init();
            sluice::reload::set_source(path.to_path_buf(), overrides.clone());
            let worker = match cli.worker.as_deref().map(parse_worker) {
                Some(Ok(w)) => Some(w),
                Some(Err(e)) => {
                    eprintln!("sluice: --worker {e}");
                    return ExitCode::from(2);
                }
                None => None,
            };
            let result = match worker {
                Some((i, n, sup)) => sluice::server::run(
                    cfg,
                    i,
                    n,
                    Some(sup),
                    cli.login_guard_fd,
                    cli.health_board_fd,
                ),
                None if cfg.workers > 1 => {
                    let args: Vec<String> = std::env::args().skip(1).collect();
                    sluice::supervisor::run(&cfg, &args)
                }
                None => sluice::server::run(cfg, 0, 1, None, None, None),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
