# The two commands of the README, and a few more.
.PHONY: run test build release lint bench bench-full

# Build and start the server with its defaults (WebSocket :8765, admin :8766).
run:
	cargo run --release -- serve

# Everything CI checks: formatting, lints, every test.
test:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --all-targets

build:
	cargo build

release:
	cargo build --release

# The benchmark harness (benches/loadgen/, BENCHMARKS.md): release tether and
# the bare fan-out baseline on loopback, one table. Not part of `make test`.
# `bench` is the quick run (under 3 minutes on 2 cores); `bench-full` is the
# run BENCHMARKS.md reports.
# The bench profile is the release profile; building the baseline with it
# too keeps to one optimised build of the crate.
bench:
	cargo build --profile bench --bin tether --example baseline
	cargo bench --bench loadgen -- --quick

bench-full:
	cargo build --profile bench --bin tether --example baseline
	cargo bench --bench loadgen -- --full
