//! The gallery: every enrolled embedding of every known person, and exact top-k search.
//!
//! # All embeddings, not centroids
//! We keep every embedding a person was enrolled with and score a person by the distance to
//! their *closest* embedding (nearest neighbour), instead of averaging them into one centroid.
//! A person photographed with and without glasses, in profile and frontal, forms several
//! clusters; their mean can sit between clusters, far from every real photo, and the
//! pretrained network's raw (unnormalised) embeddings make such means worse. Nearest
//! neighbour keeps each pose as its own reference, and enrolling one more photo can only move
//! a person closer. The price is memory and search time linear in photos rather than people,
//! which the brute-force kernel below keeps small (see `scripts/bench/serve.sh`).
//!
//! # Search
//! Rows live in one contiguous `f32` matrix. For Euclidean distance we precompute every
//! row's squared norm and use ‖q − r‖² = ‖q‖² + ‖r‖² − 2 q·r, so a query costs one dot
//! product per row; for cosine distance the rows are stored L2-normalised and the distance is
//! 1 − q̂·r. Large galleries are split over the rayon pool.

use facepipe_training::{DistanceKind, Metric};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Rows per parallel chunk: below this a query runs on the calling thread.
const PAR_CHUNK_ROWS: usize = 16 * 1024;

/// One candidate person for a query embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Index into [`Gallery::people`].
    pub person: usize,
    /// Distance to the person's closest enrolled embedding.
    pub distance: f32,
}

#[derive(Clone, Debug)]
pub struct Gallery {
    kind: DistanceKind,
    dim: usize,
    people: Vec<String>,
    /// Person index of every row.
    row_person: Vec<u32>,
    /// Where every row came from (file name or "api upload"), for audits.
    sources: Vec<String>,
    /// `rows × dim`, row-major; L2-normalised for cosine.
    data: Vec<f32>,
    /// ‖row‖² (Euclidean only; empty for cosine).
    sq_norms: Vec<f32>,
}

impl Gallery {
    /// An empty gallery for embeddings of `dim` values compared with `kind`.
    pub fn empty(kind: DistanceKind, dim: usize) -> Self {
        Gallery {
            kind,
            dim,
            people: Vec::new(),
            row_person: Vec::new(),
            sources: Vec::new(),
            data: Vec::new(),
            sq_norms: Vec::new(),
        }
    }

    /// Build from stored parts. `data` holds `row_person.len()` rows of `dim` values as
    /// they were embedded (cosine rows are normalised here).
    pub fn from_parts(
        kind: DistanceKind,
        dim: usize,
        people: Vec<String>,
        row_person: Vec<u32>,
        sources: Vec<String>,
        data: Vec<f32>,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Internal("gallery embedding dimension is 0".into()));
        }
        if data.len() != row_person.len() * dim || sources.len() != row_person.len() {
            return Err(Error::Internal(format!(
                "gallery shape mismatch: {} values for {} rows of {dim} and {} sources",
                data.len(),
                row_person.len(),
                sources.len()
            )));
        }
        if let Some(bad) = row_person.iter().find(|&&p| p as usize >= people.len()) {
            return Err(Error::Internal(format!(
                "gallery row names person #{bad} but only {} people are listed",
                people.len()
            )));
        }
        let mut g = Gallery::empty(kind, dim);
        g.people = people;
        g.row_person = row_person;
        g.sources = sources;
        g.data = data;
        g.prepare_rows(0);
        Ok(g)
    }

    /// Normalise (cosine) or compute squared norms (Euclidean) of rows from `first` on.
    fn prepare_rows(&mut self, first: usize) {
        let dim = self.dim;
        match self.kind {
            DistanceKind::Cosine => {
                for row in self.data[first * dim..].chunks_exact_mut(dim) {
                    let n = dot(row, row).sqrt().max(1e-12);
                    row.iter_mut().for_each(|v| *v /= n);
                }
                self.sq_norms.clear();
            }
            DistanceKind::Euclidean => {
                self.sq_norms.truncate(first);
                let rows = self.data[first * dim..].chunks_exact(dim);
                self.sq_norms.extend(rows.map(|r| dot(r, r)));
            }
        }
    }

    pub fn kind(&self) -> DistanceKind {
        self.kind
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Names of the enrolled people, in index order.
    pub fn people(&self) -> &[String] {
        &self.people
    }

    pub fn person_index(&self, name: &str) -> Option<usize> {
        self.people.iter().position(|p| p == name)
    }

    /// Number of stored embeddings (rows).
    pub fn len(&self) -> usize {
        self.row_person.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_person.is_empty()
    }

    pub fn row_person(&self) -> &[u32] {
        &self.row_person
    }

    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The stored rows (normalised for cosine), `len() × dim()`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Number of embeddings of every person, in index order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.people.len()];
        for &p in &self.row_person {
            counts[p as usize] += 1;
        }
        counts
    }

    /// Bytes held by the search matrix and per-row bookkeeping (not the names).
    pub fn matrix_bytes(&self) -> usize {
        (self.data.len() + self.sq_norms.len()) * 4 + self.row_person.len() * 4
    }

    /// Add embeddings for `name` (a new person or more photos of a known one).
    pub fn add(&mut self, name: &str, embeddings: &[Vec<f32>], source: &str) -> Result<()> {
        if let Some(bad) = embeddings.iter().find(|e| e.len() != self.dim) {
            return Err(Error::Internal(format!(
                "embedding of {} values added to a gallery of dimension {}",
                bad.len(),
                self.dim
            )));
        }
        let person = match self.person_index(name) {
            Some(i) => i,
            None => {
                self.people.push(name.to_string());
                self.people.len() - 1
            }
        };
        let first = self.len();
        for e in embeddings {
            self.data.extend_from_slice(e);
            self.row_person.push(person as u32);
            self.sources.push(source.to_string());
        }
        self.prepare_rows(first);
        Ok(())
    }

    /// A copy without `name`; `None` when nobody of that name is enrolled.
    pub fn without(&self, name: &str) -> Option<Gallery> {
        let gone = self.person_index(name)?;
        let mut g = Gallery::empty(self.kind, self.dim);
        g.people = self
            .people
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != gone)
            .map(|(_, p)| p.clone())
            .collect();
        for (row, &p) in self.row_person.iter().enumerate() {
            let p = p as usize;
            if p == gone {
                continue;
            }
            // People after the removed one shift down by one.
            g.row_person.push(if p > gone { p - 1 } else { p } as u32);
            g.sources.push(self.sources[row].clone());
            g.data
                .extend_from_slice(&self.data[row * self.dim..(row + 1) * self.dim]);
            if let Some(n) = self.sq_norms.get(row) {
                g.sq_norms.push(*n);
            }
        }
        Some(g)
    }

    /// Distance of `query` to every row (same order as the rows).
    pub fn row_distances(&self, query: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.len()];
        if self.is_empty() || query.len() != self.dim {
            out.fill(f32::INFINITY);
            return out;
        }
        let (q, q_sq) = self.prepared_query(query);
        let rows_per_chunk = PAR_CHUNK_ROWS;
        if self.len() <= rows_per_chunk {
            self.fill_distances(&q, q_sq, 0, &mut out);
        } else {
            out.par_chunks_mut(rows_per_chunk)
                .enumerate()
                .for_each(|(i, chunk)| self.fill_distances(&q, q_sq, i * rows_per_chunk, chunk));
        }
        out
    }

    fn prepared_query(&self, query: &[f32]) -> (Vec<f32>, f32) {
        let mut q = query.to_vec();
        let sq = dot(&q, &q);
        if self.kind == DistanceKind::Cosine {
            let n = sq.sqrt().max(1e-12);
            q.iter_mut().for_each(|v| *v /= n);
        }
        (q, sq)
    }

    /// Distances of rows `first..first + out.len()`.
    fn fill_distances(&self, q: &[f32], q_sq: f32, first: usize, out: &mut [f32]) {
        let dim = self.dim;
        let rows = self.data[first * dim..(first + out.len()) * dim].chunks_exact(dim);
        match self.kind {
            DistanceKind::Cosine => {
                for (o, r) in out.iter_mut().zip(rows) {
                    *o = 1.0 - dot(q, r);
                }
            }
            DistanceKind::Euclidean => {
                let norms = &self.sq_norms[first..first + out.len()];
                for ((o, r), n) in out.iter_mut().zip(rows).zip(norms) {
                    // Rounding can make the expansion slightly negative for identical vectors.
                    *o = (q_sq + n - 2.0 * dot(q, r)).max(0.0).sqrt();
                }
            }
        }
    }

    /// The `k` closest people, closest first (a person counts once, by their closest row).
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        let distances = self.row_distances(query);
        self.top_people(&distances, k)
    }

    /// Reduce per-row distances to each person's minimum and keep the best `k`.
    fn top_people(&self, distances: &[f32], k: usize) -> Vec<Candidate> {
        if k == 0 || self.people.is_empty() {
            return Vec::new();
        }
        let mut best = vec![f32::INFINITY; self.people.len()];
        for (&p, &d) in self.row_person.iter().zip(distances) {
            let slot = &mut best[p as usize];
            if d < *slot {
                *slot = d;
            }
        }
        let mut order: Vec<usize> = (0..best.len()).filter(|&i| best[i].is_finite()).collect();
        let by_distance = |a: &usize, b: &usize| best[*a].total_cmp(&best[*b]);
        if order.len() > k {
            order.select_nth_unstable_by(k - 1, by_distance);
            order.truncate(k);
        }
        order.sort_unstable_by(by_distance);
        order
            .into_iter()
            .map(|person| Candidate {
                person,
                distance: best[person],
            })
            .collect()
    }

    /// The textbook search, kept as the benchmark baseline: one thread, the metric's own
    /// distance per row, a full sort.
    pub fn search_naive(&self, metric: &Metric, query: &[f32], k: usize) -> Vec<Candidate> {
        let mut best = vec![f32::INFINITY; self.people.len()];
        for (row, &p) in self.row_person.iter().enumerate() {
            let d = metric.distance(query, &self.data[row * self.dim..(row + 1) * self.dim]);
            let slot = &mut best[p as usize];
            if d < *slot {
                *slot = d;
            }
        }
        let mut all: Vec<Candidate> = best
            .into_iter()
            .enumerate()
            .map(|(person, distance)| Candidate { person, distance })
            .collect();
        all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        all.truncate(k);
        all
    }
}

/// Dot product with 16 independent accumulators so the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        // xorshift: deterministic without a rand dependency in the library.
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn gallery(kind: DistanceKind, rows: usize, dim: usize) -> Gallery {
        let people: Vec<String> = (0..rows / 2).map(|i| format!("p{i}")).collect();
        let row_person = (0..rows).map(|r| (r / 2) as u32).collect();
        let sources = vec![String::new(); rows];
        Gallery::from_parts(
            kind,
            dim,
            people,
            row_person,
            sources,
            pseudo_random(rows * dim, 7),
        )
        .unwrap()
    }

    #[test]
    fn fast_search_matches_the_naive_baseline() {
        for kind in [DistanceKind::Euclidean, DistanceKind::Cosine] {
            // Large enough to take the parallel path.
            let g = gallery(kind, 40_000, 128);
            let metric = Metric {
                distance: kind,
                threshold: 0.6,
            };
            let q = pseudo_random(128, 99);
            let fast = g.search(&q, 5);
            let naive = g.search_naive(&metric, &q, 5);
            assert_eq!(fast.len(), 5);
            for (a, b) in fast.iter().zip(&naive) {
                assert_eq!(a.person, b.person, "{kind:?}");
                assert!((a.distance - b.distance).abs() < 1e-3, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn an_enrolled_row_is_found_at_distance_zero() {
        let mut g = gallery(DistanceKind::Euclidean, 100, 128);
        let e = pseudo_random(128, 1234);
        g.add("new person", std::slice::from_ref(&e), "test")
            .unwrap();
        let top = g.search(&e, 3);
        assert_eq!(g.people()[top[0].person], "new person");
        assert!(top[0].distance < 1e-3);
        assert!(top[1].distance > top[0].distance);
    }

    #[test]
    fn removing_a_person_keeps_the_others_searchable() {
        let g = gallery(DistanceKind::Cosine, 10, 16);
        let row7 = g.data()[7 * 16..8 * 16].to_vec();
        let owner = g.people()[g.row_person()[7] as usize].clone();
        let without = g.without("p0").unwrap();
        assert_eq!(without.len(), 8);
        assert_eq!(without.people().len(), 4);
        assert!(without.person_index("p0").is_none());
        let top = without.search(&row7, 1);
        assert_eq!(without.people()[top[0].person], owner);
        assert!(g.without("nobody").is_none());
    }
}
