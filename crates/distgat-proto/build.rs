//! Generates the distgat.v1 code with a vendored protoc: no system protoc needed. Also
//! writes the file descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let proto = "../../proto/distgat/v1/distgat.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Build scripts are single-threaded, so setting PROTOC here races with nothing.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_build::configure()
        // Shard chunks (up to 1 MiB each, hundreds of MB per part) decode as slices of
        // tonic's receive buffer instead of a copy each.
        // Halo row chunks likewise; a part that keeps its sent rows for a lost peer's
        // replacement (StartJobRequest.keep_sent_rows) keeps them without a copy.
        .bytes([
            ".distgat.v1.ShardChunk.data",
            ".distgat.v1.RowChunk.payload",
        ])
        .file_descriptor_set_path(out_dir.join("distgat_descriptor.bin"))
        .compile_protos(&[proto], &[proto_root])?;
    Ok(())
}
