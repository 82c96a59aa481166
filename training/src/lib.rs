//! facepipe-training: training and evaluating face-embedding networks on libtorch (tch).
//! The networks, the artifact and the embedder live in `facepipe-model`; this crate
//! produces and measures them.
//!
//! Map of the crate:
//! - [`data`]: training batches from prepared shards (split by identity, prefetch);
//!   [`augment`]: flips, scale/shift, colour jitter and normalisation of crops.
//! - [`losses`]: ArcFace, CosFace and softmax heads.
//! - [`trainer`]: the `facepipe train` loop, its optimisers (state checkpointed), sweep.
//! - [`autocast`]: mixed-precision regions with a chosen dtype (bf16 or fp16).
//! - [`eval`]: verification (10-fold accuracy, ROC AUC, TAR@FAR), identification, threshold
//!   calibration, `metrics.json` and PNG plots.
//! - [`error`]: the crate's error type.

pub mod augment;
pub mod autocast;
pub mod data;
pub mod error;
pub mod eval;
pub mod losses;
pub mod trainer;

pub use error::{Error, Result};
