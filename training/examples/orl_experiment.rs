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
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use facepipe_model::{Embedder, Metric};
use facepipe_training::data::{FaceSet, SplitConfig};
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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map_or("orl_experiment", String::as_str));
    let epochs: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let lr: f64 = args.get(3).map_or(Ok(0.01), |s| s.parse())?;
    let train_ds = out.join("orl_s1-s30");
    let eval_ds = out.join("orl_s31-s40");
    if !train_ds.join("manifest.json").is_file() {
        common::write_orl_dataset(&train_ds, 1..=30, 10)?;
    }
    if !eval_ds.join("manifest.json").is_file() {
        common::write_orl_dataset(&eval_ds, 31..=40, 10)?;
    }
    let model_dir = out.join("finetuned");
    let _ = std::fs::remove_dir_all(&model_dir);
    let cfg = TrainConfig {
        epochs,
        batch: 32,
        lr,
        warmup_epochs: 1.0,
        split: SplitConfig {
            val: 5.0,
            test: 0.0,
            seed: 0,
        },
        patience: 0,
        ..TrainConfig::default()
    };
    let device = tch::Device::cuda_if_available();
    let started = std::time::Instant::now();
    let summary = trainer::train(
        &train_ds,
        &model_dir,
        &cfg,
        &RunOptions {
            progress: Some(std::sync::Arc::new(print_epoch)),
            ..RunOptions::on(device)
        },
    )?;
    let train_s = started.elapsed().as_secs_f64();

    let faces = FaceSet::load(&eval_ds)?;
    let crops: Vec<image::RgbImage> = faces
        .items
        .iter()
        .map(|it| image::load_from_memory(&it.jpeg).map(|i| i.to_rgb8()))
        .collect::<Result<_, _>>()?;
    let names: Vec<&str> = faces.items.iter().map(|it| it.identity.as_str()).collect();
    let labels: Vec<usize> = names
        .iter()
        .map(|n| names.iter().position(|m| m == n).unwrap_or(0))
        .collect();
    let models = facepipe_pipeline::ModelDir::locate(None)?;
    let pretrained = Embedder::pretrained(&models, device)?;
    let finetuned = Embedder::from_artifact(&model_dir, device)?;
    let e_pre = pretrained.embed(&crops)?;
    let e_ft = finetuned.embed(&crops)?;
    let cosine = Metric {
        distance: facepipe_model::DistanceKind::Cosine,
        threshold: 0.0,
    };
    let report = serde_json::json!({
        "experiment": "fine-tune the pretrained 128-d ResNet on ORL s1-s30 (s26-s30 style: 5 people held out for validation), verify on ORL s31-s40",
        "command": format!("cargo run --release -p facepipe-training --example orl_experiment -- {} {epochs} {lr}", out.display()),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "eval_images": crops.len(),
        "training": {
            "config": cfg,
            "seconds": train_s,
            "history": summary.state.history,
            "split": summary.state.split,
            "threshold_cosine_distance": summary.threshold,
        },
        "pretrained_euclidean": verify(&e_pre, &labels, &pretrained.metric()),
        "pretrained_cosine": verify(&e_pre, &labels, &cosine),
        "finetuned_cosine": verify(&e_ft, &labels, &finetuned.metric()),
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("orl_experiment.json"), &text)?;
    for k in [
        "pretrained_euclidean",
        "pretrained_cosine",
        "finetuned_cosine",
    ] {
        let r = &report[k];
        println!(
            "{k:22} AUC {:.4}  10-fold acc {:.4} ± {:.4}  TAR@1e-3 {:.4}  TAR@1e-2 {:.4}  rank-1 {:.4}",
            r["pairs"]["auc"].as_f64().unwrap_or(f64::NAN),
            r["ten_fold_balanced_accuracy"]["mean"].as_f64().unwrap_or(f64::NAN),
            r["ten_fold_balanced_accuracy"]["std"].as_f64().unwrap_or(f64::NAN),
            r["tar_at_far_1e-3"].as_f64().unwrap_or(f64::NAN),
            r["tar_at_far_1e-2"].as_f64().unwrap_or(f64::NAN),
            r["rank1"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("wrote {}", out.join("orl_experiment.json").display());
    Ok(())
}
