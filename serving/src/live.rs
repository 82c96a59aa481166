//! A loaded deployment (its description, gallery and networks) and the questions it
//! answers: who is in this photo, are these the same person. The HTTP handlers and
//! `facepipe score --local` both call these functions, so they give the same answers.

use std::sync::Arc;

use facepipe_pipeline::geometry::{BBox, Point};
use facepipe_pipeline::Metric;
use facepipe_pipeline::{image_io, DecodeLimits, EngineOptions, FoundBy, ModelDir};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::deployment::{Bundle, DeploymentInfo};
use crate::error::{Error, Result};
use crate::gallery::Gallery;
use crate::model::LoadedModel;
use crate::registry::Registry;
use crate::request::Cancel;

/// Faces embedded per photo unless configured otherwise (`ServiceConfig::max_faces`).
pub const DEFAULT_MAX_FACES: usize = 100;

/// How networks are loaded for a service.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub models: ModelDir,
    pub engine: EngineOptions,
    pub device: tch::Device,
}

impl LoadOptions {
    /// Service defaults: no whole-frame fallback (a photo without a face has no face).
    pub fn new(models: ModelDir) -> Self {
        let engine = EngineOptions {
            tight_crop_fallback: false,
            ..EngineOptions::default()
        };
        LoadOptions {
            models,
            engine,
            device: tch::Device::Cpu,
        }
    }
}

/// The deployment being served.
#[derive(Debug)]
pub struct Live {
    pub info: DeploymentInfo,
    pub gallery: Gallery,
    pub recognizer: Arc<LoadedModel>,
}

/// One candidate in a face's top-k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub person: String,
    pub distance: f32,
    pub similarity: f32,
}

/// One face of an identify answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceResult {
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// Detector confidence.
    pub score: f32,
    pub landmarks: Vec<Point>,
    pub found_by: FoundBy,
    /// The closest person when within the threshold, else `null` (unknown).
    pub person: Option<String>,
    /// Distance and similarity to the closest person (whether or not within the threshold).
    pub distance: Option<f32>,
    pub similarity: Option<f32>,
    /// The closest people, closest first.
    pub top: Vec<Match>,
}

/// The answer to "who is in this photo".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identification {
    pub deployment: u32,
    pub width: u32,
    pub height: u32,
    pub threshold: f32,
    pub faces: Vec<FaceResult>,
    /// Faces the detector found; more than `faces.len()` when the cap was hit.
    #[serde(default)]
    pub faces_found: usize,
    /// True when only the largest faces (the service's `max_faces`) were identified.
    #[serde(default)]
    pub faces_truncated: bool,
}

/// The answer to "are these the same person".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub deployment: u32,
    pub same: bool,
    pub distance: f32,
    pub similarity: f32,
    pub threshold: f32,
    /// What the first face was compared with: "image" or the person's name.
    pub compared_with: String,
}

/// Similarity in [0, 1] from a distance: 1 for identical, 0.5 exactly at the decision
/// threshold, 0 at twice the threshold or beyond. One scale for both metrics.
pub fn similarity(metric: &Metric, distance: f32) -> f32 {
    if metric.threshold <= 0.0 {
        return 0.0;
    }
    (1.0 - distance / (2.0 * metric.threshold)).clamp(0.0, 1.0)
}

impl Live {
    /// Load the registry's current deployment, reusing `previous`'s networks when the
    /// model is the same (a gallery edit does not reload the networks).
    pub fn load_current(
        registry: &Registry,
        options: &LoadOptions,
        previous: Option<&Live>,
    ) -> Result<Live> {
        let bundle = registry.load_current()?;
        Live::from_bundle(bundle, registry, options, previous)
    }

    pub fn from_bundle(
        bundle: Bundle,
        registry: &Registry,
        options: &LoadOptions,
        previous: Option<&Live>,
    ) -> Result<Live> {
        let recognizer = match previous {
            Some(p) if *p.recognizer.model() == bundle.info.model => p.recognizer.clone(),
            _ => Arc::new(LoadedModel::load(
                &options.models,
                &bundle.info.model,
                Some(registry),
                options.engine.clone(),
                options.device,
            )?),
        };
        if recognizer.dim() != bundle.gallery.dim() && !bundle.gallery.is_empty() {
            return Err(Error::Model(format!(
                "deployment v{:04} has {}-d embeddings but its model produces {}-d",
                bundle.info.version,
                bundle.gallery.dim(),
                recognizer.dim()
            )));
        }
        Ok(Live {
            info: bundle.info,
            gallery: bundle.gallery,
            recognizer,
        })
    }

    pub fn metric(&self) -> Metric {
        self.info.metric
    }

    /// Decode (limits checked from the header first) and identify.
    pub fn identify_bytes(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        top_k: usize,
    ) -> Result<Identification> {
        self.identify_bytes_within(bytes, limits, top_k, DEFAULT_MAX_FACES, &Cancel::never())
    }

    /// [`Live::identify_bytes`] for a request: at most `max_faces` faces, and `cancel`
    /// checked between decoding and each later stage.
    pub fn identify_bytes_within(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        top_k: usize,
        max_faces: usize,
        cancel: &Cancel,
    ) -> Result<Identification> {
        let image = decode(bytes, limits)?;
        cancel.check()?;
        self.identify_within(&image, top_k, max_faces, cancel)
    }

    /// Every face in the photo (the largest [`DEFAULT_MAX_FACES`]) with the closest
    /// enrolled people.
    pub fn identify(&self, image: &RgbImage, top_k: usize) -> Result<Identification> {
        self.identify_within(image, top_k, DEFAULT_MAX_FACES, &Cancel::never())
    }

    /// The largest `max_faces` faces with the closest enrolled people, stopping between
    /// stages once `cancel` fires.
    pub fn identify_within(
        &self,
        image: &RgbImage,
        top_k: usize,
        max_faces: usize,
        cancel: &Cancel,
    ) -> Result<Identification> {
        let metric = self.metric();
        let found = self.recognizer.faces_capped(image, max_faces, cancel)?;
        let faces_found = found.found;
        let faces_truncated = found.faces.len() < found.found;
        let results = found
            .faces
            .into_iter()
            .map(|(face, embedding)| {
                let top: Vec<Match> = self
                    .gallery
                    .search(&embedding, top_k.max(1))
                    .into_iter()
                    .map(|c| Match {
                        person: self.gallery.people()[c.person].clone(),
                        distance: c.distance,
                        similarity: similarity(&metric, c.distance),
                    })
                    .collect();
                let best = top.first();
                FaceResult {
                    bbox: face.bbox,
                    score: face.score,
                    landmarks: face.landmarks,
                    found_by: face.found_by,
                    person: best
                        .filter(|m| m.distance < metric.threshold)
                        .map(|m| m.person.clone()),
                    distance: best.map(|m| m.distance),
                    similarity: best.map(|m| m.similarity),
                    top: top.into_iter().take(top_k).collect(),
                }
            })
            .collect();
        cancel.check()?;
        Ok(Identification {
            deployment: self.info.version,
            width: image.width(),
            height: image.height(),
            threshold: metric.threshold,
            faces: results,
            faces_found,
            faces_truncated,
        })
    }

    /// The embedding of the largest face of an encoded photo, or a `NoFace` error.
    pub fn embed_largest(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        what: &str,
    ) -> Result<Vec<f32>> {
        self.embed_largest_within(bytes, limits, what, &Cancel::never())
    }

    /// [`Live::embed_largest`], stopping between stages once `cancel` fires.
    pub fn embed_largest_within(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        what: &str,
        cancel: &Cancel,
    ) -> Result<Vec<f32>> {
        let image = decode(bytes, limits)?;
        cancel.check()?;
        match self.recognizer.largest_face_within(&image, cancel)? {
            Some((_, e)) => Ok(e),
            None => Err(Error::NoFace(format!("no face found in {what}"))),
        }
    }

    /// The embedding of the face at `at` (the box `/v1/identify` gave it) among the largest
    /// `max_faces` faces of an encoded photo: the one overlapping `at` most, which must
    /// cover at least half of their union. Stops between stages once `cancel` fires.
    pub fn embed_at_within(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        at: &BBox,
        max_faces: usize,
        cancel: &Cancel,
    ) -> Result<Vec<f32>> {
        let image = decode(bytes, limits)?;
        cancel.check()?;
        let found = self.recognizer.faces_capped(&image, max_faces, cancel)?;
        found
            .faces
            .into_iter()
            .map(|(face, e)| (face.bbox.iou(at), e))
            .filter(|(iou, _)| *iou >= MIN_BOX_OVERLAP)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, e)| e)
            .ok_or_else(|| {
                Error::NoFace(format!(
                    "no face found at the box [{:.0}, {:.0}, {:.0}, {:.0}] of this photo: send \
                     the box /v1/identify gave for the face",
                    at.x, at.y, at.width, at.height
                ))
            })
    }

    /// Compare the largest face of two photos.
    pub fn verify_images(
        &self,
        a: &[u8],
        b: &[u8],
        limits: &DecodeLimits,
        cancel: &Cancel,
    ) -> Result<Verification> {
        let ea = self.embed_largest_within(a, limits, "the first image", cancel)?;
        let eb = self.embed_largest_within(b, limits, "the second image", cancel)?;
        let metric = self.metric();
        let distance = metric.distance(&ea, &eb);
        Ok(self.verification(distance, "image".into()))
    }

    /// Compare the largest face of a photo with an enrolled person (their closest photo).
    pub fn verify_person(
        &self,
        a: &[u8],
        person: &str,
        limits: &DecodeLimits,
        cancel: &Cancel,
    ) -> Result<Verification> {
        let index = self
            .gallery
            .person_index(person)
            .ok_or_else(|| Error::NotFound(format!("nobody called {person:?} is enrolled")))?;
        let ea = self.embed_largest_within(a, limits, "the image", cancel)?;
        let distance = self
            .gallery
            .search(&ea, self.gallery.people().len())
            .into_iter()
            .find(|c| c.person == index)
            .map(|c| c.distance)
            .unwrap_or(f32::INFINITY);
        Ok(self.verification(distance, person.to_string()))
    }

    fn verification(&self, distance: f32, compared_with: String) -> Verification {
        let metric = self.metric();
        Verification {
            deployment: self.info.version,
            same: distance < metric.threshold,
            distance,
            similarity: similarity(&metric, distance),
            threshold: metric.threshold,
            compared_with,
        }
    }
}

/// Decode with the pipeline's limits, refusing empty bodies with a clear message.
/// Smallest intersection over union between an enroll's `box` and the face it picks.
const MIN_BOX_OVERLAP: f32 = 0.5;

pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::BadImage(
            "the upload is empty: send a JPEG, PNG, GIF, BMP, WebP or TIFF image".into(),
        ));
    }
    Ok(image_io::decode(bytes, limits)?)
}
