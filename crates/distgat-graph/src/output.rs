//! Output files that appear complete or not at all.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{GraphError, Result};

/// The directory `path` lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file written under a temporary name in the destination directory and renamed into
/// place by [`AtomicFile::commit`]. Dropped without commit, the temporary file is removed,
/// so a failed run never leaves a half-written output behind under the real name.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let dir = parent_dir(path);
        if !dir.is_dir() {
            return Err(GraphError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("output directory {} does not exist", dir.display()),
                ),
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| GraphError::io(path, e))?;
        Ok(AtomicFile {
            temp,
            path: path.to_path_buf(),
        })
    }

    pub fn as_file(&self) -> &File {
        self.temp.as_file()
    }

    /// Where the file is until [`AtomicFile::commit`] renames it (beside its final path).
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// Flushes to disk and renames the temporary file to its final name.
    pub fn commit(self) -> Result<()> {
        // Temporary files are created private (0600); a finished output gets the usual
        // permissions (0644 before the umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.temp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| GraphError::io(&self.path, e))?;
        }
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| GraphError::io(&self.path, e))?;
        self.temp
            .persist(&self.path)
            .map_err(|e| GraphError::io(&self.path, e.error))?;
        Ok(())
    }
}

/// Bytes written between two syncs of a [`SyncBehind`].
pub const SYNC_BEHIND_BYTES: u64 = 64 << 20;

/// A thread that, while other threads fill a file, pushes what they wrote to the disk
/// every [`SYNC_BEHIND_BYTES`] (an `fdatasync` each time), so the disk works while the rows
/// are still computed or received and the final fsync of the commit waits only for the
/// tail. It polls `written` (bytes written so far) every 20 ms and calls `sync` when
/// another [`SYNC_BEHIND_BYTES`] are there. Stop it with [`SyncBehind::stop`] before the
/// commit (it returns the first sync error); dropped, it stops without reporting.
pub struct SyncBehind {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    path: PathBuf,
}

impl SyncBehind {
    /// `path` names the file in the error of a panicked thread.
    pub fn start(
        path: &Path,
        written: impl Fn() -> u64 + Send + 'static,
        sync: impl Fn() -> Result<()> + Send + 'static,
    ) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut synced = 0u64;
                while !stop.load(Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(20));
                    let now = written();
                    if now >= synced + SYNC_BEHIND_BYTES {
                        sync()?;
                        synced = now;
                    }
                }
                Ok(())
            }
        });
        SyncBehind {
            stop,
            thread: Some(thread),
            path: path.to_path_buf(),
        }
    }

    /// Stops the thread and waits for it (at most one sync): its first sync error, if any.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        thread.thread().unpark();
        thread.join().unwrap_or_else(|_| {
            Err(GraphError::io(
                &self.path,
                std::io::Error::other("internal: the thread syncing the output panicked"),
            ))
        })
    }
}

impl Drop for SyncBehind {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;

    /// Syncs once per SYNC_BEHIND_BYTES written, not before; a sync error comes back from
    /// stop; a dropped one stops its thread.
    #[test]
    fn sync_behind_syncs_per_threshold_and_reports_errors() {
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let behind = SyncBehind::start(
            Path::new("out.npy"),
            {
                let w = written.clone();
                move || w.load(Relaxed)
            },
            {
                let s = syncs.clone();
                move || {
                    s.fetch_add(1, Relaxed);
                    Ok(())
                }
            },
        );
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(syncs.load(Relaxed), 0);
        written.store(SYNC_BEHIND_BYTES, Relaxed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while syncs.load(Relaxed) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(syncs.load(Relaxed), 1, "one sync per threshold");
        behind.stop().unwrap();

        let failing = SyncBehind::start(
            Path::new("out.npy"),
            || SYNC_BEHIND_BYTES,
            || {
                Err(GraphError::io(
                    Path::new("out.npy"),
                    std::io::Error::other("disk gone"),
                ))
            },
        );
        std::thread::sleep(std::time::Duration::from_millis(60));
        let err = failing.stop().unwrap_err().to_string();
        assert!(
            err.contains("out.npy") && err.contains("disk gone"),
            "{err}"
        );

        drop(SyncBehind::start(Path::new("out.npy"), || 0, || Ok(())));
    }
}
