//! `--sweep`: a small grid of learning rate × margin, each point a full training run in its
//! own folder, run two at a time when the machine has the cores (or a GPU) for it and one
//! after the other otherwise; the best point by validation score is reported and copied to OUT.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{train_on, RunOptions, TrainConfig};
use crate::data::FaceSet;
use crate::error::{Error, Result};

/// One grid point's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub lr: f64,
    pub margin: f64,
    pub dir: PathBuf,
    pub score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub error: Option<String>,
}

/// The grid around `base`: lr × {⅓, 1, 3}, margin ∈ {0.2, 0.35, 0.5}.
pub fn grid(base: &TrainConfig) -> Vec<TrainConfig> {
    let mut out = Vec::new();
    for lr_mult in [1.0 / 3.0, 1.0, 3.0] {
        for margin in [0.2, 0.35, 0.5] {
            out.push(TrainConfig {
                lr: base.lr * lr_mult,
                margin,
                ..base.clone()
            });
        }
    }
    out
}

/// Run every configuration of `configs` into `out/sweep/…`, `parallel` at a time; returns the
/// points sorted best first and copies the best artifact files into `out`.
pub fn run(
    faces: &FaceSet,
    out: &Path,
    configs: &[TrainConfig],
    opts: &RunOptions,
    parallel: usize,
) -> Result<Vec<SweepPoint>> {
    let dirs: Vec<PathBuf> = configs
        .iter()
        .map(|c| {
            out.join("sweep")
                .join(format!("lr{:.0e}_m{:.2}", c.lr, c.margin))
        })
        .collect();
    let mut points: Vec<SweepPoint> = Vec::new();
    let jobs: Vec<(TrainConfig, PathBuf)> = configs.iter().cloned().zip(dirs).collect();
    for chunk in jobs.chunks(parallel.max(1)) {
        let results: Vec<SweepPoint> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(cfg, dir)| {
                    let run_opts = RunOptions {
                        progress: opts.progress && parallel <= 1,
                        ..opts.clone()
                    };
                    s.spawn(move || {
                        let r = train_on(faces, dir, cfg, &run_opts);
                        SweepPoint {
                            lr: cfg.lr,
                            margin: cfg.margin,
                            dir: dir.clone(),
                            score: r.as_ref().ok().map(|r| r.best_score),
                            best_epoch: r.as_ref().ok().and_then(|r| r.state.best_epoch),
                            error: r.err().map(|e| e.to_string()),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| SweepPoint {
                        lr: f64::NAN,
                        margin: f64::NAN,
                        dir: PathBuf::new(),
                        score: None,
                        best_epoch: None,
                        error: Some("the run panicked".into()),
                    })
                })
                .collect()
        });
        for p in &results {
            if opts.progress {
                match (&p.score, &p.error) {
                    (Some(s), _) => {
                        eprintln!("sweep lr {:.2e} margin {:.2}: score {s:.4}", p.lr, p.margin)
                    }
                    (_, Some(e)) => {
                        eprintln!("sweep lr {:.2e} margin {:.2}: failed: {e}", p.lr, p.margin)
                    }
                    _ => {}
                }
            }
        }
        points.extend(results);
    }
    points.sort_by(|a, b| {
        b.score
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.score.unwrap_or(f64::NEG_INFINITY))
    });
    let best = points
        .first()
        .filter(|p| p.score.is_some())
        .ok_or_else(|| Error::Invalid("every sweep run failed (see sweep.json)".into()))?;
    for name in [
        "model.safetensors",
        "model.json",
        "metrics.json",
        "loss.png",
    ] {
        let from = best.dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name)).map_err(|e| Error::io(&from, e))?;
        }
    }
    let text = serde_json::to_string_pretty(&points).map_err(|e| Error::json("sweep", e))?;
    let path = out.join("sweep.json");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    Ok(points)
}
