//! `--sweep`: a small grid of learning rate × margin, each point a full training run in its
//! own folder, run two at a time when the machine has the cores (or a GPU) for it and one
//! after the other otherwise; the best point by validation score is reported and copied to OUT.
//!
//! The score of a run is that of its kept epoch: balanced verification accuracy on the
//! validation people plus 0.001 × their ROC AUC (a tie-breaker), or −training loss when
//! there are no validation people.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{train_on, PairSummary, RunOptions, TrainConfig};
use crate::data::FaceSet;
use crate::error::{Error, Result};

/// One grid point's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub lr: f64,
    pub margin: f64,
    pub dir: PathBuf,
    /// The run's score (see the module docs); `None` when it failed or no epoch scored a
    /// finite value.
    pub score: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Validation verification at the kept epoch.
    pub validation: Option<PairSummary>,
    pub error: Option<String>,
}

/// The default grid around `base`: lr × {⅓, 1, 3}, margin ∈ {0.2, 0.35, 0.5}.
pub fn grid(base: &TrainConfig) -> Vec<TrainConfig> {
    grid_of(base, &[1.0 / 3.0, 1.0, 3.0], &[0.2, 0.35, 0.5])
}

/// `base` at every learning rate `base.lr × m` for `m` in `lr_mults`, crossed with `margins`.
pub fn grid_of(base: &TrainConfig, lr_mults: &[f64], margins: &[f64]) -> Vec<TrainConfig> {
    let mut out = Vec::new();
    for lr_mult in lr_mults {
        for &margin in margins {
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
/// points sorted best first and copies the best artifact files into `out`. `on_point` sees
/// each point as its run ends (in grid order); the runs report progress through `opts` only
/// when they run one at a time.
pub fn run(
    faces: &FaceSet,
    out: &Path,
    configs: &[TrainConfig],
    opts: &RunOptions,
    parallel: usize,
    mut on_point: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>> {
    // The index keeps folder names unique when two rates round to the same text.
    let dirs: Vec<PathBuf> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            out.join("sweep")
                .join(format!("{i:02}_lr{:.2e}_m{:.2}", c.lr, c.margin))
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
                        // Interleaved reports of parallel runs would mean nothing.
                        progress: opts.progress.clone().filter(|_| parallel <= 1),
                        ..opts.clone()
                    };
                    s.spawn(move || {
                        let r = train_on(faces, dir, cfg, &run_opts);
                        let kept = r.as_ref().ok().and_then(|r| {
                            let e = r.state.early_stop.best_epoch?;
                            r.state.history.iter().find(|h| h.epoch == e)
                        });
                        SweepPoint {
                            lr: cfg.lr,
                            margin: cfg.margin,
                            dir: dir.clone(),
                            score: r.as_ref().ok().and_then(|r| r.best_score),
                            best_epoch: r.as_ref().ok().and_then(|r| r.state.early_stop.best_epoch),
                            validation: kept.and_then(|h| h.val),
                            error: r.as_ref().err().map(|e| e.to_string()),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(chunk)
                .map(|(h, (cfg, dir))| {
                    h.join().unwrap_or_else(|_| SweepPoint {
                        lr: cfg.lr,
                        margin: cfg.margin,
                        dir: dir.clone(),
                        score: None,
                        best_epoch: None,
                        validation: None,
                        error: Some("the run panicked".into()),
                    })
                })
                .collect()
        });
        results.iter().for_each(&mut on_point);
        points.extend(results);
    }
    // Best first; a failed run or a non-finite score ranks last.
    let rank = |p: &SweepPoint| {
        p.score
            .filter(|s| s.is_finite())
            .unwrap_or(f64::NEG_INFINITY)
    };
    points.sort_by(|a, b| rank(b).total_cmp(&rank(a)));
    // The report first, so it exists even when every run failed.
    let text = facepipe_model::json::to_string_pretty(&points)
        .map_err(|e| Error::json("sweep.json", e))?;
    let path = out.join("sweep.json");
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    let best = points
        .first()
        .filter(|p| p.score.is_some())
        .ok_or_else(|| Error::SweepFailed {
            report: path.clone(),
        })?;
    for name in [
        "model.safetensors",
        "model.json",
        "metrics.json",
        "loss.png",
        "roc.png",
    ] {
        let from = best.dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name)).map_err(|e| Error::io(&from, e))?;
        }
    }
    Ok(points)
}
