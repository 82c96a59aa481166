//! Agglomerative clustering over the threshold graph, by nearest-neighbour chains.
//!
//! Each cluster keeps its neighbours (clusters under the threshold from it) with the
//! linkage distance. A chain follows nearest neighbours until two clusters are each
//! other's nearest, then merges them (or, when a cannot-link forbids it, drops the pair
//! for good: conflicts persist for all supersets). Both linkages are reducible — a merged
//! cluster is never closer to a third than the closer of its parts — and a cannot-link
//! only makes distances infinite, which keeps that property; merging mutual nearest
//! neighbours in any order then gives the same result as always merging the globally
//! closest pair. Reducibility also means a pair at or past the threshold never comes
//! under it again unless one side merges with a neighbour of the other, so pairs past
//! the threshold are forgotten and the graph shrinks as it is merged.
//!
//! Cost: a merge recomputes the merged cluster's neighbours, O(1) each from the two old
//! distances (Lance–Williams), or O(dim) from the cluster sums when one of them was
//! forgotten; a nearest-neighbour step scans one neighbour list. With `E` edges: O(E) to
//! start (O(E log E) when seeds reorder them), O(Σ degree · dim) at worst for the merges;
//! sparse face graphs keep it near linear, one person in every photo makes it
//! O(n²·dim). No priority queue: with one big person it held tens of millions of stale
//! entries, and their cache misses were most of the run time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::clusters::Clusters;
use crate::edges::Edge;
use crate::options::Linkage;

/// Merge the clusters of `clusters` along `edges` (between points, any order).
pub(crate) fn agglomerate(
    clusters: &mut Clusters,
    edges: Vec<Edge>,
    points: usize,
    linkage: Linkage,
    threshold: f32,
) {
    let threshold = f64::from(threshold);
    let mut run = Agglomeration {
        adjacent: initial_links(clusters, edges, points, linkage, threshold),
        clusters,
        linkage,
        threshold,
    };
    run.run(points);
}

/// The cluster pairs under the threshold, from the point edges between them. The point
/// edges are counted per cluster pair first: complete linkage needs every cross pair to
/// be an edge. Sorting (rather than hashing) groups them, and the neighbour lists are
/// sized once: building them was a third of the run time with growing hash maps.
fn initial_links(
    clusters: &mut Clusters,
    mut edges: Vec<Edge>,
    points: usize,
    linkage: Linkage,
    threshold: f64,
) -> Vec<Links> {
    edges.retain_mut(|e| {
        let (a, b) = (clusters.find(e.a), clusters.find(e.b));
        (e.a, e.b) = (a.min(b), a.max(b));
        a != b
    });
    // The threshold graph comes ordered by (a, b); only seeded clusters reorder it.
    if !edges.is_sorted_by_key(|e| (e.a, e.b)) {
        edges.sort_unstable_by_key(|e| (e.a, e.b));
    }
    let mut links: Vec<(u32, u32, f64)> = Vec::new();
    let mut degree = vec![0u32; points];
    for run in edges.chunk_by(|x, y| (x.a, x.b) == (y.a, y.b)) {
        let (a, b) = (run[0].a, run[0].b);
        let pairs = u64::from(clusters.size(a)) * u64::from(clusters.size(b));
        // Every cross pair is an edge (always so between two single faces): the edges
        // are the whole story, and reading them beats reading two cluster sums.
        let complete = run.len() as u64 == pairs;
        let d = match linkage {
            Linkage::Average if complete => {
                run.iter().map(|e| f64::from(e.d)).sum::<f64>() / pairs as f64
            }
            Linkage::Average => clusters.average_distance(a, b),
            Linkage::Complete if complete => run.iter().map(|e| f64::from(e.d)).fold(0.0, f64::max),
            // A missing edge is a pair at or past the threshold.
            Linkage::Complete => f64::INFINITY,
        };
        if d < threshold {
            links.push((a, b, d));
            degree[a as usize] += 1;
            degree[b as usize] += 1;
        }
    }
    drop(edges);
    let mut adjacent: Vec<Links> = degree
        .iter()
        .map(|&n| Links::with_capacity_and_hasher(n as usize, Default::default()))
        .collect();
    for (a, b, d) in links {
        adjacent[a as usize].insert(b, d);
        adjacent[b as usize].insert(a, d);
    }
    adjacent
}

struct Agglomeration<'a> {
    clusters: &'a mut Clusters,
    linkage: Linkage,
    threshold: f64,
    /// Neighbours of each root under the threshold, with the linkage distance.
    adjacent: Vec<Links>,
}

/// Neighbour cluster → linkage distance.
type Links = HashMap<u32, f64, BuildHasherDefault<IdHasher>>;

/// A multiplicative hash for cluster ids. They are our own small integers, not outside
/// input, so there is no flooding to defend against; SipHash made the neighbour-list
/// updates most of the run time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Fold the well-mixed high bits into the low ones the table indexes by.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Agglomeration<'_> {
    fn run(&mut self, points: usize) {
        // Clusters that may still have a merge to make; a merge adds its result.
        let mut todo: Vec<u32> = (0..points as u32).rev().collect();
        let mut chain: Vec<u32> = Vec::new();
        while let Some(start) = todo.pop() {
            if self.clusters.find(start) != start || self.adjacent[start as usize].is_empty() {
                continue;
            }
            chain.push(start);
            while let Some(&top) = chain.last() {
                let prev = chain.len().checked_sub(2).map(|i| chain[i]);
                match self.nearest(top, prev) {
                    None => {
                        chain.pop();
                    }
                    Some(next) if Some(next) == prev => {
                        chain.truncate(chain.len() - 2);
                        if self.clusters.conflict(top, next) {
                            self.adjacent[top as usize].remove(&next);
                            self.adjacent[next as usize].remove(&top);
                            todo.extend([top, next]);
                        } else {
                            todo.push(self.merge(top, next));
                        }
                    }
                    Some(next) => chain.push(next),
                }
            }
        }
    }

    /// The closest neighbour of root `a`; ties go to `prev` (the chain's previous
    /// cluster, which is what rules out cycles), then to the smaller id.
    fn nearest(&self, a: u32, prev: Option<u32>) -> Option<u32> {
        let links = &self.adjacent[a as usize];
        let (d, best) = links
            .iter()
            .map(|(&c, &d)| (d, c))
            .min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)))?;
        match prev {
            Some(p) if links.get(&p) == Some(&d) => Some(p),
            _ => Some(best),
        }
    }

    /// Merge roots `a` and `b`; returns the new root.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        let (size_a, size_b) = (self.clusters.size(a), self.clusters.size(b));
        let root = self.clusters.union(a, b);
        let (child, n_root, n_child) = if root == a {
            (b, f64::from(size_a), f64::from(size_b))
        } else {
            (a, f64::from(size_b), f64::from(size_a))
        };
        let mut mine = std::mem::take(&mut self.adjacent[root as usize]);
        let mut theirs = std::mem::take(&mut self.adjacent[child as usize]);
        mine.remove(&child);
        theirs.remove(&root);
        let mut merged =
            Links::with_capacity_and_hasher(mine.len().max(theirs.len()), Default::default());
        // (neighbour, distance to root, distance to child) over both neighbour lists.
        let mut links: Vec<(u32, Option<f64>, Option<f64>)> = mine
            .into_iter()
            .map(|(c, d)| (c, Some(d), theirs.remove(&c)))
            .collect();
        links.extend(theirs.into_iter().map(|(c, d)| (c, None, Some(d))));
        for (c, d_root, d_child) in links {
            let d = match self.linkage {
                // The mean over the union's pairs, weighted by the parts' sizes.
                Linkage::Average => match (d_root, d_child) {
                    (Some(x), Some(y)) => (n_root * x + n_child * y) / (n_root + n_child),
                    _ => self.clusters.average_distance(root, c),
                },
                // Only present pairs are under the threshold; a missing one is not.
                Linkage::Complete => match (d_root, d_child) {
                    (Some(x), Some(y)) => x.max(y),
                    _ => f64::INFINITY,
                },
            };
            let other = &mut self.adjacent[c as usize];
            other.remove(&child);
            if d < self.threshold {
                merged.insert(c, d);
                other.insert(root, d);
            } else {
                other.remove(&root);
            }
        }
        self.adjacent[root as usize] = merged;
        root
    }
}
