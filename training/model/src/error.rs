//! The crate's error type: what went wrong with a model, a crop or a photo, with its cause.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- bad input: the caller passed something the network cannot use ---
    /// A face crop with no pixels.
    #[error("empty face crop ({width}x{height})")]
    EmptyCrop { width: u32, height: u32 },
    /// A network asked for at an input size it cannot take.
    #[error("{arch} takes {expected} px inputs, not {got}")]
    InputSize {
        arch: crate::Arch,
        expected: u32,
        got: u32,
    },

    // --- setup: a model or artifact is missing or does not match ---
    /// A model artifact folder that lacks a file or whose files do not agree.
    #[error("bad model artifact {path}: {reason}")]
    BadArtifact { path: PathBuf, reason: String },
    /// An architecture name no constructor knows.
    #[error("unknown architecture {0:?} (expected one of: {names})", names = crate::Arch::names().join(", "))]
    UnknownArch(String),
    /// Weights whose variables do not fit the network they are loaded into.
    #[error("weights do not fit the network: {0}")]
    WeightsMismatch(String),
    /// An artifact asked to be written from an empty var store.
    #[error("nothing to save: the var store is empty")]
    NothingToSave,
    /// The face engine or the pretrained weights could not be loaded, or a photo not read.
    #[error(transparent)]
    Pipeline(#[from] facepipe_pipeline::Error),

    // --- runtime failures ---
    /// The network answered with the wrong number of values.
    #[error("the network returned {values} values for {crops} crops of dimension {dim}")]
    OutputShape {
        values: usize,
        crops: usize,
        dim: usize,
    },
    /// The embedder's self-check (one grey crop) gave no finite embedding.
    #[error("the embedder's self-check gave no finite embedding")]
    SelfCheck,
    /// A [`crate::Deadline`] passed between two stages of recognition.
    #[error("stopped: the deadline passed")]
    Cancelled,
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("JSON error in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
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
