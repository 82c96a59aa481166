//! facepipe-pipeline: everything between a photo on disk (or in S3) and an aligned face,
//! in pure Rust so the serverless worker stays small and starts fast (no libtorch here).
//!
//! ```no_run
//! use facepipe_pipeline::{image_io, EngineOptions, FaceEngine, ModelDir};
//! let models = ModelDir::locate(None)?;
//! let engine = FaceEngine::load(&models, EngineOptions::default())?;
//! let photo = image_io::open(std::path::Path::new("photo.jpg"), &engine.options().limits)?;
//! for face in engine.faces(&photo) {
//!     let crop = engine.align(&photo, &face);
//!     println!("{:?} score {:.2} -> {}x{} crop", face.bbox, face.score, crop.width(), crop.height());
//! }
//! # Ok::<(), facepipe_pipeline::Error>(())
//! ```
//!
//! Map of the crate:
//! - [`image_io`]: decoding by content with a pixel limit checked before decoding, EXIF orientation.
//! - [`models`]: where the pretrained weights live and the tfjs weight-manifest reader.
//! - [`nn`]: the few tensor operations the pretrained networks need (NHWC, f32).
//! - [`detect`]: SSD MobileNetV1 and the tiny detector, NMS, boxes in image pixels.
//! - [`landmarks`]: the 68-point landmark network.
//! - [`align`]: landmark-driven crops for the embedding network.
//! - [`engine`]: detect → landmarks → align in one call, with the tight-crop fallback.
//! - [`metric`]: how two embeddings are compared (distance kind and threshold).
//! - [`quality`]: how usable a face crop is (sharpness), for grouping unlabelled faces.
//! - [`dataset`]: raw LFW-style layouts, the prepared-dataset manifest and tar shards.
//! - [`storage`]: object storage over a local directory or S3.
//! - [`fanout`]: the prepare protocol, its executors (local pool, AWS Lambda) and the worker.

pub mod align;
pub mod dataset;
pub mod detect;
pub mod engine;
pub mod error;
pub mod fanout;
pub mod geometry;
pub mod image_io;
pub mod landmarks;
pub mod metric;
pub mod models;
pub mod nn;
pub mod quality;
pub mod storage;
/// Test components and the skip-or-fail rule (feature `test-support`).
#[cfg(feature = "test-support")]
pub mod test_support;

pub use align::Alignment;
pub use detect::{Detection, Detector, DetectorKind, DetectorOptions};
pub use engine::{EngineOptions, Face, FaceEngine, FoundBy};
pub use error::{Error, Result};
pub use geometry::{BBox, Point};
pub use image_io::DecodeLimits;
pub use landmarks::{LandmarkNet, Landmarks68};
pub use metric::{DistanceKind, Metric, PRETRAINED_METRIC};
pub use models::ModelDir;
