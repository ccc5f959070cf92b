use std::path::PathBuf;

use distgat_graph::GraphError;

/// Errors of the model spec, the weights and the engine.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The OS error is part of the message (not a `source`), so it is printed once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The model JSON does not parse or is not a usable `gat-model-v1` spec.
    #[error("{}: {detail}", path.display())]
    Spec { path: PathBuf, detail: String },
    /// A weights file is corrupt, lacks a tensor, or a tensor has the wrong dtype or shape.
    #[error("{}: {detail}", path.display())]
    Weights { path: PathBuf, detail: String },
    /// The model does not fit the input it is run on.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
