//! The crate's error type, grouped by what a caller can do about it.
//!
//! Messages name settings the way [`crate::trainer::TrainConfig`] does (`lr`, `init`,
//! `split.val` …), never a command-line flag: the CLI rewords [`Error::BadSetting`] and the
//! checkpoint errors into its own flags.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- bad input: the caller passed something we cannot use ---
    /// An argument or input that cannot be used (empty crop, mismatched lengths, a bad
    /// pairs file).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A training setting that cannot work (alone or with the others): change `setting`.
    #[error("{setting} {reason}")]
    BadSetting {
        /// The setting's name in [`crate::trainer::TrainConfig`] or
        /// [`crate::trainer::RunOptions`] (`lr`, `split.val`, `stop_after` …).
        setting: &'static str,
        /// What is wrong, worded to follow the setting's name ("must be ≥ 1").
        reason: String,
    },

    // --- checkpoints: resume the right run, or start a new one elsewhere ---
    /// Resuming, but the output folder holds no checkpoint.
    #[error("no checkpoint to resume at {path}")]
    NoCheckpoint { path: PathBuf },
    /// Starting a new run in an output folder that already holds one.
    #[error("{out} already holds a training checkpoint: resume it or train into another folder")]
    CheckpointExists { out: PathBuf },
    /// The checkpoint was written by a run with other settings, data or model.
    #[error(
        "the checkpoint {path} was made with different settings or data: {what} is {saved} \
         there, {requested} in this run"
    )]
    CheckpointMismatch {
        path: PathBuf,
        /// The setting (`lr`, `augment.flip`), the split (`split.train`) or the optimiser
        /// state entry that differs.
        what: String,
        saved: String,
        requested: String,
    },

    // --- the run diverged: lower the learning rate and train again ---
    /// The loss stopped being finite (f32/bf16: no loss scale to absorb it).
    #[error("the loss became {loss} at epoch {epoch} step {step}")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
    },
    /// fp16: the loss scale skipped every step of an epoch.
    #[error(
        "every step of epoch {epoch} had a non-finite loss ({steps} steps skipped by the fp16 \
         loss scale)"
    )]
    LossScaleExhausted { epoch: usize, steps: usize },
    /// The trained network's validation embeddings are not finite, so no threshold.
    #[error(
        "the calibrated threshold came out as {threshold}: the validation embeddings are not \
         finite"
    )]
    NonFiniteEmbeddings { threshold: f32 },
    /// Every run of a sweep failed; each one's error is in `report`.
    #[error("every sweep run failed (errors in {})", report.display())]
    SweepFailed { report: PathBuf },

    // --- setup: a model or artifact is missing or does not match ---
    /// The network, its weights or the artifact (see `facepipe_model::Error`).
    #[error(transparent)]
    Model(#[from] facepipe_model::Error),
    /// The prepared dataset or the pretrained weights could not be read.
    #[error(transparent)]
    Pipeline(#[from] facepipe_pipeline::Error),

    // --- runtime failures ---
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
    #[error("could not draw {what}: {reason}")]
    Plot { what: String, reason: String },
    /// A broken invariant of this crate or of tch (a bug, not the caller's doing).
    #[error("internal error: {0}")]
    Internal(String),
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

    pub fn bad_setting(setting: &'static str, reason: impl Into<String>) -> Self {
        Error::BadSetting {
            setting,
            reason: reason.into(),
        }
    }
}
