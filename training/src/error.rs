//! The crate's error type, grouped by what a caller can do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- bad input: the caller passed something we cannot use ---
    /// An argument or input that cannot be used (empty crop, mismatched lengths, bad option).
    #[error("invalid input: {0}")]
    Invalid(String),

    // --- setup: a model or artifact is missing or does not match ---
    /// A model artifact folder that lacks a file or whose files do not agree.
    #[error("bad model artifact {path}: {reason}")]
    BadArtifact { path: PathBuf, reason: String },
    /// An architecture name no constructor knows.
    #[error("unknown architecture {0:?}")]
    UnknownArch(String),
    /// The pretrained weights could not be read.
    #[error(transparent)]
    Pipeline(#[from] facepipe_pipeline::Error),

    // --- runtime failures ---
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("JSON error in {what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("could not draw {what}: {reason}")]
    Plot { what: String, reason: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }
}
