# Firebreak's everyday commands. `cargo install just --locked` if you do not have just.

# Run Firebreak in embedded mode (all services, SQLite, in-process bus).
run *ARGS:
    cargo run -p firebreak -- up {{ARGS}}

# Run every test (unit, integration, end-to-end). One drives the real Alertmanager:
# `just test-deps` installs it on Debian/Ubuntu.
test:
    cargo test --workspace --locked

# What the tests need besides Rust: Prometheus Alertmanager (Debian's package).
test-deps:
    command -v prometheus-alertmanager || (sudo apt-get update && sudo apt-get install -y prometheus-alertmanager)

# Lint: formatting and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Compile and check the shipped runbooks.
check-runbooks:
    cargo run -q -p firebreak -- runbook check runbooks

# Run the shipped runbooks' tests (fixtures beside each runbook).
test-runbooks:
    cargo run -q -p firebreak -- runbook test runbooks --require-tests

# Benchmarks (release build): intake throughput and ack latency, runbook step overhead.
bench:
    cargo bench -p firebreak-e2e --bench intake
    cargo bench -p firebreak-e2e --bench runbook_steps
