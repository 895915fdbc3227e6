//! Compiles `proto/calbridge/v1/*.proto` with a pure-Rust compiler (protox), so
//! a fresh machine needs nothing beyond cargo, and writes the encoded
//! descriptor set that every process serves through gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/calbridge/v1/calendar.proto",
        "proto/calbridge/v1/adapter.proto",
        "proto/calbridge/v1/scheduler.proto",
        "proto/calbridge/v1/sandbox.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?
        .file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("calbridge_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
