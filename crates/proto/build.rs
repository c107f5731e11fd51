//! Compiles `proto/` with protox (no system protoc) and keeps the public descriptor set for
//! reflection: `firebreak.v1` only, never the internal `firebreak.internal.v1`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build script compiled for one
    // checkout can be reused by another sharing the target directory.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let public = [
        "common",
        "events",
        "intake",
        "incidents",
        "orchestration",
        "notification",
        "access",
    ]
    .map(|name| root.join(format!("firebreak/v1/{name}.proto")));
    let internal = ["ingest", "credentials"]
        .map(|name| root.join(format!("firebreak/internal/v1/{name}.proto")));
    for file in public.iter().chain(&internal) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(&public, [&root])?;
    std::fs::write(
        out.join("firebreak_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let all = protox::compile(public.iter().chain(&internal), [&root])?;
    std::fs::write(
        out.join("firebreak_internal_descriptor.bin"),
        prost::Message::encode_to_vec(&all),
    )?;
    tonic_prost_build::configure().compile_fds(all)?;
    Ok(())
}
