//! The networks a deployment needs, loaded once: the face engine (detect → landmarks →
//! align, pure Rust) and the embedder (libtorch). Shared by every request and by every
//! deployment version that names the same model.

use std::path::Path;
use std::sync::Mutex;

use facepipe_pipeline::{EngineOptions, Face, FaceEngine, ModelDir};
use facepipe_training::{Embedder, Metric};
use image::RgbImage;

use crate::deployment::ModelRef;
use crate::error::{Error, Result};
use crate::registry::Registry;

pub struct Recognizer {
    model: ModelRef,
    engine: FaceEngine,
    /// tch modules are not `Sync`; the lock also keeps two requests from fighting over the
    /// same intra-op thread pool.
    embedder: Mutex<Embedder>,
    metric: Metric,
    dim: usize,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("model", &self.model)
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .finish()
    }
}

impl Recognizer {
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
        let engine = FaceEngine::load(models, options)?;
        // A service answers one photo at a time per request, so the detector's GEMMs may use
        // as many threads as libtorch does (FACEPIPE_THREADS, else every core); batch jobs
        // keep them single-threaded and parallelise over photos instead.
        if std::env::var_os("FACEPIPE_GEMM_THREADS").is_none() {
            facepipe_training::init_threads();
            facepipe_pipeline::nn::set_gemm_threads(tch::get_num_threads().max(1) as usize);
        }
        let embedder = match model {
            ModelRef::Pretrained { .. } => Embedder::pretrained(models, device),
            ModelRef::Artifact { sha256, source } => {
                let dir = match registry {
                    Some(r) => r.model_dir(sha256),
                    None => Path::new(source).to_path_buf(),
                };
                Embedder::from_artifact(&dir, device)
            }
        }
        .map_err(|e| Error::Model(format!("{e:#}")))?;
        let metric = embedder.metric();
        let dim = embedder.dim();
        Ok(Recognizer {
            model: model.clone(),
            engine,
            embedder: Mutex::new(embedder),
            metric,
            dim,
        })
    }

    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// The model's own metric (its calibrated threshold); a deployment may override it.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn engine(&self) -> &FaceEngine {
        &self.engine
    }

    /// Every face in a photo with its embedding, best detection first.
    pub fn faces_with_embeddings(&self, image: &RgbImage) -> Result<Vec<(Face, Vec<f32>)>> {
        let faces = self.engine.faces(image);
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let crops: Vec<RgbImage> = faces.iter().map(|f| self.engine.align(image, f)).collect();
        let embeddings = self.embed(&crops)?;
        Ok(faces.into_iter().zip(embeddings).collect())
    }

    /// The largest face of a photo (enrolment photos show one person) with its embedding.
    pub fn largest_face(&self, image: &RgbImage) -> Result<Option<(Face, Vec<f32>)>> {
        let faces = self.engine.faces(image);
        let Some(face) = faces
            .into_iter()
            .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
        else {
            return Ok(None);
        };
        let crop = self.engine.align(image, &face);
        let mut e = self.embed(std::slice::from_ref(&crop))?;
        Ok(e.pop().map(|e| (face, e)))
    }

    /// Embeddings of aligned crops.
    pub fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let embedder = self
            .embedder
            .lock()
            .map_err(|_| Error::Internal("the embedder lock was poisoned by a panic".into()))?;
        embedder
            .embed(crops)
            .map_err(|e| Error::Model(format!("{e:#}")))
    }
}
