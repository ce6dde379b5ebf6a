//! Each scenario run as the plan says, on each server measured, its figures
//! put into the table's rows.

use std::time::Duration;

use crate::floor;
use crate::mqtt;
use crate::peers;
use crate::plan::Plan;
use crate::scenarios::{self, Cut};
use crate::server::{Kind, Server};
use crate::table::{median, number, Table, Target};

/// Idle connection counts (M1) and the one idle CPU is measured at (M1b).
const IDLE_COUNTS: [usize; 2] = [1000, 5000];
/// The largest of them, where the kernel's share and the heartbeat are measured.
const IDLE_MOST: usize = IDLE_COUNTS[IDLE_COUNTS.len() - 1];
const IDLE_CPU_CLIENTS: usize = 1000;
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(10);
/// The peer's one M2b run publishes this long at most.
const PEER_LATENCY_SECONDS: u64 = 3;
/// Disconnected sessions and the events each retains (M1).
const AWAY_SESSIONS: usize = 2000;
const AWAY_EVENTS: usize = 1000;
/// M3: missed events per trial.
const REPLAY_EVENTS: usize = 1000;
/// M4: event rate and how long the client reads before and after the cut.
const CUT_RATE: u64 = 1000;
const CUT_BEFORE: Duration = Duration::from_millis(150);
const CUT_AFTER: Duration = Duration::from_millis(150);

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

pub fn run_idle(table: &mut Table) {
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
        "M1",
        &kernel_metric(),
        Some(t.kernel_per_conn / 1024.0),
        b.map(|b| b.kernel_per_conn / 1024.0),
        Target::None,
    );
    if let Some(bytes) = t.after_heartbeat {
        table.row(
            "M1",
            &format!("per connection, N={IDLE_MOST}, after one heartbeat each (KiB)"),
            Some(bytes / 1024.0),
            None,
            Target::None,
        );
    }
    table.row(
        "M1b",
        &idle_cpu_metric(),
        Some(t.cpu_percent),
        b.map(|b| b.cpu_percent),
        Target::Below(1.0),
    );
}

/// Kernel memory is counted machine-wide: both ends' sockets are in it,
/// the same for every server, and what differs is the server's own.
fn kernel_metric() -> String {
    format!("kernel memory per idle connection, N={IDLE_MOST}, both ends (KiB)")
}

fn idle_cpu_metric() -> String {
    format!(
        "CPU, {IDLE_CPU_CLIENTS} idle clients, {} s (% of a core)",
        IDLE_CPU_WINDOW.as_secs()
    )
}

pub fn run_disconnected(table: &mut Table) {
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

pub fn run_fanout(plan: &Plan, table: &mut Table) {
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

type Stat = fn(&scenarios::Latency) -> f64;

/// M2b's rows: the name of each figure and where a run keeps it.
const LATENCY_STATS: [(&str, Stat); 5] = [
    ("p50 (ms)", |l| l.p50),
    ("p99 (ms)", |l| l.p99),
    ("max (ms)", |l| l.max),
    ("events/s the publisher achieved", |l| l.publish_rate),
    ("k deliveries/s, first publish to last delivery", |l| {
        l.deliveries_per_second / 1000.0
    }),
];

pub fn run_latency(plan: &Plan, table: &mut Table) {
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
    let stat = |k: usize, f: Stat| Some(median(&samples[k].iter().map(f).collect::<Vec<_>>()));
    for (name, f) in LATENCY_STATS {
        let target = match name {
            "p99 (ms)" => Target::AtMost(10.0),
            _ => Target::None,
        };
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

pub fn run_replay(plan: &Plan, table: &mut Table) {
    progress(&format!(
        "M3 replay of {REPLAY_EVENTS} missed events, {} trials",
        plan.replay_trials
    ));
    let (mut times, errors) = scenarios::replay(plan.replay_trials, REPLAY_EVENTS);
    times.sort_by(f64::total_cmp);
    let name = replay_metric();
    table.row(
        "M3",
        &format!("{name}: median (ms)"),
        Some(median(&times)),
        None,
        Target::AtMost(5.0),
    );
    table.row(
        "M3",
        &format!("{name}: p95 (ms)"),
        Some(p95(&times)),
        None,
        Target::None,
    );
    table.check(
        "M3",
        "replays out of order, incomplete or repeated",
        &errors,
    );
}

fn replay_metric() -> String {
    format!("replay {REPLAY_EVENTS} missed, connect to last event")
}

/// The 95th percentile of sorted `times`, by the nearest rank.
fn p95(times: &[f64]) -> f64 {
    times[((times.len() as f64 * 0.95).ceil() as usize).clamp(1, times.len()) - 1]
}

pub fn run_cut(plan: &Plan, table: &mut Table) {
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

pub fn run_publish(plan: &Plan, table: &mut Table) {
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

/// The peers: mosquitto's, nchan's and Socket.IO's idle memory and CPU,
/// M2b and M3 with the same clients and plan, after tether's own runs (so `--only`
/// must name the matching tether scenarios too for its column to fill).
/// A peer not installed is skipped, with a remark.
pub fn run_peers(plan: &Plan, table: &mut Table) {
    let (installed, missing): (Vec<Kind>, Vec<Kind>) =
        [Kind::Mosquitto, Kind::Nchan, Kind::SocketIo]
            .into_iter()
            .partition(|&peer| peers::installed(peer));
    for peer in missing {
        table.remarks.push(format!(
            "the peer {}: not installed, skipped (see BENCHMARKS.md, \"The peers\")",
            peer.name()
        ));
    }
    if installed.is_empty() {
        return;
    }
    let seconds = plan.latency_seconds.min(PEER_LATENCY_SECONDS);
    table.remarks.push(format!(
        "the peers' M2b: one run of {seconds} s of publishing; a server that falls \
         behind shows latencies that grow with the run's length"
    ));
    for peer in installed {
        run_peer(peer, plan, table);
    }
}

fn run_peer(peer: Kind, plan: &Plan, table: &mut Table) {
    let name = peer.name();
    progress(&format!("the peer: M1/M1b idle clients, {name}"));
    let idle = scenarios::idle(peer, &IDLE_COUNTS, IDLE_CPU_CLIENTS, IDLE_CPU_WINDOW);
    let mib = idle.rss_idle as f64 / (1024.0 * 1024.0);
    table.peer(name, "M1", "RSS with no clients (MiB)", mib);
    for &(n, bytes) in &idle.per_conn {
        let metric = format!("per idle connection, N={n} (KiB)");
        table.peer(name, "M1", &metric, bytes / 1024.0);
    }
    table.peer(name, "M1", &kernel_metric(), idle.kernel_per_conn / 1024.0);
    table.peer(name, "M1b", &idle_cpu_metric(), idle.cpu_percent);

    // A peer that falls behind M2b's million deliveries a second takes many
    // times its publishing time to drain: one short run.
    let (clients, rate) = plan.latency;
    let seconds = plan.latency_seconds.min(PEER_LATENCY_SECONDS);
    progress(&format!(
        "the peer: M2b latency, {clients} clients at {rate}/s for {seconds} s, {name}"
    ));
    let server = Server::start(peer, &[]);
    let latency = scenarios::latency(&server, clients, rate, seconds);
    drop(server);
    for (stat, f) in LATENCY_STATS {
        let metric = format!("{clients} clients, {rate} events/s: {stat}");
        table.peer(name, "M2b", &metric, f(&latency));
    }

    let mut problems = latency.errors;
    let replays: Vec<(&str, Replay)> = match peer {
        Kind::Mosquitto => vec![
            ("", |t, e| mqtt::replay_trials(t, e, true)),
            (", plain MQTT", |t, e| mqtt::replay_trials(t, e, false)),
        ],
        Kind::Nchan => vec![("", peers::nchan_replay_trials)],
        _ => vec![("", peers::socketio_replay_trials)],
    };
    for (over, replay) in replays {
        progress(&format!(
            "the peer: M3 replay of {REPLAY_EVENTS} missed events{over}, {} trials, {name}",
            plan.replay_trials
        ));
        let (mut times, errors) = replay(plan.replay_trials, REPLAY_EVENTS);
        times.sort_by(f64::total_cmp);
        let metric = format!("{}{over}", replay_metric());
        table.peer(
            name,
            "M3",
            &format!("{metric}: median (ms)"),
            median(&times),
        );
        table.peer(name, "M3", &format!("{metric}: p95 (ms)"), p95(&times));
        problems.extend(errors);
    }
    let metric = "clients not getting every event in order (M2b, M3)";
    table.peer(name, "checks", metric, problems.len() as f64);
    table
        .remarks
        .extend(problems.into_iter().take(5).map(|e| format!("{name}: {e}")));
}

/// One peer's M3: (trials, events) to times and problems.
type Replay = fn(usize, usize) -> (Vec<f64>, Vec<String>);
