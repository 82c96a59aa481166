//! The training loop behind `facepipe train`: split by identity, build the backbone
//! (pretrained ResNet or a from-scratch MobileFaceNet) and a margin head, optimise with SGD or
//! AdamW under a warm-up + cosine schedule (bf16 autocast on CUDA by default), validate on
//! held-out people each epoch (early stopping), checkpoint every epoch (resumable), and
//! finish with a calibrated threshold, held-out test metrics and a model artifact.
//!
//! Map of the module ([`train_on`] reads as the recipe and calls them in this order):
//! - [`config`]: [`TrainConfig`], every setting of a run, and its [`TrainConfig::check`].
//! - [`checkpoint`]: the resumable state in `OUT/checkpoint` ([`Checkpoint`], [`TrainState`])
//!   and the rules for resuming it.
//! - [`model`]: backbone + head in one var store, the optimiser, per-group learning rates.
//! - [`epoch`]: the schedule, the (loss-scaled) optimiser step and one epoch's steps
//!   ([`EpochLog`]).
//! - [`validate`]: verification scores of held-out people; [`early_stop`]: the best epoch
//!   and patience.
//! - [`finish`]: threshold calibration, test metrics, artifact and plots.
//! - [`progress`]: the callback through which a run reports ([`TrainProgress`]); the library
//!   itself draws and prints nothing.
//! - [`optim`]: SGD and AdamW with checkpointable state; [`sweep`]: a grid of runs.

pub mod checkpoint;
pub mod config;
pub mod early_stop;
pub mod epoch;
mod finish;
pub mod model;
pub mod optim;
pub mod progress;
pub mod sweep;
pub mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::{default_workers, AugmentOn, FaceSet, IdentitySplit, Loader, LoaderConfig};
use crate::error::{Error, Result};

pub use checkpoint::{Checkpoint, TrainState, CHECKPOINT_DIR};
pub use config::{Arch, Init, OptimizerKind, Precision, TrainConfig};
pub use early_stop::{EarlyStop, Verdict};
pub use epoch::{schedule, train_step, EpochLog, LossScale, StepOutput, Stepper};
pub use model::{build_model, build_optimizer, set_lrs, Model};
pub use optim::{Algorithm, Optimizer};
pub use progress::{Phase, ProgressFn, TrainProgress};
pub use validate::PairSummary;

use epoch::{run_epoch, EpochRun, StepPlan};
use progress::Reporter;

/// How a run is driven (not part of the run's identity).
#[derive(Clone)]
pub struct RunOptions {
    pub device: Device,
    /// Pretrained weights folder (`None`: the default model cache).
    pub models: Option<PathBuf>,
    /// Continue from OUT/checkpoint.
    pub resume: bool,
    /// Called with every progress report (`None`: silent, as in tests and parallel sweeps).
    pub progress: Option<ProgressFn>,
    /// Stop once this many epochs are complete, leaving a checkpoint that resuming
    /// continues exactly (a run split over several sessions; `None`: run to the end).
    pub stop_after: Option<usize>,
    /// Loader worker threads (`None`: every core this process may use).
    pub loader_workers: Option<usize>,
    /// Where augmentation runs (`None`: on the device for CUDA runs, on the host for CPU).
    pub augment_on: Option<AugmentOn>,
}

impl RunOptions {
    /// Options for a fresh, silent run on `device` with the default model cache.
    pub fn on(device: Device) -> Self {
        Self {
            device,
            models: None,
            resume: false,
            progress: None,
            stop_after: None,
            loader_workers: None,
            augment_on: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("device", &self.device)
            .field("models", &self.models)
            .field("resume", &self.resume)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .field("stop_after", &self.stop_after)
            .field("loader_workers", &self.loader_workers)
            .field("augment_on", &self.augment_on)
            .finish()
    }
}

/// The result of a finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub state: TrainState,
    pub metrics: serde_json::Value,
    pub threshold: f32,
    /// Validation score of the kept epoch (balanced verification accuracy, or −train loss);
    /// `None` when no epoch scored a finite value.
    pub best_score: Option<f64>,
}

/// Train on the prepared dataset at `dataset`, writing checkpoints and the artifact into `out`.
pub fn train(
    dataset: &Path,
    out: &Path,
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> Result<TrainSummary> {
    cfg.check()?;
    let faces = FaceSet::load(dataset)?;
    train_on(&faces, out, cfg, opts)
}

/// [`train`] on an already loaded [`FaceSet`] (sweeps share one).
pub fn train_on(
    faces: &FaceSet,
    out: &Path,
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> Result<TrainSummary> {
    cfg.check()?;
    if opts.stop_after == Some(0) {
        return Err(Error::bad_setting(
            "stop_after",
            "must be at least 1 (it counts completed epochs)",
        ));
    }
    // The split is checked before anything is written: a held-out set too small to
    // evaluate must fail now, not after every epoch has run.
    let split = IdentitySplit::new(&faces.counts(), &cfg.split, 2)?;
    let train_set = faces.subset(&split.train);
    let val_set = faces.subset(&split.val);
    let test_set = faces.subset(&split.test);
    if train_set.classes < 2 {
        return Err(Error::bad_setting(
            "split",
            format!(
                "holds out too many people: {} left to train on, and a classifier needs at \
                 least 2",
                train_set.classes
            ),
        ));
    }
    let (ckpt, mut state) = Checkpoint::open(out, cfg, &split, train_set.classes, opts.resume)?;
    checkpoint::write_json(&out.join("split.json"), &split)?;

    tch::manual_seed(cfg.seed as i64);
    let mut model = build_model(cfg, train_set.classes, opts)?;
    if opts.resume {
        ckpt.restore_weights(&mut model.vs)?;
    }
    let input = cfg.arch.input();
    let eval_batch = cfg.batch.clamp(8, 256);
    if !opts.resume && cfg.imprint {
        model::imprint(&model, &train_set, &input, eval_batch, opts.device)?;
    }
    let mut opt = build_optimizer(cfg, &model.vs)?;
    if opts.resume && state.completed_epochs > 0 {
        ckpt.restore_optimizer(&mut opt)?;
    }
    let loader = Loader::new(
        train_set.clone(),
        LoaderConfig {
            batch: cfg.batch,
            input: input.clone(),
            augment: Some(cfg.augment),
            balanced: cfg.balanced,
            shuffle: true,
            drop_last: train_set.len() >= cfg.batch,
            seed: cfg.seed,
            prefetch: 4,
            device: opts.device,
            workers: opts.loader_workers.unwrap_or_else(default_workers),
            augment_on: opts
                .augment_on
                .unwrap_or_else(|| AugmentOn::for_device(opts.device)),
        },
    )?;
    let plan = StepPlan::new(cfg, loader.batches_per_epoch());
    let reporter = Reporter::new(opts.progress.clone(), cfg.epochs, plan.steps_per_epoch);
    let mut stepper = Stepper::new(cfg.precision, opts.device);
    stepper.resume(state.loss_scale);
    let stop_at = opts.stop_after.map_or(cfg.epochs, |n| n.min(cfg.epochs));

    while state.completed_epochs < stop_at && !state.early_stop.stopped_early {
        let epoch = state.completed_epochs;
        let mut log = run_epoch(
            &mut EpochRun {
                cfg,
                model: &model,
                opt: &mut opt,
                stepper: &mut stepper,
                loader: &loader,
                plan,
                device: opts.device,
                reporter: &reporter,
            },
            epoch,
            &mut state.global_step,
        )?;
        if !val_set.is_empty() {
            reporter.send(reporter.at(Phase::Validating, epoch + 1));
            let net = model.net.as_ref();
            log.val =
                Some(finish::validate_people(net, &val_set, &input, eval_batch, opts.device)?.0);
        }
        log_epoch(&log, cfg.epochs);
        let verdict = state
            .early_stop
            .record(log.epoch, log.score(), cfg.patience);
        state.history.push(log.clone());
        state.completed_epochs += 1;
        state.loss_scale = stepper.loss_scale();
        ckpt.save_epoch(&model.vs, &opt, &state, verdict == Verdict::Improved)?;
        reporter.send(TrainProgress {
            log: Some(log),
            ..reporter.at(Phase::EpochEnd, epoch + 1)
        });
        if verdict == Verdict::Stop {
            let phase = Phase::EarlyStop {
                patience: cfg.patience,
                best_epoch: state.early_stop.best_epoch,
            };
            reporter.send(reporter.at(phase, epoch + 1));
        }
    }
    if state.completed_epochs < cfg.epochs && !state.early_stop.stopped_early {
        tracing::info!(
            "stopped after epoch {} of {} as asked; resuming continues the run",
            state.completed_epochs,
            cfg.epochs
        );
    }

    // Ship the best epoch, not the last.
    ckpt.restore_best(&mut model.vs)?;
    reporter.send(reporter.at(Phase::Finishing, state.completed_epochs));
    finish::finish(out, cfg, &state, &model, &val_set, &test_set, opts)
}

/// The epoch's figures in the log (the progress callback gets them too).
fn log_epoch(log: &EpochLog, epochs: usize) {
    tracing::info!("{}", log.summary(epochs));
}
