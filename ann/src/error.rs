//! The crate's error type: one line, naming the file at fault where there is one.

use std::path::{Path, PathBuf};

/// Errors from reading, writing, building and searching item vectors and their index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that is readable but wrong: bad format, truncated, corrupt, or built for other
    /// item vectors.
    #[error("{}: {msg}", path.display())]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A bad argument (e.g. a query of the wrong dimension) or a usearch failure not tied to
    /// a file.
    #[error("{0}")]
    Invalid(String),
    /// An I/O failure on a named file, or another error of the shared data layer.
    #[error(transparent)]
    Shared(#[from] sasrec_shared::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns ([`sasrec_shared::Error::Io`]).
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Shared(sasrec_shared::Error::io(path, source))
    }

    /// A [`Error::File`] for `path` saying `msg`.
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
