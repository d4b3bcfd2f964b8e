//! The shipped logging: `tracing` events (one access-log line per request among them) as
//! text or JSON lines on stderr, written by a thread of their own so that a slow terminal,
//! pipe or disk never blocks a runtime thread serving requests.

use std::io::IsTerminal as _;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing_subscriber`'s text lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the log writer running; dropping it flushes what is buffered.
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the global subscriber: `RUST_LOG` (default `info`), `format`, stderr.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal: escape codes in a file or a log pipeline are noise.
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    LogGuard(guard)
}
