//! Compiles `proto/tether/v1/*.proto` with protox (pure Rust), so no system
//! `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "envelope",
        "vehicle",
        "identity",
        "handshake",
        "pairing",
        "ota",
        "share",
        "device",
    ]
    .map(|name| root.join(format!("tether/v1/{name}.proto")));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
