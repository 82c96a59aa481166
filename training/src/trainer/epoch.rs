//! One training epoch: the learning-rate schedule, the optimiser step (with fp16's loss
//! scale), [`train_step`] and [`run_epoch`], which takes an epoch's steps and returns its
//! [`EpochLog`].

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::model::{set_lrs, Model};
use super::optim::{self, Optimizer};
use super::progress::{Phase, Reporter, TrainProgress};
use super::validate::PairSummary;
use super::{Precision, TrainConfig};
use crate::autocast::Autocast;
use crate::data::{Batch, Loader};
use crate::error::{Error, Result};

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

impl EpochLog {
    /// The epoch's score for keeping the best epoch (higher is better): balanced
    /// verification accuracy on the validation people plus 0.001 × their ROC AUC (a
    /// tie-breaker), or −training loss without validation people.
    pub fn score(&self) -> f64 {
        self.val.map_or(-self.train_loss, |v| {
            v.best_balanced_accuracy + 1e-3 * v.auc
        })
    }

    /// One line for people: `epoch 3/10: loss 0.4123 acc 0.912 812 img/s, validation …`.
    pub fn summary(&self, epochs: usize) -> String {
        format!(
            "epoch {}/{epochs}: loss {:.4} acc {:.3} {:.0} img/s{}",
            self.epoch,
            self.train_loss,
            self.train_accuracy,
            self.images_per_s,
            self.val.map_or(String::new(), |v| format!(
                ", validation accuracy {:.4} AUC {:.4}",
                v.best_balanced_accuracy, v.auc
            ))
        )
    }
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

    /// A stepper that scales the loss as fp16 runs do, on any device: the scaler's logic
    /// (skip on overflow, halve, grow after a run of good steps) is tested on CPU with it.
    pub fn scaled(start: LossScale) -> Self {
        Self { scale: Some(start) }
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
        // One read for the loss and every gradient (PyTorch's scaler reads once per step too).
        if !(finite && optim::grads_finite(opt, &[loss])) {
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

/// The step counts of a run: steps per epoch, warm-up and total (for the schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepPlan {
    pub steps_per_epoch: usize,
    pub warmup: usize,
    pub total: usize,
}

impl StepPlan {
    /// Every batch of the loader (at most `max_steps_per_epoch`, at least one) per epoch.
    pub(crate) fn new(cfg: &TrainConfig, batches_per_epoch: usize) -> Self {
        let steps_per_epoch = cfg
            .max_steps_per_epoch
            .map_or(batches_per_epoch, |m| m.min(batches_per_epoch))
            .max(1);
        Self {
            steps_per_epoch,
            warmup: (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total: steps_per_epoch * cfg.epochs,
        }
    }
}

/// What an epoch trains and with what.
pub(crate) struct EpochRun<'a> {
    pub cfg: &'a TrainConfig,
    pub model: &'a Model,
    pub opt: &'a mut Optimizer,
    pub stepper: &'a mut Stepper,
    pub loader: &'a Loader,
    pub plan: StepPlan,
    pub device: Device,
    pub reporter: &'a Reporter,
}

/// A step's loss and batch accuracy, left where they were computed: reading them on the host
/// would wait for the device to finish the step.
pub struct StepOutput {
    pub loss: Tensor,
    pub accuracy: Tensor,
    /// False when fp16's loss scale skipped the update.
    pub applied: bool,
}

/// One training step on `batch`: forward (the backbone under `autocast`, the margin head in
/// f32), loss, backward and update. The training loop and the step benchmark share it.
pub fn train_step(
    model: &Model,
    opt: &mut Optimizer,
    stepper: &mut Stepper,
    autocast: Option<(Device, Kind)>,
    batch: &Batch,
) -> Result<StepOutput> {
    let emb = {
        // Only the backbone runs in reduced precision; the margin head's cosines need
        // f32 (bf16 resolves cos θ near 1 only to about 0.004).
        let _cast = autocast
            .map(|(device, kind)| Autocast::new(device, kind))
            .transpose()?;
        model.net.forward_t(&batch.images, true)
    };
    let out = model.head.forward(&emb.to_kind(Kind::Float), &batch.labels);
    let applied = stepper.step(opt, &out.loss, true)?;
    Ok(StepOutput {
        loss: out.loss.detach(),
        accuracy: out.accuracy.detach(),
        applied,
    })
}

/// Steps between reads of the loss on CUDA (each read waits for the device); on the CPU
/// every step's figures are read as it ends, which costs nothing.
const CUDA_READ_EVERY: usize = 32;

/// The figures of the steps not yet read from the device.
#[derive(Default)]
struct Window {
    losses: Vec<Tensor>,
    accuracies: Vec<Tensor>,
}

impl Window {
    /// Read the pending figures in one transfer: `(loss, accuracy)` per step, in order.
    fn read(&mut self) -> Result<Vec<(f64, f64)>> {
        if self.losses.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.losses.len();
        let mut all: Vec<Tensor> = self
            .losses
            .drain(..)
            .map(|t| t.to_kind(Kind::Float))
            .collect();
        all.extend(self.accuracies.drain(..).map(|t| t.to_kind(Kind::Float)));
        let values = Vec::<f64>::try_from(
            Tensor::f_stack(&all, 0)?
                .f_to_kind(Kind::Double)?
                .f_to(Device::Cpu)?,
        )?;
        Ok((0..n).map(|i| (values[i], values[n + i])).collect())
    }
}

/// Train epoch `epoch` (0-based), advancing `global_step`; returns the epoch's log without
/// validation. Fails with [`Error::Diverged`] when the loss stops being finite (f32, bf16)
/// or [`Error::LossScaleExhausted`] when fp16 skipped every step. The loss stays on the
/// device between reads (every step on the CPU, every [`CUDA_READ_EVERY`] on CUDA), so the
/// host keeps queueing work instead of waiting for each step.
pub(crate) fn run_epoch(
    run: &mut EpochRun<'_>,
    epoch: usize,
    global_step: &mut usize,
) -> Result<EpochLog> {
    let cfg = run.cfg;
    let autocast = cfg
        .precision
        .autocast_kind(run.device)
        .map(|k| (run.device, k));
    let read_every = if run.device.is_cuda() {
        CUDA_READ_EVERY
    } else {
        1
    };
    run.reporter
        .send(run.reporter.at(Phase::EpochStart, epoch + 1));
    let started = Instant::now();
    let (mut loss_sum, mut acc_sum, mut steps, mut images) = (0f64, 0f64, 0usize, 0usize);
    // fp16 steps whose loss overflowed are skipped; they stay out of the epoch's means.
    let mut finite_steps = 0usize;
    let mut last: Option<(f64, f64)> = None;
    let mut window = Window::default();
    let scaled = run.stepper.loss_scale().is_some();
    // Fold the pending figures into the epoch's sums; a non-finite loss without a loss
    // scale is divergence, reported at the step it happened.
    let mut settle =
        |window: &mut Window, steps: usize, last: &mut Option<(f64, f64)>| -> Result<()> {
            let read = window.read()?;
            let first = steps - read.len();
            for (k, (loss, acc)) in read.into_iter().enumerate() {
                tracing::debug!(epoch = epoch + 1, step = first + k + 1, loss, acc, "step");
                if !loss.is_finite() && !scaled {
                    return Err(Error::Diverged {
                        epoch: epoch + 1,
                        step: first + k,
                        loss,
                    });
                }
                if loss.is_finite() && acc.is_finite() {
                    finite_steps += 1;
                    loss_sum += loss;
                    acc_sum += acc;
                    *last = Some((loss, acc));
                }
            }
            Ok(())
        };
    let mut lr = cfg.lr;
    for batch in run
        .loader
        .epoch(epoch as u64)
        .take(run.plan.steps_per_epoch)
    {
        let batch = batch?;
        lr = schedule(cfg.lr, *global_step, run.plan.warmup, run.plan.total);
        set_lrs(run.opt, cfg, lr);
        let out = train_step(run.model, run.opt, run.stepper, autocast, &batch)?;
        window.losses.push(out.loss);
        window.accuracies.push(out.accuracy);
        steps += 1;
        *global_step += 1;
        images += batch.indices.len();
        if window.losses.len() >= read_every {
            settle(&mut window, steps, &mut last)?;
        }
        let rate = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
        run.reporter.send(TrainProgress {
            step: steps,
            loss: last.map(|l| l.0),
            accuracy: last.map(|l| l.1),
            lr,
            images_per_s: rate,
            ..run.reporter.at(Phase::Step, epoch + 1)
        });
        tracing::trace!(
            epoch = epoch + 1,
            step = steps,
            lr,
            img_per_s = rate,
            "step"
        );
    }
    settle(&mut window, steps, &mut last)?;
    let seconds = started.elapsed().as_secs_f64();
    if finite_steps == 0 {
        return Err(Error::LossScaleExhausted {
            epoch: epoch + 1,
            steps,
        });
    }
    let steps_f = finite_steps as f64;
    Ok(EpochLog {
        epoch: epoch + 1,
        steps,
        train_loss: loss_sum / steps_f,
        train_accuracy: acc_sum / steps_f,
        lr,
        images_per_s: images as f64 / seconds.max(1e-9),
        seconds,
        val: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        assert_eq!(schedule(1.0, 0, 4, 20), 0.25);
        assert_eq!(schedule(1.0, 3, 4, 20), 1.0);
        assert_eq!(schedule(1.0, 4, 4, 20), 1.0);
        assert!((schedule(1.0, 12, 4, 20) - 0.5).abs() < 1e-12);
        assert!(schedule(1.0, 20, 4, 20).abs() < 1e-12);
        // Past the end it stays at zero; without warm-up it starts at the peak.
        assert!(schedule(1.0, 25, 4, 20).abs() < 1e-12);
        assert_eq!(schedule(0.1, 0, 0, 10), 0.1);
    }

    /// One weight `w` (starting at 1) and the plain SGD optimiser at learning rate 0.5.
    fn one_weight() -> (nn::VarStore, Optimizer) {
        let vs = nn::VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[1], nn::Init::Const(1.0));
        let sgd = optim::Algorithm::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        };
        let opt = Optimizer::new(sgd, &vs, 0.5).unwrap();
        (vs, opt)
    }

    fn weight(vs: &nn::VarStore) -> f64 {
        vs.variables()["w"].double_value(&[0])
    }

    #[test]
    fn the_loss_scaler_skips_an_overflowing_step_and_halves() {
        let (vs, mut opt) = one_weight();
        let mut stepper = Stepper::scaled(LossScale::default());
        let w = vs.variables()["w"].shallow_clone();
        // A gradient that overflows once scaled (as fp16's would): inf after the scale.
        let loss = (&w * f64::MAX).sum(tch::Kind::Float);
        assert!(
            !stepper.step(&mut opt, &loss, true).unwrap(),
            "the step is skipped"
        );
        assert_eq!(weight(&vs), 1.0, "a skipped step leaves the weights alone");
        let s = stepper.loss_scale().unwrap();
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
        // A non-finite loss is skipped the same way, whatever its gradients.
        let loss = (&w * 2.0).sum(tch::Kind::Float);
        assert!(!stepper.step(&mut opt, &loss, false).unwrap());
        assert_eq!(stepper.loss_scale().unwrap().scale, 16384.0);
        // A good step is applied with the unscaled gradient: w ← 1 − 0.5 · 2.
        assert!(stepper.step(&mut opt, &loss, true).unwrap());
        assert!((weight(&vs) - 0.0).abs() < 1e-6, "{}", weight(&vs));
        let s = stepper.loss_scale().unwrap();
        assert_eq!((s.scale, s.good_steps), (16384.0, 1));
    }

    #[test]
    fn the_loss_scale_grows_after_a_run_of_good_steps_and_never_drops_below_one() {
        let (vs, mut opt) = one_weight();
        let w = vs.variables()["w"].shallow_clone();
        let mut stepper = Stepper::scaled(LossScale {
            scale: 4.0,
            good_steps: 999,
        });
        let loss = (&w * 0.0).sum(tch::Kind::Float);
        assert!(stepper.step(&mut opt, &loss, true).unwrap());
        let s = stepper.loss_scale().unwrap();
        assert_eq!(
            (s.scale, s.good_steps),
            (8.0, 0),
            "doubled after 1000 good steps"
        );
        let mut low = Stepper::scaled(LossScale {
            scale: 1.0,
            good_steps: 0,
        });
        assert!(!low.step(&mut opt, &loss, false).unwrap());
        assert_eq!(low.loss_scale().unwrap().scale, 1.0);
        // f32 and bf16 runs on CPU do not scale at all.
        assert!(Stepper::new(Precision::Fp16, Device::Cpu)
            .loss_scale()
            .is_none());
    }

    #[test]
    fn the_step_plan_caps_steps_and_rounds_the_warm_up() {
        let cfg = TrainConfig {
            epochs: 3,
            warmup_epochs: 0.5,
            max_steps_per_epoch: Some(5),
            ..TrainConfig::default()
        };
        let plan = StepPlan::new(&cfg, 9);
        assert_eq!(
            plan,
            StepPlan {
                steps_per_epoch: 5,
                warmup: 3,
                total: 15
            }
        );
        // An empty loader still takes one step per epoch.
        assert_eq!(StepPlan::new(&cfg, 0).steps_per_epoch, 1);
    }
}
