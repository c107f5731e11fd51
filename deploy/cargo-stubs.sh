#!/bin/sh
# Stub sources for the image's dependency layer (deploy/Containerfile): with only the
# manifests copied, every target a manifest names gets an empty file, so `cargo build` builds
# the dependencies alone, and that layer stays cached until Cargo.toml or Cargo.lock change.
# Run from the workspace root. The real sources replace the stubs in the next layer.
set -eu
for manifest in crates/*/Cargo.toml tests/Cargo.toml; do
    dir=$(dirname "$manifest")
    mkdir -p "$dir/src"
    : > "$dir/src/lib.rs"
    # Targets with a path of their own (tests, benches, a lib elsewhere).
    sed -n 's/^path = "\(.*\)"$/\1/p' "$manifest" | while read -r path; do
        mkdir -p "$dir/$(dirname "$path")"
        echo 'fn main() {}' > "$dir/$path"
    done
    # Targets found by name: [[bench]] name = "x" is benches/x.rs.
    awk '/^\[\[bench\]\]/ { bench = 1; next } /^\[/ { bench = 0 }
         bench && /^name = / { gsub(/"/, "", $3); print $3 }' "$manifest" |
        while read -r name; do
            mkdir -p "$dir/benches"
            [ -e "$dir/benches/$name.rs" ] || echo 'fn main() {}' > "$dir/benches/$name.rs"
        done
done
# The one binary.
echo 'fn main() {}' > crates/firebreak/src/main.rs
