//! `facepipe cluster`: find the people in an unlabelled photo pile. Every face of every photo
//! is detected and aligned by the same fan-out as `prepare` (resumable, one outcome per
//! photo), embedded with a deployment's model, and grouped by `facepipe-cluster` under the
//! model's calibrated threshold, with the photo, enrolled-people and reviewer constraints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use facepipe_cluster::output::{CLUSTERS_FILE, DECISIONS_FILE, FACES_DIR};
use facepipe_cluster::{
    group, Anchor, ClusterOptions, ClustersFile, Decisions, FaceOut, FaceRecord, GroupOut,
    Grouping, Quality, QualityGate, ThresholdUsed, TruthScores,
};
use facepipe_pipeline::dataset::Layout;
use facepipe_pipeline::dataset::{Manifest, Sample};
use facepipe_pipeline::fanout::SeveralFaces;
use facepipe_pipeline::quality::sharpness;
use facepipe_pipeline::{DistanceKind, Metric};
use facepipe_serving::model::LoadedModel;
use facepipe_serving::{Live, LoadOptions, ModelRef, Registry};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use super::prepare::{self, FanoutArgs, JobShape};
use crate::common::GlobalArgs;

const AFTER_HELP: &str = "\
PHOTOS is any folder or s3:// prefix of photos, in any layout (sub-folders are read, names
mean nothing). OUT is a folder that receives:
  faces/           every face of every photo, aligned (manifest.json + shards, as prepare
                   writes them; rerunning resumes)
  clusters.json    the groups (members with photo, box and quality; a representative; the
                   enrolled person it matches, if any) and the faces left out, with why
  sheets/          one contact sheet per group (sheets/group-001.jpg, ...)
  decisions.json   review decisions (names, merges, \"not this person\", ignore), read on every
                   run so later runs keep them; `facepipe serve --review OUT` writes it

Two faces of one photo are never grouped together. With --deployment, the deployment's model
embeds the faces, its calibrated threshold decides who is alike, and its enrolled people are
anchors: a group matching one is named after it. Faces that are too small, blurred, or were
not found by the detector itself (a photo of dogs) are reported as unclustered.

Examples:
  facepipe cluster party-photos/ out/party --deployment out/registry
  facepipe cluster s3://bucket/archive out/archive --workers 8";

/// Arguments of `facepipe cluster`.
#[derive(Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct ClusterArgs {
    /// The photos: a folder, file://PATH or s3://BUCKET/PREFIX, any layout.
    pub photos: String,
    /// Output folder (faces/, clusters.json, sheets/, decisions.json).
    pub out: PathBuf,
    /// Registry whose current deployment embeds the faces, sets the threshold and names
    /// the groups of its enrolled people. Default: the pretrained network, nobody enrolled.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Cosine distance under which faces may be one person (default: the deployment's
    /// calibrated threshold).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Smallest detector score a face needs to be grouped.
    #[arg(long, default_value_t = QualityGate::default().min_det_score)]
    pub min_score: f32,
    /// Smallest face (shorter side of its box, in photo pixels) to be grouped.
    #[arg(long, default_value_t = QualityGate::default().min_box_px)]
    pub min_face_px: f32,
    /// Smallest sharpness (variance of the Laplacian of the aligned crop) to be grouped.
    #[arg(long, default_value_t = QualityGate::default().min_sharpness)]
    pub min_sharpness: f32,
    /// Groups smaller than this are reported as unclustered faces.
    #[arg(long, default_value_t = 2)]
    pub min_group_size: usize,
    /// Review decisions to apply (default OUT/decisions.json when it exists).
    #[arg(long)]
    pub decisions: Option<PathBuf>,
    /// Device of the embedding network: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Known names to score the grouping against: a JSON object from photo (its path under
    /// PHOTOS) to person. Faces of photos with exactly one face are scored; clusters.json
    /// and the summary get pairwise and BCubed precision, recall and F.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Print clusters.json on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Let faces of one photo be grouped together (to measure what that constraint is
    /// worth; scripts/bench/cluster.sh).
    #[arg(long, hide = true)]
    pub no_photo_constraint: bool,
    #[command(flatten)]
    pub fanout: FanoutArgs,
}

pub fn run(global: &GlobalArgs, args: ClusterArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.min_group_size >= 1,
        "--min-group-size must be at least 1"
    );
    if let Some(t) = args.threshold {
        anyhow::ensure!(
            t.is_finite() && t > 0.0 && t < 2.0,
            "--threshold is a cosine distance: give a number between 0 and 2"
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output folder {}", args.out.display()))?;
    let faces_dir = args.out.join(FACES_DIR);

    // 1. Every face of every photo, through the prepare fan-out.
    let shape = JobShape {
        layout: Layout::Unlabelled,
        several_faces: SeveralFaces::All,
        min_images_per_identity: 1,
    };
    let report = prepare::run_fanout(
        global,
        &args.fanout,
        &args.photos,
        &faces_dir.to_string_lossy(),
        shape,
        args.json,
    )?;
    if !args.json && !global.quiet {
        prepare::print_report(&report);
    }

    // 2. The model, its threshold and its people.
    let models = global.model_dir()?;
    let mut load = LoadOptions::new(models);
    load.device = crate::common::parse_device(&args.device)?;
    let (recognizer, metric, anchors, deployment, model_name) = match &args.deployment {
        Some(reg) => {
            let registry = Registry::open(reg)?;
            let live = Live::load_current(&registry, &load, None)
                .with_context(|| format!("loading the current deployment of {reg}"))?;
            let anchors = anchors_of(&live);
            let name = live.info.model.describe();
            (
                live.recognizer,
                live.info.metric,
                anchors,
                Some(live.info.version),
                name,
            )
        }
        None => {
            let model = ModelRef::pretrained();
            let r =
                LoadedModel::load(&load.models, &model, None, load.engine.clone(), load.device)?;
            let metric = r.metric();
            (
                std::sync::Arc::new(r),
                metric,
                Vec::new(),
                None,
                model.describe(),
            )
        }
    };

    // 3. Embed and measure every stored face.
    let manifest = Manifest::load(&faces_dir)?;
    let embedded = embed_faces(&faces_dir, &manifest, &recognizer, global.quiet)?;
    let (mut faces, crops) = (embedded.faces, embedded.crops);
    let threshold = match args.threshold {
        Some(t) => ThresholdUsed {
            cosine_distance: t,
            source: "--threshold".into(),
        },
        None => cosine_threshold(&metric, deployment, embedded.mean_square_norm),
    };

    // 4. Group.
    let decisions_path = args
        .decisions
        .clone()
        .unwrap_or_else(|| args.out.join(DECISIONS_FILE));
    let decisions = read_decisions(&decisions_path, args.decisions.is_some())?;
    let gate = QualityGate {
        min_det_score: args.min_score,
        min_box_px: args.min_face_px,
        min_sharpness: args.min_sharpness,
    };
    let mut options = ClusterOptions::new(threshold.cosine_distance);
    options.min_group_size = args.min_group_size;
    // The ablation gives every face a photo of its own, and puts the photos back after.
    let photos: Option<Vec<String>> = args.no_photo_constraint.then(|| {
        faces
            .iter_mut()
            .map(|f| std::mem::replace(&mut f.photo, f.id.clone()))
            .collect()
    });
    let started = Instant::now();
    let grouping = group(&faces, &anchors, &decisions, &options, &gate)?;
    let grouping_s = started.elapsed().as_secs_f64();
    for (f, photo) in faces.iter_mut().zip(photos.into_iter().flatten()) {
        f.photo = photo;
    }
    let scores = match &args.truth {
        Some(path) => Some(score_against(path, &faces, &grouping)?),
        None => None,
    };

    // 5. Write clusters.json and the contact sheets.
    let mut file = clusters_file(
        &args, report, &faces, &grouping, model_name, deployment, threshold, gate, grouping_s,
    );
    file.scores = scores;
    write_sheets(&args.out, &file, &crops)?;
    let path = args.out.join(CLUSTERS_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&file)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&file)?);
    } else {
        print_summary(&file, &path);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every enrolled person of the deployment as an anchor (the grouping normalises).
fn anchors_of(live: &Live) -> Vec<Anchor> {
    let g = &live.gallery;
    let dim = g.dim();
    let mut anchors: Vec<Anchor> = g
        .people()
        .iter()
        .map(|name| Anchor {
            name: name.clone(),
            embeddings: Vec::new(),
        })
        .collect();
    for (row, &person) in g.row_person().iter().enumerate() {
        if let (Some(a), Some(e)) = (
            anchors.get_mut(person as usize),
            g.data().get(row * dim..(row + 1) * dim),
        ) {
            a.embeddings.push(e.to_vec());
        }
    }
    anchors.retain(|a| !a.embeddings.is_empty());
    anchors
}

/// The grouping works in cosine distance of normalised embeddings. For embeddings of a
/// common norm r, |a−b|² = 2r²·(1 − cos), so a Euclidean threshold `t` is `t²/(2r²)` there;
/// r² is the faces' mean squared norm (the pretrained network's are all near 1.44).
fn cosine_threshold(
    metric: &Metric,
    deployment: Option<u32>,
    mean_square_norm: f32,
) -> ThresholdUsed {
    let from = match deployment {
        Some(v) => format!("deployment v{v:04}"),
        None => "the pretrained network".into(),
    };
    match metric.distance {
        DistanceKind::Cosine => ThresholdUsed {
            cosine_distance: metric.threshold,
            source: format!("{from}, calibrated"),
        },
        DistanceKind::Euclidean => {
            let r2 = if mean_square_norm > 0.0 {
                mean_square_norm
            } else {
                1.0
            };
            ThresholdUsed {
                cosine_distance: metric.threshold * metric.threshold / (2.0 * r2),
                source: format!(
                    "{from}: Euclidean {} over embeddings of mean norm {:.3}",
                    metric.threshold,
                    r2.sqrt()
                ),
            }
        }
    }
}

/// Embedding batch: the size the gallery builder uses.
const BATCH: usize = 32;

/// The stored faces, embedded.
struct Embedded {
    faces: Vec<FaceRecord>,
    /// Aligned crops by face id, for the contact sheets.
    crops: HashMap<String, RgbImage>,
    /// Mean squared norm of the raw embeddings (to read a Euclidean threshold as cosine).
    mean_square_norm: f32,
}

/// Every face of the prepared output as a [`FaceRecord`], and its crop for the sheets.
fn embed_faces(
    dir: &Path,
    manifest: &Manifest,
    recognizer: &LoadedModel,
    quiet: bool,
) -> anyhow::Result<Embedded> {
    let total = manifest.sample_count();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("embedding [{bar:30}] {pos}/{len} faces ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut out = Embedded {
        faces: Vec::new(),
        crops: HashMap::new(),
        mean_square_norm: 0.0,
    };
    let mut square_norms = 0f64;
    let mut pending: Vec<(Sample, RgbImage)> = Vec::new();
    let mut flush = |pending: &mut Vec<(Sample, RgbImage)>, out: &mut Embedded| {
        if pending.is_empty() {
            return anyhow::Ok(());
        }
        let images: Vec<RgbImage> = pending.iter().map(|(_, c)| c.clone()).collect();
        let embeddings = recognizer.embed(&images)?;
        for ((sample, crop), e) in pending.drain(..).zip(embeddings) {
            square_norms += e.iter().map(|x| f64::from(x * x)).sum::<f64>();
            // Raw: the grouping normalises each embedding itself.
            out.faces.push(face_record(&sample, &crop, e));
            out.crops.insert(sample.meta.key.clone(), crop);
        }
        Ok(())
    };
    for sample in manifest.samples(dir) {
        let sample = sample.context("reading the aligned faces")?;
        let crop = sample
            .image()
            .with_context(|| format!("decoding the aligned face {}", sample.key))?;
        pending.push((sample, crop));
        if pending.len() >= BATCH {
            flush(&mut pending, &mut out)?;
        }
        bar.inc(1);
    }
    flush(&mut pending, &mut out)?;
    bar.finish_and_clear();
    out.mean_square_norm = (square_norms / out.faces.len().max(1) as f64) as f32;
    Ok(out)
}

fn face_record(sample: &Sample, crop: &RgbImage, embedding: Vec<f32>) -> FaceRecord {
    let m = &sample.meta;
    let b = m.bbox;
    FaceRecord {
        id: m.key.clone(),
        photo: m.source.clone(),
        bbox: [b.x, b.y, b.width, b.height],
        embedding,
        quality: Quality {
            // The whole-frame fallback is no detection at all: its score is 0, so the gate
            // keeps it out (a photo of dogs must not become a person).
            det_score: m.score,
            box_px: b.width.min(b.height),
            sharpness: sharpness(crop),
        },
    }
}

fn read_decisions(path: &Path, explicit: bool) -> anyhow::Result<Decisions> {
    anyhow::ensure!(
        !explicit || path.is_file(),
        "the decisions file {} does not exist",
        path.display()
    );
    Ok(Decisions::load(path)?)
}

#[allow(clippy::too_many_arguments)]
fn clusters_file(
    args: &ClusterArgs,
    report: facepipe_pipeline::fanout::PrepareReport,
    faces: &[FaceRecord],
    grouping: &Grouping,
    model: String,
    deployment: Option<u32>,
    threshold: ThresholdUsed,
    gate: QualityGate,
    grouping_s: f64,
) -> ClustersFile {
    let by_id: HashMap<&str, &FaceRecord> = faces.iter().map(|f| (f.id.as_str(), f)).collect();
    let face_out = |id: &str, reason| {
        by_id.get(id).map(|f| FaceOut {
            face: f.id.clone(),
            photo: f.photo.clone(),
            bbox: f.bbox,
            quality: f.quality,
            reason,
        })
    };
    let groups = grouping
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| GroupOut {
            key: g.key.clone(),
            suggested_name: g.suggested_name.clone(),
            size: g.members.len(),
            representative: g.representative.clone(),
            sheet: format!("sheets/group-{:03}.jpg", i + 1),
            members: g.members.iter().filter_map(|m| face_out(m, None)).collect(),
        })
        .collect();
    let unclustered = grouping
        .unclustered
        .iter()
        .filter_map(|u| face_out(&u.face, Some(u.reason)))
        .collect();
    ClustersFile {
        photos: args.photos.clone(),
        model,
        deployment,
        threshold,
        gate,
        photo_count: report.images as usize,
        photo_outcomes: report
            .outcomes
            .iter()
            .map(|(k, n)| (k.clone(), *n as usize))
            .collect(),
        face_count: faces.len(),
        groups,
        unclustered,
        conflicts: grouping.conflicts.clone(),
        grouping_s,
        scores: None,
    }
}

/// Score the grouping against a photo → person file.
fn score_against(
    path: &Path,
    faces: &[FaceRecord],
    grouping: &Grouping,
) -> anyhow::Result<TruthScores> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the truth file {}", path.display()))?;
    let by_photo: HashMap<String, String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} must be a JSON object from photo path to person name",
            path.display()
        )
    })?;
    let mut per_photo: HashMap<&str, usize> = HashMap::new();
    for f in faces {
        *per_photo.entry(f.photo.as_str()).or_default() += 1;
    }
    // A group photo's faces cannot be told apart by a photo-level name: not scored.
    let truth: HashMap<String, String> = faces
        .iter()
        .filter(|f| per_photo.get(f.photo.as_str()) == Some(&1))
        .filter_map(|f| by_photo.get(&f.photo).map(|p| (f.id.clone(), p.clone())))
        .collect();
    anyhow::ensure!(
        !truth.is_empty(),
        "no face of {} matches a photo of the truth file {} (keys are paths under PHOTOS)",
        faces.len(),
        path.display()
    );
    let people = truth
        .values()
        .collect::<std::collections::HashSet<_>>()
        .len();
    Ok(TruthScores {
        labelled_faces: truth.len(),
        people,
        pairwise: facepipe_cluster::pairwise_precision_recall(&truth, grouping),
        bcubed: facepipe_cluster::bcubed(&truth, grouping),
    })
}

/// Thumbnail side and columns of a contact sheet.
const THUMB: u32 = 75;
const COLUMNS: u32 = 8;

/// One JPEG grid of member thumbnails per group, representative first.
fn write_sheets(
    out: &Path,
    file: &ClustersFile,
    crops: &HashMap<String, RgbImage>,
) -> anyhow::Result<()> {
    let dir = out.join("sheets");
    if dir.exists() {
        // A re-run regroups: sheets of groups that no longer exist must not linger.
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for g in &file.groups {
        let mut order: Vec<&str> = vec![g.representative.as_str()];
        order.extend(
            g.members
                .iter()
                .map(|m| m.face.as_str())
                .filter(|f| *f != g.representative),
        );
        let n = order.len() as u32;
        let cols = n.clamp(1, COLUMNS);
        let rows = n.div_ceil(COLUMNS).max(1);
        let mut sheet = RgbImage::from_pixel(cols * THUMB, rows * THUMB, image::Rgb([32, 32, 32]));
        for (i, face) in order.iter().enumerate() {
            let Some(crop) = crops.get(*face) else {
                continue;
            };
            let thumb =
                image::imageops::resize(crop, THUMB, THUMB, image::imageops::FilterType::Triangle);
            let (x, y) = ((i as u32 % COLUMNS) * THUMB, (i as u32 / COLUMNS) * THUMB);
            image::imageops::replace(&mut sheet, &thumb, i64::from(x), i64::from(y));
        }
        let path = out.join(&g.sheet);
        sheet
            .save(&path)
            .with_context(|| format!("writing the contact sheet {}", path.display()))?;
    }
    Ok(())
}

fn print_summary(f: &ClustersFile, path: &Path) {
    let grouped: usize = f.groups.iter().map(|g| g.size).sum();
    println!(
        "{} photos, {} faces → {} groups ({} faces), {} unclustered",
        f.photo_count,
        f.face_count,
        f.groups.len(),
        grouped,
        f.unclustered.len()
    );
    println!(
        "threshold {:.4} (cosine distance; {})",
        f.threshold.cosine_distance, f.threshold.source
    );
    // The 20 largest, and every named group wherever it ranks.
    let shown = |i: usize, g: &GroupOut| i < 20 || g.suggested_name.is_some();
    for (i, g) in f.groups.iter().enumerate().filter(|(i, g)| shown(*i, g)) {
        println!(
            "  group {:>3}: {:>4} faces  {}  {}",
            i + 1,
            g.size,
            g.suggested_name
                .as_deref()
                .map_or("(unnamed)".to_string(), |n| format!("≈ {n}")),
            g.sheet
        );
    }
    let hidden = f
        .groups
        .iter()
        .enumerate()
        .filter(|(i, g)| !shown(*i, g))
        .count();
    if hidden > 0 {
        println!("  … {hidden} more in clusters.json");
    }
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for u in &f.unclustered {
        if let Some(r) = u.reason {
            let key = serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *reasons.entry(key).or_default() += 1;
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort();
    if !reasons.is_empty() {
        let text: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("  unclustered: {}", text.join(", "));
    }
    if !f.conflicts.is_empty() {
        println!(
            "  {} review decision(s) conflict with the photos (see clusters.json)",
            f.conflicts.len()
        );
    }
    if let Some(s) = &f.scores {
        println!(
            "  against the truth ({} faces of {} people): pairwise P {:.3} R {:.3} F {:.3}; \
             BCubed P {:.3} R {:.3} F {:.3}",
            s.labelled_faces,
            s.people,
            s.pairwise.precision,
            s.pairwise.recall,
            s.pairwise.f1,
            s.bcubed.precision,
            s.bcubed.recall,
            s.bcubed.f1
        );
    }
    println!("wrote {}", path.display());
}
