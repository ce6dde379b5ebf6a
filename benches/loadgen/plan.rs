//! The plan (how much of each scenario to run, quick or full) and the
//! command-line flags that change it.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::server::Kind;

/// How much of each scenario to run.
pub struct Plan {
    pub name: &'static str,
    /// Runs per server for M2 (M2b does half, rounded up); medians are
    /// over these.
    pub runs: usize,
    /// (subscribers, events) of the two fan-out runs.
    pub fanout: [(usize, usize); 2],
    /// M2b's subscribers and events per second.
    pub latency: (usize, u64),
    pub latency_seconds: u64,
    pub replay_trials: usize,
    pub cut_trials: usize,
    /// (requests of 1000 events, single-event requests).
    pub publish_requests: (usize, usize),
    pub publish_runs: usize,
    /// Whether the peers are measured without `--only` asking for them:
    /// they take minutes, longer than a quick run may.
    pub peers: bool,
    /// Servers started elsewhere: (kind, WebSocket, HTTP address). When
    /// given, only M2b runs, against them.
    pub elsewhere: Vec<(Kind, SocketAddr, SocketAddr)>,
}

impl Plan {
    /// M2b's runs take longer, so it does half as many.
    pub fn latency_runs(&self) -> usize {
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
    peers: false,
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
    peers: true,
    elsewhere: Vec::new(),
};

/// The plan the flags ask for, and the scenarios `--only` names (all of
/// them when `None`).
pub fn from_args(args: &[String]) -> (Plan, Option<Vec<String>>) {
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
    (plan, only)
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
