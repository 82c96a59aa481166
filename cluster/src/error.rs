//! The crate's error type. Every variant is bad input the caller must fix (or a file it
//! cannot read or write); a single bad face is never an error (it goes to `unclustered`
//! with a reason instead).

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option out of its range (a threshold that is not a cosine distance).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Two faces share an id, so decisions naming that id would be ambiguous.
    #[error("face id {id:?} appears more than once")]
    DuplicateFace { id: String },
    /// An enrolled anchor whose embeddings cannot be compared with the others (wrong
    /// dimension, not finite, zero): the deployment and the model disagree.
    #[error("anchor {name:?}: {reason}")]
    BadAnchor { name: String, reason: String },
    /// A file of the output folder could not be read or written, or is not what
    /// `facepipe cluster` writes there.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}
