use std::path::PathBuf;

use distgat_graph::GraphError;

/// Errors of partitioning and of partition directories.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A partitioning option or a user-supplied assignment is not acceptable.
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    /// The graph exceeds what a partitioner can index.
    #[error("{0}")]
    TooLarge(String),
    /// METIS reported a failure.
    #[error("METIS: {0}")]
    Metis(String),
    /// A partition directory or shard is damaged, foreign, or of another version.
    #[error("{}: {detail}", path.display())]
    Directory { path: PathBuf, detail: String },
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl PartitionError {
    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        PartitionError::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }
    pub fn directory(path: &std::path::Path, detail: impl Into<String>) -> Self {
        PartitionError::Directory {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
    pub fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        PartitionError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

pub type Result<T, E = PartitionError> = std::result::Result<T, E>;
