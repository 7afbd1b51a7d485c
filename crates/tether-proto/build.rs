//! Compiles `proto/tether/v1/*.proto` with protox (pure Rust), so no system
//! `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with `env!`: a target directory shared
    // by two checkouts reuses the compiled build script, which would then
    // read the other checkout's .proto files.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "envelope",
        "vehicle",
        "identity",
        "handshake",
        "pairing",
        "ota",
        "share",
        "device",
        "automation",
        "automation_state",
    ]
    .map(|name| root.join(format!("tether/v1/{name}.proto")));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    // The descriptors themselves, for tools that read and write the
    // messages as JSON (`tether tasks add`).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tether.v1.fds"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
