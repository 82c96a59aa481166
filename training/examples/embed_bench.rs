//! Embedding micro-benchmark: ms per face of the pretrained network (preprocessing included)
//! at batch 1 and 16, on 1 and 2 libtorch threads, median and p95 over repeated passes, with
//! the numpy reference's per-face time (measured by scripts/bench/embed.sh in the same run)
//! as the baseline. Writes JSON to --out.
//!
//!   cargo run --release -p facepipe-training --example embed_bench -- \
//!       --out bench/results/embed.json --baseline bench/results/embed_reference.json CROP...

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use facepipe_model::Embedder;
use facepipe_pipeline::ModelDir;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let mut out = PathBuf::from("bench/results/embed.json");
    let mut baseline: Option<PathBuf> = None;
    let mut rounds = 5usize;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().context("--out needs a path")?.into(),
            "--baseline" => baseline = Some(args.next().context("--baseline needs a path")?.into()),
            "--rounds" => rounds = args.next().context("--rounds needs a number")?.parse()?,
            _ => files.push(PathBuf::from(a)),
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        "give face crops (e.g. the 150 px John chips) to embed"
    );
    let crops: Vec<image::RgbImage> = files
        .iter()
        .map(|f| {
            Ok(image::open(f)
                .with_context(|| format!("{}", f.display()))?
                .to_rgb8())
        })
        .collect::<anyhow::Result<_>>()?;
    let models = ModelDir::locate(None)?;
    let embedder = Embedder::pretrained(&models, tch::Device::Cpu)?.with_batch_size(16);

    let mut results = Vec::new();
    for threads in [1usize, 2] {
        tch::set_num_threads(threads as i32);
        for batch in [1usize, 16] {
            // Warm-up: allocator and libtorch kernels.
            for chunk in crops.chunks(batch).take(2) {
                embedder.embed(chunk)?;
            }
            let mut per_face = Vec::new();
            for _ in 0..rounds {
                for chunk in crops.chunks(batch) {
                    let t = Instant::now();
                    embedder.embed(chunk)?;
                    per_face.push(t.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64);
                }
            }
            per_face.sort_by(f64::total_cmp);
            let median = percentile(&per_face, 0.5);
            let p95 = percentile(&per_face, 0.95);
            println!(
                "threads {threads} batch {batch:>2}: {median:6.2} ms/face median, {p95:6.2} p95 ({:.0} faces/s)",
                1e3 / median
            );
            results.push(json!({
                "threads": threads, "batch": batch, "samples": per_face.len(),
                "median_ms_per_face": median, "p95_ms_per_face": p95, "faces_per_s": 1e3 / median,
            }));
        }
    }

    let reference = match &baseline {
        Some(p) => {
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?,
            )?;
            let mut ms: Vec<f64> = v["ms_per_face"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default();
            ms.sort_by(f64::total_cmp);
            Some(percentile(&ms, 0.5))
        }
        None => None,
    };
    let one_thread_b1 = results[0]["median_ms_per_face"]
        .as_f64()
        .unwrap_or(f64::NAN);
    if let Some(r) = reference {
        println!(
            "numpy reference (1 thread): {r:.2} ms/face median; facepipe 1 thread batch 1 is {:.1}× faster",
            r / one_thread_b1
        );
    }
    let report = json!({
        "benchmark": "embed",
        "what": "pretrained 128-d ResNet, CPU, ms per face incl. pad/resize/normalise",
        "crops": crops.len(),
        "rounds": rounds,
        "results": results,
        "baseline": reference.map(|r| json!({
            "name": "numpy reference descriptor, 1 thread",
            "median_ms_per_face": r,
        })),
        "ratios": reference.map(|r| json!({
            "speedup_1thread_batch1_vs_reference": r / one_thread_b1,
            "speedup_1thread_batch16_vs_reference":
                r / results[1]["median_ms_per_face"].as_f64().unwrap_or(f64::NAN),
        })),
        "target_ms_per_face_1thread": 15.0,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", out.display());
    Ok(())
}
