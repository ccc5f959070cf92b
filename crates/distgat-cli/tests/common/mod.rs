//! Helpers shared by the black-box tests of the `distgat` binary over the reference cases.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

/// The repository root.
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `reference/<case>/<file>` in the repository.
pub fn reference(case: &str, file: &str) -> PathBuf {
    Path::new(ROOT).join("reference").join(case).join(file)
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The array bytes of an `.npy` (everything after the header).
pub fn body(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    bytes[header_len..].to_vec()
}

/// `Coordinator.RunJob` on a running coordinator: the summary JSON, or the status message.
pub fn run_job(
    coordinator: &str,
    request: distgat_proto::v1::RunJobRequest,
) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = distgat_proto::v1::coordinator_client::CoordinatorClient::connect(
            format!("http://{coordinator}"),
        )
        .await
        .unwrap();
        client
            .run_job(request)
            .await
            .map(|r| r.into_inner().summary_json)
            .map_err(|status| status.message().to_string())
    })
}
