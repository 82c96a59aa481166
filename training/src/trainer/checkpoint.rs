//! The resumable state of a run, in `OUT/checkpoint`, rewritten after every epoch:
//! `last.safetensors` (all variables, head and batch-norm statistics included),
//! `optimizer.safetensors` (momentum buffers or Adam moments and step counts, see
//! [`super::optim`]), `best.safetensors` (the best epoch so far) and `state.json`
//! ([`TrainState`]: config, split, epoch, history, loss scale). Together they let a resumed
//! run continue exactly where the run stopped; [`Checkpoint::open`] refuses to resume a
//! checkpoint made with other settings or data.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn;

use super::early_stop::EarlyStop;
use super::epoch::{EpochLog, LossScale};
use super::optim::Optimizer;
use super::TrainConfig;
use crate::data::IdentitySplit;
use crate::error::{Error, Result};

/// Folder inside OUT holding the resumable state.
pub const CHECKPOINT_DIR: &str = "checkpoint";
pub(crate) const STATE_FILE: &str = "state.json";
const LAST_WEIGHTS: &str = "last.safetensors";
const BEST_WEIGHTS: &str = "best.safetensors";
const OPTIMIZER_STATE: &str = "optimizer.safetensors";

/// What is saved in the checkpoint folder besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub config: TrainConfig,
    pub split: IdentitySplit,
    pub classes: usize,
    pub completed_epochs: usize,
    pub global_step: usize,
    /// Best epoch, best score and patience (flattened: `best_epoch`, `best_score`,
    /// `epochs_without_improvement`, `stopped_early` at the top of `state.json`).
    #[serde(flatten)]
    pub early_stop: EarlyStop,
    pub history: Vec<EpochLog>,
    /// fp16 loss scale at the end of the last completed epoch.
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

impl TrainState {
    /// The state of a run that has not trained yet.
    pub fn new(config: &TrainConfig, split: &IdentitySplit, classes: usize) -> Self {
        Self {
            config: config.clone(),
            split: split.clone(),
            classes,
            completed_epochs: 0,
            global_step: 0,
            early_stop: EarlyStop::default(),
            history: Vec::new(),
            loss_scale: None,
        }
    }
}

/// The checkpoint folder of one run.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoint of the run writing into `out` (nothing is read or created).
    pub fn of(out: &Path) -> Self {
        Self {
            dir: out.join(CHECKPOINT_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn optimizer_path(&self) -> PathBuf {
        self.dir.join(OPTIMIZER_STATE)
    }

    /// Create the folder and return the state the run starts from: the saved one when
    /// `resume` (refusing a missing checkpoint or one made with other settings or data;
    /// only `epochs` and `patience` may change), else a fresh one (refusing to overwrite an
    /// existing checkpoint).
    pub fn open(
        out: &Path,
        cfg: &TrainConfig,
        split: &IdentitySplit,
        classes: usize,
        resume: bool,
    ) -> Result<(Self, TrainState)> {
        let ckpt = Self::of(out);
        std::fs::create_dir_all(&ckpt.dir).map_err(|e| Error::io(&ckpt.dir, e))?;
        let state_path = ckpt.state_path();
        if !resume {
            if state_path.exists() {
                return Err(Error::CheckpointExists {
                    out: out.to_path_buf(),
                });
            }
            return Ok((ckpt, TrainState::new(cfg, split, classes)));
        }
        if !state_path.is_file() {
            return Err(Error::NoCheckpoint { path: state_path });
        }
        let mut state: TrainState = read_json(&state_path)?;
        ckpt.check_resumable(&state, cfg, split)?;
        state.config = cfg.clone();
        Ok((ckpt, state))
    }

    /// Refuse to continue `saved` with `cfg` on `split` unless only `epochs` and `patience`
    /// differ.
    fn check_resumable(
        &self,
        saved: &TrainState,
        cfg: &TrainConfig,
        split: &IdentitySplit,
    ) -> Result<()> {
        let mut resumable = saved.config.clone();
        resumable.epochs = cfg.epochs;
        resumable.patience = cfg.patience;
        let (what, saved_text, requested_text) = if resumable != *cfg {
            let saved_json = facepipe_model::json::to_value(&resumable)
                .map_err(|e| Error::json("the saved training config", e))?;
            let requested_json = facepipe_model::json::to_value(cfg)
                .map_err(|e| Error::json("the training config", e))?;
            first_difference("", &saved_json, &requested_json)
                .unwrap_or_else(|| ("settings".into(), "other".into(), "different".into()))
        } else if saved.split != *split {
            split_difference(&saved.split, split)
        } else {
            return Ok(());
        };
        Err(Error::CheckpointMismatch {
            path: self.dir.clone(),
            what,
            saved: saved_text,
            requested: requested_text,
        })
    }

    /// Load the last epoch's variables (model and head) into `vs`.
    pub fn restore_weights(&self, vs: &mut nn::VarStore) -> Result<()> {
        Ok(vs.load(self.dir.join(LAST_WEIGHTS))?)
    }

    /// Load the optimiser state into `opt`. A checkpoint written before optimiser state was
    /// saved is still usable, but the momentum or Adam moments restart from zero (logged).
    pub fn restore_optimizer(&self, opt: &mut Optimizer) -> Result<()> {
        let path = self.optimizer_path();
        if path.is_file() {
            return opt.load(&path);
        }
        tracing::warn!(
            "{} is missing: resuming with fresh optimiser state (not an exact continuation)",
            path.display()
        );
        Ok(())
    }

    /// Save a finished epoch: weights and optimiser state first, the best weights when
    /// `improved`, `state.json` last (it is what says the epoch is done). Every file is
    /// written through a temporary and renamed, so a crash never leaves a torn one.
    pub fn save_epoch(
        &self,
        vs: &nn::VarStore,
        opt: &Optimizer,
        state: &TrainState,
        improved: bool,
    ) -> Result<()> {
        write_atomic(&self.dir.join(LAST_WEIGHTS), |p| Ok(vs.save(p)?))?;
        write_atomic(&self.optimizer_path(), |p| opt.save(p))?;
        if improved {
            write_atomic(&self.dir.join(BEST_WEIGHTS), |p| Ok(vs.save(p)?))?;
        }
        write_atomic(&self.state_path(), |p| write_json(p, state))
    }

    /// Load the best epoch's variables into `vs` (left as they are when no epoch scored).
    pub fn restore_best(&self, vs: &mut nn::VarStore) -> Result<()> {
        let best = self.dir.join(BEST_WEIGHTS);
        if best.is_file() {
            vs.load(&best)?;
        }
        Ok(())
    }
}

/// The first leaf where two JSON values differ, as (dotted path, saved, requested).
fn first_difference(
    at: &str,
    saved: &serde_json::Value,
    requested: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    if saved == requested {
        return None;
    }
    if let (Value::Object(a), Value::Object(b)) = (saved, requested) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        return keys.into_iter().find_map(|k| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            let (a, b) = (
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null),
            );
            first_difference(&path, a, b)
        });
    }
    Some((at.to_string(), saved.to_string(), requested.to_string()))
}

/// Which list of people differs between two splits, and how.
fn split_difference(saved: &IdentitySplit, requested: &IdentitySplit) -> (String, String, String) {
    let lists = [
        ("split.train", &saved.train, &requested.train),
        ("split.val", &saved.val, &requested.val),
        ("split.test", &saved.test, &requested.test),
    ];
    let (name, a, b) = lists.into_iter().find(|(_, a, b)| a != b).unwrap_or((
        "split",
        &saved.train,
        &requested.train,
    ));
    let describe = |people: &[String], other: &[String]| {
        let first_new = people.iter().find(|p| !other.contains(p));
        match first_new {
            Some(p) => format!("{} people (with {p})", people.len()),
            None => format!("{} people", people.len()),
        }
    };
    (name.to_string(), describe(a, b), describe(b, a))
}

/// Write `value` as JSON, refusing NaN and ±∞ (they would read back as `null` and break
/// resuming).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = facepipe_model::json::to_string_pretty(value)
        .map_err(|e| Error::json(path.display().to_string(), e))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path.display().to_string(), e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::validate::{self, PairSummary};

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
            early_stop: EarlyStop {
                best_epoch: best_score.map(|_| 1),
                best_score,
                epochs_without_improvement: 0,
                stopped_early: false,
            },
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
        assert_eq!(back.early_stop.best_score, None);
    }

    #[test]
    fn the_state_file_keeps_its_flat_layout() {
        // The early-stopping fields sit at the top of state.json, as they always have, so
        // checkpoints of earlier versions resume (one without `best_score` included).
        let state = state_with(PairSummary::default(), Some(0.5), 1.5);
        let mut json = serde_json::to_value(&state).unwrap();
        for key in [
            "best_epoch",
            "best_score",
            "epochs_without_improvement",
            "stopped_early",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert!(json.get("early_stop").is_none());
        json.as_object_mut().unwrap().remove("best_score");
        let back: TrainState = serde_json::from_value(json).unwrap();
        assert_eq!(back.early_stop.best_score, None);
        assert_eq!(back.early_stop.best_epoch, Some(1));
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

    #[test]
    fn resuming_names_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let saved = state_with(PairSummary::default(), Some(0.5), 1.5);
        let ckpt = Checkpoint::of(dir.path());
        // epochs and patience may change.
        let longer = TrainConfig {
            epochs: 20,
            patience: 0,
            ..saved.config.clone()
        };
        ckpt.check_resumable(&saved, &longer, &saved.split).unwrap();

        let other_lr = TrainConfig {
            lr: 0.5,
            ..longer.clone()
        };
        match ckpt.check_resumable(&saved, &other_lr, &saved.split) {
            Err(Error::CheckpointMismatch {
                what,
                saved,
                requested,
                ..
            }) => assert_eq!(
                (what.as_str(), saved.as_str(), requested.as_str()),
                ("lr", "0.01", "0.5")
            ),
            other => panic!("{other:?}"),
        }
        let no_flip = TrainConfig {
            augment: crate::augment::AugmentConfig::none(),
            ..longer.clone()
        };
        match ckpt.check_resumable(&saved, &no_flip, &saved.split) {
            Err(Error::CheckpointMismatch { what, .. }) => {
                assert!(what.starts_with("augment."), "{what}")
            }
            other => panic!("{other:?}"),
        }
        let other_people = IdentitySplit {
            val: vec!["c".into(), "e".into()],
            ..saved.split.clone()
        };
        match ckpt.check_resumable(&saved, &longer, &other_people) {
            Err(Error::CheckpointMismatch {
                what,
                saved,
                requested,
                ..
            }) => {
                assert_eq!(what, "split.val");
                assert_eq!(saved, "2 people (with d)");
                assert_eq!(requested, "2 people (with e)");
            }
            other => panic!("{other:?}"),
        }
    }
}
