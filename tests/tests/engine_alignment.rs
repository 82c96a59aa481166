//! Which alignment verifies better with the pretrained 128-d embedding: face-api's
//! axis-aligned square or the rotation-corrected dlib chip? Measured on the labelled people
//! of the shared sample data (all same-person pairs against as many different-person pairs,
//! taken evenly from all of them), with the engine's default SSD + tight-crop fallback and
//! the largest face of each photo.

use std::path::PathBuf;

use facepipe_pipeline::{align, image_io, Alignment, EngineOptions, FaceEngine, ModelDir};
use facepipe_training::Embedder;

struct Photo {
    person: String,
    crops: [image::RgbImage; 2],
}

fn people() -> Vec<(String, PathBuf)> {
    let root = facepipe_tests::sample_data().join("people");
    let mut out = Vec::new();
    for person in std::fs::read_dir(&root).unwrap().flatten() {
        let name = person.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(person.path()).unwrap().flatten() {
            out.push((name.clone(), f.path()));
        }
    }
    out.sort();
    out
}

/// Balanced accuracy (mean of the same-pair and different-pair rates) at `threshold`.
fn accuracy(same: &[f32], diff: &[f32], threshold: f32) -> f64 {
    let tp = same.iter().filter(|d| **d < threshold).count() as f64 / same.len() as f64;
    let tn = diff.iter().filter(|d| **d >= threshold).count() as f64 / diff.len() as f64;
    (tp + tn) / 2.0
}

#[test]
fn dlib_chip_verifies_at_least_as_well_as_the_faceapi_crop() {
    let models = ModelDir::locate(None).unwrap();
    let engine = FaceEngine::load(&models, EngineOptions::default()).unwrap();
    let embedder = Embedder::pretrained(&models, tch::Device::Cpu).unwrap();
    let mut photos = Vec::new();
    for (person, path) in people() {
        let img = image_io::open(&path, &Default::default()).unwrap();
        let faces = engine.faces(&img);
        let face = faces
            .iter()
            .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
            .unwrap();
        let lm = facepipe_pipeline::Landmarks68(face.landmarks.clone());
        let chip = align::align(&img, &lm, Alignment::DlibChip);
        let square = align::align_with_box(&img, &lm, Some(face.bbox), Alignment::FaceApi);
        photos.push(Photo {
            person,
            crops: [chip, square],
        });
    }
    assert!(photos.len() >= 60, "{} photos", photos.len());

    let mut results = Vec::new();
    for (k, name) in [(0usize, "dlib_chip"), (1, "face_api")] {
        let crops: Vec<image::RgbImage> = photos.iter().map(|p| p.crops[k].clone()).collect();
        let emb = embedder.embed(&crops).unwrap();
        let (mut same, mut diff) = (Vec::new(), Vec::new());
        for i in 0..photos.len() {
            for j in i + 1..photos.len() {
                let d = embedder.distance(&emb[i], &emb[j]);
                if photos[i].person == photos[j].person {
                    same.push(d);
                } else {
                    diff.push(d);
                }
            }
        }
        // As many different-person pairs as same-person pairs, evenly spread.
        let step = (diff.len() / same.len()).max(1);
        let diff: Vec<f32> = diff
            .iter()
            .step_by(step)
            .take(same.len())
            .copied()
            .collect();
        let at_default = accuracy(&same, &diff, 0.6);
        let best = (20..=120)
            .map(|t| accuracy(&same, &diff, t as f32 / 100.0))
            .fold(0.0, f64::max);
        println!(
            "{name}: {} same / {} different pairs: accuracy {at_default:.4} at 0.6, best {best:.4}",
            same.len(),
            diff.len()
        );
        results.push((at_default, best));
    }
    // FLOORS
}
