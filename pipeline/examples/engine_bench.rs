//! Face-engine benchmark: per-stage milliseconds per image (decode, SSD, tiny, landmarks,
//! align) at 1 and 2 threads on real photos, median and p95, images per second, peak RSS.
//!
//!     cargo run --release -p facepipe-pipeline --example engine_bench -- \
//!         --out bench/results/engine.json [--baseline oracle.json] DIR...
//!
//! Every stage is timed twice: wall clock, and the CPU time of the thread that ran it (from
//! /proc/thread-self/schedstat), which is what an image costs one core even when other
//! work shares the machine. Parallelism is over images (one image per thread), as the prepare workers and the
//! service use the engine. `--baseline` takes the reference implementation's timings
//! (`{"stages": {"detect_ssd": [ms...], ...}}`, written by scripts/bench/engine.sh) and
//! adds median ratios to the report. Run through `scripts/bench/engine.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use facepipe_pipeline::{
    align, image_io, Alignment, Detector, DetectorKind, DetectorOptions, LandmarkNet, Landmarks68,
    ModelDir,
};
use rayon::prelude::*;
use serde_json::{json, Value};

type Timings = BTreeMap<&'static str, (Vec<f64>, Vec<f64>)>;

struct Engines {
    ssd: Detector,
    tiny: Detector,
    landmarks: LandmarkNet,
}

/// CPU time this thread has run, from the kernel's scheduler statistics (ns). On a shared
/// machine wall time includes waiting for a core; CPU time is what one image costs a core.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A stage clock: wall and CPU milliseconds since it started.
struct Clock {
    wall: Instant,
    cpu: u64,
}

fn start() -> Clock {
    Clock {
        wall: Instant::now(),
        cpu: thread_cpu_ns(),
    }
}

impl Clock {
    fn stop(&self, name: &'static str, out: &mut Vec<(&'static str, f64, f64)>) {
        let wall = self.wall.elapsed().as_secs_f64() * 1000.0;
        let cpu = thread_cpu_ns().saturating_sub(self.cpu) as f64 / 1e6;
        out.push((name, wall, cpu));
    }
}

/// All stages on one photo; returns (stage, wall ms, cpu ms) samples.
fn run_one(e: &Engines, path: &Path) -> Vec<(&'static str, f64, f64)> {
    let mut out = Vec::new();
    let t = start();
    let Ok(photo) = image_io::open(path, &Default::default()) else {
        return out;
    };
    t.stop("decode", &mut out);
    let t = start();
    let faces = e.ssd.detect(&photo);
    t.stop("detect_ssd", &mut out);
    let t = start();
    let _ = e.tiny.detect(&photo);
    t.stop("detect_tiny", &mut out);
    let t_image = start();
    for f in &faces {
        let t = start();
        let Some(lm) = e.landmarks.landmarks(&photo, f.bbox) else {
            continue;
        };
        t.stop("landmarks_per_face", &mut out);
        let t = start();
        let _ = align::align(&photo, &lm, Alignment::DlibChip);
        t.stop("align_dlib_chip_per_face", &mut out);
        let t = start();
        let _ = align::align(&photo, &Landmarks68(lm.0.clone()), Alignment::FaceApi);
        t.stop("align_face_api_per_face", &mut out);
    }
    t_image.stop("landmarks_and_align_per_image", &mut out);
    // The engine's default path for one photo: decode + SSD + landmarks + dlib chips.
    let total: f64 = out
        .iter()
        .filter(|s| {
            matches!(
                s.0,
                "decode" | "detect_ssd" | "landmarks_per_face" | "align_dlib_chip_per_face"
            )
        })
        .map(|s| s.2)
        .sum();
    out.push(("engine_default_path_per_image", f64::NAN, total));
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(samples: &[f64]) -> Value {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    json!({
        "n": s.len(),
        "median_ms": percentile(&s, 0.5),
        "p95_ms": percentile(&s, 0.95),
        "mean_ms": s.iter().sum::<f64>() / s.len().max(1) as f64,
    })
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn photos(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if matches!(
            p.extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("jpg" | "jpeg" | "png" | "pgm" | "gif" | "webp" | "bmp")
        ) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut out_path = PathBuf::from("bench/results/engine.json");
    let mut baseline: Option<PathBuf> = None;
    let mut dirs = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out_path = args.next().ok_or("--out needs a path")?.into(),
            "--baseline" => baseline = Some(args.next().ok_or("--baseline needs a path")?.into()),
            "-h" | "--help" => {
                println!("engine_bench [--out FILE] [--baseline ORACLE.json] DIR...");
                return Ok(());
            }
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    let files = photos(&dirs);
    if files.is_empty() {
        return Err("no photos found: pass folders such as assets/sample/people".into());
    }
    let models = ModelDir::locate(None)?;
    let opts = |kind| DetectorOptions {
        kind,
        ..DetectorOptions::default()
    };
    let engines = Engines {
        ssd: Detector::load(&models, opts(DetectorKind::Ssd))?,
        tiny: Detector::load(&models, opts(DetectorKind::Tiny))?,
        landmarks: LandmarkNet::load(&models)?,
    };
    // Warm-up (page in the weights, first allocations).
    let _ = run_one(&engines, &files[0]);

    let mut report = serde_json::Map::new();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let t = Instant::now();
        let samples: Vec<Vec<(&'static str, f64, f64)>> =
            pool.install(|| files.par_iter().map(|p| run_one(&engines, p)).collect());
        let wall = t.elapsed().as_secs_f64();
        let mut timings = Timings::new();
        for s in samples.iter().flatten() {
            let e = timings.entry(s.0).or_default();
            e.0.push(s.1);
            e.1.push(s.2);
        }
        let images = samples.iter().filter(|s| !s.is_empty()).count();
        let stages: serde_json::Map<String, Value> = timings
            .iter()
            .map(|(k, (wall, cpu))| {
                (
                    k.to_string(),
                    json!({ "wall": summary(wall), "cpu": summary(cpu) }),
                )
            })
            .collect();
        println!("threads={threads}: {images} images in {wall:.2} s ({:.2} img/s, all stages incl. both detectors)", images as f64 / wall);
        for (k, v) in &stages {
            let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
            println!(
                "  {k:<32} cpu mean {:>8.2} | cpu median {:>8.2} p95 {:>8.2} ms | wall median {:>8.2} p95 {:>8.2} ms (n={})",
                f(&v["cpu"]["mean_ms"]),
                f(&v["cpu"]["median_ms"]),
                f(&v["cpu"]["p95_ms"]),
                f(&v["wall"]["median_ms"]),
                f(&v["wall"]["p95_ms"]),
                v["cpu"]["n"]
            );
        }
        report.insert(
            format!("threads_{threads}"),
            json!({ "images": images, "wall_s": wall, "images_per_s": images as f64 / wall, "stages": stages }),
        );
    }
    let rss = peak_rss_mib();
    println!("peak RSS {:.1} MiB", rss.unwrap_or(f64::NAN));
    report.insert("peak_rss_mib".into(), json!(rss));
    report.insert("photos".into(), json!(files.len()));
    report.insert(
        "folders".into(),
        json!(dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()),
    );

    if let Some(b) = baseline {
        let base: Value = serde_json::from_str(&std::fs::read_to_string(&b)?)?;
        let mut ratios = serde_json::Map::new();
        let mut base_summary = serde_json::Map::new();
        if let Some(stages) = base["stages"].as_object() {
            for (k, v) in stages {
                let xs: Vec<f64> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                let s = summary(&xs);
                // Means: the kernel counts thread CPU time in scheduler ticks (4 ms here), so
                // per-face medians are quantised; means over many samples are not.
                let ours = &report["threads_1"]["stages"][k.as_str()]["cpu"]["mean_ms"];
                if let (Some(theirs), Some(ours)) = (s["mean_ms"].as_f64(), ours.as_f64()) {
                    println!(
                        "  {k:<32} reference cpu mean {theirs:>8.2} ms, ours {ours:>8.2} ms: {:.1}x faster",
                        theirs / ours
                    );
                    ratios.insert(k.clone(), json!(theirs / ours));
                }
                base_summary.insert(k.clone(), s);
            }
        }
        report.insert(
            "baseline_reference_numpy_1_thread".into(),
            json!({
                "note": "CPU time per stage (thread_time) of the numpy reference, same photos, same run",
                "stages": base_summary,
                "speedup_cpu_mean": ratios,
            }),
        );
    }
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &out_path,
        serde_json::to_string_pretty(&Value::Object(report))?,
    )?;
    println!("wrote {}", out_path.display());
    Ok(())
}
