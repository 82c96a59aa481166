//! How long `image_io::decode` takes to answer each class of hostile image (the inputs of
//! `tests/tests/hostile_images*.rs`), next to a valid photo of the same format: a refusal
//! should cost about what a header costs, a skipped bomb about what its file size costs.
//!
//!     cargo run --release -p facepipe-tests --example hostile_decode_bench -- \
//!         --out bench/results/hostile_decode.json [--runs 20]
//!
//! Median and p95 wall milliseconds per case, with the outcome and the size on disk.

#![allow(clippy::unwrap_used)] // a benchmark over generated inputs

#[path = "../tests/hostile/mod.rs"]
mod hostile;

use std::path::PathBuf;
use std::time::Instant;

use facepipe_pipeline::image_io::{decode, DecodeLimits};
use hostile::*;
use serde_json::{json, Value};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let mut out = PathBuf::from("bench/results/hostile_decode.json");
    let mut runs = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            other => {
                eprintln!("unknown argument {other}: use --out FILE and --runs N");
                std::process::exit(2);
            }
        }
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("valid_png_640x480", png(640, 480, &[], 0)),
        ("png_iccp_bomb", iccp_bomb()),
        ("png_ztxt_bomb", ztxt_bomb()),
        ("png_itxt_bomb", itxt_bomb()),
        ("png_exif_20mib", exif_over_budget()),
        ("png_idat_bomb_64", idat_bomb_small_header()),
        ("png_idat_bomb_6000", idat_bomb_large_header()),
        ("gif_screen_65535", gif((65535, 65535), (1, 1))),
        ("gif_frame_65535", gif((64, 64), (65535, 65535))),
        ("webp_16000", webp_vp8l(16000, 16000)),
        ("webp_lying_exif", webp_lying_exif()),
        ("bmp_60000", bmp(60000, 60000)),
        ("pnm_60000", pnm(60000, 60000)),
        ("tiff_60000", tiff(60000, 60000)),
        ("jpeg_65000", jpeg_claiming(65000, 65000)),
        ("strip_5000000x8", png(5_000_000, 8, &[], 0)),
        ("wide_20000x2000", png(20_000, 2_000, &[], 0)),
    ];
    let limits = DecodeLimits::default();
    let mut report = serde_json::Map::new();
    for (name, bytes) in &cases {
        let mut ms = Vec::with_capacity(runs);
        let mut outcome = String::new();
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let result = decode(bytes, &limits);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            outcome = match result {
                Ok(img) => format!("decoded {}x{}", img.width(), img.height()),
                Err(e) => e.to_string(),
            };
        }
        ms.sort_by(f64::total_cmp);
        let median = percentile(&ms, 0.5);
        println!(
            "{name:<22} {:>9} bytes  median {median:>9.3} ms  {outcome}",
            bytes.len()
        );
        report.insert(
            (*name).to_string(),
            json!({
                "bytes": bytes.len(),
                "runs": ms.len(),
                "median_ms": median,
                "p95_ms": percentile(&ms, 0.95),
                "outcome": outcome,
            }),
        );
    }
    let doc = json!({
        "bench": "hostile_decode",
        "limits": serde_json::to_value(&limits).unwrap(),
        "cases": Value::Object(report),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("wrote {}", out.display());
}
