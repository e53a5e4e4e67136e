//! Compiles the subset of etcd's v3 API the etcd discovery backend calls
//! (`proto/etcd/**`) with protox (pure Rust, so no system `protoc`) and generates tonic
//! clients from the descriptors.

const PROTOS: &[&str] = &[
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/etcdserverpb/rpc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
