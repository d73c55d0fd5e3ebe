//! The logging set-up of the three binaries (`--log_format`): text for people, colour only
//! when the stream is a terminal and `NO_COLOR` is unset, or one JSON object per line
//! (tracing's JSON formatter) for files, pipes and log shippers (Kubernetes, systemd).

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// `--log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event; ANSI colour only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, with the spans.
    Json,
}

impl LogFormat {
    /// The flag's values.
    pub const NAMES: &'static [&'static str] = &["text", "json"];

    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}: expected text or json")),
        }
    }
}

/// `--log_format`, flattened into each binary's flags (feature `cli`).
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log lines as text (colour only on a terminal; NO_COLOR turns it off) or as one JSON
    /// object per line (for files and log shippers). RUST_LOG sets the level.
    #[arg(
        long = "log_format",
        alias = "log-format",
        global = true,
        default_value = "text",
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(LogFormat::NAMES),
            |s| s.parse::<LogFormat>()
        )
    )]
    pub log_format: LogFormat,
}

/// Where the events go: the process's standard error or standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard error (training and export: standard output carries their results).
    Stderr,
    /// Standard output (the server).
    Stdout,
}

/// Whether text written to `stream` may carry ANSI colour: only on a terminal, and never with
/// `NO_COLOR` set to a non-empty value (no-color.org).
pub fn colour(stream: Stream) -> bool {
    let terminal = match stream {
        Stream::Stderr => std::io::stderr().is_terminal(),
        Stream::Stdout => std::io::stdout().is_terminal(),
    };
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: `RUST_LOG` when set, else `default_filter`; events in
/// `format` to `stream`.
pub fn init(format: LogFormat, default_filter: &str, stream: Stream) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    match stream {
        Stream::Stderr => install(format, filter, colour(stream), std::io::stderr),
        Stream::Stdout => install(format, filter, colour(stream), std::io::stdout),
    }
}

fn install<W>(format: LogFormat, filter: EnvFilter, ansi: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_their_names_only() {
        for name in LogFormat::NAMES {
            assert_eq!(name.parse::<LogFormat>().unwrap().as_str(), *name);
        }
        assert_eq!(
            "xml".parse::<LogFormat>().unwrap_err(),
            "unknown log format \"xml\": expected text or json"
        );
    }
}
