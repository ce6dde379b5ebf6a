# The two commands of the README, and a few more.
.PHONY: run test build release lint

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
