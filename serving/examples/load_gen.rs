//! A small HTTP load generator for the identify endpoint: C concurrent clients send the same
//! photo for D seconds; prints one JSON line: p50/p99 latency and requests per second of
//! the admitted (2xx) requests, how many were shed with 503 (and their share), and other
//! errors.
//!
//!   cargo run --release -p facepipe-serving --example load_gen -- URL PHOTO \
//!       [--concurrency C] [--seconds D] [--resize WxH] [--retry-wait-ms MS]
//!   cargo run --release -p facepipe-serving --example load_gen -- URL --solid-png N ...
//!
//! `--resize 640x480` centre-crops the photo to that aspect ratio and scales it (JPEG q90)
//! before sending, so every run uses the same 640×480 one-face image. `--solid-png 6000`
//! sends a solid grey 6000×6000 PNG instead of a photo (small on the wire, 36 megapixels
//! to decode: the heavy request of an overload test). A client answered 503 waits
//! `--retry-wait-ms` (default 100) before its next request, as a polite client would.

use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn solid_png(side: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb([120, 120, 120]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding the solid PNG");
    out.into_inner()
}

fn resized(bytes: &[u8], w: u32, h: u32) -> Vec<u8> {
    let img = image::load_from_memory(bytes)
        .expect("the photo must decode")
        .to_rgb8();
    let (iw, ih) = img.dimensions();
    // Largest centred crop with the target aspect ratio.
    let (cw, ch) = if iw as u64 * h as u64 > ih as u64 * w as u64 {
        ((ih as u64 * w as u64 / h as u64) as u32, ih)
    } else {
        (iw, (iw as u64 * h as u64 / w as u64) as u32)
    };
    let crop = image::imageops::crop_imm(&img, (iw - cw) / 2, (ih - ch) / 2, cw, ch).to_image();
    let small = image::imageops::resize(&crop, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&small)
        .expect("encoding the resized photo");
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: load_gen URL PHOTO|--solid-png N [--concurrency C] [--seconds D] \
             [--resize WxH] [--retry-wait-ms MS]"
        );
        std::process::exit(2);
    }
    let url = format!("{}/v1/identify", args[1].trim_end_matches('/'));
    let mut photo = match arg(&args, "--solid-png") {
        Some(side) => solid_png(side.parse().expect("--solid-png N")),
        None => std::fs::read(&args[2]).expect("reading the photo"),
    };
    if let Some(size) = arg(&args, "--resize") {
        let (w, h) = size.split_once('x').expect("--resize WxH");
        photo = resized(
            &photo,
            w.parse().expect("width"),
            h.parse().expect("height"),
        );
        if let Some(path) = arg(&args, "--save") {
            std::fs::write(path, &photo).expect("saving the resized photo");
        }
    }
    let concurrency: usize = arg(&args, "--concurrency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seconds: f64 = arg(&args, "--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let retry_wait = Duration::from_millis(
        arg(&args, "--retry-wait-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
    );
    let photo = Arc::new(photo);
    let client = reqwest::Client::new();
    // One warm-up request (and a check that the photo has exactly one face).
    let warm: serde_json::Value = client
        .post(&url)
        .body(photo.to_vec())
        .send()
        .await
        .expect("is the server running?")
        .json()
        .await
        .expect("identify answer");
    let faces = warm["faces"].as_array().map(|f| f.len()).unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, photo) = (client.clone(), url.clone(), photo.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut shed, mut errors) = (0usize, 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.post(&url).body(photo.to_vec()).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                        let _ = r.bytes().await;
                        shed += 1;
                        tokio::time::sleep(retry_wait).await;
                    }
                    _ => errors += 1,
                }
            }
            (lat, shed, errors)
        }));
    }
    let mut all = Vec::new();
    let (mut shed, mut errors) = (0, 0);
    for t in tasks {
        let (lat, s, e) = t.await.expect("client task");
        all.extend(lat);
        shed += s;
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let sent = all.len() + shed + errors;
    let out = serde_json::json!({
        "concurrency": concurrency,
        "seconds": wall,
        "requests": all.len(),
        "shed_503": shed,
        "shed_share": if sent == 0 { 0.0 } else { shed as f64 / sent as f64 },
        "errors": errors,
        "faces_in_photo": faces,
        "photo_bytes": photo.len(),
        "p50_ms": percentile(&all, 0.5),
        "p90_ms": percentile(&all, 0.9),
        "p99_ms": percentile(&all, 0.99),
        "req_per_s": all.len() as f64 / wall,
    });
    println!("{out}");
}
