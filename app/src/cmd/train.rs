//! `facepipe train DATASET OUT`: fine-tune the pretrained ResNet or train MobileFaceNet from
//! scratch on a prepared dataset, then write the model artifact, metrics and plots into OUT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use facepipe_training::augment::AugmentConfig;
use facepipe_training::data::{AugmentOn, FaceSet, SplitConfig};
use facepipe_training::losses::LossKind;
use facepipe_training::trainer::{
    self, sweep, Arch, Init, OptimizerKind, Phase, Precision, ProgressFn, RunOptions, TrainConfig,
    TrainProgress,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{parse_device, GlobalArgs};

/// Train or fine-tune an embedding model. Splits the people of DATASET into train,
/// validation and test (nobody in two splits), trains with a margin loss, stops early when
/// validation verification stops improving, calibrates the threshold at --target-far on the
/// validation people and reports verification on the test people.
///
/// OUT receives model.safetensors + model.json (the artifact), metrics.json, roc.png, loss.png,
/// split.json and checkpoint/ (weights, optimiser state and progress after every epoch, for
/// --resume).
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Prepared dataset folder (written by `facepipe prepare`).
    pub dataset: PathBuf,
    /// Output folder for the model artifact, metrics and checkpoints.
    pub out: PathBuf,
    /// Backbone: resnet128 (150 px, the face engine's network) or mobilefacenet (112 px).
    #[arg(long, default_value = "resnet128", value_parser = str::parse::<Arch>)]
    pub arch: Arch,
    /// Start from the pretrained weights (resnet128 only) or from scratch.
    #[arg(long, default_value = "pretrained", value_parser = str::parse::<Init>)]
    pub init: Init,
    /// Loss: arcface, cosface or softmax (baseline).
    #[arg(long, default_value = "arcface", value_parser = str::parse::<LossKind>)]
    pub loss: LossKind,
    /// Embedding width (mobilefacenet: 128 or 512; resnet128 pretrained: 128).
    #[arg(long, default_value_t = 128)]
    pub embedding_dim: i64,
    /// Margin-loss scale s.
    #[arg(long, default_value_t = 30.0)]
    pub scale: f64,
    /// Margin m (ArcFace: radians added to the angle; CosFace: subtracted from the cosine).
    #[arg(long, default_value_t = 0.3)]
    pub margin: f64,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (head; a pretrained backbone uses lr × --backbone-lr-mult).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub backbone_lr_mult: f64,
    /// sgd (momentum 0.9, Nesterov) or adamw (β 0.9/0.999). Weight decay applies to both
    /// (AdamW: decoupled). Their state is checkpointed, so --resume continues it.
    #[arg(long, default_value = "sgd", value_parser = str::parse::<OptimizerKind>)]
    pub optimizer: OptimizerKind,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Linear warm-up before the cosine decay, in epochs.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_epochs: f64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run checkpointed in OUT from its last completed epoch, weights and
    /// optimiser state included (same options; --epochs may change, which also stretches
    /// the learning-rate schedule).
    #[arg(long)]
    pub resume: bool,
    /// Stop after epoch N, leaving a checkpoint that --resume continues exactly as if the
    /// run had not stopped (split a long run over several sessions).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// Train a 3 × 3 grid instead of one model: --lr × {1/3, 1, 3} crossed with --margin in
    /// {0.2, 0.35, 0.5}, each run in OUT/sweep/NN_lr…_m…/. Runs are ranked by validation
    /// verification accuracy of their best epoch; the table and OUT/sweep.json list every
    /// run with its score, and the best run's artifact is copied into OUT.
    #[arg(long)]
    pub sweep: bool,
    /// Grid runs at a time with --sweep (default: 2 on a GPU or ≥ 8 cores, else 1).
    #[arg(long)]
    pub sweep_parallel: Option<usize>,
    /// Validation people: a fraction (< 1) or a count (≥ 1).
    #[arg(long, default_value_t = 0.1)]
    pub val_people: f64,
    /// Test people: a fraction (< 1) or a count (≥ 1).
    #[arg(long, default_value_t = 0.1)]
    pub test_people: f64,
    /// Early stopping: epochs without a better validation score (0: never stop early).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Freeze the first N backbone stages (the stem counts as one).
    #[arg(long, default_value_t = 0)]
    pub freeze_stages: usize,
    /// Identity-balanced batches with K images per person (the batch must be a multiple of K).
    #[arg(long, value_name = "K")]
    pub balanced: Option<usize>,
    /// Turn off augmentation (flip, scale/shift jitter, colour jitter, greyscale).
    #[arg(long)]
    pub no_augment: bool,
    /// False-accept rate at which the threshold is calibrated.
    #[arg(long, default_value_t = 1e-3)]
    pub target_far: f64,
    /// At most this many steps per epoch (quick runs).
    #[arg(long)]
    pub max_steps_per_epoch: Option<usize>,
    /// Arithmetic on CUDA: bf16 autocast (no loss scaling needed), fp16 autocast with a
    /// dynamic loss scale (GPUs without bf16), or f32. Weights stay f32; CPU runs are f32.
    #[arg(long, default_value = "bf16", value_parser = str::parse::<Precision>)]
    pub precision: Precision,
    /// Start margin-head class centres at random instead of at each person's mean embedding.
    #[arg(long)]
    pub no_imprint: bool,
    /// Threads that decode (and, on the host, augment) training batches (default: --threads,
    /// else every core).
    #[arg(long, value_name = "N")]
    pub loader_workers: Option<usize>,
    /// Where augmentation runs: host (loader threads) or device (batched tensor ops on the
    /// training device). Default: device on CUDA, host on CPU.
    #[arg(long, value_parser = str::parse::<AugmentOn>)]
    pub augment_on: Option<AugmentOn>,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            arch: self.arch,
            init: self.init,
            loss: self.loss,
            embedding_dim: self.embedding_dim,
            scale: self.scale,
            margin: self.margin,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            backbone_lr_mult: self.backbone_lr_mult,
            optimizer: self.optimizer,
            momentum: 0.9,
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            seed: self.seed,
            split: SplitConfig {
                val: self.val_people,
                test: self.test_people,
                seed: self.seed,
            },
            patience: self.patience,
            freeze_stages: self.freeze_stages,
            balanced: self.balanced,
            augment: if self.no_augment {
                AugmentConfig::none()
            } else {
                AugmentConfig::default()
            },
            target_far: self.target_far,
            max_steps_per_epoch: self.max_steps_per_epoch,
            precision: self.precision,
            imprint: !self.no_imprint,
        }
    }
}

pub fn run(global: &GlobalArgs, args: TrainArgs) -> anyhow::Result<ExitCode> {
    let device = parse_device(&args.device)?;
    if device.is_cuda() && !tch::Cuda::is_available() {
        anyhow::bail!(
            "--device {} asked for CUDA but no GPU is usable here: use --device cpu",
            args.device
        );
    }
    let cfg = args.config();
    cfg.check().map_err(|e| in_flags(e, &cfg))?;
    let opts = RunOptions {
        device,
        models: global.models.clone(),
        resume: args.resume,
        progress: (!global.quiet).then(epoch_bars),
        stop_after: args.stop_after,
        loader_workers: args.loader_workers.or(global.threads).map(|n| n.max(1)),
        augment_on: args.augment_on,
    };
    eprintln!(
        "training {} ({:?} init, {:?} loss) on {:?} in {}",
        cfg.arch,
        cfg.init,
        cfg.loss,
        device,
        cfg.precision.effective(device).name()
    );
    if args.sweep {
        let faces = FaceSet::load(&args.dataset)
            .with_context(|| format!("reading the prepared dataset {}", args.dataset.display()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parallel = args
            .sweep_parallel
            .unwrap_or(if device.is_cuda() || cores >= 8 { 2 } else { 1 });
        let grid = sweep::grid(&cfg);
        eprintln!("sweep: {} runs, {parallel} at a time", grid.len());
        let report = |p: &sweep::SweepPoint| {
            if global.quiet {
                return;
            }
            match (&p.score, &p.error) {
                (Some(s), _) => {
                    eprintln!("sweep lr {:.2e} margin {:.2}: score {s:.4}", p.lr, p.margin)
                }
                (_, Some(e)) => {
                    eprintln!("sweep lr {:.2e} margin {:.2}: failed: {e}", p.lr, p.margin)
                }
                _ => {}
            }
        };
        let points = sweep::run(&faces, &args.out, &grid, &opts, parallel, report)
            .map_err(|e| in_flags(e, &cfg))?;
        println!(
            "{:>10} {:>7} {:>9} {:>8} {:>7} {:>6}",
            "lr", "margin", "score", "val acc", "val AUC", "epoch"
        );
        for p in &points {
            match p.score {
                Some(s) => println!(
                    "{:>10.2e} {:>7.2} {:>9.4} {:>8} {:>7} {:>6}",
                    p.lr,
                    p.margin,
                    s,
                    p.validation
                        .map_or("-".into(), |v| format!("{:.4}", v.best_balanced_accuracy)),
                    p.validation.map_or("-".into(), |v| format!("{:.4}", v.auc)),
                    p.best_epoch.unwrap_or(0)
                ),
                None => println!(
                    "{:>10.2e} {:>7.2}    failed: {}",
                    p.lr,
                    p.margin,
                    p.error.as_deref().unwrap_or("?")
                ),
            }
        }
        if let Some(best) = points.first() {
            println!(
                "best: lr {:.2e} margin {:.2} -> artifact copied to {}",
                best.lr,
                best.margin,
                args.out.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let summary =
        trainer::train(&args.dataset, &args.out, &cfg, &opts).map_err(|e| in_flags(e, &cfg))?;
    let m = &summary.metrics;
    println!(
        "best epoch {} of {}{}",
        summary.state.early_stop.best_epoch.unwrap_or(0),
        summary.state.completed_epochs,
        if summary.state.early_stop.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    );
    let t = &m["threshold"];
    match t.get("calibrated_far").and_then(serde_json::Value::as_f64) {
        Some(far) => println!(
            "threshold (cosine distance) {:.4} at FAR {far:.2e} on {} validation pairs \
             (target {})",
            summary.threshold, t["impostor_pairs"], cfg.target_far
        ),
        None => println!(
            "threshold (cosine distance) {:.4}: not calibrated (no validation people)",
            summary.threshold
        ),
    }
    if let Some(w) = t.get("warning").and_then(serde_json::Value::as_str) {
        eprintln!("warning: {w}");
    }
    if let Some(test) = m.get("test") {
        println!(
            "test people: {}-fold accuracy {:.4}, ROC AUC {:.4}, rank-1 {:.4}",
            test["accuracy"]["folds"],
            test["accuracy"]["mean"].as_f64().unwrap_or(f64::NAN),
            test["roc_auc"].as_f64().unwrap_or(f64::NAN),
            test["identification"]["rank1"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("model written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// One progress bar per epoch on stderr (hidden when stderr is not a terminal), and the
/// early-stop notice.
fn epoch_bars() -> ProgressFn {
    let current: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Arc::new(move |p: &TrainProgress| {
        // A panic while drawing must not stop the run: a poisoned bar just stops drawing.
        let Ok(mut current) = current.lock() else {
            return;
        };
        match p.phase {
            Phase::EpochStart => {
                let bar = ProgressBar::new(p.steps as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{}/{}", p.epoch, p.epochs));
                *current = Some(bar);
            }
            Phase::Step => {
                if let Some(bar) = current.as_ref() {
                    bar.set_message(format!(
                        "loss {:.3} acc {:.2} lr {:.2e} {:.0} img/s",
                        p.loss.unwrap_or(f64::NAN),
                        p.accuracy.unwrap_or(f64::NAN),
                        p.lr,
                        p.images_per_s
                    ));
                    bar.inc(1);
                }
            }
            Phase::Validating | Phase::EpochEnd => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
            }
            Phase::EarlyStop {
                patience,
                best_epoch,
            } => eprintln!(
                "early stop: no better validation score for {patience} epochs (best: epoch {})",
                best_epoch.unwrap_or(0)
            ),
            Phase::Finishing => {}
        }
    })
}

/// The command-line flag that sets a training setting (the library names settings as
/// `TrainConfig` does).
fn flag(setting: &str) -> &str {
    match setting {
        "arch" => "--arch",
        "init" => "--init",
        "loss" => "--loss",
        "embedding_dim" => "--embedding-dim",
        "scale" => "--scale",
        "margin" => "--margin",
        "epochs" => "--epochs",
        "batch" => "--batch",
        "lr" => "--lr",
        "backbone_lr_mult" => "--backbone-lr-mult",
        "optimizer" => "--optimizer",
        "weight_decay" => "--weight-decay",
        "warmup_epochs" => "--warmup-epochs",
        "seed" | "split.seed" => "--seed",
        "split" => "--val-people/--test-people",
        "split.val" => "--val-people",
        "split.test" => "--test-people",
        "patience" => "--patience",
        "freeze_stages" => "--freeze-stages",
        "balanced" => "--balanced",
        "target_far" => "--target-far",
        "max_steps_per_epoch" => "--max-steps-per-epoch",
        "precision" => "--precision",
        "imprint" => "--no-imprint",
        "stop_after" => "--stop-after",
        s if s.starts_with("augment.") => "--no-augment",
        // No flag (momentum) or not a setting (the split's people, optimiser state).
        other => other,
    }
}

/// A training error in the words of this command's flags; other errors pass unchanged.
fn in_flags(err: facepipe_training::Error, cfg: &TrainConfig) -> anyhow::Error {
    use facepipe_training::Error as E;
    let lr = cfg.lr;
    match err {
        E::BadSetting { setting, reason } => anyhow::anyhow!("{} {reason}", flag(setting)),
        E::NoCheckpoint { path } => anyhow::anyhow!(
            "--resume: no checkpoint at {} (start without --resume)",
            path.display()
        ),
        E::CheckpointExists { out } => anyhow::anyhow!(
            "{} already holds a training checkpoint: pass --resume to continue it, or choose \
             another OUT",
            out.display()
        ),
        E::CheckpointMismatch {
            path,
            what,
            saved,
            requested,
        } => anyhow::anyhow!(
            "--resume: the checkpoint in {} was made with different settings or data ({} is \
             {saved} there, {requested} now); use the same options (only --epochs and \
             --patience may change) or a new OUT",
            path.display(),
            flag(&what)
        ),
        e @ E::Diverged { .. } => anyhow::anyhow!("{e}: lower --lr (now {lr})"),
        e @ E::LossScaleExhausted { .. } => {
            anyhow::anyhow!("{e}: lower --lr (now {lr}) or use --precision bf16")
        }
        e @ E::NonFiniteEmbeddings { .. } => {
            anyhow::anyhow!("{e}; lower --lr (now {lr}) and train again")
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facepipe_training::Error;

    #[test]
    fn setting_errors_name_the_flag() {
        let cfg = TrainConfig {
            scale: f64::INFINITY,
            ..TrainConfig::default()
        };
        let err = in_flags(cfg.check().unwrap_err(), &cfg).to_string();
        assert_eq!(err, "--scale must be a finite number, not inf");
        let cfg = TrainConfig {
            arch: Arch::Mobilefacenet,
            ..TrainConfig::default()
        };
        let err = in_flags(cfg.check().unwrap_err(), &cfg).to_string();
        assert!(err.starts_with("--init must be scratch"), "{err}");
        let cfg = TrainConfig {
            lr: -1.0,
            ..TrainConfig::default()
        };
        let err = in_flags(cfg.check().unwrap_err(), &cfg).to_string();
        assert_eq!(err, "--lr must be a positive number, not -1");
    }

    #[test]
    fn checkpoint_and_divergence_errors_name_the_flags() {
        let cfg = TrainConfig::default();
        let mismatch = Error::CheckpointMismatch {
            path: "out/checkpoint".into(),
            what: "split.val".into(),
            saved: "2 people (with s3)".into(),
            requested: "2 people (with s4)".into(),
        };
        let err = in_flags(mismatch, &cfg).to_string();
        assert!(
            err.starts_with("--resume: the checkpoint in out/checkpoint was made with different")
                && err
                    .contains("(--val-people is 2 people (with s3) there, 2 people (with s4) now)")
                && err.contains("only --epochs and --patience may change"),
            "{err}"
        );
        let exists = Error::CheckpointExists { out: "out".into() };
        assert!(in_flags(exists, &cfg).to_string().contains("pass --resume"));
        let diverged = Error::Diverged {
            epoch: 2,
            step: 5,
            loss: f64::NAN,
        };
        assert_eq!(
            in_flags(diverged, &cfg).to_string(),
            "the loss became NaN at epoch 2 step 5: lower --lr (now 0.01)"
        );
    }
}
