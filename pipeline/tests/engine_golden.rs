//! Golden tests: the Rust networks against the reference implementation's outputs on real
//! photos. Expected values live in tests/fixtures/golden/ (see its README for the exact
//! commands that produced them).
//!
//! Tolerances: boxes within 1 px, landmarks within 0.5 px (the acceptance bar of the port;
//! in practice the differences are float rounding, ~1e-3 px), aligned dlib chips within a
//! mean absolute difference of 0.5 grey levels per channel and no pixel off by more than 8
//! (bilinear sampling of f32 vs f64 landmarks can flip a rounding at sharp edges).

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};

use facepipe_pipeline::{
    align, Alignment, Detector, DetectorKind, DetectorOptions, LandmarkNet, Landmarks68, ModelDir,
};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[derive(Deserialize)]
struct GoldenImage {
    image: String,
    faces: Vec<GoldenFace>,
}

#[derive(Deserialize)]
struct GoldenFace {
    score: f32,
    #[serde(rename = "box")]
    bbox: [f64; 4],
    landmarks: Vec<[f64; 2]>,
}

fn golden(detector: &str) -> Vec<GoldenImage> {
    let path = fixtures().join(format!("golden/engine_{detector}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_detector(kind: DetectorKind) {
    let models = ModelDir::locate(None).unwrap();
    let det = Detector::load(
        &models,
        DetectorOptions {
            kind,
            ..DetectorOptions::default()
        },
    )
    .unwrap();
    let lm = LandmarkNet::load(&models).unwrap();
    let expected = golden(&kind.to_string());
    assert!(expected.len() >= 2);
    for g in expected {
        let photo = facepipe_pipeline::image_io::open(
            &fixtures().join("engine").join(&g.image),
            &Default::default(),
        )
        .unwrap();
        let found = det.detect(&photo);
        assert_eq!(
            found.len(),
            g.faces.len(),
            "{kind} face count on {}",
            g.image
        );
        assert!(!g.faces.is_empty());
        for (d, e) in found.iter().zip(&g.faces) {
            let got = [d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height];
            for (a, b) in got.iter().zip(e.bbox) {
                assert!(
                    (f64::from(*a) - b).abs() < 1.0,
                    "{kind} box on {}: {got:?} vs {:?}",
                    g.image,
                    e.bbox
                );
            }
            assert!(
                (d.score - e.score).abs() < 1e-3,
                "{} vs {}",
                d.score,
                e.score
            );
            // Landmarks from the golden box, so this checks the landmark network alone.
            let pts = lm.landmarks(&photo, d.bbox).unwrap();
            assert_eq!(pts.0.len(), 68);
            let worst = pts
                .0
                .iter()
                .zip(&e.landmarks)
                .map(|(p, q)| {
                    (f64::from(p[0]) - q[0])
                        .abs()
                        .max((f64::from(p[1]) - q[1]).abs())
                })
                .fold(0.0, f64::max);
            assert!(
                worst < 0.5,
                "{kind} landmarks on {} off by {worst} px",
                g.image
            );
        }
    }
}

#[test]
fn ssd_boxes_and_landmarks_match_the_reference() {
    check_detector(DetectorKind::Ssd);
}

#[test]
fn tiny_boxes_and_landmarks_match_the_reference() {
    check_detector(DetectorKind::Tiny);
}

#[test]
fn dlib_chips_match_the_reference() {
    let models = ModelDir::locate(None).unwrap();
    let lm = LandmarkNet::load(&models).unwrap();
    let mut compared = 0;
    for g in golden("ssd") {
        let photo = facepipe_pipeline::image_io::open(
            &fixtures().join("engine").join(&g.image),
            &Default::default(),
        )
        .unwrap();
        let stem = g.image.trim_end_matches(".jpg");
        for (i, e) in g.faces.iter().enumerate() {
            // The reference's own landmarks: this isolates the chip geometry and sampling.
            let pts = Landmarks68(
                e.landmarks
                    .iter()
                    .map(|p| [p[0] as f32, p[1] as f32])
                    .collect(),
            );
            let chip = align::align(&photo, &pts, Alignment::DlibChip);
            let want = image::open(fixtures().join(format!("golden/{stem}_ssd_chip{i}.png")))
                .unwrap()
                .into_rgb8();
            assert_eq!(chip.dimensions(), want.dimensions());
            let diffs: Vec<i32> = chip
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            let max = diffs.iter().copied().max().unwrap_or(0);
            assert!(
                mean < 0.5 && max <= 8,
                "{stem} chip {i}: mean {mean}, max {max}"
            );
            // And the full path (our landmarks) gives the same chip within the same bounds.
            let bbox = facepipe_pipeline::BBox::new(
                e.bbox[0] as f32,
                e.bbox[1] as f32,
                e.bbox[2] as f32,
                e.bbox[3] as f32,
            );
            let ours = align::align(
                &photo,
                &lm.landmarks(&photo, bbox).unwrap(),
                Alignment::DlibChip,
            );
            let mean_ours = ours
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| f64::from((i32::from(*a) - i32::from(*b)).abs()))
                .sum::<f64>()
                / diffs.len() as f64;
            assert!(
                mean_ours < 0.5,
                "{stem} chip {i} from our landmarks: mean {mean_ours}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 4);
}
