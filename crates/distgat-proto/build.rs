//! Generates the distgat.v1 code with a vendored protoc: no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let proto = "../../proto/distgat/v1/distgat.proto";
    println!("cargo:rerun-if-changed={proto}");
    // SAFETY-free: build scripts are single-threaded, so setting PROTOC is race-free.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_build::configure().compile_protos(&[proto], &[proto_root])?;
    Ok(())
}
