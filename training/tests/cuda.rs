//! The CUDA path: bf16 and fp16 autocast, the fp16 loss scaler skipping a step whose gradients
//! overflow, and exact resume of a run stopped and continued on the GPU.
//!
//! These need a CUDA device, so they are `#[ignore]`d and `cargo test` lists them as ignored.
//! On a GPU machine run them with
//! `cargo test -p facepipe-training --test cuda -- --ignored` (or `scripts/device_check.sh`,
//! which runs them beside the GPU benchmark). Run without a device they fail and say so,
//! never pass quietly.

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use facepipe_training::autocast::{self, Autocast};
use facepipe_training::trainer::{
    self, Algorithm, Optimizer, OptimizerKind, Precision, RunOptions, Stepper, TrainConfig,
};
use tch::{nn, Device, Kind, Tensor};

/// The first CUDA device; fails the test with what is missing when there is none.
fn cuda() -> Device {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device visible to libtorch ({} devices; is the linked torch a CUDA build and \
         the driver loaded?): these tests run only on a GPU machine",
        tch::Cuda::device_count()
    );
    Device::Cuda(0)
}

#[test]
#[ignore = "needs a CUDA device: cargo test -p facepipe-training --test cuda -- --ignored"]
fn bf16_and_fp16_autocast_cast_matmul_on_cuda_and_restore_the_state() {
    let dev = cuda();
    let before = autocast::state(dev).unwrap();
    assert!(!before.0, "CUDA autocast starts off");
    let x = Tensor::randn([64, 128], (Kind::Float, dev));
    let w = Tensor::randn([32, 128], (Kind::Float, dev));
    for kind in [Kind::BFloat16, Kind::Half] {
        {
            let _g = Autocast::new(dev, kind).unwrap();
            assert_eq!(autocast::state(dev).unwrap(), (true, kind));
            let y = x.matmul(&w.tr());
            assert_eq!(y.kind(), kind, "{kind:?} matmul");
            assert_eq!(x.linear::<Tensor>(&w, None).kind(), kind);
            // The reduced-precision product agrees with the f32 one to its precision.
            let exact = {
                let _off = Autocast::disabled(dev).unwrap();
                x.matmul(&w.tr())
            };
            assert_eq!(exact.kind(), Kind::Float);
            let rel = ((y.to_kind(Kind::Float) - &exact).abs().max() / exact.abs().max())
                .double_value(&[]);
            assert!(rel < 2e-2, "{kind:?}: relative error {rel}");
        }
        assert_eq!(autocast::state(dev).unwrap(), before);
        assert_eq!(x.matmul(&w.tr()).kind(), Kind::Float);
    }
}

#[test]
#[ignore = "needs a CUDA device: cargo test -p facepipe-training --test cuda -- --ignored"]
fn the_fp16_loss_scaler_skips_an_overflowing_step_on_cuda() {
    let dev = cuda();
    let vs = nn::VarStore::new(dev);
    let w = vs.root().var("w", &[1], nn::Init::Const(1.0));
    let sgd = Algorithm::Sgd {
        momentum: 0.0,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut opt = Optimizer::new(sgd, &vs, 0.5).unwrap();
    let mut stepper = Stepper::new(Precision::Fp16, dev);
    let start = stepper.loss_scale().expect("fp16 on CUDA scales the loss");
    let weight = || w.to_device(Device::Cpu).double_value(&[0]);

    // An injected overflow: once scaled, this gradient is inf on the device.
    let loss = (&w * f64::MAX).sum(Kind::Float);
    assert!(!stepper.step(&mut opt, &loss, true).unwrap(), "skipped");
    assert_eq!(weight(), 1.0, "a skipped step leaves the weight alone");
    let halved = stepper.loss_scale().unwrap();
    assert_eq!(halved.scale, start.scale / 2.0);
    assert_eq!(halved.good_steps, 0);

    // A finite step is applied with the unscaled gradient: w ← 1 − 0.5 · 2.
    let loss = (&w * 2.0).sum(Kind::Float);
    assert!(stepper.step(&mut opt, &loss, true).unwrap(), "applied");
    assert!(weight().abs() < 1e-6, "w = {}", weight());
    assert_eq!(stepper.loss_scale().unwrap().good_steps, 1);
}

/// Tolerance of the CUDA resume comparison. cuDNN's backward kernels may sum in a different
/// order from run to run, so the weights need not agree bit for bit as they do on the CPU;
/// the control below (optimiser state dropped) must differ by far more than this.
const CUDA_RESUME_TOLERANCE: f64 = 1e-4;

#[test]
#[ignore = "needs a CUDA device: cargo test -p facepipe-training --test cuda -- --ignored"]
fn a_run_stopped_and_resumed_on_cuda_ends_with_the_uninterrupted_weights() {
    let dev = cuda();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orl");
    common::write_orl_dataset(&data, 1..=6, 4).unwrap();
    for precision in [Precision::Bf16, Precision::Fp16] {
        let cfg = TrainConfig {
            arch: trainer::Arch::Mobilefacenet,
            init: trainer::Init::Scratch,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            epochs: 3,
            batch: 8,
            precision,
            split: facepipe_training::data::SplitConfig {
                val: 2.0,
                test: 0.0,
                seed: 0,
            },
            max_steps_per_epoch: Some(2),
            patience: 0,
            ..TrainConfig::default()
        };
        let on_gpu = RunOptions::on(dev);
        let name = format!("{precision:?}");
        let straight = tmp.path().join(format!("{name}-straight"));
        let full = trainer::train(&data, &straight, &cfg, &on_gpu).unwrap();
        assert_eq!(full.state.completed_epochs, 3);
        assert_eq!(
            full.state.loss_scale.is_some(),
            precision == Precision::Fp16,
            "{name}: only fp16 keeps a loss scale"
        );

        let split = tmp.path().join(format!("{name}-split"));
        let stop = RunOptions {
            stop_after: Some(1),
            ..RunOptions::on(dev)
        };
        trainer::train(&data, &split, &cfg, &stop).unwrap();
        let resume = RunOptions {
            resume: true,
            ..RunOptions::on(dev)
        };
        let resumed = trainer::train(&data, &split, &cfg, &resume).unwrap();
        assert_eq!(resumed.state.completed_epochs, 3);
        assert_eq!(resumed.state.global_step, full.state.global_step);
        assert_eq!(
            resumed.state.loss_scale, full.state.loss_scale,
            "{name}: the loss scale continues"
        );
        let last = |dir: &Path| dir.join(trainer::CHECKPOINT_DIR).join("last.safetensors");
        let diff = common::max_abs_diff(&last(&straight), &last(&split)).unwrap();
        assert!(
            diff <= CUDA_RESUME_TOLERANCE,
            "{name}: resumed weights differ from the uninterrupted run by {diff}"
        );

        // Control: a continuation without the optimiser state is measurably different.
        let stateless = tmp.path().join(format!("{name}-stateless"));
        trainer::train(&data, &stateless, &cfg, &stop).unwrap();
        std::fs::remove_file(
            stateless
                .join(trainer::CHECKPOINT_DIR)
                .join("optimizer.safetensors"),
        )
        .unwrap();
        trainer::train(&data, &stateless, &cfg, &resume).unwrap();
        let control = common::max_abs_diff(&last(&straight), &last(&stateless)).unwrap();
        assert!(
            control > 10.0 * CUDA_RESUME_TOLERANCE,
            "{name}: dropping the optimiser state changed the weights by only {control}"
        );
        eprintln!("{name} on CUDA: resumed vs straight max |Δw| {diff:e}; control {control:e}");
    }
}
