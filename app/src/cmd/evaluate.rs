//! `facepipe evaluate MODEL DATASET`: the same evaluation `facepipe train` runs, on any
//! dataset and for the pretrained network too, so a user can compare before and after.
//!
//! Every face of the dataset is embedded; verification pairs (every same-person pair and
//! seeded different-person pairs, or an LFW `pairs.txt`) give 10-fold accuracy, ROC AUC and
//! TAR at FAR 1e-3/1e-2; one gallery photo per person gives rank-1 identification; the
//! threshold is calibrated at the target FAR. The report is printed and written as
//! `metrics.json` + `roc.png`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_pipeline::dataset::layout::{self, LabelledPhoto};
use facepipe_pipeline::dataset::Manifest;
use facepipe_pipeline::FaceEngine;
use facepipe_training::eval::{self, pairs, EvalOptions};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::compare::{largest_face_crop, load_recognizer};
use crate::common::{parse_device, GlobalArgs};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    facepipe evaluate pretrained prepared/people\n  \
    facepipe evaluate runs/ft1 prepared/lfw --pairs lfw/pairs.txt --out runs/ft1/eval-lfw\n  \
    facepipe evaluate pretrained assets/sample/people            # raw photos: detected and aligned first")]
pub struct EvaluateArgs {
    /// `pretrained` (face-api's 128-d network) or a model folder written by `facepipe train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// A prepared dataset (folder with manifest.json, from `facepipe prepare`), or a raw
    /// folder of photos in the layout IDENTITY/PHOTO, whose largest faces are detected and
    /// aligned first.
    #[arg(value_name = "DATASET")]
    pub dataset: PathBuf,
    /// Where metrics.json and roc.png go.
    #[arg(long, default_value = "evaluation", value_name = "DIR")]
    pub out: PathBuf,
    /// LFW-style pairs file (`10 300` header; `name i j` / `name1 i name2 j`). Default:
    /// DATASET/pairs.txt when present, else every same-person pair plus sampled different ones.
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,
    /// False-accept rate at which the threshold is calibrated.
    #[arg(long, default_value_t = 1e-3, value_name = "FAR")]
    pub target_far: f64,
    /// Most different-person pairs to sample.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub max_different: usize,
    /// Seed of the pair sampling and fold assignment.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the embedding network runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
    /// Print the report as JSON (the contents of metrics.json) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The faces to embed, their labels, and keys for a pairs file.
struct Faces {
    crops: Vec<RgbImage>,
    labels: Vec<usize>,
    /// (identity, image number) → index, for LFW pairs.
    keys: HashMap<(String, u32), usize>,
    skipped: Vec<String>,
    /// Where a default pairs.txt may live.
    source_root: Option<PathBuf>,
}

fn bar(global: &GlobalArgs, len: usize, what: &str) -> ProgressBar {
    if global.quiet {
        return ProgressBar::hidden();
    }
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {what} {{elapsed_precise}} (eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn prepared_faces(dir: &Path, manifest: &Manifest) -> anyhow::Result<Faces> {
    let mut faces = Faces {
        crops: Vec::new(),
        labels: Vec::new(),
        keys: HashMap::new(),
        skipped: Vec::new(),
        source_root: Some(PathBuf::from(&manifest.source)).filter(|p| p.is_dir()),
    };
    for sample in manifest.samples(dir) {
        let sample = sample.with_context(|| format!("reading the shards of {}", dir.display()))?;
        match sample.image() {
            Ok(img) => {
                let i = faces.crops.len();
                if let Some(n) = pairs::lfw_image_number(&sample.meta.source) {
                    faces.keys.insert((sample.meta.identity.clone(), n), i);
                }
                faces.crops.push(img);
                faces.labels.push(sample.meta.label as usize);
            }
            Err(e) => faces.skipped.push(format!("{}: {e}", sample.key)),
        }
    }
    Ok(faces)
}

fn raw_faces(global: &GlobalArgs, engine: &FaceEngine, dir: &Path) -> anyhow::Result<Faces> {
    let photos = layout::list_photo_folder(dir).with_context(|| {
        format!(
            "{} is neither a prepared dataset (no manifest.json) nor a folder of IDENTITY/PHOTO images",
            dir.display()
        )
    })?;
    let mut identities: Vec<&str> = photos.iter().map(|p| p.identity.as_str()).collect();
    identities.dedup();
    let pb = bar(global, photos.len(), "photos detected");
    let crops: Vec<anyhow::Result<RgbImage>> = photos
        .par_iter()
        .map(|p| {
            let r = largest_face_crop(engine, &p.path);
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();
    let label_of: HashMap<&str, usize> = identities
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let mut faces = Faces {
        crops: Vec::new(),
        labels: Vec::new(),
        keys: HashMap::new(),
        skipped: Vec::new(),
        source_root: Some(dir.to_path_buf()),
    };
    for (LabelledPhoto { identity, path }, crop) in photos.iter().zip(crops) {
        match crop {
            Ok(c) => {
                let i = faces.crops.len();
                let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                if let Some(n) = pairs::lfw_image_number(file) {
                    faces.keys.insert((identity.clone(), n), i);
                }
                faces.crops.push(c);
                faces
                    .labels
                    .push(label_of.get(identity.as_str()).copied().unwrap_or(0));
            }
            Err(e) => faces.skipped.push(format!("{}: {e}", path.display())),
        }
    }
    Ok(faces)
}

/// LFW's pairs.txt is about 100 KB: a file far larger is not a pairs file.
const MAX_PAIRS_FILE: u64 = 64 << 20;

/// Read and parse a pairs file, with its size bounded before it is read.
fn load_pairs(file: &Path) -> anyhow::Result<Vec<pairs::NamedPair>> {
    use std::io::Read;
    let opened =
        std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let mut text = String::new();
    opened
        .take(MAX_PAIRS_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (a pairs file is UTF-8 text)", file.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_PAIRS_FILE,
        "{} is larger than {} MiB: that is not a pairs file (LFW's is about 100 KB)",
        file.display(),
        MAX_PAIRS_FILE >> 20
    );
    pairs::parse_lfw_pairs(&text).with_context(|| format!("parsing {}", file.display()))
}

pub fn run(global: &GlobalArgs, args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    if !(args.target_far > 0.0 && args.target_far < 1.0) {
        anyhow::bail!("--target-far must be between 0 and 1, e.g. 1e-3");
    }
    // An explicit pairs file is checked before any face is detected or embedded.
    let given_pairs = args.pairs.as_deref().map(load_pairs).transpose()?;
    let device = parse_device(&args.device)?;
    let recognizer = load_recognizer(global, Some(&args.model), device)?;

    let faces = match Manifest::load(&args.dataset) {
        Ok(manifest) => prepared_faces(&args.dataset, &manifest)?,
        Err(_) if args.dataset.is_dir() => raw_faces(global, recognizer.engine(), &args.dataset)?,
        Err(e) => return Err(e).context("reading the dataset"),
    };
    for s in &faces.skipped {
        tracing::debug!("skipped {s}");
    }
    if faces.crops.is_empty() {
        anyhow::bail!("no usable face in {}", args.dataset.display());
    }

    let pb = bar(global, faces.crops.len(), "faces embedded");
    let mut embeddings = Vec::with_capacity(faces.crops.len());
    for chunk in faces.crops.chunks(64) {
        embeddings.extend(recognizer.embed(chunk)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();

    let named_pairs = match (args.pairs.clone(), given_pairs) {
        (Some(file), Some(named)) => Some((file, named)),
        _ => [Some(args.dataset.clone()), faces.source_root.clone()]
            .into_iter()
            .flatten()
            .map(|d| d.join("pairs.txt"))
            .find(|p| p.is_file())
            .map(|file| load_pairs(&file).map(|named| (file, named)))
            .transpose()?,
    };
    let explicit = match &named_pairs {
        Some((file, named)) => {
            let (resolved, missing) = pairs::resolve(named, &faces.keys);
            if resolved.is_empty() {
                anyhow::bail!(
                    "none of the {} pairs of {} names a face of this dataset",
                    named.len(),
                    file.display()
                );
            }
            if missing > 0 {
                tracing::warn!(
                    "{missing} of {} pairs of {} name photos without a usable face here; they are left out",
                    named.len(),
                    file.display()
                );
            }
            Some((resolved, missing))
        }
        None => None,
    };

    let opts = EvalOptions {
        target_far: args.target_far,
        max_different_pairs: args.max_different,
        seed: args.seed,
        ..EvalOptions::default()
    };
    let name = if args.model.as_os_str() == "pretrained" && !args.model.exists() {
        format!("pretrained {}", recognizer.architecture())
    } else {
        format!("{} ({})", args.model.display(), recognizer.architecture())
    };
    let report = eval::evaluate(
        name,
        &embeddings,
        &faces.labels,
        &recognizer.metric(),
        &opts,
        explicit,
    )?;
    report
        .write(&args.out)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    if args.json {
        println!("{}", facepipe_model::json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
        if !faces.skipped.is_empty() {
            println!(
                "{} photos skipped (no usable face; -v lists them)",
                faces.skipped.len()
            );
        }
        println!(
            "wrote {} and {}",
            args.out.join("metrics.json").display(),
            args.out.join("roc.png").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
