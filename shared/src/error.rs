//! The data layer's error type: every variant names the file, line or field at fault.

use std::path::PathBuf;

/// Errors from reading, converting and validating data and configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed line in an input file (1-based line number).
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },
    /// A file that holds no data lines.
    #[error("{}: no interactions in the file (empty or only blank/comment lines)", path.display())]
    Empty {
        /// The empty file.
        path: PathBuf,
    },
    /// An invalid configuration value (names the flag).
    #[error("{0}")]
    Config(String),
    /// Data that is readable but cannot be used as asked (e.g. no timestamps for a time-aware model).
    #[error("{0}")]
    Data(String),
}

/// Result with the data layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The error for a time-aware model on data without timestamps; names `--no_time`.
    pub fn no_timestamps(path: &std::path::Path) -> Self {
        Error::Data(format!(
            "{} has no timestamps, but a time-aware model (TiSASRec) needs them: \
             pass --no_time for SASRec, or use a file with a timestamp column",
            path.display()
        ))
    }
}

/// An error and its causes on one line, `outer: cause: …`, leaving out every cause whose text
/// the message already holds (an error that prints its source, as [`Error::Io`] does, would
/// otherwise show it twice); libtorch's multi-line messages are joined by spaces.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("converting ratings.dat: {0}")]
    struct Outer(#[source] Error);

    #[test]
    fn report_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = Outer(Error::io("data/x.txt", io));
        assert_eq!(
            report(&e),
            "converting ratings.dat: data/x.txt: No such file"
        );
        let wrapped = std::io::Error::other(Error::Config("--maxlen must be at least 1".into()));
        assert_eq!(report(&wrapped), "--maxlen must be at least 1");
    }
}
