//! How a run reports what it is doing: a callback in [`super::RunOptions`] receives a
//! [`TrainProgress`] at every step and epoch boundary. The library draws and prints nothing;
//! the CLI turns these into its progress bar and messages.

use std::sync::Arc;

use super::epoch::EpochLog;

/// The progress callback (shared by the threads of a sweep, hence `Send + Sync`).
pub type ProgressFn = Arc<dyn Fn(&TrainProgress) + Send + Sync>;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    /// An epoch is about to take its first step.
    EpochStart,
    /// An optimiser step finished (`step` of `steps`; `loss`, `accuracy` are that step's).
    Step,
    /// The epoch's steps are done; the held-out validation people are being scored.
    Validating,
    /// The epoch is complete and checkpointed; `log` holds its figures.
    EpochEnd,
    /// No better validation score for `patience` epochs: the run stops after this epoch.
    EarlyStop {
        patience: usize,
        best_epoch: Option<usize>,
    },
    /// Training is over: calibrating the threshold, testing, writing the artifact.
    Finishing,
}

/// One progress report.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainProgress {
    pub phase: Phase,
    /// The current epoch, 1-based, of `epochs` in the whole run.
    pub epoch: usize,
    pub epochs: usize,
    /// Steps done in this epoch, of `steps` per epoch.
    pub step: usize,
    pub steps: usize,
    /// The last step's loss and accuracy (`None` before the first step; not finite for an
    /// fp16 step the loss scale skipped).
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    /// The learning rate of the last step.
    pub lr: f64,
    /// Training throughput of this epoch so far.
    pub images_per_s: f64,
    /// The finished epoch's figures ([`Phase::EpochEnd`]).
    pub log: Option<EpochLog>,
}

/// Sends reports to the callback, if any.
pub(crate) struct Reporter {
    callback: Option<ProgressFn>,
    epochs: usize,
    steps: usize,
}

impl Reporter {
    pub(crate) fn new(callback: Option<ProgressFn>, epochs: usize, steps: usize) -> Self {
        Self {
            callback,
            epochs,
            steps,
        }
    }

    /// A report of `phase` in `epoch` (1-based) with nothing measured yet (the caller fills
    /// in what it has with struct update syntax).
    pub(crate) fn at(&self, phase: Phase, epoch: usize) -> TrainProgress {
        TrainProgress {
            phase,
            epoch,
            epochs: self.epochs,
            step: 0,
            steps: self.steps,
            loss: None,
            accuracy: None,
            lr: 0.0,
            images_per_s: 0.0,
            log: None,
        }
    }

    pub(crate) fn send(&self, progress: TrainProgress) {
        if let Some(callback) = &self.callback {
            callback(&progress);
        }
    }
}
