//! Compiles the flows admin API (`proto/sluis/flows/v1/flows.proto`) with protox, a
//! protobuf compiler written in Rust, so building Sluis needs no `protoc` binary. The
//! well-known types it imports (`Timestamp`, `Struct`) come with protox and map to
//! `prost-types`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sluis");
    let descriptors = protox::compile(["sluis/flows/v1/flows.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Decoded by hand, to stop decoding flows past the import limit: see the type.
        .extern_path(
            ".sluis.flows.v1.ImportFlowsRequest",
            "crate::admin::grpc::ImportFlowsRequest",
        )
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
