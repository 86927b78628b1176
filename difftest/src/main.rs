//! `sluice-difftest`: the command line of the differential tester (see the crate docs and
//! `difftest/README.md`).

use clap::Parser;
use sluice_difftest::client::Credentials;
use sluice_difftest::gen;
use sluice_difftest::runner::{run, Options};
use sluice_difftest::script::{parse_listing, Profile};
use std::process::ExitCode;
use std::time::Duration;

/// Runs generated client sessions against MariaDB directly and through each proxy, and compares
/// every response. Exit status: 0 no differences, 1 differences (or direct sessions that could
/// not finish), 2 the run itself failed.
#[derive(Parser, Debug)]
#[command(name = "sluice-difftest", version)]
struct Cli {
    /// The MariaDB server, HOST:PORT.
    #[arg(long)]
    direct: String,
    /// A proxy to compare with the server, MODE=HOST:PORT (repeatable; MODE is a label such as
    /// session, transaction or statement).
    #[arg(long = "proxy", value_parser = parse_proxy)]
    proxies: Vec<(String, String)>,
    /// Replicas of the direct server, HOST:PORT (repeatable): after each setup, wait until every
    /// one has applied it (the proxies under test route reads to them; a session's reads of
    /// fixtures another connection wrote are not its own writes).
    #[arg(long = "replica")]
    replicas: Vec<String>,
    #[arg(long, default_value = "app")]
    user: String,
    #[arg(long, default_value = "app")]
    password: String,
    /// Seed of the generated sessions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of sessions.
    #[arg(long, default_value_t = 24)]
    sessions: usize,
    /// Commands per session (after the login prologue).
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Sessions running at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Write the summary (with every difference) as JSON to FILE.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run only session SESSION of seed SEED, sequentially, and print every step of it.
    #[arg(long, value_parser = parse_replay)]
    replay: Option<(u64, usize)>,
    /// Play the script in FILE (one command per line, as reproducers list them) as a single
    /// session, and print every step of it.
    #[arg(long, conflicts_with = "replay")]
    script: Option<std::path::PathBuf>,
    /// With --script: the session index (its schemas are PREFIX_K and PREFIX_K_b; the script
    /// may name them {SCHEMA} and {SCHEMA_B}).
    #[arg(long, default_value_t = 0)]
    session: usize,
    /// With --script: play COPIES copies of the script at once (sessions K, K+1, …, each in its
    /// own schemas, --concurrency at a time), so that pooled backends change hands between
    /// statements as they do under load.
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// With --script: the capability profile, modern, classic or tracking.
    #[arg(long, default_value = "modern")]
    profile: String,
    /// Also run the direct server twice and compare it with itself (tester determinism).
    #[arg(long)]
    self_check: bool,
    /// Schema prefix: session k uses PREFIX_k and PREFIX_k_b.
    #[arg(long, default_value = "dt")]
    schema_prefix: String,
    /// Bound on every read and write of a session, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// How long the KILL QUERY sidecar waits to see its statement running, in seconds.
    #[arg(long, default_value_t = 60)]
    kill_wait_secs: u64,
    /// Report every differing step of each session, not only the first.
    #[arg(long)]
    every_difference: bool,
    /// Write the direct run's transcripts to FILE (JSON lines), to see what the corpus provokes.
    #[arg(long)]
    transcripts: Option<std::path::PathBuf>,
    /// Sessions not started within SECS of the start are not played (and count as differences):
    /// bounds a run whatever the targets do.
    #[arg(long)]
    deadline_secs: Option<u64>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_proxy(s: &str) -> Result<(String, String), String> {
    let (m, a) = s
        .split_once('=')
        .ok_or_else(|| format!("expected MODE=HOST:PORT, got {s:?}"))?;
    if m.is_empty() || a.is_empty() {
        return Err(format!("expected MODE=HOST:PORT, got {s:?}"));
    }
    Ok((m.to_string(), a.to_string()))
}

fn parse_replay(s: &str) -> Result<(u64, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected SEED:SESSION, got {s:?}"))?;
    Ok((
        a.parse().map_err(|e| format!("seed {a:?}: {e}"))?,
        b.parse().map_err(|e| format!("session {b:?}: {e}"))?,
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (seed, replay) = match cli.replay {
        Some((s, k)) => (s, Some(k)),
        None => (cli.seed, None),
    };
    if cli.schema_prefix.is_empty()
        || !cli
            .schema_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        eprintln!("sluice-difftest: --schema-prefix must be letters, digits and '_'");
        return ExitCode::from(2);
    }
    let script = match &cli.script {
        None => None,
        Some(path) => {
            let Some(profile) = Profile::from_name(&cli.profile) else {
                eprintln!("sluice-difftest: --profile must be modern, classic or tracking");
                return ExitCode::from(2);
            };
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("sluice-difftest: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            let mut scripts = Vec::new();
            for k in cli.session..cli.session + cli.copies.max(1) {
                let (a, b) = gen::schemas(&cli.schema_prefix, k);
                let text = text.replace("{SCHEMA_B}", &b).replace("{SCHEMA}", &a);
                match parse_listing(&text, k, profile, &a) {
                    Ok(s) => scripts.push(s),
                    Err(e) => {
                        eprintln!("sluice-difftest: {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                }
            }
            Some(scripts)
        }
    };
    let opts = Options {
        script,
        direct: cli.direct,
        proxies: cli.proxies,
        replicas: cli.replicas,
        creds: Credentials {
            user: cli.user,
            password: cli.password,
        },
        seed,
        sessions: cli.sessions,
        steps: cli.steps,
        concurrency: cli.concurrency.max(1),
        prefix: cli.schema_prefix,
        self_check: cli.self_check,
        replay,
        timeout: Duration::from_secs(cli.timeout_secs.max(1)),
        kill_wait: Duration::from_secs(cli.kill_wait_secs.max(1)),
        verbose: !cli.quiet,
        transcripts: cli.transcripts,
        every_difference: cli.every_difference,
        deadline: cli
            .deadline_secs
            .map(|s| std::time::Instant::now() + Duration::from_secs(s)),
    };
    let mut stdout = std::io::stdout();
    let summary = match run(&opts, &mut stdout) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-difftest: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &cli.json {
        let text = match serde_json::to_string_pretty(&summary) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sluice-difftest: JSON summary: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("sluice-difftest: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
