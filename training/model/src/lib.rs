//! facepipe-model: the face-recognition model on libtorch (tch), shared by training (which
//! produces it) and serving (which runs it).
//!
//! ```no_run
//! use facepipe_model::{ModelSource, Recognizer};
//! let models = facepipe_pipeline::ModelDir::locate(None)?;
//! let recognizer = Recognizer::load(
//!     &models,
//!     ModelSource::Pretrained,
//!     facepipe_pipeline::EngineOptions::default(),
//!     tch::Device::cuda_if_available(),
//! )?;
//! let photo = image::open("group.jpg")?.to_rgb8();
//! for (face, embedding) in recognizer.faces(&photo)? {
//!     println!("{:?}: {} values", face.bbox, embedding.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Map of the crate:
//! - [`arch`]: [`Arch`], the networks facepipe knows: name, input, builder, stages.
//! - [`resnet`]: the pretrained 128-d ResNet (face-api's dlib port) as a tch module.
//! - [`mobilefacenet`]: the from-scratch 112 px backbone.
//! - [`preprocess`]: pad-to-square, TF-style resize and normalisation of crops.
//! - [`embedder`]: aligned crops → embeddings, from the pretrained network or an artifact.
//! - [`artifact`]: `model.safetensors` + `model.json`.
//! - [`recognizer`]: photos → faces with embeddings: the engine, the embedder, the metric.
//! - [`json`]: JSON writing that refuses NaN and ±∞; [`error`]: the crate's error type.
//!
//! The metric (`Metric`, `DistanceKind`) is plain data in `facepipe_pipeline::metric`,
//! re-exported here.

pub mod arch;
pub mod artifact;
pub mod embedder;
pub mod error;
pub mod json;
pub mod mobilefacenet;
pub mod preprocess;
pub mod recognizer;
pub mod resnet;

pub use arch::Arch;
pub use artifact::ModelJson;
pub use embedder::Embedder;
pub use error::{Error, Result};
pub use facepipe_pipeline::metric::{DistanceKind, Metric, PRETRAINED_METRIC};
pub use preprocess::InputSpec;
pub use recognizer::{Deadline, FoundFaces, ModelSource, NoDeadline, Recognizer};

/// Set libtorch's intra-op thread count for this process: `Some(n)`, or the cores this
/// process may use. (libtorch's own default ignores CPU quotas and oversubscribes machines
/// shared with rayon pools.) The binary calls this once at start, from its `--threads`.
pub fn set_threads(threads: Option<usize>) {
    let n = threads
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
}
