//! Compiles proto/raft.proto into the gRPC client and server of
//! `raft::transport`. protoc comes from `protoc-bin-vendored`, so building
//! needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/raft.proto");
    tonic_prost_build::configure()
        .bytes(".promraft.raft.v1")
        .compile_protos(&["proto/raft.proto"], &["proto"])?;
    Ok(())
}
