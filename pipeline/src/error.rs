//! The crate's error type, grouped by what a caller can do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- bad input: the caller sent something we cannot use (HTTP 4xx, a failed record) ---
    /// Bytes that are not a decodable image (empty, truncated, not an image at all).
    #[error("unreadable image: {reason}")]
    Unreadable { reason: String },
    /// An image whose header declares more pixels than the configured limit; refused before decoding.
    #[error(
        "image too large: {width}x{height} = {pixels} pixels exceeds the limit of {limit} pixels"
    )]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    /// An input file larger than the byte limit.
    #[error("input too large: {bytes} bytes exceeds the limit of {limit} bytes")]
    TooManyBytes { bytes: u64, limit: u64 },
    /// Decoding would exceed a decode budget other than the pixel count: memory for
    /// metadata, frames or the pixel buffer, or an elongated shape. Refused, never attempted.
    #[error("image refused: {what} exceeds the limit of {limit}; {hint}")]
    LimitExceeded {
        /// What was too big, with the measured value.
        what: String,
        /// The limit, with its unit.
        limit: String,
        /// What the sender can do about it.
        hint: String,
    },
    /// Any other invalid argument or input (bad location, bad option value).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A photo collection with no photo in the `IDENTITY/PHOTO` layout.
    #[error(
        "{location} holds no photos in the expected layout IDENTITY/PHOTO \
         (e.g. Ada_Lovelace/Ada_Lovelace_0001.jpg, formats: {formats})"
    )]
    NoPhotos { location: String, formats: String },
    /// A path that should be a readable folder of `IDENTITY/PHOTO` folders.
    #[error("cannot read the folder {path}: {source} (expected IDENTITY/PHOTO folders)")]
    NotAFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- setup: something must be installed or configured first ---
    /// The pretrained weights are not where we looked.
    #[error("pretrained models not found in {dir}: {hint}")]
    ModelsMissing { dir: PathBuf, hint: String },
    /// A weights file that exists but does not parse or does not match the expected network.
    #[error("bad model file {path}: {reason}")]
    BadModel { path: PathBuf, reason: String },

    // --- not found ---
    #[error("not found: {0}")]
    NotFound(String),

    // --- service / environment failures: retrying may help ---
    #[error("storage error at {location}: {reason}")]
    Storage { location: String, reason: String },
    #[error("worker error: {0}")]
    Worker(String),
    #[error("timed out: {0}")]
    Timeout(String),
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

    /// True when the input itself is at fault (bad image, too large): not worth retrying.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Unreadable { .. }
                | Error::TooLarge { .. }
                | Error::TooManyBytes { .. }
                | Error::LimitExceeded { .. }
                | Error::Invalid(_)
                | Error::NoPhotos { .. }
                | Error::NotAFolder { .. }
        )
    }

    /// True when the input was refused for its size (pixels, bytes, memory, shape): the
    /// manifest records these as `too_large`, the service answers 413.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Error::TooLarge { .. } | Error::TooManyBytes { .. } | Error::LimitExceeded { .. }
        )
    }
}
