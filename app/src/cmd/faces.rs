//! `facepipe faces`: detect faces, 68 landmarks and aligned crops in photos.
//!
//! One result per input, in input order: a table for people, or with `--json` one JSON
//! object per line (`{"image", "faces"}` or `{"image", "error"}`) for programs. Every input is
//! processed; the exit status is 1 when any of them failed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_pipeline::{
    image_io, Alignment, DetectorKind, DetectorOptions, EngineOptions, Face, FaceEngine,
};
use image::{Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct FacesArgs {
    /// Photos to look at (JPEG, PNG, GIF, BMP, WebP, TIFF, PGM/PPM; the format is read from the content).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Face detector: ssd (accurate, default) or tiny (fast).
    #[arg(long, default_value = "ssd", value_name = "ssd|tiny")]
    pub detector: DetectorKind,
    /// Minimum detection score.
    #[arg(long, default_value_t = 0.5, value_name = "SCORE")]
    pub min_score: f32,
    /// Drop faces smaller than this many pixels on their shorter side.
    #[arg(long, default_value_t = 0, value_name = "PIXELS")]
    pub min_face_size: u32,
    /// Do not retry tight face crops on a padded copy / fall back to the whole image.
    #[arg(long)]
    pub no_fallback: bool,
    /// Alignment of the crops written by --crops: dlib_chip (150×150, rotation-corrected) or face_api.
    #[arg(long, default_value = "dlib_chip", value_name = "dlib_chip|face_api")]
    pub alignment: Alignment,
    /// Print one JSON object per image and line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the aligned crop of every face as PNG into this folder (`<image>_face<N>.png`).
    #[arg(long, value_name = "DIR")]
    pub crops: Option<PathBuf>,
    /// Write the photo with boxes and landmarks drawn (with several images: OUT_<image>.png).
    #[arg(long, value_name = "OUT.png")]
    pub draw: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: FacesArgs) -> anyhow::Result<ExitCode> {
    let models = global.model_dir()?;
    let options = EngineOptions {
        detector: DetectorOptions {
            kind: args.detector,
            min_score: args.min_score,
            min_face_size: args.min_face_size,
            ..DetectorOptions::default()
        },
        alignment: args.alignment,
        tight_crop_fallback: !args.no_fallback,
        ..EngineOptions::default()
    };
    let engine = FaceEngine::load(&models, options).context("loading the face models")?;
    if let Some(dir) = &args.crops {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the crops folder {}", dir.display()))?;
    }
    let names = output_names(&args.images);

    let bar = if global.quiet || args.images.len() < 2 {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.images.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} photos {elapsed_precise}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let results: Vec<anyhow::Result<Vec<Face>>> = args
        .images
        .par_iter()
        .zip(&names)
        .map(|(path, name)| {
            let out = process(&engine, &args, path, name);
            bar.inc(1);
            out
        })
        .collect();
    bar.finish_and_clear();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for (path, result) in args.images.iter().zip(results) {
        let shown = path.display().to_string();
        match result {
            Ok(faces) => {
                if args.json {
                    let line = Line {
                        image: &shown,
                        faces: Some(&faces),
                        error: None,
                    };
                    writeln!(out, "{}", facepipe_model::json::to_string(&line)?)?;
                } else {
                    print_table(&mut out, &shown, &faces)?;
                }
            }
            Err(err) => {
                failed += 1;
                if args.json {
                    let line = Line {
                        image: &shown,
                        faces: None,
                        error: Some(format!("{err:#}")),
                    };
                    writeln!(out, "{}", facepipe_model::json::to_string(&line)?)?;
                } else {
                    writeln!(out, "{shown}: error: {err:#}")?;
                }
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} of {} images failed", args.images.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One `--json` output line: `{"image", "faces"}` or `{"image", "error"}`.
#[derive(Serialize)]
struct Line<'a> {
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    faces: Option<&'a [Face]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Decode, find faces, and write the requested crops and drawing for one photo.
fn process(
    engine: &FaceEngine,
    args: &FacesArgs,
    path: &Path,
    name: &str,
) -> anyhow::Result<Vec<Face>> {
    let photo = image_io::open(path, &engine.options().limits)?;
    let faces = engine.faces(&photo);
    if let Some(dir) = &args.crops {
        for (i, face) in faces.iter().enumerate() {
            let crop = engine.align(&photo, face);
            let file = dir.join(format!("{name}_face{i}.png"));
            crop.save(&file)
                .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    if let Some(draw) = &args.draw {
        let file = if args.images.len() == 1 {
            draw.clone()
        } else {
            let stem = draw.file_stem().and_then(|s| s.to_str()).unwrap_or("faces");
            draw.with_file_name(format!("{stem}_{name}.png"))
        };
        let mut canvas = photo;
        draw_faces(&mut canvas, &faces);
        canvas
            .save(&file)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(faces)
}

/// File-name stems for the outputs of each input, made unique when two inputs share one.
fn output_names(images: &[PathBuf]) -> Vec<String> {
    let stems: Vec<String> = images
        .iter()
        .map(|p| {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into())
        })
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in &stems {
        *counts.entry(s).or_default() += 1;
    }
    stems
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if counts.get(s.as_str()).copied().unwrap_or(0) > 1 {
                format!("{s}_{i}")
            } else {
                s.clone()
            }
        })
        .collect()
}

fn draw_faces(canvas: &mut RgbImage, faces: &[Face]) {
    use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_rect_mut};
    use imageproc::rect::Rect;
    let thickness = (canvas.width().max(canvas.height()) / 400).max(1) as i32;
    for face in faces {
        let b = face.bbox;
        let colour = match face.found_by {
            facepipe_pipeline::FoundBy::Detector => Rgb([0, 220, 0]),
            _ => Rgb([255, 160, 0]),
        };
        for t in 0..thickness {
            let w = (b.width as i32 - 2 * t).max(1) as u32;
            let h = (b.height as i32 - 2 * t).max(1) as u32;
            let rect = Rect::at(b.x as i32 + t, b.y as i32 + t).of_size(w, h);
            draw_hollow_rect_mut(canvas, rect, colour);
        }
        for p in &face.landmarks {
            draw_filled_circle_mut(
                canvas,
                (p[0] as i32, p[1] as i32),
                thickness + 1,
                Rgb([255, 0, 0]),
            );
        }
    }
}

fn print_table(out: &mut impl Write, image: &str, faces: &[Face]) -> std::io::Result<()> {
    let n = faces.len();
    writeln!(out, "{image}: {n} face{}", if n == 1 { "" } else { "s" })?;
    if n > 0 {
        writeln!(
            out,
            "  {:>2}  {:>8} {:>8} {:>8} {:>8}  {:>6}  found by",
            "#", "x", "y", "width", "height", "score"
        )?;
    }
    for (i, f) in faces.iter().enumerate() {
        let b = f.bbox;
        writeln!(
            out,
            "  {i:>2}  {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {:>6.3}  {}",
            b.x, b.y, b.width, b.height, f.score, f.found_by
        )?;
    }
    Ok(())
}
