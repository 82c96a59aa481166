//! `facepipe train DATASET OUT`: fine-tune the pretrained ResNet or train MobileFaceNet from
//! scratch on a prepared dataset, then write the model artifact, metrics and plots into OUT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_training::augment::AugmentConfig;
use facepipe_training::data::{FaceSet, SplitConfig};
use facepipe_training::losses::LossKind;
use facepipe_training::trainer::{
    self, sweep, Arch, Init, OptimizerKind, Precision, RunOptions, TrainConfig,
};

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
    cfg.check()?;
    let opts = RunOptions {
        device,
        models: global.models.clone(),
        resume: args.resume,
        progress: !global.quiet,
        stop_after: args.stop_after,
    };
    facepipe_training::init_threads();
    eprintln!(
        "training {} ({:?} init, {:?} loss) on {:?} in {}",
        cfg.arch_name(),
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
        let points = sweep::run(&faces, &args.out, &grid, &opts, parallel)?;
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
    let summary = trainer::train(&args.dataset, &args.out, &cfg, &opts)?;
    let m = &summary.metrics;
    println!(
        "best epoch {} of {}{}",
        summary.state.best_epoch.unwrap_or(0),
        summary.state.completed_epochs,
        if summary.state.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    );
    println!(
        "threshold (cosine distance) {:.4} at FAR {} on validation people",
        summary.threshold, cfg.target_far
    );
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
