//! Loader throughput on this machine, measured at 1 thread and at every core count up to the
//! cores this process may use (never projected), in images per second of aligned 150 px JPEG
//! crops (the ORL sample faces):
//!
//! - `decode`: JPEG decode alone, each thread decoding its own share into its own buffer;
//! - `decode+augment`: decode, then augmentation and normalisation on the host, at 112 px
//!   (MobileFaceNet) and 150 px (ResNet), the same way — the capacity the threads have —
//!   each image into one cache-resident buffer, and (`into a batch`) into its place in a
//!   batch-sized buffer, which adds the output's memory traffic that any batch must pay;
//! - `loader host`: the real [`Loader`] at batch 64, its workers augmenting on the host;
//! - `loader device`: the real loader with augmentation as batched tensor ops after the
//!   batch is made (on this CPU here; on CUDA it runs on the GPU);
//! - `baseline`: the loader's former recipe (an allocation per decoded crop, a rayon
//!   fork-join per batch) in the same run.
//!
//! Each figure is the median of 7 repetitions of 4 epochs, the variants interleaved. The goals it checks: the loader at
//! 2 workers ≥ 1.8× its 1-worker rate, and ≥ 0.9× of decode+augment summed over the threads.
//!
//! ```text
//! cargo run --release -p facepipe-training --example loader_bench -- bench/results/loader.json
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use facepipe_training::augment::{render, AugmentConfig, Draw, InputSpec};
use facepipe_training::data::decode::CropDecoder;
use facepipe_training::data::{AugmentOn, FaceItem, FaceSet, Loader, LoaderConfig};
use rand::SeedableRng;
use rayon::prelude::*;

const REPS: usize = 7;
const EPOCHS_PER_REP: u64 = 4;
const BATCH: usize = 64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One image's work for a capacity measurement: decoder, output buffer, index, item.
type Work = dyn Fn(&mut CropDecoder, &mut Vec<f32>, usize, &FaceItem) + Sync;

/// Img/s of `work(thread, share)` on `threads` threads, each with its own share of the
/// items (every item `EPOCHS_PER_REP` times).
fn capacity(items: &[FaceItem], threads: usize, work: &Work) -> f64 {
    let n = items.len() * EPOCHS_PER_REP as usize;
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..threads {
            s.spawn(move || {
                let mut decoder = CropDecoder::default();
                let mut buf = Vec::new();
                for i in (k..n).step_by(threads) {
                    work(&mut decoder, &mut buf, i, &items[i % items.len()]);
                }
            });
        }
    });
    n as f64 / t.elapsed().as_secs_f64()
}

/// Img/s of the real loader over `EPOCHS_PER_REP` epochs (repetition `rep`'s).
fn loader_rate(loader: &Loader, rep: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut count = 0;
    for e in 0..EPOCHS_PER_REP {
        for b in loader.epoch(rep * EPOCHS_PER_REP + e) {
            let b = b?;
            std::hint::black_box(&b.images);
            count += b.indices.len();
        }
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// Img/s of the former loader's recipe: a rayon fork-join per batch, a fresh image per crop.
fn baseline_rate(items: &[FaceItem], pool: &rayon::ThreadPool, spec: &InputSpec) -> f64 {
    let aug = AugmentConfig::default();
    let len = spec.chw_len();
    let s = i64::from(spec.size);
    let t = Instant::now();
    let mut count = 0;
    for _ in 0..EPOCHS_PER_REP {
        for chunk in items.chunks(BATCH) {
            let mut buf = vec![0f32; chunk.len() * len];
            pool.install(|| {
                buf.par_chunks_mut(len)
                    .zip(chunk.par_iter().enumerate())
                    .for_each(|(out, (i, item))| {
                        if let Ok(img) = image::load_from_memory(&item.jpeg) {
                            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                            render(&img.to_rgb8(), spec, &Draw::sample(&aug, &mut rng), out);
                        }
                    });
            });
            let t = tch::Tensor::from_slice(&buf).view([chunk.len() as i64, 3, s, s]);
            std::hint::black_box(&t);
            count += chunk.len();
        }
    }
    count as f64 / t.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/results/loader.json".into());
    let tmp = tempfile::tempdir()?;
    common::write_orl_dataset(tmp.path(), 1..=40, 10)?;
    let faces = FaceSet::load(tmp.path())?;
    let items = &faces.items;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let aug = AugmentConfig::default();
    let decode = |d: &mut CropDecoder, _: &mut Vec<f32>, _: usize, item: &FaceItem| {
        std::hint::black_box(d.decode(&item.jpeg, &item.key).is_ok());
    };
    // `slots` images per buffer: 1 keeps the output in cache; BATCH writes each image into
    // its place in a batch-sized buffer, as a loader must (the output's memory traffic).
    let augment = |spec: InputSpec, slots: usize| {
        move |d: &mut CropDecoder, buf: &mut Vec<f32>, i: usize, item: &FaceItem| {
            if let Ok(img) = d.decode(&item.jpeg, &item.key) {
                let draw = Draw::sample(&aug, &mut rand::rngs::StdRng::seed_from_u64(i as u64));
                let len = spec.chw_len();
                buf.resize(slots * len, 0.0);
                let slot = i % slots;
                render(&img, &spec, &draw, &mut buf[slot * len..(slot + 1) * len]);
                std::hint::black_box(&buf);
            }
        }
    };
    let subset = faces.subset(&faces.counts().keys().cloned().collect::<Vec<_>>());
    let mut thread_counts: Vec<usize> = vec![1, 2, cores];
    thread_counts.retain(|&t| t <= cores);
    thread_counts.dedup();
    let mut rows = Vec::new();
    for &threads in &thread_counts {
        // The device path's tensor ops run on libtorch's pool: as many threads as the loader's.
        tch::set_num_threads(threads as i32);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut row = serde_json::Map::new();
        row.insert("threads".into(), threads.into());
        let decoded = median(
            (0..REPS)
                .map(|_| capacity(items, threads, &decode))
                .collect(),
        );
        row.insert("decode".into(), decoded.into());
        let mut line = format!("{threads:>2} thread(s): decode {decoded:>6.0}");
        for spec in [InputSpec::mobilefacenet(), InputSpec::pretrained_resnet()] {
            let px = spec.size;
            let loader = |on| {
                Loader::new(
                    subset.clone(),
                    LoaderConfig {
                        augment: Some(aug),
                        shuffle: true,
                        workers: threads,
                        augment_on: on,
                        prefetch: 2 * threads,
                        ..LoaderConfig::eval(BATCH, spec.clone(), tch::Device::Cpu)
                    },
                )
            };
            let (on_host, on_device) = (loader(AugmentOn::Host)?, loader(AugmentOn::Device)?);
            let (in_cache, in_batch) = (augment(spec.clone(), 1), augment(spec.clone(), BATCH));
            // Each repetition measures every variant once, so a noisy neighbour on a shared
            // machine costs them all alike.
            let mut samples: [Vec<f64>; 5] = Default::default();
            for rep in 0..REPS as u64 {
                samples[0].push(capacity(items, threads, &in_cache));
                samples[1].push(capacity(items, threads, &in_batch));
                samples[2].push(loader_rate(&on_host, rep)?);
                samples[3].push(loader_rate(&on_device, rep)?);
                samples[4].push(baseline_rate(items, &pool, &spec));
            }
            let [cap, cap_batch, host, device, base] = samples.map(median);
            line += &format!(
                " | {px} px: decode+augment {cap:>6.0} (into a batch {cap_batch:>6.0}), loader host {host:>6.0}, device {device:>6.0}, baseline {base:>6.0}"
            );
            row.insert(
                format!("{px}px"),
                serde_json::json!({
                    "decode_augment": cap,
                    "decode_augment_into_batch_buffer": cap_batch,
                    "loader_host_over_decode_augment_into_batch_buffer": host / cap_batch,
                    "loader_host": host,
                    "loader_device": device,
                    "baseline_rayon_alloc_loader": base,
                    "loader_host_over_decode_augment": host / cap,
                    "loader_host_over_baseline": host / base,
                }),
            );
        }
        println!("{line}  (img/s)");
        rows.push(serde_json::Value::Object(row));
    }
    // The goals, from the 1- and 2-thread rows.
    let mut goals = serde_json::Map::new();
    if let (Some(one), Some(two)) = (rows.first(), rows.iter().find(|r| r["threads"] == 2)) {
        for px in ["112px", "150px"] {
            let scaling = two[px]["loader_host"].as_f64().unwrap_or(0.0)
                / one[px]["loader_host"].as_f64().unwrap_or(f64::NAN);
            let share = two[px]["loader_host_over_decode_augment"]
                .as_f64()
                .unwrap_or(0.0);
            println!(
                "{px}: loader 2 workers / 1 worker = {scaling:.2}× (goal ≥ 1.8: {}); loader / decode+augment at 2 threads = {share:.2} (goal ≥ 0.9: {})",
                if scaling >= 1.8 { "met" } else { "NOT met" },
                if share >= 0.9 { "met" } else { "NOT met" },
            );
            goals.insert(
                px.into(),
                serde_json::json!({
                    "loader_2_over_1": scaling,
                    "loader_over_decode_augment_2_threads": share,
                    "goal_scaling": 1.8,
                    "goal_share": 0.9,
                }),
            );
        }
    }
    let report = serde_json::json!({
        "bench": "loader img/s: JPEG decode, decode + host augmentation (flip, scale/shift, colour jitter, greyscale, normalisation), the real loader (host and device augmentation) and the former loader as baseline",
        "command": "scripts/bench/train.sh loader",
        "images": items.len(),
        "crop": "150x150 JPEG (ORL sample faces)",
        "batch": BATCH,
        "repetitions": REPS,
        "epochs_per_repetition": EPOCHS_PER_REP,
        "statistic": "median",
        "cores": cores,
        "unit": "img/s",
        "rows": rows,
        "goals": goals,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {out}");
    Ok(())
}
