//! The library's one error type.
//!
//! Every variant carries the data a user needs to fix the problem: the file, the field or line,
//! what was expected and what was found. `main` prints the whole cause chain and maps
//! [`Error::exit_code`] to the process's exit status (2 for bad input, 1 for failures while
//! running).

use std::io::ErrorKind;
use std::path::PathBuf;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is malformed or holds an invalid value.
    #[error("{file}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Config {
        /// The configuration file.
        file: PathBuf,
        /// The 1-based line of the offending key, when known.
        line: Option<usize>,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A data file (idx, npy, safetensors) is malformed or does not fit.
    #[error("{path}: {message}")]
    Data {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A value given on the command line or in code is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed (shape mismatch, device error).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Writing or reading a Parquet table failed.
    #[error("table {path}: {source}")]
    Table {
        /// The table file.
        path: PathBuf,
        /// polars' error.
        #[source]
        source: polars::error::PolarsError,
    },
    /// Another process holds the output folder's lock (see [`crate::lock`]).
    #[error(
        "{} is in use by another fragility run ({}); wait for it to finish or choose another `out`",
        dir.display(),
        holder.map(|p| format!("pid {p}")).unwrap_or_else(|| "pid unknown".into())
    )]
    Locked {
        /// The locked folder.
        dir: PathBuf,
        /// The process id the holder wrote into the lock file, if it could be read.
        holder: Option<u32>,
    },
    /// An output path fragility may not write: not a folder, or a file it did not write
    /// (see [`crate::manifest`]).
    #[error("{path}: {message}")]
    Output {
        /// The folder or file involved.
        path: PathBuf,
        /// Why, and what to do instead.
        message: String,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The image file.
        path: PathBuf,
        /// What the plotting backend said.
        message: String,
    },
}

impl Error {
    /// The process exit code for this error: 2 for bad input (config, data, arguments), 1 for
    /// failures while computing or writing.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::Data { .. }
            | Error::Invalid(_)
            | Error::Locked { .. }
            | Error::Output { .. } => 2,
            // A missing file, a folder where a file belongs (or the reverse), unreadable
            // content: the user's input, not a failure while running.
            Error::Io { source, .. } => match source.kind() {
                ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory => 2,
                ErrorKind::InvalidData => 2,
                _ => 1,
            },
            _ => 1,
        }
    }

    /// Shorthand for an [`Error::Io`] about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Shorthand for an [`Error::Data`] about `path`.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data { path: path.into(), message: message.into() }
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;
