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

/// Processes of a test cluster (`distgat coordinator`, `distgat worker`), killed and
/// reaped on drop, so a failing test leaves nothing running.
#[derive(Default)]
pub struct Children(pub Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Children {
    /// Spawns `cmd` (stdout piped; stderr as `cmd` says, inherited by default), keeps it,
    /// and returns the address of its first stdout line, `listening on ADDR`. `what` names
    /// the process in panics.
    pub fn start(&mut self, cmd: std::process::Command, what: &str) -> String {
        self.start_with_stderr(cmd, what).0
    }

    /// [`Children::start`], also handing back the child's stderr when `cmd` pipes it.
    pub fn start_with_stderr(
        &mut self,
        mut cmd: std::process::Command,
        what: &str,
    ) -> (String, Option<std::process::ChildStderr>) {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take();
        self.0.push(child);
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading {what}'s first line: {e}"));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{what}: unexpected first line '{line}'"))
            .to_string();
        (addr, stderr)
    }
}
