//! The ORL fine-tuning experiment: does fine-tuning the pretrained 128-d ResNet on ORL
//! people s1–s30 improve verification on the held-out people s31–s40?
//!
//! Builds two prepared datasets from assets/sample/orl (crops resized to 150×150),
//! fine-tunes on s1–s30 (5 of them held out for validation / threshold calibration), then
//! scores the *same* pairs of s31–s40 with the pretrained and the fine-tuned model through
//! the same `Embedder` path the service uses, and writes the comparison as JSON.
//!
//! ```text
//! cargo run --release -p facepipe-training --example orl_experiment -- OUT [EPOCHS] [LR]
//! cargo run --release -p facepipe-training --example orl_experiment -- OUT EPOCHS LR augment SEEDS [JSON]
//! ```
//!
//! The `augment` form answers whether augmenting on the training device (the batched tensor
//! ops of `--augment-on device`) trains as well as augmenting on the host: it fine-tunes
//! SEEDS times with each (seeds 0..SEEDS, the same held-out pairs), interleaved, and reports
//! each run's verification figures, each mode's mean and spread, and the difference of the
//! means beside the seed-to-seed noise.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use facepipe_model::{Embedder, Metric};
use facepipe_training::data::{AugmentOn, FaceSet, SplitConfig};
use facepipe_training::eval::{metrics::tar_at_far, Scored};
use facepipe_training::trainer::validate::{summarise, PairSummary};
use facepipe_training::trainer::{self, Phase, RunOptions, TrainConfig, TrainProgress};

/// Verification on every pair of `emb` (score: minus the model's distance).
fn verify(emb: &[Vec<f32>], labels: &[usize], metric: &Metric) -> serde_json::Value {
    let (mut g, mut i) = (Vec::new(), Vec::new());
    let mut pairs = Vec::new();
    for a in 0..emb.len() {
        for b in a + 1..emb.len() {
            let s = -metric.distance(&emb[a], &emb[b]);
            let same = labels[a] == labels[b];
            if same {
                g.push(s);
            } else {
                i.push(s);
            }
            pairs.push((s, same));
        }
    }
    let summary: PairSummary = summarise(&g, &i);
    let scored: Vec<Scored> = pairs
        .iter()
        .map(|&(s, same)| Scored {
            distance: -s,
            same,
            fold: 0,
        })
        .collect();
    let tar3 = tar_at_far(&scored, 1e-3).tar;
    let tar2 = tar_at_far(&scored, 1e-2).tar;
    // 10-fold accuracy (LFW protocol): threshold chosen on 9 folds, accuracy on the 10th.
    let mut accs = Vec::new();
    for k in 0..10 {
        let (mut tg, mut ti) = (Vec::new(), Vec::new());
        for (n, &(s, same)) in pairs.iter().enumerate() {
            if n % 10 != k {
                if same {
                    tg.push(s)
                } else {
                    ti.push(s)
                }
            }
        }
        // No threshold beating chance: reject every pair.
        let thr = summarise(&tg, &ti).best_threshold.unwrap_or(f32::INFINITY);
        let test: Vec<&(f32, bool)> = pairs
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 10 == k)
            .map(|(_, p)| p)
            .collect();
        let (mut tp, mut tn, mut ng, mut ni) = (0, 0, 0, 0);
        for &&(s, same) in &test {
            if same {
                ng += 1;
                if s >= thr {
                    tp += 1;
                }
            } else {
                ni += 1;
                if s < thr {
                    tn += 1;
                }
            }
        }
        accs.push(0.5 * (tp as f64 / ng.max(1) as f64 + tn as f64 / ni.max(1) as f64));
    }
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
    // Rank-1 identification: photo 1 of each person is the gallery, the others are probes.
    let mut gallery: Vec<(usize, &Vec<f32>)> = Vec::new();
    for (n, e) in emb.iter().enumerate() {
        if !gallery.iter().any(|(l, _)| *l == labels[n]) {
            gallery.push((labels[n], e));
        }
    }
    let (mut hits, mut probes) = (0, 0);
    for (n, e) in emb.iter().enumerate() {
        if gallery.iter().any(|(_, g)| std::ptr::eq(*g, e)) {
            continue;
        }
        probes += 1;
        let best = gallery
            .iter()
            .min_by(|a, b| metric.distance(e, a.1).total_cmp(&metric.distance(e, b.1)))
            .map(|(l, _)| *l);
        if best == Some(labels[n]) {
            hits += 1;
        }
    }
    serde_json::json!({
        "pairs": summary,
        "ten_fold_balanced_accuracy": { "mean": mean, "std": sd },
        "tar_at_far_1e-3": tar3,
        "tar_at_far_1e-2": tar2,
        "rank1": hits as f64 / probes.max(1) as f64,
        "probes": probes,
    })
}

/// One line per finished epoch on stderr (the library itself prints nothing).
fn print_epoch(p: &TrainProgress) {
    if let (Phase::EpochEnd, Some(log)) = (p.phase, &p.log) {
        eprintln!("{}", log.summary(p.epochs));
    }
}

/// The ORL datasets (written once into OUT) and the held-out crops with their labels.
struct Orl {
    train: PathBuf,
    crops: Vec<image::RgbImage>,
    labels: Vec<usize>,
}

impl Orl {
    fn load(out: &std::path::Path) -> anyhow::Result<Self> {
        let train = out.join("orl_s1-s30");
        let eval = out.join("orl_s31-s40");
        if !train.join("manifest.json").is_file() {
            common::write_orl_dataset(&train, 1..=30, 10)?;
        }
        if !eval.join("manifest.json").is_file() {
            common::write_orl_dataset(&eval, 31..=40, 10)?;
        }
        let faces = FaceSet::load(&eval)?;
        let crops = faces
            .items
            .iter()
            .map(|it| image::load_from_memory(&it.jpeg).map(|i| i.to_rgb8()))
            .collect::<Result<_, _>>()?;
        let names: Vec<&str> = faces.items.iter().map(|it| it.identity.as_str()).collect();
        let labels = names
            .iter()
            .map(|n| names.iter().position(|m| m == n).unwrap_or(0))
            .collect();
        Ok(Self {
            train,
            crops,
            labels,
        })
    }
}

/// The fine-tuning configuration of the experiment.
fn config(epochs: usize, lr: f64, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 32,
        lr,
        seed,
        warmup_epochs: 1.0,
        split: SplitConfig {
            val: 5.0,
            test: 0.0,
            seed: 0,
        },
        patience: 0,
        ..TrainConfig::default()
    }
}

/// Fine-tune into `model_dir` (emptied first); the run's summary and its seconds.
fn finetune(
    orl: &Orl,
    model_dir: &std::path::Path,
    cfg: &TrainConfig,
    device: tch::Device,
    augment_on: Option<AugmentOn>,
) -> anyhow::Result<(trainer::TrainSummary, f64)> {
    let _ = std::fs::remove_dir_all(model_dir);
    let started = std::time::Instant::now();
    let summary = trainer::train(
        &orl.train,
        model_dir,
        cfg,
        &RunOptions {
            progress: Some(std::sync::Arc::new(print_epoch)),
            augment_on,
            ..RunOptions::on(device)
        },
    )?;
    Ok((summary, started.elapsed().as_secs_f64()))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map_or("orl_experiment", String::as_str));
    let epochs: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let lr: f64 = args.get(3).map_or(Ok(0.01), |s| s.parse())?;
    let orl = Orl::load(&out)?;
    let device = tch::Device::cuda_if_available();
    if args.get(4).map(String::as_str) == Some("augment") {
        let seeds: u64 = args.get(5).map_or(Ok(3), |s| s.parse())?;
        let json = args
            .get(6)
            .map_or_else(|| out.join("augment_effect.json"), PathBuf::from);
        return compare_augmentation(&orl, &out, epochs, lr, seeds, device, &json);
    }
    let model_dir = out.join("finetuned");
    let cfg = config(epochs, lr, 0);
    let (summary, train_s) = finetune(&orl, &model_dir, &cfg, device, None)?;
    let models = facepipe_pipeline::ModelDir::locate(None)?;
    let pretrained = Embedder::pretrained(&models, device)?;
    let finetuned = Embedder::from_artifact(&model_dir, device)?;
    let e_pre = pretrained.embed(&orl.crops)?;
    let e_ft = finetuned.embed(&orl.crops)?;
    let cosine = Metric {
        distance: facepipe_model::DistanceKind::Cosine,
        threshold: 0.0,
    };
    let labels = &orl.labels;
    let report = serde_json::json!({
        "experiment": "fine-tune the pretrained 128-d ResNet on ORL s1-s30 (s26-s30 style: 5 people held out for validation), verify on ORL s31-s40",
        "command": format!("cargo run --release -p facepipe-training --example orl_experiment -- {} {epochs} {lr}", out.display()),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "eval_images": orl.crops.len(),
        "training": {
            "config": cfg,
            "seconds": train_s,
            "history": summary.state.history,
            "split": summary.state.split,
            "threshold_cosine_distance": summary.threshold,
        },
        "pretrained_euclidean": verify(&e_pre, labels, &pretrained.metric()),
        "pretrained_cosine": verify(&e_pre, labels, &cosine),
        "finetuned_cosine": verify(&e_ft, labels, &finetuned.metric()),
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("orl_experiment.json"), &text)?;
    for k in [
        "pretrained_euclidean",
        "pretrained_cosine",
        "finetuned_cosine",
    ] {
        print_figures(k, &report[k]);
    }
    println!("wrote {}", out.join("orl_experiment.json").display());
    Ok(())
}

fn print_figures(what: &str, r: &serde_json::Value) {
    println!(
        "{what:22} AUC {:.4}  10-fold acc {:.4} ± {:.4}  TAR@1e-3 {:.4}  TAR@1e-2 {:.4}  rank-1 {:.4}",
        r["pairs"]["auc"].as_f64().unwrap_or(f64::NAN),
        r["ten_fold_balanced_accuracy"]["mean"].as_f64().unwrap_or(f64::NAN),
        r["ten_fold_balanced_accuracy"]["std"].as_f64().unwrap_or(f64::NAN),
        r["tar_at_far_1e-3"].as_f64().unwrap_or(f64::NAN),
        r["tar_at_far_1e-2"].as_f64().unwrap_or(f64::NAN),
        r["rank1"].as_f64().unwrap_or(f64::NAN),
    );
}

/// The figures compared between the two augmentation paths, as JSON pointers into `verify`.
const COMPARED: [(&str, &str); 4] = [
    ("auc", "/pairs/auc"),
    ("ten_fold_accuracy", "/ten_fold_balanced_accuracy/mean"),
    ("tar_at_far_1e-2", "/tar_at_far_1e-2"),
    ("rank1", "/rank1"),
];

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    // Sample standard deviation (n − 1): the seed-to-seed spread of one mode.
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Fine-tune with host and device augmentation for each seed, interleaved, and compare.
fn compare_augmentation(
    orl: &Orl,
    out: &std::path::Path,
    epochs: usize,
    lr: f64,
    seeds: u64,
    device: tch::Device,
    json: &std::path::Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        seeds >= 2,
        "the spread between seeds needs at least 2 seeds"
    );
    let modes = [AugmentOn::Host, AugmentOn::Device];
    let mut runs = Vec::new();
    let mut figures: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); COMPARED.len()]; modes.len()];
    for seed in 0..seeds {
        for (m, &mode) in modes.iter().enumerate() {
            let cfg = config(epochs, lr, seed);
            eprintln!("seed {seed}, augmentation on the {mode:?}");
            let model_dir = out.join(format!("augment-{mode:?}-seed{seed}").to_lowercase());
            let (summary, seconds) = finetune(orl, &model_dir, &cfg, device, Some(mode))?;
            let embedder = Embedder::from_artifact(&model_dir, device)?;
            let r = verify(
                &embedder.embed(&orl.crops)?,
                &orl.labels,
                &embedder.metric(),
            );
            print_figures(&format!("{mode:?} seed {seed}"), &r);
            for (k, (_, pointer)) in COMPARED.iter().enumerate() {
                figures[m][k].push(
                    r.pointer(pointer)
                        .and_then(|v| v.as_f64())
                        .unwrap_or(f64::NAN),
                );
            }
            runs.push(serde_json::json!({
                "augment_on": mode,
                "seed": seed,
                "seconds": seconds,
                "final_train_loss": summary.state.history.last().map(|h| h.train_loss),
                "held_out": r,
            }));
        }
    }
    let mut compared = serde_json::Map::new();
    println!(
        "{:18} {:>16} {:>16} {:>10} {:>10}",
        "figure", "host mean ± sd", "device mean ± sd", "Δ", "noise"
    );
    for (k, (name, _)) in COMPARED.iter().enumerate() {
        let (hm, hs) = mean_sd(&figures[0][k]);
        let (dm, ds) = mean_sd(&figures[1][k]);
        // The standard error of a difference of two means of `seeds` runs each.
        let noise = ((hs * hs + ds * ds) / seeds as f64).sqrt();
        let delta = dm - hm;
        let within = delta.abs() <= 2.0 * noise;
        println!(
            "{name:18} {hm:>8.4} ± {hs:.4} {dm:>8.4} ± {ds:.4} {delta:>+10.4} {noise:>10.4}{}",
            if within { "" } else { "  (outside 2 × noise)" }
        );
        compared.insert(
            (*name).to_string(),
            serde_json::json!({
                "host": { "mean": hm, "sd": hs, "runs": figures[0][k] },
                "device": { "mean": dm, "sd": ds, "runs": figures[1][k] },
                "device_minus_host": delta,
                "standard_error_of_the_difference": noise,
                "within_two_standard_errors": within,
            }),
        );
    }
    let report = serde_json::json!({
        "bench": "ORL fine-tune (pretrained 128-d ResNet on s1-s30, verified on s31-s40) with augmentation on the host vs on the training device, same seeds, interleaved",
        "command": format!("cargo run --release -p facepipe-training --example orl_experiment -- {} {epochs} {lr} augment {seeds}", out.display()),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "epochs": epochs,
        "lr": lr,
        "seeds": seeds,
        "eval_images": orl.crops.len(),
        "compared": compared,
        "runs": runs,
    });
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", json.display());
    Ok(())
}
