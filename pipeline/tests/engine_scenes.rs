//! The engine on real photos: face counts on scenes, detection recall against dlib's
//! hand-labelled boxes, the dog photo, and tight crops through the fallback paths.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use facepipe_pipeline::{
    image_io, BBox, DetectorKind, DetectorOptions, EngineOptions, FaceEngine, FoundBy, ModelDir,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/engine")
        .join(name)
}

fn engine(kind: DetectorKind) -> &'static FaceEngine {
    static SSD: OnceLock<FaceEngine> = OnceLock::new();
    static TINY: OnceLock<FaceEngine> = OnceLock::new();
    let cell = match kind {
        DetectorKind::Ssd => &SSD,
        DetectorKind::Tiny => &TINY,
    };
    cell.get_or_init(|| {
        let options = EngineOptions {
            detector: DetectorOptions {
                kind,
                ..DetectorOptions::default()
            },
            ..EngineOptions::default()
        };
        FaceEngine::load(&ModelDir::locate(None).unwrap(), options).unwrap()
    })
}

fn faces(kind: DetectorKind, name: &str) -> Vec<facepipe_pipeline::Face> {
    let photo = image_io::open(&fixture(name), &Default::default()).unwrap();
    engine(kind).faces(&photo)
}

#[test]
fn face_counts_on_scenes() {
    // SSD finds every visible face in these photos (counted by eye); faces come with 68
    // landmarks inside or near their box, best score first.
    for (name, want) in [
        ("two_people.jpg", 2),
        ("obama_and_biden.jpg", 2),
        ("kit_with_rose.jpg", 2),
        ("bald_guys.jpg", 23),
    ] {
        let found = faces(DetectorKind::Ssd, name);
        assert_eq!(found.len(), want, "{name}");
        for f in &found {
            assert_eq!(f.found_by, FoundBy::Detector, "{name}");
            assert!(f.score >= 0.5);
            assert_eq!(f.landmarks.len(), 68);
            let b = f.bbox;
            let inside = f
                .landmarks
                .iter()
                .filter(|p| {
                    p[0] >= b.x - 0.2 * b.width
                        && p[0] <= b.right() + 0.2 * b.width
                        && p[1] >= b.y - 0.2 * b.height
                        && p[1] <= b.bottom() + 0.2 * b.height
                })
                .count();
            assert!(inside >= 60, "{name}: only {inside} landmarks near the box");
        }
        assert!(found.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // The tiny detector finds both in two_people but only one face in obama_and_biden,
    // exactly as the reference does (see the golden values).
    assert_eq!(faces(DetectorKind::Tiny, "two_people.jpg").len(), 2);
    assert_eq!(faces(DetectorKind::Tiny, "obama_and_biden.jpg").len(), 1);
}

#[test]
fn dog_face_is_reported_like_the_library_does() {
    // A faithful SSD port scores the dog's face 0.79 (as the library does). We report it
    // rather than filter it: a filter is only worth having if it costs no recall on real
    // faces, and none has been shown to do that yet.
    let found = faces(DetectorKind::Ssd, "dogs.jpg");
    assert_eq!(found.len(), 1);
    assert!((found[0].score - 0.79).abs() < 0.01, "{}", found[0].score);
    assert_eq!(found[0].found_by, FoundBy::Detector);
}

/// dlib imglab boxes `(file, [x, y, w, h])` from training.xml.
fn labelled_boxes() -> Vec<(String, BBox)> {
    let xml = std::fs::read_to_string(fixture("training.xml")).unwrap();
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}='"))? + name.len() + 3;
        let end = tag[start..].find('\'')? + start;
        Some(tag[start..end].to_string())
    };
    let mut out = Vec::new();
    let mut file = String::new();
    for line in xml.lines() {
        let line = line.trim();
        if line.starts_with("<image ") {
            file = attr(line, "file").unwrap();
        } else if line.starts_with("<box ") {
            let v = |n| attr(line, n).unwrap().parse::<f32>().unwrap();
            out.push((
                file.clone(),
                BBox::new(v("left"), v("top"), v("width"), v("height")),
            ));
        }
    }
    out
}

#[test]
fn recall_on_hand_labelled_boxes() {
    let labelled = labelled_boxes();
    assert_eq!(labelled.len(), 18);
    for kind in [DetectorKind::Ssd, DetectorKind::Tiny] {
        let mut hits = [0usize; 2];
        let mut files: Vec<&String> = labelled.iter().map(|(f, _)| f).collect();
        files.dedup();
        for file in files {
            let found = faces(kind, file);
            for (_, want) in labelled.iter().filter(|(f, _)| f == file) {
                let best = found.iter().map(|f| f.bbox.iou(want)).fold(0.0, f32::max);
                hits[0] += usize::from(best >= 0.3);
                hits[1] += usize::from(best >= 0.5);
            }
        }
        let n = labelled.len() as f32;
        let (r30, r50) = (hits[0] as f32 / n, hits[1] as f32 / n);
        println!("{kind}: recall {r30:.3} at IoU>=0.3, {r50:.3} at IoU>=0.5");
        // Floors: measured values of this port, which the golden tests tie to the library's
        // own detections. SSD finds 17 of the 18 labelled faces; the tiny detector at 416 px misses most 37 px faces of
        // these 500 px photos (11/18 at IoU 0.3, 7/18 at 0.5) and its boxes are looser.
        match kind {
            DetectorKind::Ssd => assert!(r30 >= 17.0 / 18.0 - 1e-6 && r50 >= 17.0 / 18.0 - 1e-6),
            DetectorKind::Tiny => assert!(r30 >= 11.0 / 18.0 - 1e-6 && r50 >= 7.0 / 18.0 - 1e-6),
        }
    }
}

#[test]
fn tight_crops_get_a_face_through_the_fallback() {
    // ORL photos (92×112 greyscale) and the Johns' 150×150 chips are tight crops: SSD alone
    // finds ~2 % of ORL. Every one must come back with a face, and the path is recorded.
    let mut paths = Vec::new();
    for name in [
        "orl/s1_1.pgm",
        "orl/s7_1.pgm",
        "orl/s13_1.pgm",
        "orl/s22_1.pgm",
        "orl/s35_1.pgm",
        "johns/John_Salley_0001.jpg",
        "johns/John_Savage_0001.jpg",
        "johns/John_Schneider_0001.jpg",
        "johns/John_Simm_0001.jpg",
    ] {
        let photo = image_io::open(&fixture(name), &Default::default()).unwrap();
        let found = engine(DetectorKind::Ssd).faces(&photo);
        assert_eq!(found.len(), 1, "{name}");
        let f = &found[0];
        // The face box lies on the photo and covers a good part of a tight crop.
        let (w, h) = (photo.width() as f32, photo.height() as f32);
        assert!(f.bbox.x >= 0.0 && f.bbox.y >= 0.0, "{name}: {:?}", f.bbox);
        assert!(
            f.bbox.right() <= w + 0.5 && f.bbox.bottom() <= h + 0.5,
            "{name}: {:?}",
            f.bbox
        );
        assert!(f.bbox.area() >= 0.2 * w * h, "{name}: {:?}", f.bbox);
        // Eyes above the mouth, inside the photo.
        let eye_y = (f.landmarks[36][1] + f.landmarks[45][1]) / 2.0;
        assert!(eye_y < f.landmarks[62][1], "{name}");
        let crop = engine(DetectorKind::Ssd).align(&photo, f);
        assert_eq!(crop.dimensions(), (150, 150));
        paths.push(f.found_by);
    }
    println!("{paths:?}");
    assert!(paths.contains(&FoundBy::PaddedRetry));
    // Without the fallback the same ORL photo yields nothing.
    let options = EngineOptions {
        tight_crop_fallback: false,
        ..EngineOptions::default()
    };
    let strict = FaceEngine::load(&ModelDir::locate(None).unwrap(), options).unwrap();
    let photo = image_io::open(&fixture("orl/s1_1.pgm"), &Default::default()).unwrap();
    assert!(strict.faces(&photo).is_empty());
}
