//! The threshold graph: every pair of points closer than the threshold.
//!
//! Two clusters can have an average (or complete) linkage under the threshold only if
//! some cross pair is under it (a mean is never below its minimum), so these edges are
//! the only merge candidates the agglomeration ever needs. Finding them is the one
//! O(n²·dim) step; it runs over tiles of rows that stay in cache, on every core.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::vector::dot;

/// Rows per tile: two tiles of 64 × 512-d `f32` rows are 256 KiB, an L2 cache.
const TILE: usize = 64;

/// Points `a < b` at cosine distance `d`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Edge {
    pub a: u32,
    pub b: u32,
    pub d: f32,
}

/// All pairs of the `n` unit rows of `points` (row-major, `dim` wide) at cosine distance
/// under `limit`, ordered by `(a, b)`. Pairs of two rows at or past `first_skipped` are
/// left out (the anchor embeddings: within one anchor they are one cluster already,
/// across anchors they never merge).
pub(crate) fn below(points: &[f32], dim: usize, first_skipped: usize, limit: f32) -> Vec<Edge> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    let tiles = n.div_ceil(TILE);
    if tiles == 0 {
        return Vec::new();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(tiles);
    // Tile rows are handed out one at a time, first rows (the most work) first.
    let next = AtomicUsize::new(0);
    let mut rows: Vec<(usize, Vec<Edge>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let ti = next.fetch_add(1, Ordering::Relaxed);
                        if ti >= tiles {
                            break done;
                        }
                        done.push((ti, tile_row(points, dim, n, first_skipped, limit, ti)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    rows.sort_unstable_by_key(|r| r.0);
    rows.into_iter().flat_map(|r| r.1).collect()
}

/// The edges of tile row `ti` against tile columns `ti..`, ordered by `(a, b)`.
fn tile_row(
    points: &[f32],
    dim: usize,
    n: usize,
    first_skipped: usize,
    limit: f32,
    ti: usize,
) -> Vec<Edge> {
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let rows_i = ti * TILE..((ti + 1) * TILE).min(n).min(first_skipped.max(ti * TILE));
    let min_dot = 1.0 - limit;
    let mut tile_edges: Vec<Vec<Edge>> = vec![Vec::new(); rows_i.len()];
    for tj in ti..n.div_ceil(TILE) {
        let cols = tj * TILE..((tj + 1) * TILE).min(n);
        for (i, out) in rows_i.clone().zip(&mut tile_edges) {
            let a = row(i);
            for j in cols.clone().filter(|&j| j > i) {
                let s = dot(a, row(j));
                if s > min_dot {
                    out.push(Edge {
                        a: i as u32,
                        b: j as u32,
                        d: 1.0 - s,
                    });
                }
            }
        }
    }
    tile_edges.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_find_exactly_the_pairs_under_the_limit() {
        // 150 unit vectors on a circle: three tiles, the last one partial.
        let n = 150;
        let points: Vec<f32> = (0..n)
            .flat_map(|k| {
                let a = k as f32 * 0.05;
                [a.cos(), a.sin()]
            })
            .collect();
        let limit = 0.02;
        for skipped in [n, 130, 64, 0] {
            let mut expected = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    let s = points[2 * i] * points[2 * j] + points[2 * i + 1] * points[2 * j + 1];
                    if 1.0 - s < limit && i < skipped {
                        expected.push((i as u32, j as u32));
                    }
                }
            }
            let got: Vec<(u32, u32)> = below(&points, 2, skipped, limit)
                .iter()
                .map(|e| (e.a, e.b))
                .collect();
            assert_eq!(got, expected, "skipped from {skipped}");
            assert!(!got.is_empty() || skipped == 0);
        }
    }
}
