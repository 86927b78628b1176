//! Comparing two transcripts of the same session and printing a difference as a reproducer: the
//! seed, session, mode and step, the script up to that step one command per line, and both
//! normalized responses side by side (aligned by a longest-common-subsequence diff so one extra
//! packet does not mark every line after it).

use crate::script::Script;
use crate::session::Transcript;
use serde::Serialize;
use std::fmt::Write as _;

/// The first step whose entries differ (a missing entry differs from any present one).
pub fn first_difference(a: &Transcript, b: &Transcript) -> Option<usize> {
    let n = a.entries.len().max(b.entries.len());
    (0..n).find(|&i| a.entries.get(i) != b.entries.get(i))
}

/// Every step whose entries differ, up to and including the first step one side has no entry
/// for (what follows a stopped session is not compared).
pub fn all_differences(a: &Transcript, b: &Transcript) -> Vec<usize> {
    let n = a.entries.len().max(b.entries.len());
    let mut out = Vec::new();
    for i in 0..n {
        match (a.entries.get(i), b.entries.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(_), Some(_)) => out.push(i),
            _ => {
                out.push(i);
                break;
            }
        }
    }
    out
}

/// One difference, with everything needed to reproduce it.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The target compared with the direct run ("session", "transaction", "statement", or
    /// "self-check" for the direct server against itself).
    pub mode: String,
    pub seed: u64,
    pub session: usize,
    pub profile: String,
    pub step: usize,
    pub command: String,
    /// The kind of difference, for grouping (see [`Difference::signature`]).
    pub kind: String,
    /// The script up to and including the step, one command per line.
    pub script: Vec<String>,
    pub direct: Vec<String>,
    pub other: Vec<String>,
}

const MISSING: &str = "(no response recorded: the session had stopped)";

impl Difference {
    pub fn new(
        mode: &str,
        seed: u64,
        script: &Script,
        step: usize,
        direct: &Transcript,
        other: &Transcript,
    ) -> Difference {
        let entry = |t: &Transcript| {
            t.entries
                .get(step)
                .cloned()
                .unwrap_or_else(|| vec![MISSING.to_string()])
        };
        let mut d = Difference {
            mode: mode.to_string(),
            seed,
            session: script.index,
            profile: script.profile.name().to_string(),
            step,
            command: script
                .steps
                .get(step)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            script: script.listing(step).lines().map(str::to_string).collect(),
            direct: entry(direct),
            other: entry(other),
            kind: String::new(),
        };
        d.kind = d.signature();
        d
    }

    /// What kind of difference this is, for grouping reports (the command is not part of it:
    /// one cause shows under many commands). From the first pair of lines that differ: for lines
    /// of one kind (two OKs, two column definitions, …) the words that differ; otherwise each
    /// side's kind, or its whole line for an ERR. Numbers are blanked except error codes.
    pub fn signature(&self) -> String {
        let mut i = 0;
        while i < self.direct.len().min(self.other.len()) && self.direct[i] == self.other[i] {
            i += 1;
        }
        let none = "(nothing)".to_string();
        let (a, b) = (
            self.direct.get(i).unwrap_or(&none),
            self.other.get(i).unwrap_or(&none),
        );
        let kind = |l: &str| l.split(' ').next().unwrap_or("").to_string();
        let describe = |l: &str| -> String {
            if let Some(rest) = l.strip_prefix("ERR ") {
                let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
                format!("ERR {code} {}", digits(msg, 100))
            } else if l.starts_with("SIDECAR")
                || l.starts_with("CLIENT")
                || l.starts_with("SEQUENCE")
            {
                digits(l, 100)
            } else {
                kind(l)
            }
        };
        let (da, db) = if kind(a) == kind(b) && kind(a) != "ERR" {
            let wa: Vec<&str> = a.split(' ').collect();
            let wb: Vec<&str> = b.split(' ').collect();
            let only = |x: &[&str], y: &[&str]| -> String {
                let w: Vec<&str> = x.iter().filter(|t| !y.contains(t)).copied().collect();
                digits(&format!("{} … {}", kind(a), w.join(" ")), 100)
            };
            (only(&wa, &wb), only(&wb, &wa))
        } else {
            (describe(a), describe(b))
        };
        format!("direct: {da}\n      proxy:  {db}")
    }

    /// The printed reproducer. `replay` is the command line that replays the session.
    pub fn render(&self, replay: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "==== DIFFERENCE  mode={}  seed={}  session={}  profile={}  step={} ====",
            self.mode, self.seed, self.session, self.profile, self.step
        );
        let _ = writeln!(s, "replay: {replay}");
        let _ = writeln!(s, "script (up to and including step {}):", self.step);
        for l in &self.script {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(
            s,
            "responses at step {} ('!' marks lines that differ):",
            self.step
        );
        s.push_str(&side_by_side(
            "direct",
            &self.direct,
            &self.mode,
            &self.other,
        ));
        s
    }
}

/// `s` with digit runs replaced by `N`, cut to `max` characters.
fn digits(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out.chars().take(max).collect()
}

/// Width of each column of the side-by-side view.
const COLUMN: usize = 72;

enum Op<'a> {
    Same(&'a str),
    Left(&'a str),
    Right(&'a str),
}

/// Longest-common-subsequence alignment of two line lists (quadratic; the lists are one
/// response each, and past a size bound lines are simply paired by position).
fn align<'a>(a: &'a [String], b: &'a [String]) -> Vec<Op<'a>> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > 4_000_000 {
        let mut ops = Vec::new();
        for i in 0..n.max(m) {
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if x == y => ops.push(Op::Same(x)),
                (x, y) => {
                    if let Some(x) = x {
                        ops.push(Op::Left(x));
                    }
                    if let Some(y) = y {
                        ops.push(Op::Right(y));
                    }
                }
            }
        }
        return ops;
    }
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(&a[i]));
            i += 1;
            j += 1;
        } else if j >= m || (i < n && t[i + 1][j] >= t[i][j + 1]) {
            ops.push(Op::Left(&a[i]));
            i += 1;
        } else {
            ops.push(Op::Right(&b[j]));
            j += 1;
        }
    }
    ops
}

fn wrap(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(COLUMN)
        .map(|c| c.iter().collect::<String>())
        .collect()
}

/// Two line lists side by side, aligned, long lines wrapped, differing rows marked with '!'.
pub fn side_by_side(
    left_name: &str,
    left: &[String],
    right_name: &str,
    right: &[String],
) -> String {
    let mut rows: Vec<(bool, &str, &str)> = Vec::new();
    let ops = align(left, right);
    let mut k = 0;
    while k < ops.len() {
        match ops[k] {
            Op::Same(x) => {
                rows.push((false, x, x));
                k += 1;
            }
            _ => {
                // Pair a run of removed lines with the run of added lines next to it.
                let mut ls = Vec::new();
                let mut rs = Vec::new();
                while k < ops.len() {
                    match ops[k] {
                        Op::Left(x) => ls.push(x),
                        Op::Right(y) => rs.push(y),
                        Op::Same(_) => break,
                    }
                    k += 1;
                }
                for idx in 0..ls.len().max(rs.len()) {
                    rows.push((
                        true,
                        ls.get(idx).copied().unwrap_or(""),
                        rs.get(idx).copied().unwrap_or(""),
                    ));
                }
            }
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "  {left_name:<COLUMN$} | {right_name}");
    let _ = writeln!(s, "  {:-<COLUMN$}-+-{:-<COLUMN$}", "", "");
    for (differs, l, r) in rows {
        let (wl, wr) = (wrap(l), wrap(r));
        for j in 0..wl.len().max(wr.len()) {
            let mark = if differs && j == 0 { '!' } else { ' ' };
            let lt = wl.get(j).map(String::as_str).unwrap_or("");
            let rt = wr.get(j).map(String::as_str).unwrap_or("");
            let _ = writeln!(s, "{mark} {lt:<COLUMN$} | {rt}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(entries: &[&[&str]]) -> Transcript {
        Transcript {
            entries: entries
                .iter()
                .map(|e| e.iter().map(|s| s.to_string()).collect())
                .collect(),
            stopped: None,
        }
    }

    #[test]
    fn first_difference_includes_missing_entries() {
        let a = t(&[&["OK"], &["ROW [1]"]]);
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(first_difference(&a, &t(&[&["OK"], &["ROW [2]"]])), Some(1));
        assert_eq!(first_difference(&a, &t(&[&["OK"]])), Some(1));
        let b = t(&[&["ERR"], &["ROW [1]"], &["X"], &["Y"]]);
        let c = t(&[&["OK"], &["ROW [1]"], &["Z"]]);
        assert_eq!(all_differences(&b, &c), vec![0, 2, 3]);
    }

    #[test]
    fn signatures_keep_error_codes_and_blank_other_numbers() {
        let d = Difference {
            mode: "transaction".into(),
            seed: 1,
            session: 0,
            profile: "modern".into(),
            step: 3,
            command: "COM_QUERY SELECT 1".into(),
            kind: String::new(),
            script: vec![],
            direct: vec!["RESULT columns=1".into()],
            other: vec!["ERR 1238 #HY000 Variable 'last_gtid' is read only (7)".into()],
        };
        assert_eq!(
            d.signature(),
            "direct: RESULT\n      proxy:  ERR 1238 #HYN Variable 'last_gtid' is read only (N)"
        );
    }

    #[test]
    fn an_extra_line_marks_only_itself() {
        let l: Vec<String> = ["RESULT", "COLUMN a", "ROW [1]", "END"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut r = l.clone();
        r.insert(2, "ROW [0]".to_string());
        let out = side_by_side("direct", &l, "proxy", &r);
        assert_eq!(
            out.lines().filter(|x| x.starts_with('!')).count(),
            1,
            "{out}"
        );
    }
}
