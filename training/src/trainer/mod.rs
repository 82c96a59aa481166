//! The training loop behind `facepipe train`: split by identity, build the backbone
//! (pretrained ResNet or a from-scratch MobileFaceNet) and a margin head, optimise with SGD or
//! AdamW under a warm-up + cosine schedule (bf16 autocast on CUDA by default), validate on
//! held-out people each epoch (early stopping), checkpoint every epoch (`--resume`), and
//! finish with a calibrated threshold, held-out test metrics and a model artifact.
//!
//! Var-store layout: backbone variables at the root (optimiser group 0, so a pretrained
//! backbone can learn slower), the head under `head.` (group 1; not saved in the artifact).
//!
//! Checkpoint folder (`OUT/checkpoint`), rewritten after every epoch: `last.safetensors`
//! (all variables, head and batch-norm statistics included), `optimizer.safetensors`
//! (momentum buffers or Adam moments and step counts, see [`optim`]), `best.safetensors`
//! and `state.json` (config, split, epoch, history, loss scale). Together they make
//! `--resume` continue exactly where the run stopped.

pub mod config;
pub mod optim;
pub mod sweep;
pub mod validate;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Kind};

use crate::artifact::{self, ModelJson};
use crate::autocast::Autocast;
use crate::backbone::EmbeddingNet;
use crate::data::{FaceSet, IdentitySplit, Loader, LoaderConfig, Subset};
use crate::embedder::{DistanceKind, Metric};
use crate::error::{Error, Result};
use crate::losses::{build_head, Head};
use crate::mobilefacenet::MobileFaceNet;
use crate::resnet::FaceResNet;

pub use config::{Arch, Init, OptimizerKind, Precision, TrainConfig};
pub use optim::{Algorithm, Optimizer};
pub use validate::PairSummary;

/// Folder inside OUT holding the resumable state.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const STATE_FILE: &str = "state.json";
const LAST_WEIGHTS: &str = "last.safetensors";
const BEST_WEIGHTS: &str = "best.safetensors";
const OPTIMIZER_STATE: &str = "optimizer.safetensors";

/// How a run is driven (not part of the run's identity).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub device: Device,
    /// Pretrained weights folder (`None`: the default model cache).
    pub models: Option<PathBuf>,
    /// Continue from OUT/checkpoint.
    pub resume: bool,
    /// Draw progress bars (off in tests and parallel sweeps).
    pub progress: bool,
    /// Stop once this many epochs are complete, leaving a checkpoint that `--resume`
    /// continues exactly (a run split over several sessions; `None`: run to the end).
    pub stop_after: Option<usize>,
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub lr: f64,
    pub images_per_s: f64,
    pub seconds: f64,
    /// Validation verification on held-out people (absent without validation people).
    pub val: Option<PairSummary>,
}

/// What is saved in the checkpoint folder besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub config: TrainConfig,
    pub split: IdentitySplit,
    pub classes: usize,
    pub completed_epochs: usize,
    pub global_step: usize,
    pub best_epoch: Option<usize>,
    /// Score of the best epoch so far; `None` before any epoch scored a finite value.
    /// (Checkpoints written before this was optional hold `null` here for "none yet".)
    #[serde(default)]
    pub best_score: Option<f64>,
    pub epochs_without_improvement: usize,
    pub stopped_early: bool,
    pub history: Vec<EpochLog>,
    /// fp16 loss scale at the end of the last completed epoch.
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
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

/// Write `value` as JSON, refusing NaN and ±∞ (they would read back as `null` and break
/// `--resume`).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = crate::json::to_string_pretty(value)
        .map_err(|e| Error::json(path.display().to_string(), e))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path.display().to_string(), e))
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to zero.
pub fn schedule(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Var-store prefixes of each backbone stage, in order (for `--freeze-stages`).
fn stages(arch: Arch) -> Vec<Vec<String>> {
    match arch {
        Arch::Resnet128 => vec![
            vec!["conv32_down.".into()],
            vec!["conv32_".into()],
            vec!["conv64_".into()],
            vec!["conv128_".into()],
            vec!["conv256_".into()],
        ],
        Arch::Mobilefacenet => vec![
            vec!["stem.".into(), "stem_dw.".into()],
            (0..5).map(|i| format!("stages.{i}.")).collect(),
            (5..12).map(|i| format!("stages.{i}.")).collect(),
            (12..15).map(|i| format!("stages.{i}.")).collect(),
        ],
    }
}

/// A backbone and its training head in one var store.
pub struct Model {
    pub vs: nn::VarStore,
    pub net: Box<dyn EmbeddingNet>,
    pub head: Box<dyn Head>,
}

/// Build the backbone (loading pretrained weights when asked) and the head for `classes`.
pub fn build_model(cfg: &TrainConfig, classes: usize, opts: &RunOptions) -> Result<Model> {
    let vs = nn::VarStore::new(opts.device);
    let net: Box<dyn EmbeddingNet> = match (cfg.arch, cfg.init) {
        (Arch::Resnet128, Init::Pretrained) => {
            let models = facepipe_pipeline::ModelDir::locate(opts.models.as_deref())?;
            let weights = models.load(facepipe_pipeline::models::FACE_RECOGNITION)?;
            Box::new(FaceResNet::pretrained(&vs, &weights)?)
        }
        (Arch::Resnet128, Init::Scratch) => {
            Box::new(FaceResNet::new(&vs.root(), cfg.embedding_dim))
        }
        (Arch::Mobilefacenet, _) => Box::new(MobileFaceNet::new(&vs.root(), cfg.embedding_dim)),
    };
    let head = build_head(
        cfg.loss,
        vs.root().set_group(1) / "head",
        cfg.embedding_dim,
        classes as i64,
        cfg.scale,
        cfg.margin,
    );
    if cfg.freeze_stages > 0 {
        let groups = stages(cfg.arch);
        let frozen: Vec<&String> = groups.iter().take(cfg.freeze_stages).flatten().collect();
        for (name, t) in vs.variables() {
            if frozen.iter().any(|p| name.starts_with(p.as_str())) {
                // Frozen variables get no gradient; the optimisers skip them.
                let _ = t.set_requires_grad(false);
            }
        }
    }
    // Weights stay f32 whatever the precision (the master copy); autocast casts per op.
    Ok(Model { vs, net, head })
}

/// The optimiser of `cfg` over every trainable variable of `vs` (SGD uses Nesterov momentum
/// whenever the momentum is non-zero).
pub fn build_optimizer(cfg: &TrainConfig, vs: &nn::VarStore) -> Result<Optimizer> {
    let algorithm = match cfg.optimizer {
        OptimizerKind::Sgd => Algorithm::Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.momentum > 0.0,
        },
        OptimizerKind::Adamw => Algorithm::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
        },
    };
    Optimizer::new(algorithm, vs, cfg.lr)
}

/// Group learning rates for the current step (backbone slower when pretrained).
pub fn set_lrs(opt: &mut Optimizer, cfg: &TrainConfig, lr: f64) {
    let mult = if cfg.init == Init::Pretrained {
        cfg.backbone_lr_mult
    } else {
        1.0
    };
    opt.set_lr_group(0, lr * mult);
    opt.set_lr_group(1, lr);
}

/// fp16's dynamic loss scale: doubles after a run of good steps; a step whose gradients
/// overflow is skipped and halves it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    pub good_steps: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
        }
    }
}

/// One optimiser step: backward + update, through a loss scale for fp16 (bf16 and f32 need
/// none).
#[derive(Debug)]
pub struct Stepper {
    scale: Option<LossScale>,
}

impl Stepper {
    /// A stepper for a run computing in `precision` on `device`.
    pub fn new(precision: Precision, device: Device) -> Self {
        let fp16 = precision.effective(device) == Precision::Fp16;
        Self {
            scale: fp16.then(LossScale::default),
        }
    }

    /// Continue from a saved loss scale (ignored unless this stepper scales).
    pub fn resume(&mut self, saved: Option<LossScale>) {
        if let (Some(s), Some(saved)) = (self.scale.as_mut(), saved) {
            *s = saved;
        }
    }

    pub fn loss_scale(&self) -> Option<LossScale> {
        self.scale
    }

    /// Backward + update; returns whether the update was applied (fp16 skips a step whose
    /// loss or gradients are not finite).
    pub fn step(&mut self, opt: &mut Optimizer, loss: &tch::Tensor, finite: bool) -> Result<bool> {
        let Some(s) = self.scale.as_mut() else {
            opt.backward_step(loss)?;
            return Ok(true);
        };
        opt.zero_grad();
        (loss * s.scale).f_backward()?;
        if !(finite && optim::grads_finite(opt)) {
            s.scale = (s.scale / 2.0).max(1.0);
            s.good_steps = 0;
            return Ok(false);
        }
        optim::unscale_grads(opt, s.scale)?;
        opt.step()?;
        s.good_steps += 1;
        if s.good_steps >= 1000 {
            s.scale *= 2.0;
            s.good_steps = 0;
        }
        Ok(true)
    }
}

/// Write through a temporary file and rename, so a crash mid-write never leaves a torn file.
/// The temporary name keeps the extension (`last.tmp.safetensors`): tch picks the weight
/// format from it.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let tmp = match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}.tmp.{}", ext.to_string_lossy())),
        None => path.with_file_name(format!("{stem}.tmp")),
    };
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Train on the prepared dataset at `dataset`, writing checkpoints and the artifact into `out`.
pub fn train(
    dataset: &Path,
    out: &Path,
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> Result<TrainSummary> {
    cfg.check()?;
    crate::init_threads();
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
        return Err(Error::Invalid(
            "--stop-after must be at least 1 (it counts completed epochs)".into(),
        ));
    }
    // The split is checked before anything is written: a held-out set too small to
    // evaluate must fail now, not after every epoch has run.
    let split = IdentitySplit::new(&faces.counts(), &cfg.split, 2)?;
    let train_set = faces.subset(&split.train);
    let val_set = faces.subset(&split.val);
    let test_set = faces.subset(&split.test);
    if train_set.classes < 2 {
        return Err(Error::Invalid(format!(
            "only {} training people: a classifier needs at least 2; lower --val-people/--test-people",
            train_set.classes
        )));
    }
    let ckpt = out.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
    let state_path = ckpt.join(STATE_FILE);

    let mut state = if opts.resume {
        if !state_path.is_file() {
            return Err(Error::Invalid(format!(
                "--resume: no checkpoint at {} (start without --resume)",
                state_path.display()
            )));
        }
        let state: TrainState = read_json(&state_path)?;
        let mut resumable = state.config.clone();
        resumable.epochs = cfg.epochs;
        resumable.patience = cfg.patience;
        if resumable != *cfg || state.split != split {
            return Err(Error::Invalid(format!(
                "--resume: the checkpoint in {} was made with different settings or data; \
                 use the same options (only --epochs and --patience may change) or a new OUT",
                ckpt.display()
            )));
        }
        let mut s = state;
        s.config = cfg.clone();
        s
    } else {
        if state_path.exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a training checkpoint: pass --resume to continue it, or choose another OUT",
                out.display()
            )));
        }
        TrainState {
            config: cfg.clone(),
            split: split.clone(),
            classes: train_set.classes,
            completed_epochs: 0,
            global_step: 0,
            best_epoch: None,
            best_score: None,
            epochs_without_improvement: 0,
            stopped_early: false,
            history: Vec::new(),
            loss_scale: None,
        }
    };
    write_json(&out.join("split.json"), &split)?;

    tch::manual_seed(cfg.seed as i64);
    let mut model = build_model(cfg, train_set.classes, opts)?;
    if opts.resume {
        model.vs.load(ckpt.join(LAST_WEIGHTS))?;
    }
    let input = cfg.input();
    if !opts.resume && cfg.imprint {
        imprint(
            &model,
            &train_set,
            &input,
            cfg.batch.clamp(8, 256),
            opts.device,
        )?;
    }
    let mut opt = build_optimizer(cfg, &model.vs)?;
    let opt_path = ckpt.join(OPTIMIZER_STATE);
    if opts.resume && state.completed_epochs > 0 {
        if opt_path.is_file() {
            opt.load(&opt_path)?;
        } else {
            // A checkpoint written before optimiser state was saved: still usable, but the
            // momentum or Adam moments restart from zero.
            tracing::warn!(
                "{} is missing: resuming with fresh optimiser state (not an exact continuation)",
                opt_path.display()
            );
        }
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
        },
    )?;
    let steps_per_epoch = cfg
        .max_steps_per_epoch
        .map_or(loader.batches_per_epoch(), |m| {
            m.min(loader.batches_per_epoch())
        })
        .max(1);
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let autocast = cfg.precision.autocast_kind(opts.device);
    let mut stepper = Stepper::new(cfg.precision, opts.device);
    stepper.resume(state.loss_scale);
    let eval_batch = cfg.batch.clamp(8, 256);
    let stop_at = opts.stop_after.map_or(cfg.epochs, |n| n.min(cfg.epochs));

    while state.completed_epochs < stop_at && !state.stopped_early {
        let epoch = state.completed_epochs;
        let bar = if opts.progress {
            let b = ProgressBar::new(steps_per_epoch as u64);
            b.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            b
        } else {
            ProgressBar::hidden()
        };
        let started = Instant::now();
        let (mut loss_sum, mut acc_sum, mut steps, mut images) = (0f64, 0f64, 0usize, 0usize);
        // fp16 steps whose loss overflowed are skipped; they stay out of the epoch's means.
        let mut finite_steps = 0usize;
        let mut lr = cfg.lr;
        for batch in loader.epoch(epoch as u64).take(steps_per_epoch) {
            let batch = batch?;
            lr = schedule(cfg.lr, state.global_step, warmup, total);
            set_lrs(&mut opt, cfg, lr);
            let emb = {
                // Only the backbone runs in reduced precision; the margin head's cosines need
                // f32 (bf16 resolves cos θ near 1 only to about 0.004).
                let _cast = autocast
                    .map(|k| Autocast::new(opts.device, k))
                    .transpose()?;
                model.net.forward_t(&batch.images, true)
            };
            let out = model.head.forward(&emb.to_kind(Kind::Float), &batch.labels);
            let loss = out.loss.double_value(&[]);
            if !loss.is_finite() && stepper.loss_scale().is_none() {
                return Err(Error::Invalid(format!(
                    "the loss became {loss} at epoch {} step {steps}: lower --lr (now {})",
                    epoch + 1,
                    cfg.lr
                )));
            }
            stepper.step(&mut opt, &out.loss, loss.is_finite())?;
            let acc = out.accuracy.double_value(&[]);
            steps += 1;
            state.global_step += 1;
            images += batch.indices.len();
            if loss.is_finite() && acc.is_finite() {
                finite_steps += 1;
                loss_sum += loss;
                acc_sum += acc;
            }
            let rate = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {loss:.3} acc {acc:.2} lr {lr:.2e} {rate:.0} img/s"
            ));
            bar.inc(1);
            tracing::debug!(
                epoch = epoch + 1,
                step = steps,
                loss,
                acc,
                lr,
                img_per_s = rate,
                "step"
            );
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        if finite_steps == 0 {
            return Err(Error::Invalid(format!(
                "every step of epoch {} had a non-finite loss ({steps} steps skipped by the fp16 \
                 loss scale): lower --lr (now {}) or use --precision bf16",
                epoch + 1,
                cfg.lr
            )));
        }
        let steps_f = finite_steps as f64;
        let val = if val_set.is_empty() {
            None
        } else {
            Some(
                validate_people(
                    model.net.as_ref(),
                    &val_set,
                    &input,
                    eval_batch,
                    opts.device,
                )?
                .0,
            )
        };
        let log = EpochLog {
            epoch: epoch + 1,
            steps,
            train_loss: loss_sum / steps_f,
            train_accuracy: acc_sum / steps_f,
            lr,
            images_per_s: images as f64 / seconds.max(1e-9),
            seconds,
            val,
        };
        let score = log
            .val
            .map_or(-log.train_loss, |v| v.best_balanced_accuracy + 1e-3 * v.auc);
        tracing::info!(
            "epoch {}/{}: loss {:.4} acc {:.3} {:.0} img/s{}",
            epoch + 1,
            cfg.epochs,
            log.train_loss,
            log.train_accuracy,
            log.images_per_s,
            log.val.map_or(String::new(), |v| format!(
                ", validation accuracy {:.4} AUC {:.4}",
                v.best_balanced_accuracy, v.auc
            ))
        );
        state.history.push(log);
        state.completed_epochs += 1;
        state.loss_scale = stepper.loss_scale();
        // Weights and optimiser state first, state.json last: it is what says an epoch is done.
        write_atomic(&ckpt.join(LAST_WEIGHTS), |p| Ok(model.vs.save(p)?))?;
        write_atomic(&opt_path, |p| opt.save(p))?;
        // A non-finite score never becomes the best (and never reaches state.json).
        if score.is_finite() && state.best_score.is_none_or(|best| score > best) {
            state.best_score = Some(score);
            state.best_epoch = Some(epoch + 1);
            state.epochs_without_improvement = 0;
            write_atomic(&ckpt.join(BEST_WEIGHTS), |p| Ok(model.vs.save(p)?))?;
        } else {
            state.epochs_without_improvement += 1;
            if cfg.patience > 0 && state.epochs_without_improvement >= cfg.patience {
                state.stopped_early = true;
                if opts.progress {
                    eprintln!(
                        "early stop: no better validation score for {} epochs (best: epoch {})",
                        cfg.patience,
                        state.best_epoch.unwrap_or(0)
                    );
                }
            }
        }
        write_atomic(&state_path, |p| write_json(p, &state))?;
    }
    if state.completed_epochs < cfg.epochs && !state.stopped_early {
        tracing::info!(
            "stopped after epoch {} of {} as asked; continue with --resume",
            state.completed_epochs,
            cfg.epochs
        );
    }

    // Ship the best epoch, not the last.
    let best = ckpt.join(BEST_WEIGHTS);
    if best.is_file() {
        model.vs.load(&best)?;
    }
    finish(out, cfg, &state, &model, &val_set, &test_set, opts)
}

/// Set the class centres to the normalised mean embedding of each training person.
fn imprint(
    model: &Model,
    set: &Subset,
    input: &crate::preprocess::InputSpec,
    batch: usize,
    device: Device,
) -> Result<()> {
    let Some(centres) = model.head.centres() else {
        return Ok(());
    };
    let emb = validate::embed_subset(model.net.as_ref(), set, input, batch, device)?;
    let labels = tch::Tensor::from_slice(set.labels.as_slice());
    let dim = emb.size()[1];
    let sums = tch::Tensor::zeros([set.classes as i64, dim], (Kind::Float, Device::Cpu))
        .index_add(0, &labels, &emb);
    let norm = sums
        .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    let mut centres = centres.shallow_clone();
    tch::no_grad(|| centres.f_copy_(&(sums / norm).to_device(centres.device())))?;
    Ok(())
}

/// Embed a set of people and summarise all their pairs; also returns the raw scores.
fn validate_people(
    net: &dyn EmbeddingNet,
    set: &Subset,
    input: &crate::preprocess::InputSpec,
    batch: usize,
    device: Device,
) -> Result<(PairSummary, Vec<f32>, Vec<f32>)> {
    let emb = validate::embed_subset(net, set, input, batch, device)?;
    let (g, i) = validate::pair_scores(&emb, &set.labels)?;
    Ok((validate::summarise(&g, &i), g, i))
}

fn finish(
    out: &Path,
    cfg: &TrainConfig,
    state: &TrainState,
    model: &Model,
    val_set: &Subset,
    test_set: &Subset,
    opts: &RunOptions,
) -> Result<TrainSummary> {
    let input = cfg.input();
    let eval_batch = cfg.batch.clamp(8, 256);
    // Threshold: cosine distance (1 − similarity) at the target FAR on validation people; on
    // the training people when there are no validation people.
    let calib_set = if val_set.is_empty() {
        tracing::warn!("no validation people: calibrating the threshold on training people");
        None
    } else {
        Some(val_set)
    };
    let (val_summary, g, i) = match calib_set {
        Some(s) => validate_people(model.net.as_ref(), s, &input, eval_batch, opts.device)?,
        None => (PairSummary::default(), Vec::new(), Vec::new()),
    };
    let (sim_thr, val_tar) = if g.is_empty() || i.is_empty() {
        (0.5, 0.0)
    } else {
        validate::threshold_at_far(&g, &i, cfg.target_far)
    };
    let threshold = 1.0 - sim_thr;
    if !threshold.is_finite() {
        return Err(Error::Invalid(format!(
            "the calibrated threshold came out as {threshold}: the validation embeddings are \
             not finite; lower --lr (now {}) and train again",
            cfg.lr
        )));
    }
    let validation =
        crate::json::to_value(&val_summary).map_err(|e| Error::json("validation summary", e))?;
    let mut metrics = serde_json::json!({
        "threshold": {
            "distance": "cosine",
            "value": threshold,
            "target_far": cfg.target_far,
            "calibrated_on": if calib_set.is_some() { "validation people" } else { "none (default 0.5)" },
            "validation_tar_at_target_far": val_tar,
        },
        "validation": validation,
        "best_epoch": state.best_epoch,
        "epochs_run": state.completed_epochs,
        "stopped_early": state.stopped_early,
        "people": { "train": state.split.train.len(), "validation": state.split.val.len(), "test": state.split.test.len() },
    });
    let metric = Metric {
        distance: DistanceKind::Cosine,
        threshold,
    };
    if !test_set.is_empty() {
        // The held-out people, through the same evaluation as `facepipe evaluate`.
        let emb = validate::embed_subset(
            model.net.as_ref(),
            test_set,
            &input,
            eval_batch,
            opts.device,
        )?;
        let flat = Vec::<f32>::try_from(emb.flatten(0, -1))?;
        let dim = cfg.embedding_dim as usize;
        let rows: Vec<Vec<f32>> = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let labels: Vec<usize> = test_set.labels.iter().map(|&l| l as usize).collect();
        let report = crate::eval::evaluate(
            format!("{} (trained, test people)", cfg.arch_name()),
            &rows,
            &labels,
            &metric,
            &crate::eval::EvalOptions {
                target_far: cfg.target_far,
                seed: cfg.seed,
                ..Default::default()
            },
            None,
        )?;
        crate::eval::plot_roc(&report.roc, &out.join("roc.png"))?;
        metrics["test"] =
            crate::json::to_value(&report).map_err(|e| Error::json("test report", e))?;
    }
    let mut json = ModelJson::new(cfg.arch_name(), input, cfg.embedding_dim as usize, metric);
    json.training = crate::json::to_value(cfg).map_err(|e| Error::json("training config", e))?;
    json.training["history"] =
        crate::json::to_value(&state.history).map_err(|e| Error::json("history", e))?;
    json.metrics = metrics.clone();
    artifact::save(out, &model.vs, &json)?;
    write_json(&out.join("metrics.json"), &metrics)?;
    let losses: Vec<(f64, f64)> = state
        .history
        .iter()
        .map(|h| (h.epoch as f64, h.train_loss))
        .filter(|p| p.1.is_finite())
        .collect();
    crate::eval::plot_loss(&losses, &out.join("loss.png"))?;
    Ok(TrainSummary {
        out: out.to_path_buf(),
        state: state.clone(),
        metrics,
        threshold,
        best_score: state.best_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(val: PairSummary, best_score: Option<f64>, loss: f64) -> TrainState {
        TrainState {
            config: TrainConfig::default(),
            split: IdentitySplit {
                train: vec!["a".into(), "b".into()],
                val: vec!["c".into(), "d".into()],
                test: Vec::new(),
            },
            classes: 2,
            completed_epochs: 1,
            global_step: 3,
            best_epoch: best_score.map(|_| 1),
            best_score,
            epochs_without_improvement: 0,
            stopped_early: false,
            history: vec![EpochLog {
                epoch: 1,
                steps: 3,
                train_loss: loss,
                train_accuracy: 0.5,
                lr: 0.01,
                images_per_s: 10.0,
                seconds: 1.0,
                val: Some(val),
            }],
            loss_scale: None,
        }
    }

    #[test]
    fn a_state_without_a_best_threshold_round_trips() {
        // Validation that never beats chance has no best threshold (it used to be +inf,
        // written as null, and the checkpoint could not be read back).
        let chance = validate::summarise(&[0.5, 0.5], &[0.5, 0.5]);
        assert_eq!(chance.best_threshold, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for state in [
            state_with(chance, None, 1.5),
            state_with(chance, Some(0.5), 1.5),
        ] {
            write_json(&path, &state).unwrap();
            let back: TrainState = read_json(&path).unwrap();
            assert_eq!(back, state);
        }
        // What the old code wrote for +inf / −inf reads back as "none".
        let mut legacy: serde_json::Value =
            serde_json::to_value(state_with(chance, None, 1.5)).unwrap();
        legacy["best_score"] = serde_json::Value::Null;
        legacy["history"][0]["val"]["best_threshold"] = serde_json::Value::Null;
        std::fs::write(&path, legacy.to_string()).unwrap();
        let back: TrainState = read_json(&path).unwrap();
        assert_eq!(back.best_score, None);
    }

    #[test]
    fn non_finite_numbers_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let state = state_with(PairSummary::default(), Some(0.5), f64::NAN);
        let e = write_json(&path, &state).unwrap_err().to_string();
        assert!(e.contains("history[0].train_loss is NaN"), "{e}");
        assert!(!path.exists());
    }
}
