//! Gallery search benchmark: top-5 over 1k, 100k and 1M synthetic 128-d embeddings (one per
//! person), the exact `f32` scan against the two-stage search (int8 scan + exact rerank) in
//! the same run, on the rayon pool of `RAYON_NUM_THREADS`. Prints a table and one JSON
//! object on the last line (scripts/bench/serve.sh keeps it; `--out FILE` writes it too).
//!
//!   cargo run --release -p facepipe-serving --example gallery_bench -- \
//!       [--sizes 1000,100000,1000000] [--out bench/results/gallery.json]

use std::time::Instant;

use facepipe_pipeline::DistanceKind;
use facepipe_serving::gallery::search_stats;
use facepipe_serving::Gallery;

const DIM: usize = 128;
const K: usize = 5;

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

/// (median, p95) of per-query milliseconds.
fn median_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let sizes: Vec<usize> = match arg("--sizes") {
        Some(list) => list.split(',').filter_map(|s| s.parse().ok()).collect(),
        None => vec![1_000, 100_000, 1_000_000],
    };
    let threads = rayon::current_num_threads();
    let mut results = Vec::new();
    println!(
        "{:>9}  {:>10} {:>10}  {:>10} {:>10}  {:>8}  {:>9}  {:>10}",
        "rows",
        "exact p50",
        "exact p95",
        "2stage p50",
        "2stage p95",
        "speed-up",
        "fallbacks",
        "MiB/100k"
    );
    for &n in &sizes {
        let mut next = xorshift(n as u64);
        let before = rss_bytes();
        let data: Vec<f32> = (0..n * DIM).map(|_| next()).collect();
        // One embedding per person: the memory figure is per person.
        let people: Vec<String> = (0..n).map(|i| format!("person_{i:07}")).collect();
        let rows: Vec<u32> = (0..n as u32).collect();
        let sources = vec![String::new(); n];
        let gallery =
            Gallery::from_parts(DistanceKind::Euclidean, DIM, people, rows, sources, data)?;
        let rss = rss_bytes().saturating_sub(before);
        let queries: Vec<Vec<f32>> = (0..16)
            .map(|_| (0..DIM).map(|_| next()).collect())
            .collect();
        let reps = match n {
            n if n >= 1_000_000 => 41,
            n if n >= 100_000 => 101,
            _ => 401,
        };
        // Warm up (page in both matrices, spin up the pool).
        let _ = gallery.search(&queries[0], K);
        let _ = gallery.search_exact(&queries[0], K);
        let stats_before = search_stats();
        // Interleave the two so drift in machine load hits both alike.
        let (mut exact, mut two) = (Vec::new(), Vec::new());
        for r in 0..reps {
            let q = &queries[r % queries.len()];
            let t = Instant::now();
            let a = gallery.search_exact(q, K);
            exact.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let b = gallery.search(q, K);
            two.push(t.elapsed().as_secs_f64() * 1e3);
            if a.iter().map(|c| c.person).ne(b.iter().map(|c| c.person)) {
                return Err(format!("{n} rows, query {r}: two-stage {b:?} != exact {a:?}").into());
            }
        }
        let stats = search_stats();
        let fallbacks = stats.fallback - stats_before.fallback;
        let path = if stats.two_stage > stats_before.two_stage || fallbacks > 0 {
            "two-stage"
        } else {
            "exact (small gallery)"
        };
        let ((e50, e95), (t50, t95)) = (median_p95(exact), median_p95(two));
        let per_100k = |bytes: f64| bytes * 100_000.0 / n as f64 / (1024.0 * 1024.0);
        println!(
            "{n:>9}  {e50:>10.3} {e95:>10.3}  {t50:>10.3} {t95:>10.3}  {:>7.1}x  {fallbacks:>9}  {:>10.1}",
            e50 / t50,
            per_100k(rss as f64)
        );
        results.push(serde_json::json!({
            "rows": n, "dim": DIM, "k": K, "threads": threads, "queries": reps,
            "exact_ms_p50": e50, "exact_ms_p95": e95,
            "two_stage_ms_p50": t50, "two_stage_ms_p95": t95,
            "speedup_p50": e50 / t50,
            "search_path": path,
            "fallbacks_to_exact": fallbacks,
            "matrix_bytes": gallery.matrix_bytes(),
            "rss_bytes_with_names": rss,
            "mib_per_100k_people": {
                "matrices": per_100k(gallery.matrix_bytes() as f64),
                "process_rss_with_names": per_100k(rss as f64),
            },
        }));
    }
    let doc = serde_json::json!({ "gallery_search": results, "threads": threads });
    if let Some(out) = arg("--out") {
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)?;
    }
    println!("{doc}");
    Ok(())
}
