//! The train library's error type: what a run, a data command or a distributed check can fail
//! with. The binary turns it into one line on standard error and an exit code
//! ([`Error::exit_code`]); no error's message repeats its cause.

use std::fmt;

/// Everything the `sasrec-train` library returns as an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, a combination of flags or an environment variable that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Input data or a file at fault (the data layer names the file, line or field).
    #[error(transparent)]
    Data(#[from] sasrec_shared::Error),
    /// A model that cannot be built, or weights that cannot be loaded (names the file).
    #[error(transparent)]
    Model(#[from] sasrec_models::Error),
    /// libtorch refused an operation.
    #[error("{0}")]
    Torch(#[from] tch::TchError),
    /// An I/O failure (the path is in the [`Error::Context`] around it).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON that cannot be written or read.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A failure while the run executes: a collective, a rank, a C++ shim, a non-finite loss.
    #[error("{0}")]
    Failed(String),
    /// `what` failed because of `cause` (printed as `what: cause`).
    #[error("{what}: {cause}")]
    Context {
        /// What was being done, naming its file or rank.
        what: String,
        /// Why it failed.
        cause: Box<Error>,
    },
}

/// Result with the train library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit status for this error: 2, as for a usage error of the command line
    /// (bad flags, bad or mismatched input files, checkpoints and configurations, failed runs
    /// alike: the message says which).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Context { cause, .. } => cause.exit_code(),
            Error::Usage(_)
            | Error::Data(_)
            | Error::Model(_)
            | Error::Torch(_)
            | Error::Io(_)
            | Error::Json(_)
            | Error::Failed(_) => 2,
        }
    }

    /// `what: self`.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error::Context {
            what: what.to_string(),
            cause: Box::new(self),
        }
    }

    /// The whole message on one line (libtorch's multi-line messages joined by spaces).
    pub fn one_line(&self) -> String {
        self.to_string().replace('\n', " ")
    }
}

/// Adds what was being done to an error, as `anyhow::Context` does.
pub trait Context<T> {
    /// `what: cause`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// `what(): cause`, the text built only on failure.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }

    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// A missing value is an [`Error::Failed`] that says what is missing.
impl<T> Context<T> for Option<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::Failed(what.to_string()))
    }

    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| Error::Failed(what().to_string()))
    }
}

/// `return Err(Error::Failed(format!(…)))`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Failed(format!($($arg)*)))
    };
}

/// `return Err(Error::Usage(format!(…)))`: a flag or environment variable at fault.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Usage(format!($($arg)*)))
    };
}

/// `Error::Failed(format!(…))`.
macro_rules! failed {
    ($($arg:tt)*) => {
        $crate::error::Error::Failed(format!($($arg)*))
    };
}

pub(crate) use {bail, failed, usage};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_the_step_once_and_keeps_the_exit_code() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let data = sasrec_shared::Error::io("data/x.txt", io);
        let e: Result<()> = Err(data).context("converting ratings.dat");
        let e = e.unwrap_err();
        assert_eq!(
            e.to_string(),
            "converting ratings.dat: data/x.txt: No such file"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
