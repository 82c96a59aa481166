//! Training end to end on real faces (ORL people written as a prepared dataset): a short
//! fine-tuning run writes a loadable artifact with metrics and a calibrated threshold, keeps
//! validation AUC within 0.03 of the pretrained start, and lowers its loss; a checkpoint resumes at the saved epoch, and a run stopped and resumed
//! ends with the same weights as one that never stopped (optimiser state included); a sweep
//! runs every grid point and keeps the best by validation score; splits never share a person.

mod common;

use std::path::Path;

use facepipe_model::{DistanceKind, Embedder, InputSpec};
use facepipe_training::data::{
    AugmentOn, FaceSet, IdentitySplit, Loader, LoaderConfig, SplitConfig,
};
use facepipe_training::trainer::{self, sweep, Arch, Init, OptimizerKind, RunOptions, TrainConfig};
use facepipe_training::Error;

fn quick_config() -> TrainConfig {
    TrainConfig {
        arch: Arch::Resnet128,
        init: Init::Pretrained,
        epochs: 3,
        batch: 16,
        lr: 0.01,
        warmup_epochs: 0.5,
        split: SplitConfig {
            val: 3.0,
            test: 3.0,
            seed: 1,
        },
        patience: 0,
        max_steps_per_epoch: Some(3),
        ..TrainConfig::default()
    }
}

fn cpu() -> RunOptions {
    RunOptions::on(tch::Device::Cpu)
}

/// Validation AUC of the pretrained network, before any training, on the people `cfg`'s
/// split holds out for validation.
fn pretrained_validation_auc(data: &Path, cfg: &TrainConfig) -> anyhow::Result<f64> {
    let faces = FaceSet::load(data)?;
    let split = IdentitySplit::new(&faces.counts(), &cfg.split, 2)?;
    let val = faces.subset(&split.val);
    let model = trainer::build_model(cfg, split.train.len(), &cpu())?;
    let emb = trainer::validate::embed_subset(
        model.net.as_ref(),
        &val,
        &cfg.arch.input(),
        16,
        tch::Device::Cpu,
    )?;
    let (genuine, impostor) = trainer::validate::pair_scores(&emb, &val.labels)?;
    Ok(trainer::validate::summarise(&genuine, &impostor).auc)
}

#[test]
fn finetuning_writes_a_loadable_artifact_and_lowers_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=12, 6).unwrap();
    let out = tmp.path().join("model");
    let summary = trainer::train(&data, &out, &quick_config(), &cpu()).unwrap();

    let h = &summary.state.history;
    assert_eq!(h.len(), 3);
    assert!(
        h[2].train_loss < h[0].train_loss,
        "loss did not decrease: {:?}",
        h.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    );
    // Validation ran each epoch on the 3 held-out people (3·C(6,2) genuine pairs).
    let val = h[0].val.unwrap();
    assert_eq!(val.genuine_pairs, 45);
    // The pretrained start already separates these people almost perfectly; a fine-tune that
    // damages the network shows as a drop on the same validation people. The margin (0.03
    // AUC) is above the run-to-run spread of 3 short epochs and far below what a damaged
    // network loses (an untrained one sits near 0.5).
    let start = pretrained_validation_auc(&data, &quick_config()).unwrap();
    assert!(start > 0.9, "pretrained start AUC {start}");
    for e in h {
        let auc = e.val.unwrap().auc;
        assert!(
            auc >= start - 0.03,
            "validation AUC fell from the pretrained {start:.4} to {auc:.4}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    let thr = json["threshold"].as_f64().unwrap();
    assert!(thr > 0.0 && thr < 2.0, "threshold {thr}");
    // The calibration says what it rests on: a few validation people cannot resolve FAR
    // 1e-3, so it sits at one false accept in all their different pairs, and says how many
    // people would resolve the target.
    let t = &json["metrics"]["threshold"];
    assert_eq!(t["value"].as_f64().unwrap() as f32, thr as f32, "{t}");
    let pairs = t["impostor_pairs"].as_u64().unwrap();
    assert!(pairs > 0, "{t}");
    let target = t["target_far"].as_f64().unwrap();
    let calibrated = t["calibrated_far"].as_f64().unwrap();
    assert!(
        (calibrated - target.max(1.0 / pairs as f64)).abs() < 1e-12,
        "{t}"
    );
    assert!(
        t["achieved_far"].as_f64().unwrap() <= calibrated + 1e-12,
        "{t}"
    );
    let resolvable = (pairs as f64) * target >= 1.0;
    assert_eq!(t["resolvable"], resolvable, "{t}");
    if !resolvable {
        let validation_people = json["metrics"]["people"]["validation"].as_u64().unwrap();
        assert!(
            t["people_needed"].as_u64().unwrap() > validation_people,
            "{t}"
        );
        assert!(t["warning"].as_str().unwrap().contains("finer than"), "{t}");
    }
    // Held-out test people evaluated with the shared evaluation (10-fold, AUC, rank-1).
    let test = &json["metrics"]["test"];
    assert!(test["roc_auc"].as_f64().unwrap() > 0.5, "{test}");
    assert_eq!(test["accuracy"]["folds"], 10);
    assert_eq!(test["identities"], 3);
    assert!(image::open(out.join("roc.png")).is_ok());
    assert_eq!(json["training"]["arch"], "resnet128");
    assert!(out.join("metrics.json").is_file());
    assert!(image::open(out.join("loss.png")).is_ok());

    // The artifact loads and embeds: two photos of one held-out person are closer than
    // photos of two different people.
    let emb = Embedder::from_artifact(&out, tch::Device::Cpu).unwrap();
    assert_eq!(emb.metric().distance, DistanceKind::Cosine);
    assert_eq!(emb.dim(), 128);
    let faces = FaceSet::load(&data).unwrap();
    let p = &summary.state.split.test;
    let crops: Vec<image::RgbImage> = faces
        .items
        .iter()
        .filter(|it| it.identity == p[0] || it.identity == p[1])
        .map(|it| image::load_from_memory(&it.jpeg).unwrap().to_rgb8())
        .collect();
    let e = emb.embed(&crops).unwrap();
    let m = emb.metric();
    // crops[0..6] are p[0], crops[6..12] are p[1] (shard order).
    assert!(m.distance(&e[0], &e[1]) < m.distance(&e[0], &e[6]));
}

#[test]
fn resume_continues_from_the_saved_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=6, 4).unwrap();
    let out = tmp.path().join("model");
    let cfg = TrainConfig {
        arch: Arch::Mobilefacenet,
        init: Init::Scratch,
        epochs: 1,
        batch: 8,
        split: SplitConfig {
            val: 2.0,
            test: 0.0,
            seed: 0,
        },
        max_steps_per_epoch: Some(2),
        ..quick_config()
    };
    let first = trainer::train(&data, &out, &cfg, &cpu()).unwrap();
    assert_eq!(first.state.completed_epochs, 1);

    // Without --resume the existing checkpoint is refused rather than overwritten.
    let again = TrainConfig {
        epochs: 2,
        ..cfg.clone()
    };
    let err = trainer::train(&data, &out, &again, &cpu()).unwrap_err();
    assert!(
        matches!(&err, Error::CheckpointExists { out: o } if o == &out),
        "{err:?}"
    );

    let resumed = trainer::train(
        &data,
        &out,
        &again,
        &RunOptions {
            resume: true,
            ..cpu()
        },
    )
    .unwrap();
    assert_eq!(resumed.state.completed_epochs, 2);
    assert_eq!(resumed.state.history.len(), 2);
    let (a, b) = (&resumed.state.history[0], &first.state.history[0]);
    assert_eq!((a.epoch, a.steps), (b.epoch, b.steps));
    assert!((a.train_loss - b.train_loss).abs() < 1e-9);
    assert_eq!(resumed.state.history[1].epoch, 2);
    assert_eq!(resumed.state.global_step, 4);

    // A different run's settings cannot resume this checkpoint.
    let other = TrainConfig { lr: 0.5, ..again };
    let err = trainer::train(
        &data,
        &out,
        &other,
        &RunOptions {
            resume: true,
            ..cpu()
        },
    )
    .unwrap_err();
    match &err {
        Error::CheckpointMismatch {
            path,
            what,
            saved,
            requested,
        } => {
            assert_eq!(path, &out.join(trainer::CHECKPOINT_DIR));
            assert_eq!(
                (what.as_str(), saved.as_str(), requested.as_str()),
                ("lr", "0.01", "0.5")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("different settings"), "{err}");
}

#[test]
fn identity_split_and_loader_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=10, 3).unwrap();
    let faces = FaceSet::load(&data).unwrap();
    assert_eq!(faces.items.len(), 30);
    let split = IdentitySplit::new(
        &faces.counts(),
        &SplitConfig {
            val: 0.2,
            test: 0.3,
            seed: 9,
        },
        2,
    )
    .unwrap();
    assert_eq!(
        (split.train.len(), split.val.len(), split.test.len()),
        (5, 2, 3)
    );
    for p in &split.train {
        assert!(!split.val.contains(p) && !split.test.contains(p));
    }
    for p in &split.val {
        assert!(!split.test.contains(p));
    }

    // Augmented training batches: N×3×112×112, finite, inside the normalised 0–255 range.
    let train = faces.subset(&split.train);
    let loader = Loader::new(
        train,
        LoaderConfig {
            balanced: Some(3),
            shuffle: true,
            augment: Some(Default::default()),
            drop_last: true,
            ..LoaderConfig::eval(6, InputSpec::mobilefacenet(), tch::Device::Cpu)
        },
    )
    .unwrap();
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    for b in &batches {
        assert_eq!(b.images.size(), [6, 3, 112, 112]);
        let (lo, hi) = (
            b.images.min().double_value(&[]),
            b.images.max().double_value(&[]),
        );
        assert!(
            lo >= -127.5 / 128.0 - 1e-6 && hi <= 127.5 / 128.0 + 1e-6,
            "{lo}..{hi}"
        );
        // Balanced: two people × three images.
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        assert_eq!(labels[0], labels[2]);
        assert_eq!(labels[3], labels[5]);
    }
    // Same seed and epoch: same pixels; another epoch: other augmentations.
    let again: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert!(batches[0].images.equal(&again[0].images));
    let next: Vec<_> = loader.epoch(1).map(|b| b.unwrap()).collect();
    assert!(!batches[0].images.equal(&next[0].images));

    // The pixels never depend on how many workers make them, and augmenting the decoded
    // batch as tensor ops (the CUDA path, here on the CPU) gives the host's pixels.
    for (workers, augment_on, tolerance) in [
        (1, AugmentOn::Host, 0.0),
        (3, AugmentOn::Host, 0.0),
        (2, AugmentOn::Device, 1e-3),
    ] {
        let other = Loader::new(
            loader.subset().clone(),
            LoaderConfig {
                workers,
                augment_on,
                ..loader.config().clone()
            },
        )
        .unwrap();
        let made: Vec<_> = other.epoch(0).map(|b| b.unwrap()).collect();
        assert_eq!(made.len(), batches.len());
        for (a, b) in batches.iter().zip(&made) {
            assert_eq!(a.indices, b.indices);
            assert!(a.labels.equal(&b.labels));
            let worst = (&a.images - &b.images).abs().max().double_value(&[]);
            assert!(
                worst <= tolerance,
                "{workers} workers, {augment_on:?}: differs by {worst}"
            );
        }
    }
}

/// A small from-scratch run: MobileFaceNet on 6 ORL people (2 for validation), 2 steps an
/// epoch.
fn small_scratch_config(optimizer: OptimizerKind, epochs: usize) -> TrainConfig {
    TrainConfig {
        arch: Arch::Mobilefacenet,
        init: Init::Scratch,
        optimizer,
        lr: if optimizer == OptimizerKind::Adamw {
            1e-3
        } else {
            0.05
        },
        epochs,
        batch: 8,
        split: SplitConfig {
            val: 2.0,
            test: 0.0,
            seed: 0,
        },
        max_steps_per_epoch: Some(2),
        ..quick_config()
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Tolerance of the exact-resume comparison. CPU training here is deterministic (same seed,
/// same batches, same thread count), so the weights agree bit for bit in practice; the bound
/// leaves room for a different summation order in a multithreaded kernel, far below the
/// change that restarting the optimiser state causes (checked below, > 1e-4).
const RESUME_TOLERANCE: f64 = 1e-6;

#[test]
fn a_stopped_and_resumed_run_ends_with_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=6, 4).unwrap();
    for optimizer in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let cfg = small_scratch_config(optimizer, 3);
        let name = format!("{optimizer:?}");
        let straight = tmp.path().join(format!("{name}-straight"));
        let full = trainer::train(&data, &straight, &cfg, &cpu()).unwrap();
        assert_eq!(full.state.completed_epochs, 3);

        // Stop after epoch 1 (as an interruption would), then resume to the end.
        let split = tmp.path().join(format!("{name}-split"));
        let stop = RunOptions {
            stop_after: Some(1),
            ..cpu()
        };
        let first = trainer::train(&data, &split, &cfg, &stop).unwrap();
        assert_eq!(first.state.completed_epochs, 1);
        let ckpt = split.join(trainer::CHECKPOINT_DIR);
        assert!(ckpt.join("optimizer.safetensors").is_file());
        // The same checkpoint without its optimiser state, for the control below.
        let stateless = tmp.path().join(format!("{name}-stateless"));
        copy_dir(&split, &stateless).unwrap();
        std::fs::remove_file(
            stateless
                .join(trainer::CHECKPOINT_DIR)
                .join("optimizer.safetensors"),
        )
        .unwrap();

        let resume = RunOptions {
            resume: true,
            ..cpu()
        };
        let resumed = trainer::train(&data, &split, &cfg, &resume).unwrap();
        assert_eq!(resumed.state.completed_epochs, 3);
        assert_eq!(resumed.state.global_step, full.state.global_step);
        let last = |dir: &Path| dir.join(trainer::CHECKPOINT_DIR).join("last.safetensors");
        let diff = common::max_abs_diff(&last(&straight), &last(&split)).unwrap();
        assert!(
            diff <= RESUME_TOLERANCE,
            "{name}: resumed weights differ from the uninterrupted run by {diff}"
        );
        let opt = |dir: &Path| {
            dir.join(trainer::CHECKPOINT_DIR)
                .join("optimizer.safetensors")
        };
        let opt_diff = common::max_abs_diff(&opt(&straight), &opt(&split)).unwrap();
        assert!(
            opt_diff <= RESUME_TOLERANCE,
            "{name}: optimiser state {opt_diff}"
        );
        for (a, b) in full.state.history.iter().zip(&resumed.state.history) {
            assert!(
                (a.train_loss - b.train_loss).abs() < 1e-5,
                "{name} epoch {}: loss {} vs {}",
                a.epoch,
                a.train_loss,
                b.train_loss
            );
        }

        // Control: without the optimiser state the continuation is measurably different, so
        // the comparison above can fail.
        let restarted = trainer::train(&data, &stateless, &cfg, &resume).unwrap();
        assert_eq!(restarted.state.completed_epochs, 3);
        let control = common::max_abs_diff(&last(&straight), &last(&stateless)).unwrap();
        assert!(
            control > 1e-4,
            "{name}: dropping the optimiser state changed the weights by only {control}"
        );
        eprintln!(
            "{name}: resumed vs straight max |Δw| {diff:e}; without optimiser state {control:e}"
        );
    }
}

#[test]
fn sweep_runs_every_grid_point_and_keeps_the_best_by_validation_score() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=6, 4).unwrap();
    let faces = FaceSet::load(&data).unwrap();
    let base = small_scratch_config(OptimizerKind::Sgd, 1);
    // 2 rates × 2 margins; the two rates are far apart so the runs really differ.
    let grid = sweep::grid_of(&base, &[0.1, 1.0], &[0.2, 0.5]);
    assert_eq!(grid.len(), 4);
    let out = tmp.path().join("sweep-out");
    let mut reported = Vec::new();
    let points = sweep::run(&faces, &out, &grid, &cpu(), 1, |p| {
        reported.push(p.dir.clone())
    })
    .unwrap();
    // Each point was reported as its run ended, in grid order.
    let mut in_grid_order: Vec<_> = points.iter().map(|p| p.dir.clone()).collect();
    in_grid_order.sort();
    assert_eq!(reported, in_grid_order);

    // Every configuration ran, in its own folder, with a score.
    assert_eq!(points.len(), 4);
    let mut ran: Vec<(String, String)> = points
        .iter()
        .map(|p| (format!("{:.4}", p.lr), format!("{:.2}", p.margin)))
        .collect();
    ran.sort();
    let mut want: Vec<(String, String)> = grid
        .iter()
        .map(|c| (format!("{:.4}", c.lr), format!("{:.2}", c.margin)))
        .collect();
    want.sort();
    assert_eq!(ran, want);
    for p in &points {
        assert!(p.error.is_none(), "{:?}", p.error);
        assert!(p.dir.join("model.json").is_file(), "{}", p.dir.display());
        assert_eq!(p.best_epoch, Some(1));
        // The score is the kept epoch's validation metric, as recorded by the run itself.
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.dir.join(trainer::CHECKPOINT_DIR).join("state.json"))
                .unwrap(),
        )
        .unwrap();
        let val = &state["history"][0]["val"];
        let acc = val["best_balanced_accuracy"].as_f64().unwrap();
        let auc = val["auc"].as_f64().unwrap();
        let score = p.score.unwrap();
        assert!(
            (score - (acc + 1e-3 * auc)).abs() < 1e-12,
            "{score} vs {acc}, {auc}"
        );
        assert_eq!(p.validation.unwrap().best_balanced_accuracy, acc);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.dir.join("model.json")).unwrap())
                .unwrap();
        assert!((json["training"]["lr"].as_f64().unwrap() - p.lr).abs() < 1e-12);
        assert!((json["training"]["margin"].as_f64().unwrap() - p.margin).abs() < 1e-12);
    }

    // Best first, and the best is the highest validation score.
    let top = points[0].score.unwrap();
    assert!(points.iter().all(|p| p.score.unwrap() <= top));
    for w in points.windows(2) {
        assert!(w[0].score.unwrap() >= w[1].score.unwrap());
    }

    // The report lists each run with its metric; OUT holds the best run's artifact.
    let report: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(report.len(), 4);
    for (r, p) in report.iter().zip(&points) {
        assert_eq!(r["score"].as_f64(), p.score);
        assert!(r["validation"]["auc"].is_number(), "{r}");
    }
    assert_eq!(
        std::fs::read(out.join("model.json")).unwrap(),
        std::fs::read(points[0].dir.join("model.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(points[0].dir.join("model.safetensors")).unwrap()
    );
}
