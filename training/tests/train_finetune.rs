//! Training end to end on real faces (ORL people written as a prepared dataset): a short
//! fine-tuning run writes a loadable artifact with metrics and a calibrated threshold and
//! lowers its loss; a checkpoint resumes at the saved epoch; splits never share a person.

mod common;

use facepipe_training::data::{FaceSet, IdentitySplit, Loader, LoaderConfig, SplitConfig};
use facepipe_training::trainer::{self, Arch, Init, RunOptions, TrainConfig};
use facepipe_training::{DistanceKind, Embedder, InputSpec};

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
    RunOptions {
        device: tch::Device::Cpu,
        models: None,
        resume: false,
        progress: false,
    }
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
    assert!(val.auc > 0.5, "validation AUC {}", val.auc);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    let thr = json["threshold"].as_f64().unwrap();
    assert!(thr > 0.0 && thr < 2.0, "threshold {thr}");
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
    assert!(err.to_string().contains("--resume"), "{err}");

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
}
