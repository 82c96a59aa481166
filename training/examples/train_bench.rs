//! Training-step throughput of a backbone + ArcFace head (1,000 classes) on random inputs:
//! forward (backbone under autocast, head in f32), loss, backward and SGD update, timed after
//! warm-up with a device sync on each side, in images per second. The same model and step
//! are in scripts/bench/train_torch.py (PyTorch eager) for the side-by-side comparison that
//! scripts/bench/train.sh gpu runs. Precision: bf16 (default), fp16 (with loss scaling) or
//! f32; CPU runs are always f32.
//!
//! ```text
//! cargo run --release -p facepipe-training --example train_bench -- ARCH BATCH STEPS bf16|fp16|f32 [JSON]
//! ```

use std::time::Instant;

use facepipe_training::autocast::Autocast;
use facepipe_training::trainer::{
    build_model, build_optimizer, Arch, Init, Precision, RunOptions, Stepper, TrainConfig,
};
use tch::{Device, Kind, Tensor};

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arch: Arch = args
        .get(1)
        .map_or("mobilefacenet", String::as_str)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let batch: i64 = args.get(2).map_or(Ok(256), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let precision: Precision = args
        .get(4)
        .map_or("bf16", String::as_str)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let device = Device::cuda_if_available();
    // As the binary does: FACEPIPE_THREADS, else the cores this process may use.
    facepipe_model::set_threads(
        std::env::var("FACEPIPE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok()),
    );
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let cfg = TrainConfig {
        arch,
        init: Init::Scratch,
        precision,
        ..TrainConfig::default()
    };
    let classes = 1000;
    let model = build_model(&cfg, classes, &RunOptions::on(device))?;
    let mut opt = build_optimizer(&cfg, &model.vs)?;
    let s = i64::from(cfg.arch.input_size());
    let x = Tensor::randn([batch, 3, s, s], (Kind::Float, device));
    let y = Tensor::randint(classes as i64, [batch], (Kind::Int64, device));
    let mut stepper = Stepper::new(precision, device);
    let autocast = precision.autocast_kind(device);
    let mut run = |n: usize| -> anyhow::Result<()> {
        for _ in 0..n {
            let e = {
                let _cast = autocast.map(|k| Autocast::new(device, k)).transpose()?;
                model.net.forward_t(&x, true)
            };
            let out = model.head.forward(&e.to_kind(Kind::Float), &y);
            stepper.step(&mut opt, &out.loss, true)?;
        }
        Ok(())
    };
    run(3)?;
    sync(device);
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        run(steps)?;
        sync(device);
        rates.push(batch as f64 * steps as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[1];
    let report = serde_json::json!({
        "impl": "facepipe (tch)",
        "arch": cfg.arch.name(),
        "batch": batch,
        "steps": steps,
        "precision": precision.effective(device).name(),
        "device": format!("{device:?}"),
        "img_per_s_median_of_3": median,
        "img_per_s_all": rates,
    });
    println!("{report}");
    if let Some(path) = args.get(5) {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
