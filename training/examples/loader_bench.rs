//! Loader throughput: JPEG decode + augmentation + normalisation of aligned 150 px crops, in
//! images per second, on one core and on every core, with decode-only as the baseline in the
//! same run. Projects the per-core figure to 16 cores (the GPU machines' CPU count) and writes
//! the result as JSON.
//!
//! ```text
//! cargo run --release -p facepipe-training --example loader_bench -- bench/results/loader.json
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use facepipe_training::augment::{render, AugmentConfig, Draw, InputSpec};
use facepipe_training::data::{FaceSet, Loader, LoaderConfig};
use rand::SeedableRng;
use rayon::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Images per second of `work` over every item, run `reps` times in `pool`; median.
fn rate(pool: &rayon::ThreadPool, n: usize, reps: usize, work: &(dyn Fn(usize) + Sync)) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        pool.install(|| (0..n).into_par_iter().for_each(work));
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/results/loader.json".into());
    let tmp = tempfile::tempdir()?;
    common::write_orl_dataset(tmp.path(), 1..=40, 10)?;
    let faces = FaceSet::load(tmp.path())?;
    let items = &faces.items;
    let n = items.len();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let reps = 5;
    let spec_m = InputSpec::mobilefacenet();
    let spec_r = InputSpec::pretrained_resnet();
    let aug = AugmentConfig::default();

    let decode = |i: usize| {
        let img = image::load_from_memory(&items[i].jpeg).map(|i| i.to_rgb8());
        std::hint::black_box(img.is_ok());
    };
    let full = |spec: &InputSpec, i: usize| {
        if let Ok(img) = image::load_from_memory(&items[i].jpeg) {
            let img = img.to_rgb8();
            let draw = Draw::sample(&aug, &mut rand::rngs::StdRng::seed_from_u64(i as u64));
            let mut buf = vec![0f32; spec.chw_len()];
            render(&img, spec, &draw, &mut buf);
            std::hint::black_box(&buf);
        }
    };
    let mut results = serde_json::Map::new();
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let d = rate(&pool, n, reps, &decode);
        let m = rate(&pool, n, reps, &|i| full(&spec_m, i));
        let r = rate(&pool, n, reps, &|i| full(&spec_r, i));
        println!(
            "{threads:>2} thread(s): decode only {d:>8.0} img/s | decode+augment 112 px {m:>8.0} img/s ({:.2}× of decode) | 150 px {r:>8.0} img/s",
            m / d
        );
        results.insert(
            format!("threads_{threads}"),
            serde_json::json!({
                "decode_only_img_per_s": d,
                "decode_augment_112_img_per_s": m,
                "decode_augment_150_img_per_s": r,
                "augment_cost_ratio_112": m / d,
            }),
        );
    }
    // The whole loader (order, rayon, tensors, prefetch thread) at batch 64 on every core.
    let subset = faces.subset(&faces.counts().keys().cloned().collect::<Vec<_>>());
    let loader = Loader::new(
        subset,
        LoaderConfig {
            augment: Some(aug),
            shuffle: true,
            ..LoaderConfig::eval(64, spec_m.clone(), tch::Device::Cpu)
        },
    )?;
    let mut loader_rates = Vec::new();
    for epoch in 0..reps as u64 {
        let t = Instant::now();
        let mut count = 0;
        for b in loader.epoch(epoch) {
            count += b?.indices.len();
        }
        loader_rates.push(count as f64 / t.elapsed().as_secs_f64());
    }
    let loader_rate = median(loader_rates);
    let per_core = results["threads_1"]["decode_augment_112_img_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    let projected = per_core * 16.0;
    println!("loader (batch 64, {cores} threads, prefetch): {loader_rate:.0} img/s");
    println!(
        "per core {per_core:.0} img/s → projected on 16 cores: {projected:.0} img/s (target ≥ 4000: {})",
        if projected >= 4000.0 { "met" } else { "NOT met" }
    );
    let report = serde_json::json!({
        "bench": "loader: JPEG decode + augmentation (flip, scale/shift, colour jitter, greyscale) + normalisation",
        "command": "scripts/bench/train.sh loader",
        "images": n,
        "crop": "150x150 JPEG q95 (ORL faces resized)",
        "repetitions": reps,
        "statistic": "median",
        "cores": cores,
        "results": results,
        "loader_batch64_all_threads_img_per_s": loader_rate,
        "per_core_img_per_s": per_core,
        "projected_16_cores_img_per_s": projected,
        "target_16_cores_img_per_s": 4000,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {out}");
    Ok(())
}
