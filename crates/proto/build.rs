//! Compiles `proto/**/*.proto` with protox (pure Rust, so no system `protoc`) and
//! generates tonic clients and servers from the descriptors. The encoded descriptor set
//! is kept for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "flotilla/inventory.proto",
    "flotilla/payments.proto",
    "flotilla/users.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(out.join("flotilla_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
