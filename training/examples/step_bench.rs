//! What bounds a CPU training run: the real training loop at batch 32 (MobileFaceNet, 112 px,
//! f32) over the 400 ORL sample faces, at 1 and 2 threads (libtorch threads = loader workers
//! = T), measured four ways in one run:
//!
//! - `loader`: the loader alone, batches taken and dropped;
//! - `no-op step`: the loop with a step that only reads each batch (a sum read to the host);
//! - `model`: the training step alone, repeated on one fixed batch;
//! - `full`: loader and training step together, the loss read every step (as the trainer
//!   does on the CPU).
//!
//! The bound is whichever of loader and model is slower; `full / bound` says how much of it
//! the run keeps. Each figure is the median of 3 repetitions of one epoch, interleaved.
//!
//! With `cuda` the same four figures are taken on the first CUDA device as a GPU run trains:
//! batch 64, bf16 autocast on the backbone, augmentation on the device, pinned batches,
//! the loss read once per repetition (10 epochs), at 1, 2, 4, … loader workers.
//!
//! ```text
//! cargo run --release -p facepipe-training --example step_bench -- bench/results/train_step.json
//! cargo run --release -p facepipe-training --example step_bench -- bench/results/train_step_cuda.json cuda
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use facepipe_training::augment::{AugmentConfig, InputSpec};
use facepipe_training::data::{AugmentOn, FaceSet, Loader, LoaderConfig};
use facepipe_training::trainer::{
    build_model, build_optimizer, train_step, Arch, Init, Precision, RunOptions, Stepper,
    TrainConfig,
};
use tch::{Device, Kind};

const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "bench/results/train_step.json".into());
    let on_cuda = args.get(2).map(String::as_str) == Some("cuda");
    anyhow::ensure!(
        !on_cuda || tch::Cuda::is_available(),
        "`cuda` asks for a CUDA device and libtorch sees none"
    );
    let tmp = tempfile::tempdir()?;
    common::write_orl_dataset(tmp.path(), 1..=40, 10)?;
    let faces = FaceSet::load(tmp.path())?;
    let subset = faces.subset(&faces.counts().keys().cloned().collect::<Vec<_>>());
    let (device, precision, batch, epochs_per_rep, augment_on) = if on_cuda {
        (Device::Cuda(0), Precision::Bf16, 64, 10, AugmentOn::Device)
    } else {
        (Device::Cpu, Precision::F32, 32, 1, AugmentOn::Host)
    };
    let autocast = precision.autocast_kind(device).map(|k| (device, k));
    let cfg = TrainConfig {
        arch: Arch::Mobilefacenet,
        init: Init::Scratch,
        precision,
        ..TrainConfig::default()
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut thread_counts = if on_cuda {
        vec![1, 2, 4, 8, 16]
    } else {
        vec![1, 2]
    };
    thread_counts.retain(|&t| t <= cores);
    // The loss is read on the host once per repetition on CUDA (each read waits for the
    // device), after every step on the CPU (where it costs nothing), as the trainer does.
    let read_each_step = !on_cuda;
    let mut rows = Vec::new();
    for &threads in &thread_counts {
        tch::set_num_threads(threads as i32);
        let loader = Loader::new(
            subset.clone(),
            LoaderConfig {
                augment: Some(AugmentConfig::default()),
                shuffle: true,
                drop_last: true,
                workers: threads,
                augment_on,
                prefetch: 2 * threads,
                ..LoaderConfig::eval(batch, InputSpec::mobilefacenet(), device)
            },
        )?;
        let model = build_model(&cfg, subset.classes, &RunOptions::on(device))?;
        let mut opt = build_optimizer(&cfg, &model.vs)?;
        let mut stepper = Stepper::new(cfg.precision, device);
        let fixed = loader
            .epoch(0)
            .next()
            .ok_or_else(|| anyhow::anyhow!("no batch"))??;
        let steps = loader.batches_per_epoch() * epochs_per_rep;
        // Warm-up: the first steps allocate libtorch's buffers (and pick CUDA kernels).
        for _ in 0..3 {
            let s = train_step(&model, &mut opt, &mut stepper, autocast, &fixed)?;
            s.loss.double_value(&[]);
        }
        let epochs = |rep: u64| (0..epochs_per_rep as u64).map(move |e| 1 + rep * 100 + e);
        let mut samples: [Vec<f64>; 4] = Default::default();
        for rep in 0..REPS as u64 {
            let t = Instant::now();
            let mut n = 0;
            for epoch in epochs(rep) {
                for b in loader.epoch(epoch) {
                    n += std::hint::black_box(b?).indices.len();
                }
            }
            samples[0].push(n as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            let mut n = 0;
            for epoch in epochs(rep) {
                for b in loader.epoch(epoch) {
                    let b = b?;
                    std::hint::black_box(b.images.sum(Kind::Float).double_value(&[]));
                    n += b.indices.len();
                }
            }
            samples[1].push(n as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            let mut last = None;
            for _ in 0..steps {
                let s = train_step(&model, &mut opt, &mut stepper, autocast, &fixed)?;
                if read_each_step {
                    std::hint::black_box(s.loss.double_value(&[]));
                }
                last = Some(s.loss);
            }
            if let Some(loss) = last {
                std::hint::black_box(loss.double_value(&[]));
            }
            samples[2].push((steps * batch) as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            let mut n = 0;
            let mut last = None;
            for epoch in epochs(rep) {
                for b in loader.epoch(epoch) {
                    let b = b?;
                    let s = train_step(&model, &mut opt, &mut stepper, autocast, &b)?;
                    if read_each_step {
                        std::hint::black_box(s.loss.double_value(&[]));
                    }
                    last = Some(s.loss);
                    n += b.indices.len();
                }
            }
            if let Some(loss) = last {
                std::hint::black_box(loss.double_value(&[]));
            }
            samples[3].push(n as f64 / t.elapsed().as_secs_f64());
        }
        let [load, noop, alone, full] = samples.map(median);
        let (bound, by) = if load < alone {
            (load, "loader")
        } else {
            (alone, "model")
        };
        println!(
            "{threads} thread(s): loader {load:>6.0} | no-op step {noop:>6.0} | model {alone:>6.0} | full {full:>6.0} img/s → bound by the {by}; full / bound = {:.2}",
            full / bound
        );
        rows.push(serde_json::json!({
            "threads": threads,
            "loader": load,
            "noop_step": noop,
            "model_step": alone,
            "full_step": full,
            "bound_by": by,
            "full_over_bound": full / bound,
        }));
    }
    let report = serde_json::json!({
        "bench": "training loop: loader alone, no-op step, model step alone and the full step",
        "command": if on_cuda { "scripts/bench/train.sh step-cuda" } else { "scripts/bench/train.sh step" },
        "device": format!("{device:?}"),
        "arch": cfg.arch.name(),
        "precision": format!("{precision:?}").to_lowercase(),
        "augment_on": augment_on,
        "batch": batch,
        "epochs_per_repetition": epochs_per_rep,
        "images": subset.len(),
        "repetitions": REPS,
        "statistic": "median",
        "unit": "img/s",
        "cores": cores,
        "rows": rows,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {out}");
    Ok(())
}
