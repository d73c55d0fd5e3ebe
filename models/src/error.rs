//! The models crate's error type: every variant names the tensor, shape or input at fault.

use std::path::PathBuf;

/// Errors from building, running, saving and loading models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model configuration failed `ModelConfig::validate`.
    #[error("invalid model config: {0}")]
    Config(#[from] sasrec_shared::Error),
    /// A checkpoint tensor whose shape differs from the model's.
    #[error(
        "{}: tensor `{name}` has shape {got:?} but the model expects {expected:?} \
         (checkpoint written for a different config?)",
        path.display()
    )]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// State-dict name of the tensor.
        name: String,
        /// Shape the model has.
        expected: Vec<i64>,
        /// Shape stored in the checkpoint.
        got: Vec<i64>,
    },
    /// A model tensor that the checkpoint lacks.
    #[error(
        "{}: tensor `{name}` (shape {expected:?}) is missing from the checkpoint \
         (checkpoint written for a different model kind?)",
        path.display()
    )]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// State-dict name of the missing tensor.
        name: String,
        /// Shape the model has.
        expected: Vec<i64>,
    },
    /// A checkpoint tensor that the model does not have.
    #[error(
        "{}: tensor `{name}` (shape {got:?}) is not a parameter of this model \
         (checkpoint written for a different model kind?)",
        path.display()
    )]
    UnexpectedTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// State-dict name of the extra tensor.
        name: String,
        /// Its shape.
        got: Vec<i64>,
    },
    /// A time-aware model called without its interval matrix.
    #[error("{0} needs a time-interval matrix (B, T, T); pass one, or train with --no_time")]
    MissingTimeMatrix(&'static str),
    /// Input tensors with a wrong shape or out-of-range values.
    #[error("invalid model input: {0}")]
    Input(String),
    /// A libtorch failure (I/O of checkpoints, kernels).
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
