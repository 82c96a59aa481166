//! facepipe-training: face-embedding networks on libtorch (tch).
//!
//! ```no_run
//! use facepipe_training::Embedder;
//! let models = facepipe_pipeline::ModelDir::locate(None)?;
//! let embedder = Embedder::pretrained(&models, tch::Device::cuda_if_available())?;
//! let crop = image::open("face.png")?.to_rgb8();
//! let e = embedder.embed(&[crop.clone(), crop])?;
//! assert!(embedder.metric().same(&e[0], &e[1]));
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Map of the crate:
//! - [`embedder`]: turn aligned face crops into embeddings, from the pretrained network or a
//!   trained artifact, batched, on CPU or CUDA.
//! - [`preprocess`]: pad-to-square, TF-style resize and normalisation of crops.
//! - [`resnet`]: the pretrained 128-d ResNet (face-api's dlib port) as a tch module.
//! - [`backbone`]: the trait every embedding network implements and `build(arch, …)`.
//! - [`artifact`]: `model.safetensors` + `model.json`.
//! - [`eval`]: verification (10-fold accuracy, ROC AUC, TAR@FAR), identification, threshold
//!   calibration, `metrics.json` and PNG plots.
//! - [`error`]: the crate's error type; [`json`]: JSON writing that refuses NaN and ±∞.
//! - [`augment`], [`data`]: training batches from prepared shards (split by identity,
//!   augmentation, prefetch).
//! - [`trainer`]: the `facepipe train` loop, its optimisers (state checkpointed), sweep.
//! - [`autocast`]: mixed-precision regions with a chosen dtype (bf16 or fp16).
//! - [`mobilefacenet`]: the from-scratch 112 px backbone; [`losses`]: ArcFace, CosFace, softmax.

pub mod artifact;
pub mod augment;
pub mod autocast;
pub mod backbone;
pub mod data;
pub mod embedder;
pub mod error;
pub mod eval;
pub mod json;
pub mod losses;
pub mod mobilefacenet;
pub mod preprocess;
pub mod resnet;
pub mod trainer;

pub use artifact::ModelJson;
pub use backbone::{BackboneConfig, EmbeddingNet};
pub use embedder::{DistanceKind, Embedder, Metric, PRETRAINED_METRIC};
pub use error::{Error, Result};
pub use preprocess::InputSpec;

/// Set libtorch's intra-op thread count once per process: `$FACEPIPE_THREADS` when set,
/// else the cores this process may use. (libtorch's own default ignores CPU quotas and
/// oversubscribes machines shared with rayon pools.)
pub fn init_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let n = std::env::var("FACEPIPE_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        tch::set_num_threads(n as i32);
    });
}
