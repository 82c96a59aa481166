//! Gallery search benchmark: exact top-k over 1k, 100k and 1M synthetic 128-d embeddings,
//! the service's kernel against the naive baseline, on the rayon pool of `RAYON_NUM_THREADS`.
//! Prints a table and one JSON object (used by scripts/bench/serve.sh).
//!
//!   cargo run --release -p facepipe-serving --example gallery_bench -- [--sizes 1000,100000,1000000]

use std::time::Instant;

use facepipe_serving::Gallery;
use facepipe_training::{DistanceKind, Metric};

fn xorshift(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed.max(1);
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        // Roughly the range of the pretrained network's values.
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Resident memory of this process in bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn main() {
    let mut sizes = vec![1_000usize, 100_000, 1_000_000];
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sizes") {
        if let Some(list) = args.get(i + 1) {
            sizes = list.split(',').filter_map(|s| s.parse().ok()).collect();
        }
    }
    let dim = 128;
    let metric = Metric {
        distance: DistanceKind::Euclidean,
        threshold: 0.6,
    };
    let threads = rayon::current_num_threads();
    let mut results = Vec::new();
    println!(
        "{:>9}  {:>12}  {:>12}  {:>8}  {:>10}",
        "rows", "fast ms p50", "naive ms p50", "speed-up", "MiB"
    );
    for &n in &sizes {
        let mut next = xorshift(n as u64);
        let before = rss_bytes();
        let data: Vec<f32> = (0..n * dim).map(|_| next()).collect();
        // One embedding per person: the memory figure is per person.
        let people: Vec<String> = (0..n).map(|i| format!("person_{i:07}")).collect();
        let rows: Vec<u32> = (0..n as u32).collect();
        let sources = vec![String::new(); n];
        let gallery =
            Gallery::from_parts(DistanceKind::Euclidean, dim, people, rows, sources, data)
                .expect("a consistent synthetic gallery");
        let rss = rss_bytes().saturating_sub(before);
        let queries: Vec<Vec<f32>> = (0..5).map(|_| (0..dim).map(|_| next()).collect()).collect();
        let reps = if n >= 1_000_000 {
            21
        } else if n >= 100_000 {
            51
        } else {
            201
        };
        let naive_reps = if n >= 1_000_000 {
            3
        } else if n >= 100_000 {
            7
        } else {
            51
        };
        // Warm up (page in the matrix, spin up the pool).
        let _ = gallery.search(&queries[0], 5);
        let mut fast = Vec::new();
        for r in 0..reps {
            let t = Instant::now();
            let top = gallery.search(&queries[r % queries.len()], 5);
            fast.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(top.len(), 5);
        }
        let mut naive = Vec::new();
        for r in 0..naive_reps {
            let q = &queries[r % queries.len()];
            let t = Instant::now();
            let top = gallery.search_naive(&metric, q, 5);
            naive.push(t.elapsed().as_secs_f64() * 1e3);
            // Same answer as the fast path.
            assert_eq!(top[0].person, gallery.search(q, 1)[0].person);
        }
        let (f, b) = (median(fast), median(naive));
        let mib = rss as f64 / (1024.0 * 1024.0);
        println!("{n:>9}  {f:>12.3}  {b:>12.3}  {:>7.1}x  {mib:>10.1}", b / f);
        results.push(serde_json::json!({
            "rows": n, "dim": dim, "threads": threads,
            "fast_ms_p50": f, "naive_ms_p50": b, "speedup": b / f,
            "fast_reps": reps, "naive_reps": naive_reps,
            "matrix_bytes": gallery.matrix_bytes(),
            "rss_bytes_with_names": rss,
        }));
    }
    println!(
        "{}",
        serde_json::json!({ "gallery_search": results, "threads": threads })
    );
}
