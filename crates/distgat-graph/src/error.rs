use std::path::{Path, PathBuf};

/// Everything that can be wrong with graph and feature input.
///
/// Every variant names the file it is about (or the flag, for values that do not come
/// from a file) and says what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The OS error is part of the message (not a `source`), so it is printed once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file's bytes do not follow its format (bad header, truncated body, bad line).
    #[error("{}: {detail}", path.display())]
    Format { path: PathBuf, detail: String },
    /// The file is well formed but its content is not acceptable (ids out of range,
    /// NaN features, shapes that disagree with each other).
    #[error("{}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
    /// A command-line value or an in-memory argument is not acceptable.
    #[error("{what}: {detail}")]
    Argument { what: String, detail: String },
}

impl GraphError {
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        GraphError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
    pub fn format(path: &Path, detail: impl Into<String>) -> Self {
        GraphError::Format {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
    pub fn invalid(path: &Path, detail: impl Into<String>) -> Self {
        GraphError::Invalid {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
    pub fn argument(what: impl Into<String>, detail: impl Into<String>) -> Self {
        GraphError::Argument {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;
