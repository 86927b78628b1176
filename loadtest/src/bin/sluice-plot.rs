//! `sluice-plot`: pictures of the benchmark scripts' JSON results, as standalone SVG files.
//!
//! ```text
//! sluice-plot b3 target/bench/b3.json -o target/bench/b3.svg [--note TEXT]
//! sluice-plot million target/bench/million-*.json -o target/bench/million.svg [--note TEXT]
//! sluice-plot soak target/soak/samples.csv -o target/soak/soak.svg [--note TEXT]
//! ```
//!
//! - `b3` (from `scripts/bench-b3.sh`): queries/s per workload, direct / floor relay / sluice at
//!   each pool size as grouped bars, labelled with the ratio to direct (and sluice's to the
//!   floor), with the 0.9 × direct target marked; below, each proxy's CPU per query, the
//!   low-rate case included, with the targets marked.
//! - `million` (from `scripts/bench-million.sh`, one JSON per run): the active set's p50/p99 with
//!   N idle clients and without (same run) against N, and sluice's RSS per idle client against N.
//!   Several files combine into one picture (runs at several N; repeated runs at one N are all
//!   drawn, the line goes through their mean).
//! - `soak` (from `scripts/soak.sh`, `seconds,rss_kib,fds,phase` rows): sluice's RSS and open
//!   descriptors over the run, the warm-up's end marked, with the verdicts from the
//!   `summary.json` beside the CSV when there is one.
//!
//! The SVG is written by hand rather than with a plotting crate: two chart kinds (grouped bars,
//! lines over a log axis) are a few hundred lines, the output is plain text that diffs and
//! renders anywhere (GitHub's README included) with no font files, and the workspace's lock file
//! gains nothing (the `plotters` crate with only its SVG backend would add four crates for the
//! same pictures).
//!
//! Every picture carries where it comes from (script, date, commit, knobs from the JSON's
//! `meta`) and `--note` in red, e.g. "smoke run, not a measurement".

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Draws sluice's benchmark results (the scripts' JSON) as SVG.
#[derive(Debug, Parser)]
#[command(name = "sluice-plot", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Output SVG file.
    #[arg(short, long, global = true, value_name = "FILE")]
    out: Option<PathBuf>,
    /// A line drawn in red under the title (e.g. "smoke run, not a measurement").
    #[arg(long, global = true, value_name = "TEXT")]
    note: Option<String>,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Benchmark B3 (scripts/bench-b3.sh's b3.json): throughput and CPU per query.
    B3 {
        /// b3.json.
        json: PathBuf,
    },
    /// Benchmarks B1/B2 (scripts/bench-million.sh's million-N.json, one or more runs):
    /// active latency and sluice RSS per idle client against N.
    Million {
        /// One or more million-N.json.
        #[arg(required = true)]
        json: Vec<PathBuf>,
    },
    /// The soak (scripts/soak.sh's samples.csv): RSS and open descriptors over time.
    Soak {
        /// samples.csv.
        csv: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let read = |p: &PathBuf| -> Value {
        let text = std::fs::read_to_string(p)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", p.display())));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| fail(&format!("{} is not JSON: {e}", p.display())))
    };
    let (svg, default_out) = match &cli.what {
        What::B3 { json } => (
            b3(&read(json), cli.note.as_deref()),
            json.with_extension("svg"),
        ),
        What::Million { json } => {
            let runs: Vec<(String, Value)> = json.iter().map(|p| (file_name(p), read(p))).collect();
            let out = if json.len() == 1 {
                json[0].with_extension("svg")
            } else {
                json[0].with_file_name("million.svg")
            };
            (million(&runs, cli.note.as_deref()), out)
        }
        What::Soak { csv } => {
            let text = std::fs::read_to_string(csv)
                .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", csv.display())));
            let summary = std::fs::read_to_string(csv.with_file_name("summary.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            (
                soak(&text, &summary, cli.note.as_deref()),
                csv.with_extension("svg"),
            )
        }
    };
    let svg = svg.unwrap_or_else(|e| fail(&e));
    let out = cli.out.unwrap_or(default_out);
    std::fs::write(&out, svg)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
    eprintln!("sluice-plot: wrote {}", out.display());
}

fn fail(msg: &str) -> ! {
    eprintln!("sluice-plot: {msg}");
    std::process::exit(2);
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

// ------------------------------------------------------------------ SVG primitives

const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const INK: &str = "#222";
const GRID: &str = "#ddd";
const MUTED: &str = "#666";
const NOTE: &str = "#c00";

/// Fill colours by target: direct, the floor relay, sluice at the first and further pool sizes.
fn color(target: &str, index: usize) -> &'static str {
    match target {
        "direct" => "#9e9e9e",
        "floor" => "#4e79a7",
        "floor-glommio" => "#a0cbe8",
        _ => ["#f28e2b", "#e15759", "#b07aa1", "#76b7b2"][index % 4],
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Svg {
    w: f64,
    h: f64,
    body: String,
}

#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

impl Svg {
    fn new(w: f64, h: f64) -> Svg {
        Svg {
            w,
            h,
            body: String::new(),
        }
    }
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
            w.max(0.0),
            h.max(0.0)
        );
    }
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        stroke: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let dash = dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="{width}"{dash}/>"#
        );
    }
    fn polyline(&mut self, pts: &[(f64, f64)], stroke: &str, width: f64, dash: Option<&str>) {
        if pts.len() < 2 {
            return;
        }
        let dash = dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="{width}"{dash}/>"#,
            p.join(" ")
        );
    }
    fn circle(&mut self, x: f64, y: f64, r: f64, fill: &str, hollow: bool) {
        if hollow {
            let _ = writeln!(
                self.body,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="white" stroke="{fill}" stroke-width="1.5"/>"#
            );
        } else {
            let _ = writeln!(
                self.body,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}"/>"#
            );
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, x: f64, y: f64, s: &str, size: f64, fill: &str, anchor: Anchor, bold: bool) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let weight = if bold { r#" font-weight="bold""# } else { "" };
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"{weight}>{}</text>"#,
            esc(s)
        );
    }
    /// Text with a white outline, readable over bars and lines.
    fn halo_text(&mut self, x: f64, y: f64, s: &str, size: f64, fill: &str, anchor: Anchor) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" fill="{fill}" text-anchor="{anchor}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            esc(s)
        );
    }
    fn vtext(&mut self, x: f64, y: f64, s: &str, size: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" fill="{fill}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
            esc(s)
        );
    }
    fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\">\n\
             <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n{}</svg>\n",
            self.body,
            w = self.w,
            h = self.h
        )
    }
}

/// Compact number: 57331 → "57.3k", 1500000 → "1.5M", 29.14 → "29.1", 0.731 → "0.73".
fn num(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.2}", v / 1e3)))
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.2}"))
    }
}

/// Ticks for a linear axis from 0 to at least `max`: (ticks, top of the axis).
fn linear_ticks(max: f64) -> (Vec<f64>, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let top = (max / step).ceil() * step;
    let n = (top / step).round() as usize;
    ((0..=n).map(|i| i as f64 * step).collect(), top)
}

/// A plotting area with a y axis: linear from 0 to `top`, or logarithmic over
/// [10^`lo`, 10^`top`] when `log` is set.
struct Frame {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    top: f64,
    lo: f64,
    log: bool,
}

impl Frame {
    fn py(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.max(1e-9).log10() - self.lo) / (self.top - self.lo)
        } else {
            v / self.top
        };
        self.y + self.h - t.clamp(-0.02, 1.05) * self.h
    }
    /// Grid, y tick labels, axis title.
    fn y_axis(svg: &mut Svg, x: f64, y: f64, w: f64, h: f64, max: f64, title: &str) -> Frame {
        let (ticks, top) = linear_ticks(max * 1.12);
        let f = Frame {
            x,
            y,
            w,
            h,
            top,
            lo: 0.0,
            log: false,
        };
        f.grid(svg, &ticks, title);
        f
    }
    /// A logarithmic y axis over the decades around [min, max] (positive values).
    #[allow(clippy::too_many_arguments)]
    fn log_y_axis(
        svg: &mut Svg,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        min: f64,
        max: f64,
        title: &str,
    ) -> Frame {
        let lo = min.max(1e-9).log10().floor();
        let top = (max.max(min) * 1.5).log10().max(lo + 1.0);
        let f = Frame {
            x,
            y,
            w,
            h,
            top,
            lo,
            log: true,
        };
        let mut ticks = Vec::new();
        let mut e = lo as i32;
        let steps: &[f64] = if top - lo > 3.0 {
            &[1.0]
        } else {
            &[1.0, 2.0, 5.0]
        };
        while (e as f64) <= top {
            for &m in steps {
                let v = m * 10f64.powi(e);
                if v.log10() <= top + 1e-9 {
                    ticks.push(v);
                }
            }
            e += 1;
        }
        f.grid(svg, &ticks, title);
        f
    }
    fn grid(&self, svg: &mut Svg, ticks: &[f64], title: &str) {
        for &t in ticks {
            let py = self.py(t);
            svg.line(self.x, py, self.x + self.w, py, GRID, 1.0, None);
            svg.text(
                self.x - 6.0,
                py + 4.0,
                &num(t),
                11.0,
                MUTED,
                Anchor::End,
                false,
            );
        }
        svg.line(
            self.x,
            self.y + self.h,
            self.x + self.w,
            self.y + self.h,
            INK,
            1.0,
            None,
        );
        svg.vtext(self.x - 48.0, self.y + self.h / 2.0, title, 12.0, INK);
    }
}

fn header(svg: &mut Svg, title: &str, subtitle: &str, note: Option<&str>) -> f64 {
    svg.text(20.0, 28.0, title, 17.0, INK, Anchor::Start, true);
    svg.text(20.0, 47.0, subtitle, 11.5, MUTED, Anchor::Start, false);
    match note {
        Some(n) if !n.is_empty() => {
            svg.text(20.0, 66.0, n, 13.0, NOTE, Anchor::Start, true);
            78.0
        }
        _ => 60.0,
    }
}

fn footer(svg: &mut Svg, lines: &[String]) {
    let mut y = svg.h - 10.0 - 14.0 * (lines.len().saturating_sub(1)) as f64;
    for l in lines {
        svg.text(20.0, y, l, 10.5, MUTED, Anchor::Start, false);
        y += 14.0;
    }
}

fn legend(svg: &mut Svg, x: f64, y: f64, items: &[(String, String)]) {
    let mut x = x;
    for (label, fill) in items {
        svg.rect(x, y - 10.0, 12.0, 12.0, fill);
        svg.text(x + 17.0, y, label, 12.0, INK, Anchor::Start, false);
        x += 30.0 + 7.0 * label.chars().count() as f64;
    }
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// "date · commit · host" from a result's `meta`.
fn provenance(meta: &Value) -> String {
    let parts: Vec<String> = ["date", "commit", "host"]
        .iter()
        .map(|k| s(&meta[*k]))
        .filter(|v| !v.is_empty())
        .collect();
    parts.join(" · ")
}

// ------------------------------------------------------------------ B3

fn b3(r: &Value, note: Option<&str>) -> Result<String, String> {
    let targets: Vec<String> = r["targets"]
        .as_array()
        .ok_or("b3.json has no \"targets\"")?
        .iter()
        .map(s)
        .collect();
    let workloads = r["workloads"]
        .as_array()
        .ok_or("b3.json has no \"workloads\"")?;
    let proxies: Vec<&String> = targets.iter().filter(|t| *t != "direct").collect();
    let tcolor = |t: &str| {
        let i = targets
            .iter()
            .filter(|x| !matches!(x.as_str(), "direct" | "floor" | "floor-glommio"))
            .position(|x| x == t);
        color(t, i.unwrap_or(0))
    };

    let mut svg = Svg::new(980.0, 800.0);
    let title = "B3: throughput of the hop (direct, floor relay, sluice; same run)";
    let subtitle = format!(
        "{} client threads, {} s per run, proxies → MariaDB over {}; sluice shards {}, floor threads {}",
        s(&r["threads"]),
        f(&r["duration_s"]).map_or("?".into(), num),
        s(&r["backend"]),
        match r["shards"].as_u64() {
            Some(0) | None => "one per core".to_string(),
            Some(n) => n.to_string(),
        },
        s(&r["floor_threads"])
    );
    let top = header(&mut svg, title, &subtitle, note);

    // Panel 1: queries/s.
    let legend_items: Vec<(String, String)> = targets
        .iter()
        .map(|t| (label(t), tcolor(t).to_string()))
        .collect();
    legend(&mut svg, 90.0, top + 14.0, &legend_items);
    svg.line(90.0, top + 32.0, 114.0, top + 32.0, INK, 1.5, Some("5,3"));
    svg.text(
        120.0,
        top + 36.0,
        "0.9 × direct (target)",
        12.0,
        INK,
        Anchor::Start,
        false,
    );
    let qps = |w: &Value, t: &str| f(&w["results"][t]["qps"]);
    let max_q = workloads
        .iter()
        .flat_map(|w| targets.iter().filter_map(move |t| qps(w, t)))
        .fold(0.0, f64::max);
    let fr = Frame::y_axis(&mut svg, 90.0, top + 40.0, 860.0, 270.0, max_q, "queries/s");
    let gw = fr.w / workloads.len().max(1) as f64;
    let bw = (gw * 0.8 / targets.len().max(1) as f64).min(70.0);
    for (gi, w) in workloads.iter().enumerate() {
        let gx = fr.x + gi as f64 * gw + (gw - bw * targets.len() as f64) / 2.0;
        for (ti, t) in targets.iter().enumerate() {
            let x = gx + ti as f64 * bw;
            let res = &w["results"][t.as_str()];
            let Some(q) = qps(w, t) else {
                svg.text(
                    x + bw / 2.0,
                    fr.py(0.0) - 4.0,
                    "n/a",
                    10.0,
                    MUTED,
                    Anchor::Middle,
                    false,
                );
                continue;
            };
            let y = fr.py(q);
            svg.rect(x + 2.0, y, bw - 4.0, fr.py(0.0) - y, tcolor(t));
            if t == "direct" {
                svg.text(
                    x + bw / 2.0,
                    y - 4.0,
                    &num(q),
                    10.5,
                    INK,
                    Anchor::Middle,
                    false,
                );
            } else {
                let rd = f(&res["ratio_to_direct"]).map_or("–".into(), |v| format!("{v:.2}×"));
                let rf = f(&res["ratio_to_floor"]);
                let yy = if rf.is_some() { y - 15.0 } else { y - 4.0 };
                svg.text(x + bw / 2.0, yy, &rd, 10.5, INK, Anchor::Middle, true);
                if let Some(rf) = rf {
                    svg.text(
                        x + bw / 2.0,
                        y - 4.0,
                        &format!("{rf:.2}× fl"),
                        9.5,
                        MUTED,
                        Anchor::Middle,
                        false,
                    );
                }
            }
        }
        if let Some(d) = qps(w, "direct") {
            let y = fr.py(0.9 * d);
            let x0 = gx + bw;
            svg.line(
                x0,
                y,
                gx + bw * targets.len() as f64,
                y,
                INK,
                1.5,
                Some("5,3"),
            );
        }
        svg.text(
            fr.x + gi as f64 * gw + gw / 2.0,
            fr.py(0.0) + 17.0,
            &s(&w["name"]),
            12.0,
            INK,
            Anchor::Middle,
            false,
        );
        let errs: u64 = targets
            .iter()
            .filter_map(|t| w["results"][t.as_str()]["errors"].as_u64())
            .sum();
        if errs > 0 {
            svg.text(
                fr.x + gi as f64 * gw + gw / 2.0,
                fr.py(0.0) + 31.0,
                &format!("{errs} errors"),
                11.0,
                NOTE,
                Anchor::Middle,
                true,
            );
        }
    }
    svg.text(
        fr.x + fr.w,
        top + 36.0,
        "bar labels: ratio to direct; “fl”: ratio to the floor relay",
        10.5,
        MUTED,
        Anchor::End,
        false,
    );

    // Panel 2: CPU per query of each proxy, the throughput workloads and the low-rate case.
    let mut groups: Vec<(String, &Value, f64)> = workloads
        .iter()
        .map(|w| (s(&w["name"]), &w["results"], 8.0))
        .collect();
    let low = &r["low_rate"];
    if low.is_object() {
        groups.push((
            format!(
                "low rate: {} clients, {} q/s",
                s(&low["clients"]),
                f(&low["rate"]).map_or("?".into(), num)
            ),
            &low["results"],
            20.0,
        ));
    }
    let p2 = top + 40.0 + 270.0 + 75.0;
    svg.text(
        20.0,
        p2 - 12.0,
        "CPU time of each proxy per query (utime + stime from /proc/PID/stat ÷ queries)",
        13.0,
        INK,
        Anchor::Start,
        true,
    );
    let cpu = |res: &Value, t: &str| f(&res[t]["cpu_us_per_query"]);
    let max_c = groups
        .iter()
        .flat_map(|(_, res, target)| proxies.iter().filter_map(|t| cpu(res, t)).chain([*target]))
        .fold(0.0, f64::max);
    let fr = Frame::y_axis(
        &mut svg,
        90.0,
        p2 + 10.0,
        860.0,
        250.0,
        max_c,
        "µs of CPU per query",
    );
    let gw = fr.w / groups.len().max(1) as f64;
    let bw = (gw * 0.75 / proxies.len().max(1) as f64).min(70.0);
    for (gi, (name, res, target)) in groups.iter().enumerate() {
        let gx = fr.x + gi as f64 * gw + (gw - bw * proxies.len() as f64) / 2.0;
        for (ti, t) in proxies.iter().enumerate() {
            let x = gx + ti as f64 * bw;
            match cpu(res, t) {
                Some(c) => {
                    let y = fr.py(c);
                    svg.rect(x + 2.0, y, bw - 4.0, fr.py(0.0) - y, tcolor(t));
                    svg.text(
                        x + bw / 2.0,
                        y - 4.0,
                        &num(c),
                        10.5,
                        INK,
                        Anchor::Middle,
                        false,
                    );
                }
                None => svg.text(
                    x + bw / 2.0,
                    fr.py(0.0) - 4.0,
                    "n/a",
                    10.0,
                    MUTED,
                    Anchor::Middle,
                    false,
                ),
            }
        }
        let y = fr.py(*target);
        let x1 = gx + bw * proxies.len() as f64 + 6.0;
        svg.line(gx - 6.0, y, x1, y, NOTE, 1.2, Some("5,3"));
        svg.halo_text(
            x1,
            y - 4.0,
            &format!("≤ {} µs", num(*target)),
            10.0,
            NOTE,
            Anchor::End,
        );
        svg.text(
            fr.x + gi as f64 * gw + gw / 2.0,
            fr.py(0.0) + 17.0,
            name,
            12.0,
            INK,
            Anchor::Middle,
            false,
        );
    }
    svg.text(
        fr.x + fr.w,
        p2 - 12.0,
        "red dashes: sluice's target",
        10.5,
        NOTE,
        Anchor::End,
        false,
    );

    let mut foot = vec![format!("scripts/bench-b3.sh · {}", provenance(&r["meta"]))];
    let cmd = s(&r["meta"]["command"]);
    if !cmd.is_empty() {
        foot.push(cmd);
    }
    foot.push("Ratios compare runs seconds apart in one run of the script; absolute numbers on a shared box mean little.".into());
    footer(&mut svg, &foot);
    Ok(svg.finish())
}

fn label(t: &str) -> String {
    match t {
        "direct" => "direct".into(),
        "floor" => "floor relay".into(),
        "floor-glommio" => "floor relay, glommio".into(),
        _ => match t.strip_prefix("sluice-") {
            Some(p) => format!("sluice pool {p}"),
            None => t.into(),
        },
    }
}

// ------------------------------------------------------------------ million

struct Point {
    n: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    p50_base: Option<f64>,
    p99_base: Option<f64>,
    rss: Option<f64>,
}

/// Log-scale x axis over [lo, hi] (idle clients).
struct LogX {
    x: f64,
    w: f64,
    lo: f64,
    hi: f64,
}

impl LogX {
    fn new(x: f64, w: f64, min: f64, max: f64) -> LogX {
        let (mut lo, mut hi) = (min.max(1.0).log10(), max.max(1.0).log10());
        // Room on both sides; one N sits in the middle.
        let pad = ((hi - lo) * 0.08).max(0.35);
        lo -= pad;
        hi += pad;
        LogX { x, w, lo, hi }
    }
    fn px(&self, n: f64) -> f64 {
        self.x + (n.max(1.0).log10() - self.lo) / (self.hi - self.lo) * self.w
    }
    fn ticks(&self, svg: &mut Svg, fr: &Frame) {
        let mut e = self.lo.ceil() as i32;
        while (e as f64) <= self.hi {
            for m in [1.0, 2.0, 5.0] {
                let n = m * 10f64.powi(e);
                let l = n.log10();
                if l < self.lo || l > self.hi {
                    continue;
                }
                let px = self.px(n);
                svg.line(
                    px,
                    fr.y,
                    px,
                    fr.y + fr.h,
                    GRID,
                    if m == 1.0 { 1.0 } else { 0.5 },
                    None,
                );
                svg.text(
                    px,
                    fr.y + fr.h + 15.0,
                    &num(n),
                    10.5,
                    MUTED,
                    Anchor::Middle,
                    false,
                );
            }
            e += 1;
        }
    }
}

fn million(runs: &[(String, Value)], note: Option<&str>) -> Result<String, String> {
    let mut pts: Vec<Point> = Vec::new();
    let mut foot = Vec::new();
    let mut hosts: Vec<String> = Vec::new();
    for (name, r) in runs {
        let n = f(&r["n"])
            .ok_or_else(|| format!("{name}: no \"n\" (not a bench-million.sh summary?)"))?;
        let b2 = &r["b2"];
        pts.push(Point {
            n,
            p50: f(&b2["with_idle_us"]["p50"]),
            p99: f(&b2["with_idle_us"]["p99"]),
            p50_base: f(&b2["without_idle_us"]["p50"]),
            p99_base: f(&b2["without_idle_us"]["p99"]),
            rss: f(&r["b1"]["sluice_rss_per_idle_client_bytes"]),
        });
        let meta = &r["meta"];
        let when: Vec<String> = [s(&meta["date"]), s(&meta["commit"])]
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect();
        foot.push(format!(
            "{name}: N = {}, {} sluice process(es), {} active at {}/s{}",
            num(n),
            s(&r["sluice_workers"]),
            s(&b2["active"]),
            f(&b2["rate"]).map_or("?".into(), num),
            if when.is_empty() {
                String::new()
            } else {
                format!(" · {}", when.join(" · "))
            }
        ));
        let host = s(&meta["host"]);
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if !hosts.is_empty() {
        foot.push(format!("scripts/bench-million.sh on {}", hosts.join("; ")));
    }
    pts.sort_by(|a, b| a.n.total_cmp(&b.n));
    let nmin = pts.first().map_or(1.0, |p| p.n);
    let nmax = pts.last().map_or(1.0, |p| p.n);

    let mut svg = Svg::new(980.0, 800.0 + 14.0 * foot.len().saturating_sub(1) as f64);
    let top = header(
        &mut svg,
        "B1 + B2: a million clients (scripts/bench-million.sh)",
        "the active set's latency with N idle clients connected and without (same run); sluice RSS per idle client",
        note,
    );

    // Panel 1: latency.
    const P50: &str = "#4e79a7";
    const P99: &str = "#e15759";
    let lats: Vec<f64> = pts
        .iter()
        .flat_map(|p| [p.p50, p.p99, p.p50_base, p.p99_base])
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    let lat_max = lats.iter().copied().fold(0.0, f64::max);
    let lat_min = lats.iter().copied().fold(f64::INFINITY, f64::min);
    // Latencies spread over decades (a p99 of milliseconds next to a p50 of 100 µs): a log axis
    // keeps both readable.
    let fr = if lat_min.is_finite() && lat_max / lat_min > 20.0 {
        Frame::log_y_axis(
            &mut svg,
            90.0,
            top + 40.0,
            860.0,
            280.0,
            lat_min,
            lat_max,
            "active latency (µs, log scale)",
        )
    } else {
        Frame::y_axis(
            &mut svg,
            90.0,
            top + 40.0,
            860.0,
            280.0,
            lat_max,
            "active latency (µs)",
        )
    };
    let lx = LogX::new(fr.x, fr.w, nmin, nmax);
    lx.ticks(&mut svg, &fr);
    type Series = (&'static str, fn(&Point) -> Option<f64>, &'static str, bool);
    let series: [Series; 4] = [
        ("p50 with N idle", |p| p.p50, P50, false),
        ("p99 with N idle", |p| p.p99, P99, false),
        ("p50 without idle (same run)", |p| p.p50_base, P50, true),
        ("p99 without idle (same run)", |p| p.p99_base, P99, true),
    ];
    let mut lgx = fr.x;
    for (label, get, col, dashed) in series {
        let dash = dashed.then_some("6,4");
        let line: Vec<(f64, f64)> = means(&pts, get)
            .into_iter()
            .map(|(n, v)| (lx.px(n), fr.py(v)))
            .collect();
        svg.polyline(&line, col, 2.0, dash);
        for p in &pts {
            if let Some(v) = get(p) {
                svg.circle(lx.px(p.n), fr.py(v), 3.5, col, dashed);
            }
        }
        svg.line(lgx, top + 10.0, lgx + 24.0, top + 10.0, col, 2.0, dash);
        svg.text(
            lgx + 30.0,
            top + 14.0,
            label,
            12.0,
            INK,
            Anchor::Start,
            false,
        );
        lgx += 60.0 + 6.2 * label.chars().count() as f64;
    }
    // p99 ratio labels at each point.
    for p in &pts {
        if let (Some(a), Some(b)) = (p.p99, p.p99_base) {
            if b > 0.0 {
                svg.text(
                    lx.px(p.n) + 6.0,
                    fr.py(a) - 6.0,
                    &format!("{:.2}×", a / b),
                    10.5,
                    P99,
                    Anchor::Start,
                    true,
                );
            }
        }
    }
    svg.text(
        fr.x + fr.w / 2.0,
        fr.y + fr.h + 32.0,
        "idle clients N (log scale)",
        12.0,
        INK,
        Anchor::Middle,
        false,
    );
    svg.text(
        fr.x + fr.w,
        top + 34.0,
        "labels: p99 with ÷ p99 without (target ≤ 1.5×)",
        10.5,
        MUTED,
        Anchor::End,
        false,
    );

    // Panel 2: RSS per idle client.
    let p2 = top + 40.0 + 280.0 + 80.0;
    svg.text(
        20.0,
        p2 - 12.0,
        "sluice RSS per idle client (bytes, summed over sluice processes, at steady state)",
        13.0,
        INK,
        Anchor::Start,
        true,
    );
    let rss_max = pts.iter().filter_map(|p| p.rss).fold(100.0, f64::max);
    let fr = Frame::y_axis(
        &mut svg,
        90.0,
        p2 + 10.0,
        860.0,
        230.0,
        rss_max,
        "bytes per idle client",
    );
    lx.ticks(&mut svg, &fr);
    const RSS: &str = "#59a14f";
    let line: Vec<(f64, f64)> = means(&pts, |p| p.rss)
        .into_iter()
        .map(|(n, v)| (lx.px(n), fr.py(v)))
        .collect();
    svg.polyline(&line, RSS, 2.0, None);
    for p in &pts {
        if let Some(v) = p.rss {
            svg.circle(lx.px(p.n), fr.py(v), 3.5, RSS, false);
            svg.text(
                lx.px(p.n) + 6.0,
                fr.py(v) - 6.0,
                &format!("{} B", num(v)),
                10.5,
                INK,
                Anchor::Start,
                false,
            );
        }
    }
    let y = fr.py(100.0);
    svg.line(fr.x, y, fr.x + fr.w, y, NOTE, 1.2, Some("5,3"));
    svg.halo_text(
        fr.x + fr.w,
        y - 4.0,
        "target ≤ 100 B",
        10.5,
        NOTE,
        Anchor::End,
    );
    svg.text(
        fr.x + fr.w / 2.0,
        fr.y + fr.h + 32.0,
        "idle clients N (log scale)",
        12.0,
        INK,
        Anchor::Middle,
        false,
    );

    footer(&mut svg, &foot);
    Ok(svg.finish())
}

/// (N, mean of the values at that N), for the points that have a value.
fn means(pts: &[Point], get: fn(&Point) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64, f64)> = Vec::new();
    for p in pts {
        let Some(v) = get(p) else { continue };
        match out.last_mut() {
            Some((n, sum, k)) if *n == p.n => {
                *sum += v;
                *k += 1.0;
            }
            _ => out.push((p.n, v, 1.0)),
        }
    }
    out.into_iter().map(|(n, sum, k)| (n, sum / k)).collect()
}

/// The soak picture: RSS (MiB) and open descriptors against minutes, one panel each.
fn soak(csv: &str, summary: &Value, note: Option<&str>) -> Result<String, String> {
    // (minutes, RSS MiB, descriptors, quiet?)
    let mut rows: Vec<(f64, f64, f64, bool)> = Vec::new();
    for (i, line) in csv.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let num = |j: usize| cols.get(j).and_then(|v| v.trim().parse::<f64>().ok());
        match (num(0), num(1), num(2)) {
            (Some(t), Some(rss), Some(fds)) => {
                rows.push((t / 60.0, rss / 1024.0, fds, cols.get(3) == Some(&"quiet")))
            }
            _ => return Err(format!("samples.csv line {}: {line:?}", i + 1)),
        }
    }
    if rows.is_empty() {
        return Err("samples.csv has no samples".into());
    }
    let t_max = rows.iter().map(|r| r.0).fold(0.0, f64::max).max(1.0 / 60.0);
    let warmup = f(&summary["warmup_s"]).map(|s| s / 60.0);
    let mut foot = Vec::new();
    if let Some(g) = f(&summary["rss_growth_pct_per_hour"]) {
        foot.push(format!(
            "RSS growth after warm-up {g:+.2} %/h (target ≤ 1 %/h): {}",
            if g <= 1.0 { "met" } else { "missed" }
        ));
    }
    if let Some(l) = f(&summary["fds_leaked"]) {
        foot.push(format!(
            "descriptors leaked (quiet after − quiet before): {l} (target 0): {}",
            if l <= 0.0 { "met" } else { "missed" }
        ));
    }
    foot.push(format!(
        "scripts/soak.sh · {} samples · {} build",
        rows.len(),
        s(&summary["profile"])
    ));
    let mut svg = Svg::new(980.0, 720.0 + 14.0 * foot.len() as f64);
    let top = header(
        &mut svg,
        "Soak: sluice under churn (scripts/soak.sh)",
        "connects/disconnects, prepared statements, errors, KILLs, reloads; sampled every few seconds",
        note,
    );
    type Get = fn(&(f64, f64, f64, bool)) -> f64;
    let panels: [(&str, Get, &str); 2] = [
        ("RSS (MiB)", |r| r.1, "#4e79a7"),
        ("open descriptors", |r| r.2, "#e15759"),
    ];
    for (i, (title, get, col)) in panels.into_iter().enumerate() {
        let y = top + 30.0 + i as f64 * 310.0;
        let max = rows.iter().map(get).fold(0.0, f64::max);
        let fr = Frame::y_axis(&mut svg, 90.0, y, 860.0, 240.0, max, title);
        let px = |t: f64| fr.x + t / t_max * fr.w;
        let (ticks, _) = linear_ticks(t_max);
        for t in ticks.into_iter().filter(|t| *t <= t_max * 1.001) {
            svg.text(
                px(t),
                fr.y + fr.h + 16.0,
                &num(t),
                11.0,
                MUTED,
                Anchor::Middle,
                false,
            );
        }
        svg.text(
            fr.x + fr.w / 2.0,
            fr.y + fr.h + 34.0,
            "minutes",
            12.0,
            INK,
            Anchor::Middle,
            false,
        );
        let line: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| !r.3)
            .map(|r| (px(r.0), fr.py(get(r))))
            .collect();
        svg.polyline(&line, col, 2.0, None);
        for r in rows.iter().filter(|r| r.3) {
            svg.circle(px(r.0), fr.py(get(r)), 4.0, col, true);
            svg.text(
                px(r.0) - 6.0,
                fr.py(get(r)) - 8.0,
                "quiet",
                10.5,
                MUTED,
                Anchor::End,
                false,
            );
        }
        if let Some(w) = warmup {
            svg.line(px(w), fr.y, px(w), fr.y + fr.h, MUTED, 1.0, Some("4,4"));
            svg.text(
                px(w) + 4.0,
                fr.y + 12.0,
                "end of warm-up",
                10.5,
                MUTED,
                Anchor::Start,
                false,
            );
        }
    }
    footer(&mut svg, &foot);
    Ok(svg.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(num(57331.0), "57.3k");
        assert_eq!(num(1_000_000.0), "1M");
        assert_eq!(num(1500.0), "1.5k");
        assert_eq!(num(29.14), "29.1");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(150.0), "150");
    }

    #[test]
    fn ticks_cover_the_maximum() {
        let (t, top) = linear_ticks(57331.0);
        assert!(top >= 57331.0 && t[0] == 0.0 && *t.last().unwrap() == top);
        assert!(t.len() <= 8);
        let (_, top) = linear_ticks(0.0);
        assert_eq!(top, 1.0);
    }

    #[test]
    fn b3_picture() {
        let r: Value = serde_json::from_str(
            r#"{"threads": 8, "duration_s": 3, "backend": "tcp", "shards": 0, "floor_threads": 2,
                "meta": {"date": "2025-01-01", "commit": "abc1234", "command": "THREADS=8 <x>"},
                "targets": ["direct", "floor", "sluice-64", "sluice-16"],
                "workloads": [
                  {"name": "oltp_point_select", "results": {
                    "direct": {"qps": 1000.0, "errors": 0},
                    "floor": {"qps": 900.0, "ratio_to_direct": 0.9, "cpu_us_per_query": 5.0},
                    "sluice-64": {"qps": 500.0, "ratio_to_direct": 0.5, "ratio_to_floor": 0.556, "cpu_us_per_query": 25.0},
                    "sluice-16": {"qps": null, "errors": 3}}}],
                "low_rate": {"clients": 50, "rate": 2000, "results": {
                    "floor": {"cpu_us_per_query": 9.0}, "sluice-64": {"cpu_us_per_query": 100.0}}}}"#,
        )
        .unwrap();
        let svg = b3(&r, Some("smoke run, not a measurement")).unwrap();
        well_formed(&svg);
        for want in [
            "0.90×",
            "0.50×",
            "0.56× fl",
            "sluice pool 16",
            "n/a",
            "3 errors",
            "smoke run",
            "&lt;x&gt;",
            "low rate: 50 clients",
        ] {
            assert!(svg.contains(want), "no {want} in {svg}");
        }
        assert!(b3(&serde_json::json!({}), None).is_err());
    }

    #[test]
    fn soak_picture() {
        let csv = "seconds,rss_kib,fds,phase\n0,20480,40,churn\n60,21504,300,churn\n120,21504,310,churn\n150,21000,23,quiet\n";
        let summary = serde_json::json!({"warmup_s": 24, "rss_growth_pct_per_hour": 0.5,
            "fds_leaked": 0, "profile": "dev"});
        let svg = soak(csv, &summary, Some("short run")).unwrap();
        well_formed(&svg);
        for want in [
            "RSS (MiB)",
            "open descriptors",
            "+0.50 %/h",
            "met",
            "quiet",
            "short run",
        ] {
            assert!(svg.contains(want), "no {want} in {svg}");
        }
        assert!(soak("seconds,rss_kib,fds,phase\n", &Value::Null, None).is_err());
        assert!(soak("h\n1,x,3,churn\n", &Value::Null, None).is_err());
    }

    #[test]
    fn million_picture_from_several_runs() {
        let run = |n: u64, p99: f64, rss: f64| {
            serde_json::json!({"n": n, "sluice_workers": 1,
                "b1": {"sluice_rss_per_idle_client_bytes": rss},
                "b2": {"active": 200, "rate": 2000,
                       "with_idle_us": {"p50": 300.0, "p99": p99, "p999": 900.0},
                       "without_idle_us": {"p50": 280.0, "p99": 400.0, "p999": 800.0}}})
        };
        let runs = vec![
            (
                "million-1000000.json".to_string(),
                run(1_000_000, 500.0, 150.0),
            ),
            ("million-20000.json".to_string(), run(20_000, 420.0, 185.0)),
            ("million-20000b.json".to_string(), run(20_000, 440.0, 180.0)),
        ];
        let svg = million(&runs, None).unwrap();
        well_formed(&svg);
        for want in [
            "1.25×",
            "185 B",
            "150 B",
            "10k",
            "1M",
            "million-20000b.json",
        ] {
            assert!(svg.contains(want), "no {want} in {svg}");
        }
        // One N alone still draws (points, no line).
        well_formed(&million(&runs[..1], None).unwrap());
        assert!(million(&[("x".into(), serde_json::json!({}))], None).is_err());
    }
}
