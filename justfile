# Firebreak's everyday commands. `cargo install just --locked` if you do not have just.

# Run Firebreak in embedded mode (all services, SQLite, in-process bus).
run *ARGS:
    cargo run -p firebreak -- up {{ARGS}}

# Four `firebreak serve` processes (intake :7400, triage :7410, orchestration :7420,
# notification :7430; HTTP on the next port) configured by deploy/distributed.yaml. Talk to
# it with `firebreak --client-config deploy/client.yaml …`; Ctrl-C stops all four.
# Run the distributed stack locally on the machine's Postgres (:5432) and NATS (:4222).
distributed:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p firebreak
    trap 'kill $(jobs -p) 2>/dev/null' EXIT
    export FIREBREAK_AUTH__SERVICE_TOKEN=$(target/debug/firebreak token generate)
    export FIREBREAK_AUTH__ADMIN_TOKEN=$(target/debug/firebreak token generate)
    echo "admin token (this run only): $FIREBREAK_AUTH__ADMIN_TOKEN"
    echo "  export FIREBREAK_TOKEN=$FIREBREAK_AUTH__ADMIN_TOKEN"
    port=7400
    for service in intake triage orchestration notification; do
        target/debug/firebreak serve "$service" --config deploy/distributed.yaml \
            --grpc-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$((port + 1))" &
        port=$((port + 10))
    done
    wait

# Build the container image (deploy/Containerfile) with podman, else docker, tagged with the
# workspace's version: `just image`, or `just image registry.example/firebreak:TAG`. Push it and
# pin its digest in your overlay (deploy/kubernetes/README.md).
image tag="":
    #!/usr/bin/env bash
    set -euo pipefail
    tag="{{tag}}"
    if [ -z "$tag" ]; then
        version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
        tag="ghcr.io/firebreak/firebreak:$version"
    fi
    if command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v docker >/dev/null; then
        echo "just image: docker is installed but its daemon does not answer (docker info failed); start it, or install podman" >&2
        exit 1
    else
        echo "just image: neither podman nor docker is installed; install one of them to build the image" >&2
        exit 1
    fi
    echo "building $tag with $engine (deploy/Containerfile)"
    "$engine" build -f deploy/Containerfile -t "$tag" .

# Check the deployment files: the rendered Kubernetes overlay (kubernetes-validate --strict,
# checkov, yamllint) and the Containerfile (hadolint); .ci/run runs it too.
check-deploy:
    deploy/check

# `tests/run` installs and starts what the tests need (nats-server, Postgres, Alertmanager,
# promtool, aiosmtpd) when it is missing.
# Run every test (unit, integration, end-to-end, distributed).
test *ARGS:
    tests/run {{ARGS}}

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

# Benchmarks (release build): intake, runbook step overhead, paging, the distributed stack.
bench:
    cargo bench -p firebreak-e2e --bench intake
    cargo bench -p firebreak-e2e --bench runbook_steps
    cargo bench -p firebreak-e2e --bench paging
    cargo bench -p firebreak --bench distributed
