//! Photos in, identities' embeddings out: the face engine (detect → landmarks → align, pure
//! Rust) and the embedder (libtorch) with the metric their embeddings are compared with.
//! The CLI's `compare` and `evaluate`, and every deployment the service loads, use this one
//! pairing, so a face is found, aligned and embedded the same way everywhere.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use facepipe_pipeline::{EngineOptions, Face, FaceEngine, FoundBy, Metric, ModelDir};
use image::RgbImage;

use crate::arch::Arch;
use crate::embedder::Embedder;
use crate::error::{Error, Result};

/// Which embedding network to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource<'a> {
    /// The pretrained 128-d network of the model folder.
    Pretrained,
    /// A folder written by `facepipe train` (`model.json` + `model.safetensors`).
    Artifact(&'a Path),
}

/// Asked between the stages of a recognition (detect, landmarks, align, embed): once it
/// has expired, the work stops with [`Error::Cancelled`]. A service's request budget is one.
pub trait Deadline {
    fn expired(&self) -> bool;
}

/// A deadline that never passes (batch jobs).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDeadline;

impl Deadline for NoDeadline {
    fn expired(&self) -> bool {
        false
    }
}

fn check(deadline: &dyn Deadline) -> Result<()> {
    if deadline.expired() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// The faces of one photo that were embedded, and how many the detector found.
#[derive(Debug)]
pub struct FoundFaces {
    /// The embedded faces (at most the cap, the largest ones), best detection first.
    pub faces: Vec<(Face, Vec<f32>)>,
    /// Faces the detector found, embedded or not.
    pub found: usize,
}

pub struct Recognizer {
    engine: FaceEngine,
    /// tch modules are not `Sync`; the lock also keeps two callers from fighting over the
    /// same intra-op thread pool. A panic while it is held leaves the (stateless) forward
    /// pass usable, so a poisoned lock is taken over rather than failing every call after.
    embedder: Mutex<Embedder>,
    metric: Metric,
    dim: usize,
    architecture: Arch,
    /// Panics still to raise inside the embedder (the service's fault tests).
    #[cfg(feature = "test-support")]
    injected_panics: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Recognizer {
    /// Pair an engine with an embedder; the embedder's metric is the recognizer's.
    pub fn new(engine: FaceEngine, embedder: Embedder) -> Self {
        let metric = embedder.metric();
        let dim = embedder.dim();
        let architecture = embedder.architecture();
        Recognizer {
            engine,
            embedder: Mutex::new(embedder),
            metric,
            dim,
            architecture,
            #[cfg(feature = "test-support")]
            injected_panics: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Load the face engine from `models` and the embedding network `source` names.
    pub fn load(
        models: &ModelDir,
        source: ModelSource<'_>,
        options: EngineOptions,
        device: tch::Device,
    ) -> Result<Self> {
        let engine = FaceEngine::load(models, options)?;
        let embedder = match source {
            ModelSource::Pretrained => Embedder::pretrained(models, device)?,
            ModelSource::Artifact(dir) => Embedder::from_artifact(dir, device)?,
        };
        Ok(Recognizer::new(engine, embedder))
    }

    pub fn engine(&self) -> &FaceEngine {
        &self.engine
    }

    /// The model's own metric (its calibrated threshold); a deployment may override it.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The embedding network's architecture.
    pub fn architecture(&self) -> Arch {
        self.architecture
    }

    /// Every face in a photo with its embedding, best detection first.
    pub fn faces(&self, image: &RgbImage) -> Result<Vec<(Face, Vec<f32>)>> {
        Ok(self.faces_capped(image, usize::MAX, &NoDeadline)?.faces)
    }

    /// The largest `max_faces` faces of a photo with their embeddings (best detection
    /// first), asking `deadline` between stages. A photo of a crowd (or noise the tiny
    /// detector reads as hundreds of faces) costs at most `max_faces` landmark runs and
    /// embeddings.
    pub fn faces_capped(
        &self,
        image: &RgbImage,
        max_faces: usize,
        deadline: &dyn Deadline,
    ) -> Result<FoundFaces> {
        let (faces, found) = if self.engine.options().tight_crop_fallback || image.width() == 0 {
            // The engine's retry paths only run when nothing was found: few faces.
            let mut faces = self.engine.faces(image);
            let found = faces.len();
            keep_largest(&mut faces, max_faces, |f| f.bbox.area());
            (faces, found)
        } else {
            let mut detections = self.engine.detector().detect(image);
            let detected = detections.len();
            keep_largest(&mut detections, max_faces, |d| d.bbox.area());
            check(deadline)?;
            let kept = detections.len();
            let mut faces = Vec::with_capacity(kept);
            for d in detections {
                if let Some(lm) = self.engine.landmark_net().landmarks(image, d.bbox) {
                    faces.push(Face {
                        bbox: d.bbox,
                        score: d.score,
                        landmarks: lm.0,
                        found_by: FoundBy::Detector,
                    });
                }
                check(deadline)?;
            }
            // A detection whose landmarks fail is no face (as in the engine).
            let failed = kept - faces.len();
            (faces, detected - failed)
        };
        check(deadline)?;
        if faces.is_empty() {
            return Ok(FoundFaces {
                faces: Vec::new(),
                found,
            });
        }
        let crops: Vec<RgbImage> = faces.iter().map(|f| self.engine.align(image, f)).collect();
        check(deadline)?;
        let embeddings = self.embed(&crops)?;
        check(deadline)?;
        Ok(FoundFaces {
            faces: faces.into_iter().zip(embeddings).collect(),
            found,
        })
    }

    /// Run the embedder once on a plain grey crop: `Ok` when it answers with finite
    /// numbers (readiness checks after failures).
    pub fn self_check(&self) -> Result<()> {
        let crop = RgbImage::from_pixel(150, 150, image::Rgb([128, 128, 128]));
        let e = self.embed(std::slice::from_ref(&crop))?;
        if e.len() == 1 && e[0].len() == self.dim && e[0].iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(Error::SelfCheck)
        }
    }

    /// Embeddings of aligned crops.
    pub fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let embedder = self.embedder.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(feature = "test-support")]
        self.maybe_panic();
        embedder.embed(crops)
    }

    /// Make the next `n` calls to the embedder panic while holding its lock (tests of a
    /// service's fault handling).
    #[cfg(feature = "test-support")]
    pub fn inject_panics(&self, n: usize) {
        self.injected_panics
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(feature = "test-support")]
    fn maybe_panic(&self) {
        use std::sync::atomic::Ordering;
        let take = self
            .injected_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            panic!("injected embedder panic (test-support)");
        }
    }
}

/// Keep the `n` items with the largest `area`, in their original order (best score first).
fn keep_largest<T>(items: &mut Vec<T>, n: usize, area: impl Fn(&T) -> f32) {
    if items.len() <= n {
        return;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| area(&items[b]).total_cmp(&area(&items[a])));
    let mut keep = vec![false; items.len()];
    for &i in &order[..n] {
        keep[i] = true;
    }
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::keep_largest;

    #[test]
    fn keeps_the_largest_in_their_order() {
        let mut v = vec![3.0f32, 9.0, 1.0, 7.0, 5.0];
        keep_largest(&mut v, 3, |x| *x);
        assert_eq!(v, [9.0, 7.0, 5.0]);
        let mut w = vec![1.0f32, 2.0];
        keep_largest(&mut w, 5, |x| *x);
        assert_eq!(w, [1.0, 2.0]);
    }
}
