//! `facepipe compare`: are two photos the same person?
//!
//! The largest face of each photo is detected, aligned and embedded (the pretrained network,
//! or a trained artifact with `--model`), and the distance is compared with the model's
//! threshold. `--pairs FILE` compares many pairs (two paths per line, tab-separated) with the
//! models loaded once, printing one line per pair in input order. The exit status is 1 when
//! any photo failed, after every pair was processed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_model::{ModelSource, Recognizer};
use facepipe_pipeline::{image_io, EngineOptions, FaceEngine};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;

use crate::common::{parse_device, GlobalArgs};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    facepipe compare a.jpg b.jpg\n  \
    facepipe compare --json --pairs pairs.tsv     # one line per pair: PATH<TAB>PATH\n  \
    facepipe compare --model runs/ft1 a.jpg b.jpg # a model written by `facepipe train`")]
pub struct CompareArgs {
    /// The two photos (omit with --pairs).
    #[arg(
        value_name = "PHOTO",
        num_args = 2,
        required_unless_present = "pairs",
        conflicts_with = "pairs"
    )]
    pub photos: Vec<PathBuf>,
    /// Compare every pair of a file: one pair per line, two paths separated by a tab
    /// (empty lines and lines starting with # are skipped).
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,
    /// Print JSON: `{"distance", "same", "threshold"}` (with --pairs also `a` and `b`, or `error`).
    #[arg(long)]
    pub json: bool,
    /// A model folder written by `facepipe train` (model.json + model.safetensors) instead of
    /// the pretrained network.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Override the model's distance threshold.
    #[arg(long, value_name = "DISTANCE")]
    pub threshold: Option<f32>,
    /// Where the embedding network runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
}

/// The face engine and the embedding network `model` names: the pretrained network (`None`
/// or "pretrained") or a trained artifact folder (a folder named "pretrained" wins over the
/// keyword).
pub fn load_recognizer(
    global: &GlobalArgs,
    model: Option<&Path>,
    device: tch::Device,
) -> anyhow::Result<Recognizer> {
    let models = global.model_dir()?;
    let (source, what) = match model {
        Some(dir) if dir.as_os_str() != "pretrained" || dir.exists() => (
            ModelSource::Artifact(dir),
            format!("loading the model at {}", dir.display()),
        ),
        _ => (
            ModelSource::Pretrained,
            "loading the pretrained networks".to_string(),
        ),
    };
    Recognizer::load(&models, source, EngineOptions::default(), device).context(what)
}

/// The aligned crop of the largest face of a photo.
pub fn largest_face_crop(engine: &FaceEngine, path: &Path) -> anyhow::Result<RgbImage> {
    let photo = image_io::open(path, &engine.options().limits)?;
    let face = engine
        .largest_face(&photo)
        .ok_or_else(|| anyhow::anyhow!("no face found"))?;
    Ok(engine.align(&photo, &face))
}

/// An f32 as the f64 with the same shortest decimal form (0.6, not 0.6000000238418579).
pub fn short(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
}

struct PairLine {
    a: String,
    b: String,
    /// A malformed line is reported in place, like a failed photo.
    error: Option<String>,
}

fn read_pairs(path: &Path) -> anyhow::Result<Vec<PairLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pairs file {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('\t') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('\t') => PairLine {
                a: a.to_string(),
                b: b.to_string(),
                error: None,
            },
            _ => PairLine {
                a: l.to_string(),
                b: String::new(),
                error: Some("expected two paths separated by one tab".into()),
            },
        })
        .collect())
}

pub fn run(global: &GlobalArgs, args: CompareArgs) -> anyhow::Result<ExitCode> {
    let pairs = match &args.pairs {
        Some(file) => read_pairs(file)?,
        None => match args.photos.as_slice() {
            [a, b] => vec![PairLine {
                a: a.display().to_string(),
                b: b.display().to_string(),
                error: None,
            }],
            _ => anyhow::bail!("give two photos, or --pairs FILE"),
        },
    };
    let device = parse_device(&args.device)?;
    let recognizer = load_recognizer(global, args.model.as_deref(), device)?;
    let engine = recognizer.engine();
    let mut metric = recognizer.metric();
    if let Some(t) = args.threshold {
        metric.threshold = t;
    }

    // Each distinct photo once: detection in parallel, then the crops embedded in batches.
    let mut photos: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for p in pairs.iter().filter(|p| p.error.is_none()) {
        for s in [p.a.as_str(), p.b.as_str()] {
            index.entry(s).or_insert_with(|| {
                photos.push(s);
                photos.len() - 1
            });
        }
    }
    let bar = if global.quiet || photos.len() < 8 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(photos.len() as u64).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} photos {elapsed_precise}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let crops: Vec<Result<RgbImage, String>> = photos
        .par_iter()
        .map(|p| {
            // Pipeline errors already carry their cause; `{e}` avoids printing it twice.
            let r = largest_face_crop(engine, Path::new(p)).map_err(|e| format!("{p}: {e}"));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let ok: Vec<RgbImage> = crops
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut embedded = recognizer.embed(&ok)?.into_iter();
    let embeddings: Vec<Result<Vec<f32>, String>> = crops
        .into_iter()
        .map(|c| match c {
            Ok(_) => embedded
                .next()
                .ok_or_else(|| "the network returned too few embeddings".to_string()),
            Err(e) => Err(e),
        })
        .collect();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    let with_paths = args.pairs.is_some();
    for p in &pairs {
        let get = |s: &str| -> Result<&Vec<f32>, String> {
            match index.get(s).and_then(|&i| embeddings.get(i)) {
                Some(Ok(e)) => Ok(e),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!("{s}: not processed")),
            }
        };
        let result = match &p.error {
            Some(e) => Err(e.clone()),
            None => get(&p.a).and_then(|a| get(&p.b).map(|b| (a, b))),
        };
        // Broken weights give NaN distances: report them as errors, never as a `null`.
        let result = result.and_then(|(a, b)| {
            let d = metric.distance(a, b);
            if d.is_finite() {
                Ok(d)
            } else {
                Err(format!(
                    "the distance came out as {d}: the model's embeddings are not finite"
                ))
            }
        });
        match result {
            Ok(d) => {
                let same = d < metric.threshold;
                if args.json {
                    let mut v = json!({
                        "distance": short(d),
                        "same": same,
                        "threshold": short(metric.threshold),
                    });
                    if with_paths {
                        v["a"] = json!(p.a);
                        v["b"] = json!(p.b);
                    }
                    writeln!(out, "{v}")?;
                } else {
                    let verdict = if same {
                        "same person"
                    } else {
                        "different people"
                    };
                    let prefix = if with_paths {
                        format!("{}\t{}\t", p.a, p.b)
                    } else {
                        String::new()
                    };
                    writeln!(
                        out,
                        "{prefix}distance {d:.4} → {verdict} (threshold {:.4}, {:?})",
                        metric.threshold, metric.distance
                    )?;
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    writeln!(out, "{}", json!({"a": p.a, "b": p.b, "error": e}))?;
                } else {
                    writeln!(out, "{}\t{}\terror: {e}", p.a, p.b)?;
                }
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} of {} comparisons failed", pairs.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
