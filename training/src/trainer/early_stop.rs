//! Early stopping: which epoch scored best so far, and when to give up waiting for a better
//! one. Saved inside [`super::TrainState`], so a resumed run keeps counting.

use serde::{Deserialize, Serialize};

/// Best epoch and patience bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// The epoch (1-based) whose weights are kept (`best.safetensors`).
    pub best_epoch: Option<usize>,
    /// Score of the best epoch so far; `None` before any epoch scored a finite value.
    /// (Checkpoints written before this was optional hold `null` here for "none yet".)
    #[serde(default)]
    pub best_score: Option<f64>,
    pub epochs_without_improvement: usize,
    pub stopped_early: bool,
}

/// What one epoch's score means for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A new best: keep this epoch's weights.
    Improved,
    /// No better than the best; keep training.
    NoBetter,
    /// No better for `patience` epochs in a row: stop.
    Stop,
}

impl EarlyStop {
    /// Record `epoch`'s `score` (higher is better) under `patience` (0: never stop).
    /// A non-finite score never becomes the best (and never reaches `state.json`).
    pub fn record(&mut self, epoch: usize, score: f64, patience: usize) -> Verdict {
        if score.is_finite() && self.best_score.is_none_or(|best| score > best) {
            self.best_score = Some(score);
            self.best_epoch = Some(epoch);
            self.epochs_without_improvement = 0;
            return Verdict::Improved;
        }
        self.epochs_without_improvement += 1;
        if patience > 0 && self.epochs_without_improvement >= patience {
            self.stopped_early = true;
            return Verdict::Stop;
        }
        Verdict::NoBetter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_a_better_score() {
        let mut e = EarlyStop::default();
        assert_eq!(e.record(1, 0.5, 2), Verdict::Improved);
        assert_eq!(e.record(2, 0.5, 2), Verdict::NoBetter);
        assert_eq!(e.record(3, 0.7, 2), Verdict::Improved);
        assert_eq!(e.record(4, 0.6, 2), Verdict::NoBetter);
        assert!(!e.stopped_early);
        assert_eq!(e.record(5, f64::NAN, 2), Verdict::Stop);
        assert!(e.stopped_early);
        assert_eq!((e.best_epoch, e.best_score), (Some(3), Some(0.7)));
    }

    #[test]
    fn never_stops_without_patience_and_never_keeps_a_non_finite_score() {
        let mut e = EarlyStop::default();
        for epoch in 1..=10 {
            assert_eq!(e.record(epoch, f64::INFINITY, 0), Verdict::NoBetter);
        }
        assert_eq!(e.best_score, None);
        assert_eq!(e.epochs_without_improvement, 10);
        assert_eq!(e.record(11, -3.0, 0), Verdict::Improved);
    }
}
