//! Several private MariaDB servers of a test's own (`scripts/mariadb-cluster.sh`): independent
//! equivalent servers, or a primary with GTID replicas that a test can kill, freeze, restart and
//! promote. Everything is stopped and deleted when the [`Cluster`] is dropped (a panicking test
//! included); a watchdog process does it when the test process dies without dropping it (nextest
//! killing a test that ran past its deadline).
#![allow(dead_code)]

use super::{repo_root, wait_for};
use mysql::prelude::Queryable;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One server of a cluster: `DIR/sI` (its data, log and Unix socket), listening on 127.0.0.1.
pub struct Server {
    pub index: usize,
    pub port: u16,
    pub pid: u32,
    pub dir: PathBuf,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Options for a TCP connection as app/app to database app (30 s read and write timeouts), to
    /// adjust before connecting.
    pub fn opts(&self) -> mysql::OptsBuilder {
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some("app"))
            .pass(Some("app"))
            .db_name(Some("app"))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
            .read_timeout(Some(Duration::from_secs(30)))
            .write_timeout(Some(Duration::from_secs(30)))
    }

    /// A connection as app/app to database app over TCP. On a replica `app` cannot write
    /// (read_only binds it: error 1290).
    pub fn conn(&self) -> mysql::Conn {
        mysql::Conn::new(self.opts())
            .unwrap_or_else(|e| panic!("connect to s{} ({}) as app: {e}", self.index, self.addr()))
    }

    /// A root connection over the server's Unix socket (root may write on a replica too).
    pub fn root(&self) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(self.dir.join("mariadb.sock").display().to_string()))
            .user(Some("root"))
            .prefer_socket(true)
            .read_timeout(Some(Duration::from_secs(60)))
            .write_timeout(Some(Duration::from_secs(60)));
        mysql::Conn::new(opts)
            .unwrap_or_else(|e| panic!("root connection to s{} ({}): {e}", self.index, self.addr()))
    }

    /// The end of the server's error log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("mariadb.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Servers s0 … s{N-1} under `dir`. For a replicated cluster, `primary` is the index of the
/// current primary (s0 at first); the others replicate from it.
pub struct Cluster {
    pub dir: PathBuf,
    pub servers: Vec<Server>,
    pub primary: Option<usize>,
    watchdog: Option<Child>,
}

fn script() -> PathBuf {
    repo_root().join("scripts/mariadb-cluster.sh")
}

/// Waits for `child` at most `limit`; kills it then. Never panics (Drop uses it).
fn wait_bounded(mut child: Child, limit: Duration) -> Result<Output, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "did not finish within {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Runs `scripts/mariadb-cluster.sh ARGS` (bounded by `limit`); its stdout, or an error with its
/// stderr.
fn run_script(args: &[&str], limit: Duration) -> Result<String, String> {
    run_script_env(args, limit, &[])
}

/// [`run_script`] with environment variables set for the script.
fn run_script_env(args: &[&str], limit: Duration, env: &[(&str, &str)]) -> Result<String, String> {
    let child = Command::new("bash")
        .arg(script())
        .args(args)
        .env_remove("MARIADB_PORT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", script().display()))?;
    let out = wait_bounded(child, limit)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The value of `KEY=value` in the script's output.
fn assignment(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

fn cluster_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!(
        "sluice-test-cluster-{}-{}-{nanos:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A process (in a session of its own, so that killing the test's process group spares it) that
/// stops the cluster once the test process is gone, unless the cluster is gone first. Bounded:
/// it gives up after 24 hours.
fn spawn_watchdog(dir: &Path) -> Option<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(
            r#"for _ in $(seq 1 86400); do
                 kill -0 "$1" 2>/dev/null && [ -d "$2" ] || break
                 sleep 1
               done
               if [ -d "$2" ] && ! kill -0 "$1" 2>/dev/null; then
                 exec bash "$3" stop "$2"
               fi"#,
        )
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(script())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().ok()
}

impl Cluster {
    /// `n` independent, equivalent servers (production profile, server_id I+1 for sI).
    pub fn start(n: usize) -> Cluster {
        Cluster::launch(n, false, None)
    }

    /// `n` independent servers started with extra `mariadbd` flags (`MARIADB_EXTRA_ARGS`; kept
    /// at restarts until [`Cluster::set_extra_args`] changes them).
    pub fn start_with_args(n: usize, extra: &str) -> Cluster {
        Cluster::launch(n, false, Some(extra))
    }

    /// The extra `mariadbd` flags server `i` gets at its next [`Cluster::restart`].
    pub fn set_extra_args(&self, i: usize, extra: &str) {
        std::fs::write(self.servers[i].dir.join("extra-args"), extra).unwrap();
    }

    /// `n` servers: s0 the primary, s1 … s{n-1} read-only GTID replicas of it, caught up.
    pub fn start_replicated(n: usize) -> Cluster {
        Cluster::launch(n, true, None)
    }

    fn launch(n: usize, replicated: bool, extra: Option<&str>) -> Cluster {
        assert!(n > 0, "a cluster needs a server");
        let dir = cluster_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // Built before the servers start: a failed start stops whatever did (Drop).
        let mut c = Cluster {
            dir: dir.clone(),
            servers: Vec::new(),
            primary: None,
            watchdog: None,
        };
        c.watchdog = spawn_watchdog(&dir);
        let ns = n.to_string();
        let d = dir.display().to_string();
        let mut args = vec!["start"];
        if replicated {
            args.push("--replicas");
        }
        args.extend([d.as_str(), ns.as_str()]);
        let started = Instant::now();
        let env: Vec<(&str, &str)> = extra
            .map(|e| ("MARIADB_EXTRA_ARGS", e))
            .into_iter()
            .collect();
        let out = run_script_env(&args, Duration::from_secs(60 + 30 * n as u64), &env)
            .unwrap_or_else(|e| panic!("mariadb-cluster.sh start {n} failed: {e}"));
        for i in 0..n {
            let get = |k: &str| {
                assignment(&out, &format!("S{i}_{k}"))
                    .unwrap_or_else(|| panic!("no S{i}_{k} in the output of start:\n{out}"))
            };
            c.servers.push(Server {
                index: i,
                port: get("PORT").parse().unwrap(),
                pid: get("PID").parse().unwrap(),
                dir: PathBuf::from(get("DIR")),
            });
        }
        c.primary = assignment(&out, "CLUSTER_PRIMARY").map(|p| p.parse().unwrap());
        eprintln!(
            "cluster of {n} ({}) started in {:?} in {}",
            if replicated {
                "replicated"
            } else {
                "independent"
            },
            started.elapsed(),
            dir.display()
        );
        c
    }

    /// host:port of every server, in order (for sluice's `backends`).
    pub fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(Server::addr).collect()
    }

    /// The current primary of a replicated cluster.
    pub fn primary(&self) -> &Server {
        &self.servers[self.primary.expect("not a replicated cluster")]
    }

    fn script(&self, cmd: &str, i: usize, limit: Duration) -> String {
        assert!(i < self.servers.len(), "no server {i}");
        let d = self.dir.display().to_string();
        run_script(&[cmd, &d, &i.to_string()], limit).unwrap_or_else(|e| {
            panic!(
                "mariadb-cluster.sh {cmd} s{i} failed: {e}\ns{i}'s log:\n{}",
                self.servers[i].log_tail()
            )
        })
    }

    /// kill -9 server `i` (returns once the process is gone).
    pub fn kill9(&mut self, i: usize) {
        self.script("kill", i, Duration::from_secs(30));
    }

    /// Freezes server `i` (SIGSTOP): it stops answering, its connections stay open. Returns once
    /// every thread of it is stopped (the signal is asynchronous).
    pub fn sigstop(&self, i: usize) {
        let pid = self.servers[i].pid;
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let all_stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                tasks.flatten().all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the command name in parentheses.
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('T'))
                })
            })
        };
        wait_for(
            &format!("every thread of s{i} to stop"),
            Duration::from_secs(5),
            || all_stopped().then_some(()),
        );
    }

    /// Lets a frozen server `i` run again (SIGCONT).
    pub fn sigcont(&self, i: usize) {
        unsafe { libc::kill(self.servers[i].pid as i32, libc::SIGCONT) };
    }

    /// Stops server `i` if it runs (a killed one too) and starts it again on the same port and
    /// data; returns once it answers `app` over TCP. A replica comes back read-only, replicating
    /// from the current primary; a former primary comes back writable and replicating from
    /// nobody (see [`Cluster::rejoin`]).
    pub fn restart(&mut self, i: usize) {
        let out = self.script("restart", i, Duration::from_secs(90));
        self.servers[i].pid = assignment(&out, &format!("S{i}_PID"))
            .unwrap_or_else(|| panic!("no S{i}_PID in the output of restart:\n{out}"))
            .parse()
            .unwrap();
        let s = &self.servers[i];
        wait_for(
            &format!("s{i} to answer after its restart"),
            Duration::from_secs(30),
            || {
                let mut c = mysql::Conn::new(s.opts()).ok()?;
                c.query_first::<u8, _>("SELECT 1").ok()?
            },
        );
    }

    /// Makes replica `i` the primary; every other server that answers replicates from it
    /// afterwards. When the old primary answers, this is a switchover (it goes read-only first
    /// and nothing it wrote is lost); when it does not (killed, frozen), it is skipped.
    pub fn promote(&mut self, i: usize) {
        let out = self.script("promote", i, Duration::from_secs(120));
        self.primary = Some(
            assignment(&out, "CLUSTER_PRIMARY")
                .unwrap_or_else(|| panic!("no CLUSTER_PRIMARY in the output of promote:\n{out}"))
                .parse()
                .unwrap(),
        );
    }

    /// Makes server `i` (a restarted former primary, say) a read-only replica of the current
    /// primary, continuing from its own GTID position.
    pub fn rejoin(&mut self, i: usize) {
        self.script("rejoin", i, Duration::from_secs(60));
    }

    /// Waits (30 s at most) until every replica in `replicas` has applied everything the primary
    /// has written so far.
    pub fn wait_replicated(&self, replicas: &[usize]) {
        let pos: String = self
            .primary()
            .root()
            .query_first("SELECT @@gtid_binlog_pos")
            .unwrap()
            .unwrap_or_default();
        for &r in replicas {
            let mut c = self.servers[r].root();
            let got: Option<i64> = c
                .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
                .unwrap();
            if got != Some(0) {
                let status: Option<mysql::Row> = c.query_first("SHOW SLAVE STATUS").unwrap();
                panic!(
                    "s{r} did not reach the primary's GTID position {pos} within 30 s: {status:?}"
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.sigcont(i);
        }
        let d = self.dir.display().to_string();
        if let Err(e) = run_script(&["stop", &d], Duration::from_secs(90)) {
            eprintln!("mariadb-cluster.sh stop {d}: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
