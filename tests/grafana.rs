//! The Grafana dashboard (docs/grafana/sluice.json) against a real Prometheus scraping a real
//! sluice: every panel's query returns data. Debian's `prometheus` package provides the server
//! (scripts/test.sh installs it); the test runs its own on a free loopback port with a private
//! data directory, scraping sluice's metrics endpoint every second, and stops it at the end.

mod common;

use common::{free_port, metric, metric_sum, repo_root, scrape, wait_for, Config, Sluice};
use mysql::prelude::Queryable;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What Grafana's variables become in the queries sent here: every instance and worker (the
/// dashboard's "All"), and a rate window that holds every sample this short test scrapes.
const SUBSTITUTIONS: [(&str, &str); 6] = [
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
    ("${worker}", ".*"),
    ("$worker", ".*"),
];

fn substitute(expr: &str) -> String {
    let mut q = expr.to_string();
    for (var, value) in SUBSTITUTIONS {
        q = q.replace(var, value);
    }
    assert!(
        !q.contains('$'),
        "a variable the test does not know in {expr:?} (after substitution: {q:?})"
    );
    q
}

/// A Prometheus server of the test's own; stopped (SIGTERM, then SIGKILL) and its directory
/// deleted when dropped. It also dies with the test process (PR_SET_PDEATHSIG) if the test is
/// killed before the drop runs.
struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Prometheus {
    fn binary() -> PathBuf {
        let bin = std::env::var_os("SLUICE_TEST_PROMETHEUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
        assert!(
            bin.is_file(),
            "no Prometheus server at {}: scripts/test.sh installs it (Debian's `prometheus` \
             package, ensure_prometheus in scripts/lib/deps.sh); or set SLUICE_TEST_PROMETHEUS \
             to a prometheus binary",
            bin.display()
        );
        bin
    }

    /// Starts Prometheus scraping `127.0.0.1:target` every second (job `sluice`); returns once
    /// it answers /-/ready.
    fn start(target: u16) -> Prometheus {
        use std::os::unix::process::CommandExt;
        let bin = Prometheus::binary();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "sluice-test-prometheus-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sluice\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut p = Prometheus {
            child: Some(child),
            port,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(p.port, "/-/ready") {
                return p;
            }
            if let Some(st) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("prometheus exited ({st}) during start:\n{}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 30 s:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query (evaluated now); its `data` (resultType, result). Panics when the query
    /// fails: a query Prometheus rejects is a broken panel.
    fn query(&self, q: &str) -> Value {
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        let (status, body) = http_get(self.port, &path)
            .unwrap_or_else(|e| panic!("query {q:?}: no answer from prometheus: {e}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {q:?}: HTTP {status}, not JSON ({e}): {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "query {q:?} failed: HTTP {status}: {body}"
        );
        v["data"].clone()
    }

    /// The query's result series (a vector); empty when there is none.
    fn series(&self, q: &str) -> Vec<Value> {
        let data = self.query(q);
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => data["result"].as_array().unwrap().clone(),
            // A scalar is one value: data.
            Some("scalar") => vec![data["result"].clone()],
            other => panic!("query {q:?}: unexpected result type {other:?}: {data}"),
        }
    }

    /// The single value of a query that returns one series (None: no series).
    fn value(&self, q: &str) -> Option<f64> {
        let s = self.series(q);
        s.first().map(sample_value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- last lines of prometheus's log ({}) ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of one sample of an instant vector (`[timestamp, "value"]`).
fn sample_value(s: &Value) -> f64 {
    let v = if s.is_array() { s } else { &s["value"] };
    v[1].as_str()
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no value in {s}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plain HTTP/1.0 GET to 127.0.0.1:`port`; (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no header end: {text}"),
        )
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no status: {head}"),
            )
        })?;
    Ok((status, body.to_string()))
}

/// Every panel of the dashboard, rows' nested panels included (rows themselves left out).
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// `a` holds the only backend (a transaction) while `c`'s statement waits for it until
/// queue_timeout_ms and fails.
fn pool_timeout(a: &mut mysql::Conn, c: &mut mysql::Conn) {
    a.query_drop("BEGIN").unwrap();
    a.query_drop("SELECT 1").unwrap();
    let e = c.query_drop("SELECT 3");
    assert!(e.is_err(), "c was served while a held the only backend");
    a.query_drop("COMMIT").unwrap();
}

#[test]
fn every_panel_of_the_grafana_dashboard_has_data_in_a_real_prometheus() {
    let started = Instant::now();
    // No Prometheus is a failure (with how to get one), before anything else starts.
    Prometheus::binary();
    // The dashboard first: no server needed to find it malformed.
    let path = repo_root().join("docs/grafana/sluice.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dash: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let panels = panels(&dash);
    assert!(
        panels.len() >= 10,
        "the dashboard has {} panels, expected at least 10",
        panels.len()
    );
    let mut ids = std::collections::HashSet::new();
    let mut queries = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].to_string()),
            "panel id {} twice",
            p["id"]
        );
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?}: its data source is the DS_PROMETHEUS variable"
        );
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| panic!("panel {title:?}: a target without an expr: {t}"));
            queries.push((title.to_string(), expr.to_string(), substitute(expr)));
        }
    }
    // The dashboard's variables: label_values(SELECTOR, LABEL) queries.
    let mut variables = Vec::new();
    for v in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .unwrap_or_else(|| panic!("variable {}: no query", v["name"]));
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(…): {q}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        variables.push((
            v["name"].as_str().unwrap().to_string(),
            substitute(selector.trim()),
            label.trim().to_string(),
        ));
    }

    // A sluice with one backend connection, so checkouts queue and time out.
    let mport = free_port();
    let s = Sluice::with(
        Config::default()
            .top(&format!(
                "shards = 1\nmetrics_listen = \"127.0.0.1:{mport}\""
            ))
            .pool("mode = \"transaction\"\nsize = 1\nqueue_timeout_ms = 1000\n"),
    );
    // Every client first (logging in while the only backend is held would wait too).
    let mut a = s.conn();
    let mut b = s.conn();
    let mut c = s.conn();
    let mut p = s.conn();
    // Before Prometheus's first scrape: the pool's series, and a first pool timeout. sluice
    // lists an error kind once it happened; a series that appears at 1 has no rate until it
    // moves again, so the errors panel shows the second one.
    pool_timeout(&mut a, &mut c);

    let prom = Prometheus::start(mport);
    // A scrape before the traffic: every counter's rate then spans it.
    wait_for(
        "prometheus's first scrape of sluice (with the first pool timeout)",
        Duration::from_secs(20),
        || {
            prom.value("sum(sluice_errors_total{job=\"sluice\",kind=\"pool_timeout\"})")
                .filter(|v| *v >= 1.0)
        },
    );

    // A checkout that queues, then is served: `a`'s transaction holds the only backend.
    a.query_drop("BEGIN").unwrap();
    a.query_drop("SELECT 1").unwrap();
    let h = std::thread::spawn(move || {
        let v: i64 = b.query_first("SELECT 2").unwrap().unwrap();
        (b, v)
    });
    wait_for(
        "b's statement to queue for the backend",
        Duration::from_secs(10),
        || (metric(&scrape(mport), "sluice_clients_waiting{worker=\"0\"}") == 1.0).then_some(()),
    );
    a.query_drop("COMMIT").unwrap();
    let (_b, v) = h.join().unwrap();
    assert_eq!(v, 2);
    // A checkout that gives up at queue_timeout_ms: an error sluice counts (pool_timeout).
    pool_timeout(&mut a, &mut c);
    drop(c);
    // A failed login (auth_failures_total; errors_total leaves it out, as a client leaving), and
    // a SQL error the backend answers (passed on; not an error of sluice's either).
    let bad = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(s.port)
        .user(Some("app"))
        .pass(Some("wrong password"))
        .prefer_socket(false);
    assert!(mysql::Conn::new(bad).is_err(), "a wrong password logged in");
    assert!(a.query_drop("SELEC 1").is_err());
    // (sluice keeps the backend for the error's diagnostics while `a` may read them: `a`
    // leaves, which gives it back.)
    drop(a);
    // The only backend connection back in the pool before the next client needs it (on a busy
    // machine `a`'s session may still be on its way to giving it up).
    wait_for(
        "the backend connection back in the pool",
        Duration::from_secs(10),
        || {
            let m = scrape(mport);
            (metric_sum(&m, "sluice_backend_connections{", &["state=\"in_use\""]) == 0.0)
                .then_some(())
        },
    );
    // A pin (user variable), released when its client leaves.
    p.query_drop("SET @grafana_test = 1").unwrap();
    let x: i64 = p.query_first("SELECT @grafana_test").unwrap().unwrap();
    assert_eq!(x, 1);
    drop(p);

    // Sluice has counted it all...
    let counted = wait_for(
        "sluice to count the failed login and the second pool timeout",
        Duration::from_secs(10),
        || {
            let m = scrape(mport);
            let failed = metric(&m, "sluice_auth_failures_total{worker=\"0\"}");
            let timeouts = metric_sum(&m, "sluice_errors_total{", &["kind=\"pool_timeout\""]);
            (failed >= 1.0 && timeouts >= 2.0)
                .then(|| metric(&m, "sluice_commands_total{worker=\"0\"}"))
        },
    );
    // ...Prometheus has scraped that, and once more (a series new since the traffic needs two
    // samples for a rate).
    let scrapes = wait_for(
        "prometheus to scrape sluice after the traffic",
        Duration::from_secs(20),
        || {
            let seen = prom.value("sum(sluice_commands_total{job=\"sluice\"})")?;
            (seen >= counted)
                .then(|| prom.value("count_over_time(up{job=\"sluice\"}[10m])"))
                .flatten()
        },
    );
    wait_for("prometheus's next scrape", Duration::from_secs(20), || {
        prom.value("count_over_time(up{job=\"sluice\"}[10m])")
            .filter(|n| *n > scrapes)
    });
    assert_eq!(
        prom.value("up{job=\"sluice\"}"),
        Some(1.0),
        "prometheus scrapes sluice"
    );

    // Every variable lists values...
    for (name, selector, label) in &variables {
        let series = prom.series(selector);
        assert!(
            !series.is_empty() && series.iter().all(|x| x["metric"][label].is_string()),
            "variable {name}: {selector} has no series with label {label}: {series:?}"
        );
    }
    // ...and every panel's query returns data.
    let mut report = Vec::new();
    for (title, expr, q) in &queries {
        let series = prom.series(q);
        assert!(
            !series.is_empty(),
            "panel {title:?}: no data for\n{expr}\n(sent: {q})"
        );
        if q.starts_with("histogram_quantile(") {
            // A checkout queued between two scrapes: the quantile is a number, not NaN.
            assert!(
                series.iter().any(|x| sample_value(x).is_finite()),
                "panel {title:?}: the queue wait quantile is NaN although a checkout queued: \
                 {series:?}"
            );
        }
        report.push(format!("{:>3} series  {title}: {q}", series.len()));
    }
    eprintln!("{}", report.join("\n"));
    let errors = prom.series("sum by (kind) (rate(sluice_errors_total{job=\"sluice\"}[1m]))");
    assert!(
        errors.iter().any(|x| sample_value(x) > 0.0),
        "the errors panel shows the pool timeout: {errors:?}"
    );
    eprintln!(
        "{} panels, {} queries, {} variables checked in {:?}",
        panels.len(),
        queries.len(),
        variables.len(),
        started.elapsed()
    );
}
