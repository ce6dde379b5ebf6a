//! tether's benchmark harness (issue 5): a synchronous load generator that
//! starts the release `tether` binary and the bare fan-out baseline
//! (`examples/baseline.rs`) as child processes on loopback ports, runs each
//! scenario against them, and prints one table of medians with the ratios
//! and the targets. M2b also measures its floor (`floor.rs`): the same
//! clients fed by a server that does nothing but write.
//!
//!     make bench        # quick: under 3 minutes on 2 cores
//!     make bench-full   # what BENCHMARKS.md reports
//!     cargo bench --bench loadgen -- --quick --only m2,m3
//!     cargo bench --bench loadgen -- --only m2 --runs 1 --fanout 1000x4000
//!
//! `--only` takes m1 (M1 and M1b), m2, m2b, m3, m4, publish and size;
//! `--runs`, `--fanout NxE` and `--latency NxR` (M2b's clients and rate)
//! override the plan and `--tether-only` skips the baseline, for
//! profiling. With `BENCH_TETHER=PATH` another tether binary is measured
//! (one with symbols, for perf or valgrind); with `BENCH_SERIES=1` each M2b
//! run also prints its p50 / p99 per 100 ms of publishing, and with
//! `BENCH_THREAD_CLIENTS=1` M2b's subscribers get a thread each instead of
//! sharing a few polling threads (`subscribers.rs`).
//!
//! `--tether-at WS,HTTP` (and `--baseline-at WS,HTTP`) run M2b alone
//! against servers started elsewhere, such as on another machine, so the
//! clients do not share the server's cores; `BENCH_ADMIN_TOKEN` is then
//! tether's admin token. BENCHMARKS.md has the commands.
//!
//! It is a `[[bench]]` without the test harness so that `cargo bench`
//! builds it and the `tether` binary with release settings and hands it the
//! binary's path; `cargo test --all-targets` also runs it, without
//! `--bench`, and it then only checks its own helpers.

mod client;
mod floor;
mod scenarios;
mod server;
mod subscribers;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use scenarios::Cut;
use server::{Kind, Server};

/// How much of each scenario to run.
struct Plan {
    name: &'static str,
    /// Runs per server for M2 (M2b does half, rounded up); medians are
    /// over these.
    runs: usize,
    /// (subscribers, events) of the two fan-out runs.
    fanout: [(usize, usize); 2],
    /// M2b's subscribers and events per second.
    latency: (usize, u64),
    latency_seconds: u64,
    replay_trials: usize,
    cut_trials: usize,
    /// (requests of 1000 events, single-event requests).
    publish_requests: (usize, usize),
    publish_runs: usize,
    /// Servers started elsewhere: (kind, WebSocket, HTTP address). When
    /// given, only M2b runs, against them.
    elsewhere: Vec<(Kind, SocketAddr, SocketAddr)>,
}

impl Plan {
    /// M2b's runs take longer, so it does half as many.
    fn latency_runs(&self) -> usize {
        self.runs.div_ceil(2)
    }
}

const QUICK: Plan = Plan {
    name: "quick",
    runs: 3,
    fanout: [(100, 5000), (1000, 1000)],
    latency: (1000, 1000),
    latency_seconds: 3,
    replay_trials: 20,
    cut_trials: 10,
    publish_requests: (20, 1000),
    publish_runs: 1,
    elsewhere: Vec::new(),
};

const FULL: Plan = Plan {
    name: "full",
    runs: 5,
    fanout: [(100, 20_000), (1000, 2000)],
    latency: (1000, 1000),
    latency_seconds: 10,
    replay_trials: 20,
    cut_trials: 20,
    publish_requests: (100, 5000),
    publish_runs: 3,
    elsewhere: Vec::new(),
};

/// Idle connection counts (M1) and the one idle CPU is measured at (M1b).
const IDLE_COUNTS: [usize; 2] = [1000, 5000];
const IDLE_CPU_CLIENTS: usize = 1000;
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(10);
/// Disconnected sessions and the events each retains (M1).
const AWAY_SESSIONS: usize = 2000;
const AWAY_EVENTS: usize = 1000;
/// M3: missed events per trial.
const REPLAY_EVENTS: usize = 1000;
/// M4: event rate and how long the client reads before and after the cut.
const CUT_RATE: u64 = 1000;
const CUT_BEFORE: Duration = Duration::from_millis(150);
const CUT_AFTER: Duration = Duration::from_millis(150);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--floor-server") {
        floor::serve();
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        self_check();
        println!("loadgen: helpers checked; `make bench` runs the benchmark");
        return;
    }
    let mut plan = if args.iter().any(|a| a == "--full") {
        FULL
    } else {
        QUICK
    };
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(runs) = value("--runs") {
        plan.runs = runs.parse().expect("--runs N");
    }
    if let Some((n, e)) = value("--fanout").and_then(|f| f.split_once('x')) {
        let fanout = (
            n.parse().expect("--fanout NxE"),
            e.parse().expect("--fanout NxE"),
        );
        plan.fanout = [fanout; 2];
    }
    if let Some((n, r)) = value("--latency").and_then(|f| f.split_once('x')) {
        plan.latency = (
            n.parse().expect("--latency NxR"),
            r.parse().expect("--latency NxR"),
        );
    }
    for (flag, kind) in [
        ("--tether-at", Kind::Tether),
        ("--baseline-at", Kind::Baseline),
    ] {
        if let Some(addrs) = value(flag) {
            let (ws, http) = elsewhere_addresses(flag, addrs);
            plan.elsewhere.push((kind, ws, http));
        }
    }
    let mut only: Option<Vec<String>> =
        value("--only").map(|list| list.split(',').map(str::to_lowercase).collect());
    if !plan.elsewhere.is_empty() {
        if plan.elsewhere[0].0 != Kind::Tether {
            exit_with("--baseline-at needs --tether-at too");
        }
        if only.as_ref().is_some_and(|o| o.iter().any(|n| n != "m2b")) {
            exit_with("with servers started elsewhere only M2b runs (--only m2b)");
        }
        only = Some(vec!["m2b".into()]);
    }
    let plan = &plan;
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));

    server::kill_servers_on_interrupt();
    let started = Instant::now();
    let mut table = Table::default();
    if wanted("m1") {
        run_idle(&mut table);
        run_disconnected(&mut table);
    }
    if wanted("m2") {
        run_fanout(plan, &mut table);
    }
    if wanted("m2b") {
        run_latency(plan, &mut table);
    }
    if wanted("m3") {
        run_replay(plan, &mut table);
    }
    if wanted("m4") {
        run_cut(plan, &mut table);
    }
    if wanted("publish") {
        run_publish(plan, &mut table);
    }
    if wanted("size") {
        let bytes = std::fs::metadata(server::tether_binary()).map_or(0, |m| m.len());
        table.row(
            "binary",
            "release binary, stripped (MB)",
            Some(bytes as f64 / 1e6),
            None,
            Target::AtMost(3.0),
        );
    }
    print_header(plan, started.elapsed());
    table.print();
}

/// `WS,HTTP` of `--tether-at` or `--baseline-at`: two `host:port`.
fn elsewhere_addresses(flag: &str, value: &str) -> (SocketAddr, SocketAddr) {
    let resolve = |addr: &str| {
        addr.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| exit_with(&format!("{flag}: cannot resolve {addr:?}")))
    };
    match value.split_once(',') {
        Some((ws, http)) => (resolve(ws), resolve(http)),
        None => exit_with(&format!("{flag} WS,HTTP: two host:port, comma-separated")),
    }
}

fn exit_with(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(2);
}

/// The servers measured: both, or tether alone with `--tether-only`.
fn kinds() -> Vec<Kind> {
    if std::env::args().any(|a| a == "--tether-only") {
        vec![Kind::Tether]
    } else {
        vec![Kind::Tether, Kind::Baseline]
    }
}

fn progress(what: &str) {
    eprintln!("loadgen: {what}");
}

fn run_idle(table: &mut Table) {
    let mut results = Vec::new();
    for kind in kinds() {
        progress(&format!("M1/M1b idle clients, {}", kind.name()));
        results.push(scenarios::idle(
            kind,
            &IDLE_COUNTS,
            IDLE_CPU_CLIENTS,
            IDLE_CPU_WINDOW,
        ));
    }
    let (t, b) = (&results[0], results.get(1));
    let mib = |bytes: u64| Some(bytes as f64 / (1024.0 * 1024.0));
    table.row(
        "M1",
        "RSS with no clients (MiB)",
        mib(t.rss_idle),
        b.and_then(|b| mib(b.rss_idle)),
        Target::None,
    );
    for (i, &(n, _)) in t.per_conn.iter().enumerate() {
        let kib = |r: Option<&scenarios::Idle>| r.map(|r| r.per_conn[i].1 / 1024.0);
        let target = if n == 5000 {
            Target::AtMost(16.0)
        } else {
            Target::None
        };
        table.row(
            "M1",
            &format!("per idle connection, N={n} (KiB)"),
            kib(Some(t)),
            kib(b),
            target,
        );
    }
    table.row(
        "M1b",
        &format!(
            "CPU, {IDLE_CPU_CLIENTS} idle clients, {} s (% of a core)",
            IDLE_CPU_WINDOW.as_secs()
        ),
        Some(t.cpu_percent),
        b.map(|b| b.cpu_percent),
        Target::Below(1.0),
    );
}

fn run_disconnected(table: &mut Table) {
    progress("M1 disconnected sessions, tether");
    let d = scenarios::disconnected(AWAY_SESSIONS, AWAY_EVENTS);
    table.row(
        "M1",
        "per disconnected session, 0 retained (B)",
        Some(d.per_session),
        None,
        Target::AtMost(512.0),
    );
    table.row(
        "M1",
        &format!("per retained event per session, {AWAY_EVENTS} retained (B)"),
        Some(d.per_retained_event),
        None,
        Target::AtMost(16.0),
    );
}

fn run_fanout(plan: &Plan, table: &mut Table) {
    for (n, events) in plan.fanout {
        let mut rates = [Vec::new(), Vec::new()];
        let mut cpu = [Vec::new(), Vec::new()];
        let mut errors = Vec::new();
        for run in 0..plan.runs {
            for (k, kind) in kinds().into_iter().enumerate() {
                progress(&format!(
                    "M2 fan-out {n} x {events}, {} (run {})",
                    kind.name(),
                    run + 1
                ));
                let f = scenarios::fanout(kind, n, events);
                rates[k].push(f.deliveries_per_second);
                cpu[k].push(f.cpu_per_million);
                errors.extend(
                    f.errors
                        .into_iter()
                        .map(|e| format!("{}: {e}", kind.name())),
                );
            }
        }
        let target = if n == 1000 {
            Target::RatioAtLeast(0.70)
        } else {
            Target::None
        };
        table.row(
            "M2",
            &format!("fan-out {n} x {events} (k deliveries/s)"),
            Some(median(&rates[0]) / 1000.0),
            Some(median(&rates[1]) / 1000.0),
            target,
        );
        table.row(
            "M2",
            &format!("fan-out {n} x {events}: server CPU s per 1M deliveries"),
            Some(median(&cpu[0])),
            Some(median(&cpu[1])),
            Target::None,
        );
        table.check(
            "M2",
            &format!("fan-out {n} x {events}: clients not getting every event in order"),
            &errors,
        );
    }
}

fn run_latency(plan: &Plan, table: &mut Table) {
    let (clients, rate) = plan.latency;
    let mut samples: [Vec<scenarios::Latency>; 2] = [Vec::new(), Vec::new()];
    let mut floors = Vec::new();
    let elsewhere = !plan.elsewhere.is_empty();
    let kinds = if elsewhere {
        plan.elsewhere.iter().map(|e| e.0).collect()
    } else {
        kinds()
    };
    for run in 0..plan.latency_runs() {
        // The floor is a process on this machine; against servers elsewhere
        // it would measure something else.
        if !elsewhere {
            progress(&format!(
                "M2b floor: the same load from a server that only writes (run {})",
                run + 1
            ));
            floors.push(floor::latency(clients, rate, plan.latency_seconds));
        }
        for (k, &kind) in kinds.iter().enumerate() {
            progress(&format!(
                "M2b latency, {clients} clients at {rate}/s for {} s, {} (run {})",
                plan.latency_seconds,
                kind.name(),
                run + 1
            ));
            let server = match plan.elsewhere.iter().find(|e| e.0 == kind) {
                Some(&(_, ws, http)) => Server::attach(kind, ws, http),
                None => Server::start(kind, scenarios::THROUGHPUT_FLAGS),
            };
            samples[k].push(scenarios::latency(
                &server,
                clients,
                rate,
                plan.latency_seconds,
            ));
        }
    }
    let stat = |k: usize, f: fn(&scenarios::Latency) -> f64| {
        Some(median(&samples[k].iter().map(f).collect::<Vec<_>>()))
    };
    type Stat = fn(&scenarios::Latency) -> f64;
    let rows: [(&str, Stat, Target); 4] = [
        ("p50 (ms)", |l| l.p50, Target::None),
        ("p99 (ms)", |l| l.p99, Target::AtMost(10.0)),
        ("max (ms)", |l| l.max, Target::None),
        (
            "events/s the publisher achieved",
            |l| l.publish_rate,
            Target::None,
        ),
    ];
    for (name, f, target) in rows {
        table.row(
            "M2b",
            &format!("{clients} clients, {rate} events/s: {name}"),
            stat(0, f),
            stat(1, f),
            target,
        );
    }
    let errors: Vec<String> = samples
        .iter()
        .flatten()
        .chain(&floors)
        .flat_map(|l| l.errors.iter().cloned())
        .collect();
    table.check("M2b", "clients not getting every event in order", &errors);
    if elsewhere {
        return;
    }
    let floor = |f: fn(&scenarios::Latency) -> f64| {
        number(median(&floors.iter().map(f).collect::<Vec<_>>()))
    };
    table.remarks.push(format!(
        "M2b floor: the same clients and load, from a server that only writes \
         prebuilt frames (one thread): p50 {} ms, p99 {} ms, max {} ms",
        floor(|l| l.p50),
        floor(|l| l.p99),
        floor(|l| l.max)
    ));
}

fn run_replay(plan: &Plan, table: &mut Table) {
    progress(&format!(
        "M3 replay of {REPLAY_EVENTS} missed events, {} trials",
        plan.replay_trials
    ));
    let (mut times, errors) = scenarios::replay(plan.replay_trials, REPLAY_EVENTS);
    times.sort_by(f64::total_cmp);
    let name = format!("replay {REPLAY_EVENTS} missed, connect to last event");
    table.row(
        "M3",
        &format!("{name}: median (ms)"),
        Some(median(&times)),
        None,
        Target::AtMost(5.0),
    );
    let p95 = times[((times.len() as f64 * 0.95).ceil() as usize).clamp(1, times.len()) - 1];
    table.row(
        "M3",
        &format!("{name}: p95 (ms)"),
        Some(p95),
        None,
        Target::None,
    );
    table.check(
        "M3",
        "replays out of order, incomplete or repeated",
        &errors,
    );
}

fn run_cut(plan: &Plan, table: &mut Table) {
    for (cut, name) in [(Cut::Reset, "reset"), (Cut::Silent, "silent drop")] {
        progress(&format!(
            "M4 cut while streaming ({name}), {} trials",
            plan.cut_trials
        ));
        let r = scenarios::cut(cut, plan.cut_trials, CUT_RATE, CUT_BEFORE, CUT_AFTER);
        let trials = plan.cut_trials;
        table.row(
            "M4",
            &format!("{name}, {trials} trials, {} events: lost", r.events),
            Some(r.lost as f64),
            None,
            Target::AtMost(0.0),
        );
        table.row(
            "M4",
            &format!("{name}, {trials} trials: duplicated"),
            Some(r.duplicated as f64),
            None,
            Target::AtMost(0.0),
        );
    }
}

fn run_publish(plan: &Plan, table: &mut Table) {
    let (batches, singles) = plan.publish_requests;
    for (per_request, requests, name) in [
        (1000, batches, "1000-event arrays"),
        (1, singles, "single events, keep-alive"),
    ] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..plan.publish_runs {
            for (k, kind) in kinds().into_iter().enumerate() {
                progress(&format!("publish {name}, {}", kind.name()));
                rates[k].push(scenarios::publish_rate(kind, per_request, requests));
            }
        }
        table.row(
            "publish",
            &format!("POST /events, {name} (k events/s)"),
            Some(median(&rates[0]) / 1000.0),
            Some(median(&rates[1]) / 1000.0),
            Target::None,
        );
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0 to 1) of sorted `values`, by the nearest rank.
fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a row must reach.
#[derive(Debug, Clone, Copy)]
enum Target {
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
struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Lines printed under the table as they are.
    remarks: Vec<String>,
}

impl Table {
    fn row(
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
    fn check(&mut self, scenario: &str, what: &str, errors: &[String]) {
        self.row(
            scenario,
            what,
            Some(errors.len() as f64),
            None,
            Target::AtMost(0.0),
        );
        self.notes.extend(errors.iter().take(5).cloned());
    }

    fn print(&self) {
        let header = [
            "scenario", "metric", "tether", "baseline", "ratio", "target", "result",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                let ratio = match (r.tether, r.baseline) {
                    (Some(t), Some(b)) if b != 0.0 && b.is_finite() => Some(t / b),
                    _ => None,
                };
                let (target, pass) = match r.target {
                    Target::None => (String::new(), None),
                    Target::AtMost(x) => (format!("<= {}", number(x)), r.tether.map(|t| t <= x)),
                    Target::Below(x) => (format!("< {}", number(x)), r.tether.map(|t| t < x)),
                    Target::RatioAtLeast(x) => (format!("ratio >= {x:.2}"), ratio.map(|q| q >= x)),
                };
                [
                    r.scenario.clone(),
                    r.metric.clone(),
                    r.tether.map_or("n/a".into(), number),
                    r.baseline.map_or("n/a".into(), number),
                    ratio.map_or("n/a".into(), |q| format!("{q:.2}")),
                    target,
                    match pass {
                        None => String::new(),
                        Some(true) => "pass".into(),
                        Some(false) => "FAIL".into(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let line = |row: &[String]| {
            let parts: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if (2..5).contains(&i) {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            println!("| {} |", parts.join(" | "));
        };
        line(&header.map(String::from));
        println!(
            "|{}|",
            widths
                .iter()
                .enumerate()
                .map(|(i, w)| if (2..5).contains(&i) {
                    format!("{}:", "-".repeat(w + 1))
                } else {
                    "-".repeat(w + 2)
                })
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &cells {
            line(row);
        }
        for note in &self.notes {
            println!("problem: {note}");
        }
        for remark in &self.remarks {
            println!("{remark}");
        }
    }
}

/// A figure with about three significant digits.
fn number(x: f64) -> String {
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

fn print_header(plan: &Plan, took: Duration) {
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

/// Checks the pure helpers; what `cargo test --all-targets` runs.
fn self_check() {
    let m = r#"{"type":"event","seq":42,"id":7,"data":{"t":      123,"pad":"x"}}"#;
    assert_eq!(client::event_seq(m), Some(42));
    assert_eq!(client::field(m, r#""id":"#), Some(7));
    assert_eq!(client::field(m, r#""t":"#), Some(123));
    assert_eq!(client::event_seq(r#"{"type":"heartbeat_ack"}"#), None);
    let item: serde_json::Value =
        serde_json::from_str(&scenarios::item("a.b", 5, Some("c1"))).expect("JSON");
    assert_eq!(item["data"]["t"], 5);
    assert_eq!(item["targets"][0], "c1");
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
    assert_eq!(percentile(&[1, 2, 3, 4], 0.99), 4);
    subscribers::self_check();
}
