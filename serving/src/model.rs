//! The model a deployment names, loaded once: a [`Recognizer`] (face engine + embedder +
//! metric) and the [`ModelRef`] it was loaded from. Shared by every request and by every
//! deployment version that names the same model.
//!
//! The service reaches the networks only through [`Recognize`], so the tests of its HTTP
//! contract (auth, limits, admission, deadlines) can run on [`fake::FakeRecognizer`]
//! (feature `test-support`), which needs no weights.

use std::path::Path;

use facepipe_model::{Deadline, FoundFaces, ModelSource, Recognizer};
use facepipe_pipeline::{EngineOptions, Face, Metric, ModelDir};
use image::RgbImage;

use crate::deployment::ModelRef;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::request::Cancel;

/// What a deployment needs from its networks: faces with embeddings, and embeddings of
/// aligned crops. Implemented by [`Recognizer`].
pub trait Recognize: Send + Sync + std::fmt::Debug {
    fn metric(&self) -> Metric;
    fn dim(&self) -> usize;
    /// The largest `max_faces` faces with their embeddings (see [`Recognizer::faces_capped`]).
    fn faces_capped(
        &self,
        image: &RgbImage,
        max_faces: usize,
        deadline: &dyn Deadline,
    ) -> facepipe_model::Result<FoundFaces>;
    fn embed(&self, crops: &[RgbImage]) -> facepipe_model::Result<Vec<Vec<f32>>>;
    fn self_check(&self) -> facepipe_model::Result<()>;
    /// Make the next `n` calls to the embedder panic (the service's fault tests).
    #[cfg(feature = "test-support")]
    fn inject_panics(&self, n: usize);
}

impl Recognize for Recognizer {
    fn metric(&self) -> Metric {
        Recognizer::metric(self)
    }

    fn dim(&self) -> usize {
        Recognizer::dim(self)
    }

    fn faces_capped(
        &self,
        image: &RgbImage,
        max_faces: usize,
        deadline: &dyn Deadline,
    ) -> facepipe_model::Result<FoundFaces> {
        Recognizer::faces_capped(self, image, max_faces, deadline)
    }

    fn embed(&self, crops: &[RgbImage]) -> facepipe_model::Result<Vec<Vec<f32>>> {
        Recognizer::embed(self, crops)
    }

    fn self_check(&self) -> facepipe_model::Result<()> {
        Recognizer::self_check(self)
    }

    #[cfg(feature = "test-support")]
    fn inject_panics(&self, n: usize) {
        Recognizer::inject_panics(self, n);
    }
}

#[derive(Debug)]
pub struct LoadedModel {
    model: ModelRef,
    recognizer: Box<dyn Recognize>,
}

/// A request's cancel token is the recognizer's deadline.
impl Deadline for Cancel {
    fn expired(&self) -> bool {
        self.is_cancelled()
    }
}

impl LoadedModel {
    /// Load the face engine from `models` and the embedder `model` names (artifacts are
    /// read from `registry`). Services use `EngineOptions` without the tight-crop fallback,
    /// so a photo with no face reports none instead of treating the whole frame as one.
    pub fn load(
        models: &ModelDir,
        model: &ModelRef,
        registry: Option<&Registry>,
        options: EngineOptions,
        device: tch::Device,
    ) -> Result<Self> {
        let artifact_dir;
        let source = match model {
            ModelRef::Pretrained { .. } => ModelSource::Pretrained,
            ModelRef::Artifact { sha256, source } => {
                artifact_dir = match registry {
                    Some(r) => r.model_dir(sha256),
                    None => Path::new(source).to_path_buf(),
                };
                ModelSource::Artifact(&artifact_dir)
            }
        };
        let recognizer = Recognizer::load(models, source, options, device)?;
        Ok(LoadedModel::new(model.clone(), Box::new(recognizer)))
    }

    /// `recognizer` as the networks of `model` (the service's tests pass a fake).
    pub fn new(model: ModelRef, recognizer: Box<dyn Recognize>) -> Self {
        LoadedModel { model, recognizer }
    }

    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// The model's own metric (its calibrated threshold); a deployment may override it.
    pub fn metric(&self) -> Metric {
        self.recognizer.metric()
    }

    pub fn dim(&self) -> usize {
        self.recognizer.dim()
    }

    /// The largest `max_faces` faces of a photo with their embeddings, stopping between
    /// stages once `cancel` fires (see [`Recognizer::faces_capped`]).
    pub fn faces_capped(
        &self,
        image: &RgbImage,
        max_faces: usize,
        cancel: &Cancel,
    ) -> Result<FoundFaces> {
        self.recognizer
            .faces_capped(image, max_faces, cancel)
            .map_err(|e| model_error(e, cancel))
    }

    /// The largest face of a photo (enrolment photos show one person) with its embedding,
    /// stopping once `cancel` fires.
    pub fn largest_face_within(
        &self,
        image: &RgbImage,
        cancel: &Cancel,
    ) -> Result<Option<(Face, Vec<f32>)>> {
        Ok(self.faces_capped(image, 1, cancel)?.faces.pop())
    }

    /// Embeddings of aligned crops.
    pub fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        Ok(self.recognizer.embed(crops)?)
    }

    /// The embedder's check on a grey crop (readiness checks after failures).
    pub fn self_check(&self) -> Result<()> {
        Ok(self.recognizer.self_check()?)
    }

    /// Make the next `n` calls to the embedder panic (the service's fault tests).
    #[cfg(feature = "test-support")]
    pub fn inject_panics(&self, n: usize) {
        self.recognizer.inject_panics(n);
    }
}

/// A stop at the deadline is the request's timeout; anything else is the model's fault.
fn model_error(e: facepipe_model::Error, cancel: &Cancel) -> Error {
    match e {
        facepipe_model::Error::Cancelled => Error::Timeout(cancel.budget()),
        other => Error::from(other),
    }
}

/// A stand-in for the networks in the service's own tests (feature `test-support`).
#[cfg(feature = "test-support")]
pub mod fake {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use facepipe_model::{Deadline, Error, FoundFaces, Result};
    use facepipe_pipeline::{BBox, Face, FoundBy, Metric, PRETRAINED_METRIC};
    use image::RgbImage;

    use super::Recognize;

    /// Width of the fake embeddings: a photo's mean red, green and blue, and its aspect.
    pub const FAKE_DIM: usize = 4;

    /// Finds one face covering the whole photo and embeds it as its mean colour and aspect,
    /// so photos of different colours are different "people". `work` is how long one
    /// photo takes, checked against the deadline in small steps as the real stages are.
    #[derive(Debug, Default)]
    pub struct FakeRecognizer {
        pub work: Duration,
        panics: AtomicUsize,
    }

    impl FakeRecognizer {
        pub fn new(work: Duration) -> Self {
            FakeRecognizer {
                work,
                panics: AtomicUsize::new(0),
            }
        }

        /// The fake embedding of a photo or crop.
        pub fn embedding(image: &RgbImage) -> Vec<f32> {
            let n = (u64::from(image.width()) * u64::from(image.height())).max(1) as f32;
            let mut sum = [0f32; 3];
            for p in image.pixels() {
                for (s, v) in sum.iter_mut().zip(p.0) {
                    *s += f32::from(v);
                }
            }
            let aspect = image.width() as f32 / image.height().max(1) as f32;
            vec![
                sum[0] / n / 255.0,
                sum[1] / n / 255.0,
                sum[2] / n / 255.0,
                aspect.min(4.0) / 4.0,
            ]
        }

        fn maybe_panic(&self) {
            let take = self
                .panics
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if take.is_ok() {
                panic!("injected embedder panic (test-support)");
            }
        }
    }

    impl Recognize for FakeRecognizer {
        fn metric(&self) -> Metric {
            PRETRAINED_METRIC
        }

        fn dim(&self) -> usize {
            FAKE_DIM
        }

        fn faces_capped(
            &self,
            image: &RgbImage,
            max_faces: usize,
            deadline: &dyn Deadline,
        ) -> Result<FoundFaces> {
            let step = Duration::from_millis(5);
            let mut left = self.work;
            loop {
                if deadline.expired() {
                    return Err(Error::Cancelled);
                }
                if left.is_zero() {
                    break;
                }
                let nap = left.min(step);
                std::thread::sleep(nap);
                left -= nap;
            }
            if image.width() == 0 || image.height() == 0 || max_faces == 0 {
                return Ok(FoundFaces {
                    faces: Vec::new(),
                    found: 0,
                });
            }
            let face = Face {
                bbox: BBox::new(0.0, 0.0, image.width() as f32, image.height() as f32),
                score: 1.0,
                landmarks: Vec::new(),
                found_by: FoundBy::Detector,
            };
            let embedding = self.embed(std::slice::from_ref(image))?.remove(0);
            Ok(FoundFaces {
                faces: vec![(face, embedding)],
                found: 1,
            })
        }

        fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
            self.maybe_panic();
            Ok(crops.iter().map(Self::embedding).collect())
        }

        fn self_check(&self) -> Result<()> {
            self.embed(&[RgbImage::new(2, 2)]).map(|_| ())
        }

        fn inject_panics(&self, n: usize) {
            self.panics.store(n, Ordering::SeqCst);
        }
    }
}
