//! Training refuses what cannot work before it starts, and its checkpoints always read
//! back: a held-out split too small to evaluate fails before the first epoch (nothing
//! written), and a checkpoint holding "no best threshold / no best score yet" (written as
//! `null` by older versions for ±∞) resumes.

mod common;

use std::sync::{Arc, Mutex};

use facepipe_training::data::SplitConfig;
use facepipe_training::trainer::{
    self, Arch, Init, Phase, RunOptions, TrainConfig, TrainProgress, CHECKPOINT_DIR,
};
use facepipe_training::Error;

fn cpu() -> RunOptions {
    RunOptions::on(tch::Device::Cpu)
}

fn scratch(epochs: usize, split: SplitConfig) -> TrainConfig {
    TrainConfig {
        arch: Arch::Mobilefacenet,
        init: Init::Scratch,
        epochs,
        batch: 8,
        lr: 0.05,
        warmup_epochs: 0.5,
        split,
        patience: 0,
        max_steps_per_epoch: Some(2),
        ..TrainConfig::default()
    }
}

#[test]
fn a_test_split_of_one_person_fails_before_the_first_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=8, 3).unwrap();
    let out = tmp.path().join("model");
    let cfg = scratch(
        3,
        SplitConfig {
            val: 2.0,
            test: 0.1,
            seed: 0,
        },
    );
    let err = trainer::train(&data, &out, &cfg, &cpu())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--test-people 0.1 of 8 identities is 1 person")
            && err.contains("--test-people 2 or more"),
        "{err}"
    );
    assert!(
        !out.join(CHECKPOINT_DIR).exists(),
        "nothing is written for a run that cannot evaluate"
    );
}

#[test]
fn a_checkpoint_with_no_best_threshold_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=6, 4).unwrap();
    let out = tmp.path().join("model");
    let split = SplitConfig {
        val: 2.0,
        test: 0.0,
        seed: 0,
    };
    let reports: Arc<Mutex<Vec<TrainProgress>>> = Arc::default();
    let recorder = Arc::clone(&reports);
    let recording = RunOptions {
        progress: Some(Arc::new(move |p: &TrainProgress| {
            recorder.lock().unwrap().push(p.clone())
        })),
        ..cpu()
    };
    let first = trainer::train(&data, &out, &scratch(1, split), &recording).unwrap();
    assert_eq!(first.state.completed_epochs, 1);
    // The run reported each step and its epoch's end, in order, and printed nothing itself.
    let reports = reports.lock().unwrap().clone();
    let phases: Vec<(Phase, usize)> = reports.iter().map(|p| (p.phase, p.step)).collect();
    assert_eq!(
        phases,
        [
            (Phase::EpochStart, 0),
            (Phase::Step, 1),
            (Phase::Step, 2),
            (Phase::Validating, 0),
            (Phase::EpochEnd, 0),
            (Phase::Finishing, 0),
        ]
    );
    assert!(reports
        .iter()
        .all(|p| (p.epoch, p.epochs, p.steps) == (1, 1, 2)));
    assert!(reports[1].loss.is_some_and(f64::is_finite) && reports[1].lr > 0.0);
    assert_eq!(reports[4].log.as_ref(), Some(&first.state.history[0]));

    // What an older version wrote when validation never beat chance (best threshold +inf)
    // and no epoch had scored yet (best score −inf): both as null.
    let state_path = out.join(CHECKPOINT_DIR).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["history"][0]["val"]["best_threshold"] = serde_json::Value::Null;
    state["best_score"] = serde_json::Value::Null;
    std::fs::write(&state_path, state.to_string()).unwrap();

    let resumed = trainer::train(
        &data,
        &out,
        &scratch(2, split),
        &RunOptions {
            resume: true,
            ..cpu()
        },
    )
    .unwrap();
    assert_eq!(resumed.state.completed_epochs, 2);
    // The resumed epoch scored, so there is a best score again, and every file reads back.
    assert!(resumed.best_score.is_some_and(f64::is_finite));
    let text = std::fs::read_to_string(&state_path).unwrap();
    let back: trainer::TrainState = serde_json::from_str(&text).unwrap();
    assert_eq!(back.completed_epochs, 2);
    assert_eq!(
        back.early_stop.best_epoch,
        resumed.state.early_stop.best_epoch
    );
    assert!(back.early_stop.best_score.is_some());
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert!(model["threshold"].as_f64().is_some_and(f64::is_finite));
}

#[test]
fn resume_and_stop_mistakes_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=4, 2).unwrap();
    let out = tmp.path().join("model");
    let split = SplitConfig {
        val: 0.0,
        test: 0.0,
        seed: 0,
    };
    let cfg = scratch(1, split);
    let stop_now = RunOptions {
        stop_after: Some(0),
        ..cpu()
    };
    let err = trainer::train(&data, &out, &cfg, &stop_now).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadSetting {
                setting: "stop_after",
                ..
            }
        ),
        "{err:?}"
    );
    let resume = RunOptions {
        resume: true,
        ..cpu()
    };
    let err = trainer::train(&data, &out, &cfg, &resume).unwrap_err();
    match &err {
        Error::NoCheckpoint { path } => {
            assert_eq!(path, &out.join(CHECKPOINT_DIR).join("state.json"))
        }
        other => panic!("{other:?}"),
    }
    // The library names no command-line flag.
    assert!(!err.to_string().contains("--"), "{err}");
}
