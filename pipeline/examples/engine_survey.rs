//! Survey the face engine over folders of photos: faces per photo, which path found them
//! (detector, padded retry, whole image), and totals per folder. Reproduces the found-rate
//! numbers for tight crops (ORL, the Johns' chips) and the face counts on scenes.
//!
//!     cargo run --release -p facepipe-pipeline --example engine_survey -- [--tiny] [--no-fallback] [--verbose] DIR_OR_FILE...

use std::collections::BTreeMap;
use std::path::PathBuf;

use facepipe_pipeline::{image_io, DetectorKind, EngineOptions, FaceEngine, ModelDir};
use rayon::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = EngineOptions::default();
    let mut inputs = Vec::new();
    let mut verbose = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--tiny" => options.detector.kind = DetectorKind::Tiny,
            "--no-fallback" => options.tight_crop_fallback = false,
            "--verbose" => verbose = true,
            _ => inputs.push(PathBuf::from(a)),
        }
    }
    let engine = FaceEngine::load(&ModelDir::locate(None)?, options)?;
    for input in inputs {
        let mut files: Vec<PathBuf> = if input.is_dir() {
            let mut v = Vec::new();
            let mut stack = vec![input.clone()];
            while let Some(p) = stack.pop() {
                if p.is_dir() {
                    stack.extend(std::fs::read_dir(&p)?.flatten().map(|e| e.path()));
                } else if !p
                    .extension()
                    .is_some_and(|e| e == "xml" || e == "txt" || e.to_string_lossy().is_empty())
                    && p.file_name().is_some_and(|n| n != "README")
                {
                    v.push(p);
                }
            }
            v
        } else {
            vec![input.clone()]
        };
        files.sort();
        let results: Vec<_> = files
            .par_iter()
            .map(|f| {
                let r = image_io::open(f, &engine.options().limits).map(|img| engine.faces(&img));
                (f.clone(), r)
            })
            .collect();
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for (f, r) in &results {
            match r {
                Ok(faces) => {
                    let paths: Vec<String> = faces
                        .iter()
                        .map(|x| {
                            let fit = facepipe_pipeline::align::template_fit_error(
                                &facepipe_pipeline::Landmarks68(x.landmarks.clone()),
                            );
                            format!("{}({:.2}, fit {:.4})", x.found_by, x.score, fit)
                        })
                        .collect();
                    if verbose || files.len() <= 20 {
                        println!("{}: {} faces {}", f.display(), faces.len(), paths.join(" "));
                    }
                    let key = faces
                        .first()
                        .map_or("none".to_string(), |x| x.found_by.to_string());
                    *by.entry(key).or_default() += 1;
                }
                Err(e) => {
                    println!("{}: error {e}", f.display());
                    *by.entry("error".into()).or_default() += 1;
                }
            }
        }
        let n = results.len().max(1) as f64;
        let summary: Vec<String> = by
            .iter()
            .map(|(k, v)| format!("{k} {v} ({:.1} %)", 100.0 * *v as f64 / n))
            .collect();
        println!(
            "{}: {} photos: {}",
            input.display(),
            results.len(),
            summary.join(", ")
        );
    }
    Ok(())
}
