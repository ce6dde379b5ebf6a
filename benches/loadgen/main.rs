//! tether's benchmark harness (issue 5): a synchronous load generator that
//! starts the release `tether` binary and the bare fan-out baseline
//! (`examples/baseline.rs`) as child processes on loopback ports, runs each
//! scenario against them, and prints one table of medians with the ratios
//! and the targets. M2b also measures its floor (`floor.rs`): the same
//! clients fed by a server that does nothing but write. The full run (or
//! `--only peers`) also measures the peers that are installed, mosquitto,
//! nchan and Socket.IO (`peers.rs`, `mqtt.rs`), in a second table: idle
//! memory and CPU, M2b and M3 with the same clients.
//!
//!     make bench        # quick: under 3 minutes on 2 cores
//!     make bench-full   # what BENCHMARKS.md reports
//!     cargo bench --bench loadgen -- --quick --only m2,m3
//!     cargo bench --bench loadgen -- --only m2 --runs 1 --fanout 1000x4000
//!
//! `--only` takes m1 (M1 and M1b), m2, m2b, m3, m4, publish, peers and
//! size; `--runs`, `--fanout NxE` and `--latency NxR` (M2b's clients and
//! rate) override the plan and `--tether-only` skips the baseline, for
//! profiling. With `BENCH_TETHER=PATH` another tether binary is measured
//! (one with symbols, for perf or valgrind), with `BENCH_MOSQUITTO`,
//! `BENCH_NGINX`, `BENCH_NODE` and `BENCH_SOCKETIO_DIR` other peers (see
//! BENCHMARKS.md, "The peers"); with `BENCH_SERIES=1` each M2b
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
mod mqtt;
mod peers;
mod plan;
mod runs;
mod scenarios;
mod server;
mod subscribers;
mod table;

use std::time::Instant;

use runs::{
    run_cut, run_disconnected, run_fanout, run_idle, run_latency, run_peers, run_publish,
    run_replay,
};
use table::{median, percentile, print_header, Table, Target};

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
    let (plan, only) = plan::from_args(&args);
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
    if wanted("peers") && (plan.peers || only.is_some()) {
        run_peers(plan, &mut table);
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
    let meminfo = "SUnreclaim:        46652 kB\nKernelStack:        1552 kB\n";
    assert_eq!(
        server::proc_bytes(meminfo, "KernelStack"),
        Some(1552 * 1024)
    );
    assert_eq!(server::proc_bytes(meminfo, "Kernel"), None);
    subscribers::self_check();
    mqtt::self_check();
}
