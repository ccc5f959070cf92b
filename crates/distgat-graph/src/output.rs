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
