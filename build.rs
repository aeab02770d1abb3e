//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/tern/v1/client.proto",
        "proto/tern/storage/v1/mailbox.proto",
        "proto/tern/storage/v1/media.proto",
        "proto/tern/mesh/v1/link.proto",
        "proto/tern/mesh/v1/cluster.proto",
        "proto/tern/mesh/v1/raft.proto",
        "proto/tern/mesh/v1/mailbox.proto",
        "proto/tern/mesh/v1/media.proto",
        "proto/tern/wan/v1/wan.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
