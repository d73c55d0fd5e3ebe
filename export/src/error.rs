//! The export crate's error type. Every variant that concerns a file names it, and every
//! message is a single line (the CLI prints it as one line and exits with status 2).

use std::path::PathBuf;

/// Errors from reading a run directory, recording the graph and writing the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written, or the data layer refused its content (the data
    /// layer's error names the file).
    #[error(transparent)]
    Data(#[from] sasrec_shared::Error),
    /// `config.json` is missing a field, malformed, or describes an invalid model.
    #[error("{}: {msg}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The checkpoint is corrupt, truncated, or does not match the config.
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The output cannot be written as asked (`--output`, `--external_data_threshold`).
    #[error("{}: {msg}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// What is wrong and which flag to change.
        msg: String,
    },
    /// The approximate nearest-neighbour index could not be built or written (names the file).
    #[error(transparent)]
    Ann(#[from] sasrec_ann::Error),
    /// The recorded graph is invalid (a bug: the networks used an operation the recorder cannot
    /// express).
    #[error("recording the ONNX graph: {0}")]
    Graph(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Data(sasrec_shared::Error::io(path, source))
    }

    /// A checkpoint error on `path`; a leading `"<path>: "` in `msg` is dropped (the models
    /// crate's errors already name the file) and only the first line is kept (libtorch errors
    /// can carry a backtrace).
    pub fn checkpoint(path: impl Into<PathBuf>, msg: &str) -> Self {
        let path = path.into();
        let prefix = format!("{}: ", path.display());
        let msg = msg.strip_prefix(&prefix).unwrap_or(msg);
        let msg = msg
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("unreadable checkpoint");
        // tch reports parse failures as "safetensors error <path>: <kind>".
        let msg = match msg.strip_prefix("safetensors error") {
            Some(rest) => {
                let kind = rest
                    .trim_start()
                    .strip_prefix(&prefix)
                    .unwrap_or(rest)
                    .trim();
                format!("corrupt or truncated safetensors file ({kind})")
            }
            None => msg.to_string(),
        };
        Self::Checkpoint { path, msg }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
