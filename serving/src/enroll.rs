//! Building a gallery for `facepipe deploy`: from a prepared dataset (embed its aligned
//! crops) or from a raw `Name/photo.jpg` folder (detect, align and embed the largest face of
//! every photo), and packaging it as a bundle.

use std::path::{Path, PathBuf};

use facepipe_pipeline::dataset::layout::{list_photo_folder, LabelledPhoto};
use facepipe_pipeline::dataset::{Manifest, MANIFEST_FILE};
use facepipe_pipeline::{image_io, FaceEngine};
use image::RgbImage;

use crate::deployment::{now_rfc3339, Bundle, DeploymentInfo, ModelRef};
use crate::error::{Error, Result};
use crate::gallery::Gallery;
use crate::model::LoadedModel;

/// Photos embedded per batch.
const BATCH: usize = 32;

/// How far a gallery build has come, reported after each photo or crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrollProgress {
    pub done: usize,
    pub total: usize,
}

/// What happened to one gallery photo.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// A gallery built from photos, with the photos that could not be used.
#[derive(Debug)]
pub struct BuiltGallery {
    pub gallery: Gallery,
    pub skipped: Vec<Skipped>,
}

/// Detect, align and embed the largest face of every photo of `root/Person/*`.
/// `engine` finds faces (for galleries, one with the tight-crop fallback so pre-aligned
/// chips count); `recognizer` embeds. `progress` is called after each photo.
pub fn gallery_from_photos(
    root: &Path,
    engine: &FaceEngine,
    recognizer: &LoadedModel,
    progress: &dyn Fn(EnrollProgress),
) -> Result<BuiltGallery> {
    let photos = list_photo_folder(root)?;
    let mut gallery = Gallery::empty(recognizer.metric().distance, recognizer.dim());
    let mut skipped = Vec::new();
    let mut pending: Vec<(String, String, RgbImage)> = Vec::new();
    let total = photos.len();
    for (i, LabelledPhoto { identity, path }) in photos.iter().enumerate() {
        match largest_crop(engine, path) {
            Ok(Some(crop)) => {
                let source = relative(root, path);
                pending.push((identity.clone(), source, crop));
            }
            Ok(None) => skipped.push(Skipped {
                path: path.clone(),
                reason: "no face found".into(),
            }),
            Err(e) => skipped.push(Skipped {
                path: path.clone(),
                reason: e.to_string(),
            }),
        }
        if pending.len() >= BATCH || i + 1 == total {
            flush(&mut gallery, &mut pending, recognizer)?;
        }
        progress(EnrollProgress { done: i + 1, total });
    }
    if gallery.is_empty() {
        return Err(Error::NoFace(format!(
            "no usable face in any of the {total} photos under {}",
            root.display()
        )));
    }
    Ok(BuiltGallery { gallery, skipped })
}

/// True when `dir` holds a prepared dataset (`manifest.json` + shards).
pub fn is_prepared_dataset(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

/// Embed every aligned crop of a prepared dataset under its identity's name. The crops
/// were aligned by `facepipe prepare`, so no detection runs here.
pub fn gallery_from_dataset(
    dir: &Path,
    recognizer: &LoadedModel,
    progress: &dyn Fn(EnrollProgress),
) -> Result<BuiltGallery> {
    let manifest = Manifest::load(dir)?;
    let total = manifest.sample_count() as usize;
    let mut gallery = Gallery::empty(recognizer.metric().distance, recognizer.dim());
    let mut skipped = Vec::new();
    let mut pending: Vec<(String, String, RgbImage)> = Vec::new();
    for (i, sample) in manifest.samples(dir).enumerate() {
        let decoded = sample.and_then(|s| {
            let image = s.image()?;
            Ok((s.meta.identity, s.meta.source, image))
        });
        match decoded {
            Ok(item) => pending.push(item),
            Err(e) => skipped.push(Skipped {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            }),
        }
        if pending.len() >= BATCH {
            flush(&mut gallery, &mut pending, recognizer)?;
        }
        progress(EnrollProgress { done: i + 1, total });
    }
    flush(&mut gallery, &mut pending, recognizer)?;
    if gallery.is_empty() {
        return Err(Error::BadRequest(format!(
            "the prepared dataset {} holds no face crops",
            dir.display()
        )));
    }
    Ok(BuiltGallery { gallery, skipped })
}

fn largest_crop(engine: &FaceEngine, path: &Path) -> Result<Option<RgbImage>> {
    let image = image_io::open(path, &engine.options().limits)?;
    Ok(engine
        .largest_face(&image)
        .map(|f| engine.align(&image, &f)))
}

fn flush(
    gallery: &mut Gallery,
    pending: &mut Vec<(String, String, RgbImage)>,
    recognizer: &LoadedModel,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let crops: Vec<RgbImage> = pending.iter().map(|(_, _, c)| c.clone()).collect();
    let embeddings = recognizer.embed(&crops)?;
    for ((person, source, _), e) in pending.drain(..).zip(embeddings) {
        gallery.add(&person, std::slice::from_ref(&e), &source)?;
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// A first-version bundle for a freshly built gallery.
pub fn new_bundle(
    gallery: Gallery,
    model: ModelRef,
    metric: facepipe_pipeline::Metric,
    gallery_source: &str,
    name: Option<String>,
) -> Bundle {
    let info = DeploymentInfo {
        version: 0,
        name,
        created: now_rfc3339(),
        model,
        metric,
        embedding_dim: gallery.dim(),
        people: gallery.people().len(),
        embeddings: gallery.len(),
        gallery_source: gallery_source.to_string(),
        parent: None,
        reason: "deploy".into(),
    };
    Bundle { info, gallery }
}
