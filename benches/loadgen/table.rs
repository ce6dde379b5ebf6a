//! The results: one table of figures against their targets, printed under a
//! header naming the machine, the commit and the plan, and the median and
//! percentile the figures are taken by.

use std::ops::Range;
use std::process::Command;
use std::time::Duration;

use crate::plan::Plan;

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0 to 1) of sorted `values`, by the nearest rank.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a row must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    None,
    AtMost(f64),
    Below(f64),
    /// tether / baseline at least this.
    RatioAtLeast(f64),
}

struct Row {
    scenario: String,
    metric: String,
    tether: Option<f64>,
    baseline: Option<f64>,
    target: Target,
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Lines printed under the table as they are.
    pub remarks: Vec<String>,
    /// The peers measured, in their columns' order.
    peers: Vec<&'static str>,
    /// Their figures, printed after everything else.
    peer_rows: Vec<PeerRow>,
}

struct PeerRow {
    scenario: String,
    metric: String,
    tether: Option<f64>,
    /// By the peer's column; `None` where a peer has no such figure.
    values: Vec<Option<f64>>,
}

impl Table {
    pub fn row(
        &mut self,
        scenario: &str,
        metric: &str,
        tether: Option<f64>,
        baseline: Option<f64>,
        target: Target,
    ) {
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            tether,
            baseline,
            target,
        });
    }

    /// A verification row: the number of problems found, which must be 0;
    /// the first few are printed under the table.
    pub fn check(&mut self, scenario: &str, what: &str, errors: &[String]) {
        self.row(
            scenario,
            what,
            Some(errors.len() as f64),
            None,
            Target::AtMost(0.0),
        );
        self.notes.extend(errors.iter().take(5).cloned());
    }

    /// A figure of a peer, printed in a table of its own beside tether's
    /// figure for the same metric in this run, if any.
    pub fn peer(&mut self, peer: &'static str, scenario: &str, metric: &str, value: f64) {
        let column = match self.peers.iter().position(|&p| p == peer) {
            Some(i) => i,
            None => {
                self.peers.push(peer);
                self.peers.len() - 1
            }
        };
        let row = match self.peer_rows.iter().position(|r| r.metric == metric) {
            Some(i) => i,
            None => {
                let tether = self
                    .rows
                    .iter()
                    .find(|r| r.metric == metric)
                    .and_then(|r| r.tether);
                self.peer_rows.push(PeerRow {
                    scenario: scenario.into(),
                    metric: metric.into(),
                    tether,
                    values: Vec::new(),
                });
                self.peer_rows.len() - 1
            }
        };
        let values = &mut self.peer_rows[row].values;
        values.resize(values.len().max(column + 1), None);
        values[column] = Some(value);
    }

    pub fn print(&self) {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let ratio = r.ratio();
                let (target, pass) = match r.target {
                    Target::None => (String::new(), None),
                    Target::AtMost(x) => (format!("<= {}", number(x)), r.tether.map(|t| t <= x)),
                    Target::Below(x) => (format!("< {}", number(x)), r.tether.map(|t| t < x)),
                    Target::RatioAtLeast(x) => (format!("ratio >= {x:.2}"), ratio.map(|q| q >= x)),
                };
                let mut row = r.figures();
                row.push(target);
                row.push(match pass {
                    None => String::new(),
                    Some(true) => "pass".into(),
                    Some(false) => "FAIL".into(),
                });
                row
            })
            .collect();
        print_cells(
            &[
                "scenario", "metric", "tether", "baseline", "ratio", "target", "result",
            ],
            &cells,
            2..5,
        );
        for note in &self.notes {
            println!("problem: {note}");
        }
        for remark in &self.remarks {
            println!("{remark}");
        }
        if !self.peer_rows.is_empty() {
            println!();
            println!("the peers, on the same machine with the same clients");
            println!();
            let figure = |x: Option<f64>| x.map_or("n/a".into(), number);
            let cells: Vec<Vec<String>> = self
                .peer_rows
                .iter()
                .map(|r| {
                    let mut row = vec![r.scenario.clone(), r.metric.clone(), figure(r.tether)];
                    row.extend(
                        (0..self.peers.len()).map(|i| figure(r.values.get(i).copied().flatten())),
                    );
                    row
                })
                .collect();
            let mut header = vec!["scenario", "metric", "tether"];
            header.extend(&self.peers);
            print_cells(&header, &cells, 2..header.len());
        }
    }
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.tether, self.baseline) {
            (Some(t), Some(b)) if b != 0.0 && b.is_finite() => Some(t / b),
            _ => None,
        }
    }

    /// The scenario, metric, the two figures and their ratio, as printed.
    fn figures(&self) -> Vec<String> {
        vec![
            self.scenario.clone(),
            self.metric.clone(),
            self.tether.map_or("n/a".into(), number),
            self.baseline.map_or("n/a".into(), number),
            self.ratio().map_or("n/a".into(), |q| format!("{q:.2}")),
        ]
    }
}

/// Prints a Markdown table, the columns in `figures` aligned right.
fn print_cells(header: &[&str], cells: &[Vec<String>], figures: Range<usize>) {
    let figure = |i: usize| figures.contains(&i);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |row: &[String]| {
        let parts: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if figure(i) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    println!(
        "|{}|",
        widths
            .iter()
            .enumerate()
            .map(|(i, w)| if figure(i) {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in cells {
        line(row);
    }
}

/// A figure with about three significant digits.
pub fn number(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x == x.trunc() || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn print_header(plan: &Plan, took: Duration) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = command("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let rustc = command("rustc", &["--version"]);
    println!(
        "tether benchmark ({} run, {:.0} s)",
        plan.name,
        took.as_secs_f64()
    );
    println!(
        "machine: {cores} cores (nproc), {cpu}, Linux {}",
        kernel.trim()
    );
    println!(
        "commit: {commit}{}; {rustc}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    for (kind, ws, http) in &plan.elsewhere {
        println!(
            "{} started elsewhere: WebSocket {ws}, HTTP {http}; clients on this machine",
            kind.name()
        );
    }
    println!(
        "medians of {} runs per server for M2, {} for M2b; ratio = tether / baseline",
        plan.runs,
        plan.latency_runs()
    );
    println!();
}

fn command(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or(String::new(), |s| s.trim().to_string())
}
