"""distgat: export trained PyTorch Geometric attention models and graphs for ``distgat infer``."""

from .export import (
    ACTIVATIONS,
    ATTENTION_KINDS,
    MODEL_FORMAT,
    NotExportedWarning,
    export_model,
    save_graph,
)

__all__ = ["export_model", "save_graph", "NotExportedWarning", "MODEL_FORMAT", "ACTIVATIONS",
           "ATTENTION_KINDS"]
__version__ = "0.1.0"
