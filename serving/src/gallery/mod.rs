//! The gallery: every enrolled embedding of every known person, and top-k search.
//!
//! # All embeddings, not centroids
//! We keep every embedding a person was enrolled with and score a person by the distance to
//! their *closest* embedding (nearest neighbour), instead of averaging them into one centroid.
//! A person photographed with and without glasses, in profile and frontal, forms several
//! clusters; their mean can sit between clusters, far from every real photo, and the
//! pretrained network's raw (unnormalised) embeddings make such means worse. Nearest
//! neighbour keeps each pose as its own reference, and enrolling one more photo can only move
//! a person closer. The price is memory and search time linear in photos rather than people,
//! which the two-stage search below keeps small (see `scripts/bench/serve.sh`).
//!
//! # Exact scan
//! Rows live in one contiguous `f32` matrix. For Euclidean distance we precompute every
//! row's squared norm and use ‖q − r‖² = ‖q‖² + ‖r‖² − 2 q·r, so a query costs one dot
//! product per row; for cosine distance the rows are stored L2-normalised and the distance is
//! 1 − q̂·r. Large galleries are split over the rayon pool.
//!
//! # Two-stage search (large galleries)
//! The exact scan reads 512 bytes per 128-d row, so at a million rows it is bound by memory
//! bandwidth. Every row therefore also has an int8 copy scaled per row (`r ≈ s·c`, 128
//! bytes plus three floats). A query is quantised the same way and stage one scans the int8
//! copy (integer dot products, vectorised, over the rayon pool), keeping a shortlist of the
//! rows with the smallest *lower bound* of their distance. Stage two recomputes the exact
//! `f32` distance of the shortlist only.
//!
//! The lower bound is rigorous: with `q = s_q c_q + e_q` and `r = s_r c_r + e_r`, where every
//! rounding error is at most half a step, `|q·r − s_q s_r c_q·c_r| ≤ ½ s_r (‖q‖₁ + s_q ‖c_r‖₁)`.
//! After the rerank, when the k-th best person's exact distance is no larger than the
//! smallest lower bound of any row left out of the shortlist, no left-out row can enter the
//! top k, so the answer equals the exact scan's. When that check fails (a crowd of rows
//! within the quantisation error of each other) the query falls back to the exact scan, so
//! the shortlist size only trades speed, never correctness.
//!
//! # Map
//! - this file: the [`Gallery`] type (people, rows and their sources, add/remove) and the
//!   search paths (exact scan, two stages, the naive baseline).
//! - `int8`: the per-row int8 quantiser and the quantised copy of the rows.
//! - `kernel`: the scoring kernels ([`dot`] for `f32`, int8 dot products with AVX2 picked
//!   at run time) and their dispatch; the only `unsafe` code of the crate.
//! - `topk`: top-k selection (stage one's bounded shortlist, the k closest people).
//! - `stats`: process-wide counters of the paths taken ([`search_stats`]).

mod int8;
mod kernel;
mod stats;
mod topk;

use facepipe_pipeline::{DistanceKind, Metric};
use rayon::prelude::*;

use crate::error::{Error, Result};
use int8::{quantize, Quantized};
pub use kernel::dot;
use stats::SearchPath;
pub use stats::{search_stats, SearchStats};
use topk::Shortlist;

/// Rows per parallel chunk: below this a query runs on the calling thread.
const PAR_CHUNK_ROWS: usize = 16 * 1024;

/// Below this many rows the exact scan is as fast as the two stages (a 2k × 128 matrix is
/// 1 MiB and sits in cache); see `serving/examples/gallery_bench.rs`.
const TWO_STAGE_MIN_ROWS: usize = 4 * 1024;

/// Rows the first stage keeps per query: `max(SHORTLIST_MIN, SHORTLIST_PER_K · k)`. The
/// quantisation error of a 128-d row is about 1% of a typical distance, so only the rows
/// within that margin of the k-th person compete; 256 leaves room for people with many
/// photos near the query (each photo is a row) and for dense clusters. Its cost is the
/// rerank (256 exact dot products, ~10 µs), small next to the scan.
const SHORTLIST_MIN: usize = 256;
const SHORTLIST_PER_K: usize = 16;

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
    /// The int8 copy for the first stage.
    quant: Quantized,
}

/// A query prepared for one metric: normalised for cosine, with its int8 form.
struct Query {
    q: Vec<f32>,
    /// ‖q‖² before normalisation (Euclidean).
    sq: f32,
    codes: Vec<i16>,
    scale: f32,
    l1: f32,
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
            quant: Quantized::new(dim),
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

    /// Normalise (cosine) or compute squared norms (Euclidean) of rows from `first` on,
    /// and quantise them.
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
        self.quant.truncate(first);
        for row in self.data[first * dim..].chunks_exact(dim) {
            self.quant.push(row);
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

    /// Bytes held by the search matrices (f32 and int8) and per-row bookkeeping (not the
    /// names).
    pub fn matrix_bytes(&self) -> usize {
        (self.data.len() + self.sq_norms.len()) * 4 + self.row_person.len() * 4 + self.quant.bytes()
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
        self.person_index(name)?;
        Some(self.without_rows(|person, _| person == name))
    }

    /// A copy without the rows for which `drop(person, source)` holds; people left with
    /// no row are gone too.
    pub fn without_rows(&self, drop: impl Fn(&str, &str) -> bool) -> Gallery {
        let kept: Vec<usize> = (0..self.len())
            .filter(|&row| {
                !drop(
                    &self.people[self.row_person[row] as usize],
                    &self.sources[row],
                )
            })
            .collect();
        // Old person index -> new one, for the people who keep a row (in their old order).
        let mut renumber: Vec<Option<u32>> = vec![None; self.people.len()];
        for &row in &kept {
            renumber[self.row_person[row] as usize] = Some(0);
        }
        let mut g = Gallery::empty(self.kind, self.dim);
        for (old, slot) in renumber.iter_mut().enumerate() {
            if slot.is_some() {
                *slot = Some(g.people.len() as u32);
                g.people.push(self.people[old].clone());
            }
        }
        for row in kept {
            let person = renumber[self.row_person[row] as usize].unwrap_or_default();
            g.row_person.push(person);
            g.sources.push(self.sources[row].clone());
            g.data
                .extend_from_slice(&self.data[row * self.dim..(row + 1) * self.dim]);
            if let Some(n) = self.sq_norms.get(row) {
                g.sq_norms.push(*n);
            }
            g.quant.copy_row(&self.quant, row);
        }
        g
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
    /// Large galleries use the two-stage search, whose answer is the exact scan's.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let m = shortlist_size(k);
        // A shortlist of a sizeable share of the gallery saves little over scanning it.
        if self.len() < TWO_STAGE_MIN_ROWS || m >= self.len() / 4 {
            stats::record(SearchPath::Exact);
            return self.search_exact(query, k);
        }
        match self.search_two_stage(query, k, m) {
            (top, true) => {
                stats::record(SearchPath::TwoStage);
                top
            }
            (_, false) => {
                stats::record(SearchPath::Fallback);
                self.search_exact(query, k)
            }
        }
    }

    /// The exact scan over every `f32` row (the reference the two stages must match).
    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        let distances = self.row_distances(query);
        topk::top_people(&self.row_person, self.people.len(), &distances, k)
    }

    /// Stage one over the int8 copy keeping `m` rows, stage two exact on those. The flag
    /// says whether the bound proves the answer equal to the exact scan's.
    fn search_two_stage(&self, query: &[f32], k: usize, m: usize) -> (Vec<Candidate>, bool) {
        let query = self.quantized_query(query);
        let shortlist = self.scan_quantized(&query, m);
        let excluded_min = shortlist.excluded_min;
        // Stage two: exact distance keys of the shortlisted rows, best row per person.
        let mut rows: Vec<(u32, f32)> = shortlist
            .heap
            .into_iter()
            .map(|b| {
                let row = b.1 as usize;
                (self.row_person[row], self.exact_key(&query, row))
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        rows.dedup_by_key(|r| r.0);
        rows.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        rows.truncate(k);
        // A left-out row has a key ≥ its lower bound ≥ `excluded_min`: when the k-th key
        // is no larger, nothing left out can enter the top k.
        let proven = match rows.get(k - 1) {
            Some(kth) => kth.1 <= excluded_min,
            None => excluded_min == f32::INFINITY,
        };
        let top = rows
            .into_iter()
            .map(|(person, key)| Candidate {
                person: person as usize,
                distance: self.key_to_distance(key),
            })
            .collect();
        (top, proven)
    }

    fn quantized_query(&self, query: &[f32]) -> Query {
        let (q, sq) = self.prepared_query(query);
        let (scale, codes) = quantize(&q, self.quant.stride);
        let l1 = q.iter().map(|v| v.abs()).sum();
        Query {
            codes: codes.into_iter().map(i16::from).collect(),
            q,
            sq,
            scale,
            l1,
        }
    }

    /// The exact distance key of one row: d² for Euclidean, 1 − cos for cosine.
    fn exact_key(&self, query: &Query, row: usize) -> f32 {
        let r = &self.data[row * self.dim..(row + 1) * self.dim];
        match self.kind {
            DistanceKind::Cosine => 1.0 - dot(&query.q, r),
            DistanceKind::Euclidean => {
                (query.sq + self.sq_norms[row] - 2.0 * dot(&query.q, r)).max(0.0)
            }
        }
    }

    fn key_to_distance(&self, key: f32) -> f32 {
        match self.kind {
            DistanceKind::Cosine => key,
            DistanceKind::Euclidean => key.sqrt(),
        }
    }

    /// Stage one: the `m` rows with the smallest lower bound of their distance key.
    fn scan_quantized(&self, query: &Query, m: usize) -> Shortlist {
        let chunks = self.len().div_ceil(PAR_CHUNK_ROWS);
        (0..chunks)
            .into_par_iter()
            .map(|c| {
                let first = c * PAR_CHUNK_ROWS;
                let last = (first + PAR_CHUNK_ROWS).min(self.len());
                self.scan_rows(query, m, first, last)
            })
            .reduce(|| Shortlist::new(m), Shortlist::merge)
    }

    fn scan_rows(&self, query: &Query, m: usize, first: usize, last: usize) -> Shortlist {
        const BATCH: usize = 256;
        let stride = self.quant.stride;
        let mut list = Shortlist::new(m);
        let mut dots = [0i32; BATCH];
        // Slack for f32 rounding in the bound itself and in the exact keys.
        const SLACK: f32 = 1.0 + 1e-3;
        let mut start = first;
        while start < last {
            let end = (start + BATCH).min(last);
            let n = end - start;
            kernel::dots(
                &query.codes,
                &self.quant.codes[start * stride..end * stride],
                stride,
                &mut dots[..n],
            );
            let scales = &self.quant.scale[start..end];
            let l1s = &self.quant.scaled_l1[start..end];
            for i in 0..n {
                let s_r = scales[i];
                let approx = query.scale * s_r * dots[i] as f32;
                let err = 0.5 * (s_r * query.l1 + query.scale * l1s[i]) * SLACK + 1e-6;
                let lower = match self.kind {
                    DistanceKind::Cosine => 1.0 - approx - err,
                    DistanceKind::Euclidean => {
                        query.sq + self.sq_norms[start + i] - 2.0 * (approx + err)
                    }
                };
                list.offer(lower, (start + i) as u32);
            }
            start = end;
        }
        list
    }

    /// The textbook search, kept as a baseline: one thread, the metric's own distance per
    /// row, a full sort.
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

fn shortlist_size(k: usize) -> usize {
    SHORTLIST_MIN.max(SHORTLIST_PER_K.saturating_mul(k))
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

    /// `people` identities around random centres, `per_person` photos each at a small
    /// spread, like real face embeddings (tight clusters, far apart).
    fn clustered(kind: DistanceKind, people: usize, per_person: usize, dim: usize) -> Gallery {
        let centres = pseudo_random(people * dim, 11);
        let noise = pseudo_random(people * per_person * dim, 13);
        let mut data = Vec::with_capacity(people * per_person * dim);
        for p in 0..people {
            for j in 0..per_person {
                let n = &noise[(p * per_person + j) * dim..][..dim];
                data.extend(
                    centres[p * dim..(p + 1) * dim]
                        .iter()
                        .zip(n)
                        .map(|(c, e)| 0.2 * c + 0.02 * e),
                );
            }
        }
        let rows = people * per_person;
        Gallery::from_parts(
            kind,
            dim,
            (0..people).map(|i| format!("p{i}")).collect(),
            (0..rows).map(|r| (r / per_person) as u32).collect(),
            vec![String::new(); rows],
            data,
        )
        .unwrap()
    }

    fn assert_same(a: &[Candidate], b: &[Candidate], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.person, y.person, "{what}: {a:?} vs {b:?}");
            assert!(
                (x.distance - y.distance).abs() < 1e-4,
                "{what}: {x:?} vs {y:?}"
            );
        }
    }

    /// recall@k of the two stages *without* the fallback must be 1.0, and the bound must
    /// prove nearly every answer (else the shortlist is too small to be worth it).
    fn check_two_stage(g: &Gallery, queries: &[Vec<f32>], k: usize, what: &str) {
        let mut proven = 0;
        for (i, q) in queries.iter().enumerate() {
            let exact = g.search_exact(q, k);
            let (two, ok) = g.search_two_stage(q, k, shortlist_size(k));
            assert_same(&two, &exact, &format!("{what}, query {i}"));
            assert_same(&g.search(q, k), &exact, &format!("{what}, query {i}"));
            proven += usize::from(ok);
        }
        assert!(
            proven * 10 >= queries.len() * 9,
            "{what}: the bound proved only {proven} of {} answers",
            queries.len()
        );
    }

    #[test]
    fn two_stage_equals_the_exact_scan_on_random_data() {
        for kind in [DistanceKind::Euclidean, DistanceKind::Cosine] {
            let g = gallery(kind, 40_000, 128);
            let queries: Vec<Vec<f32>> = (0..40).map(|i| pseudo_random(128, 100 + i)).collect();
            for k in [1, 5, 10] {
                check_two_stage(&g, &queries, k, &format!("{kind:?} random k={k}"));
            }
        }
    }

    #[test]
    fn two_stage_equals_the_exact_scan_on_clustered_data() {
        for kind in [DistanceKind::Euclidean, DistanceKind::Cosine] {
            // 2 000 people × 10 photos: queries are new photos of enrolled people, so the
            // right person's 10 rows and their neighbours crowd the top of the list.
            let g = clustered(kind, 2_000, 10, 128);
            let queries: Vec<Vec<f32>> = (0..40)
                .map(|i| {
                    let row = (i * 499) % g.len();
                    let noise = pseudo_random(128, 500 + i as u64);
                    g.data()[row * 128..(row + 1) * 128]
                        .iter()
                        .zip(&noise)
                        .map(|(v, e)| v + 0.02 * e)
                        .collect()
                })
                .collect();
            for k in [1, 5, 10] {
                check_two_stage(&g, &queries, k, &format!("{kind:?} clustered k={k}"));
            }
        }
    }

    #[test]
    fn a_failed_bound_falls_back_to_the_exact_answer() {
        // 5 000 copies of one row and one far row per person: every bound ties, the
        // shortlist cannot hold the k people, the check must refuse and search stays exact.
        let dim = 16;
        let base = pseudo_random(dim, 3);
        let rows = 5_000;
        let data: Vec<f32> = (0..rows).flat_map(|_| base.clone()).collect();
        let g = Gallery::from_parts(
            DistanceKind::Euclidean,
            dim,
            (0..rows).map(|i| format!("p{i}")).collect(),
            (0..rows as u32).collect(),
            vec![String::new(); rows],
            data,
        )
        .unwrap();
        let q: Vec<f32> = base.iter().map(|v| v + 0.01).collect();
        let k = 300;
        let (_, ok) = g.search_two_stage(&q, k, shortlist_size(1));
        assert!(!ok, "a shortlist smaller than k people cannot be proven");
        assert_same(&g.search(&q, k), &g.search_exact(&q, k), "ties");
    }

    #[test]
    fn edge_cases() {
        for kind in [DistanceKind::Euclidean, DistanceKind::Cosine] {
            let empty = Gallery::empty(kind, 128);
            assert!(empty.search(&pseudo_random(128, 1), 5).is_empty());
            assert!(empty.search_exact(&pseudo_random(128, 1), 5).is_empty());

            let small = gallery(kind, 10, 128);
            let q = pseudo_random(128, 2);
            // k larger than the people: everyone, closest first.
            let all = small.search(&q, 50);
            assert_eq!(all.len(), 5);
            assert!(all.windows(2).all(|w| w[0].distance <= w[1].distance));
            assert!(small.search(&q, 0).is_empty());
            // A query of the wrong dimension matches nobody rather than panicking.
            assert!(small.search(&q[..64], 3).is_empty());

            // k > people on a gallery large enough for the two stages.
            let big = gallery(kind, 2 * TWO_STAGE_MIN_ROWS, 32);
            let q = pseudo_random(32, 5);
            let k = big.people().len() + 10;
            assert_same(&big.search(&q, k), &big.search_exact(&q, k), "k > n");
            // A dimension that is not a multiple of the int8 block.
            let odd = gallery(kind, 3 * TWO_STAGE_MIN_ROWS, 37);
            let q = pseudo_random(37, 6);
            let (two, _) = odd.search_two_stage(&q, 5, shortlist_size(5));
            assert_same(&two, &odd.search_exact(&q, 5), "dim 37");
        }
    }

    #[test]
    fn the_int8_bound_holds_for_every_row() {
        for kind in [DistanceKind::Euclidean, DistanceKind::Cosine] {
            let g = gallery(kind, 2_000, 128);
            let q = g.quantized_query(&pseudo_random(128, 77));
            let list = g.scan_rows(&q, g.len(), 0, g.len());
            for b in list.heap {
                let exact = g.exact_key(&q, b.1 as usize);
                assert!(b.0 <= exact, "row {}: bound {} > exact {exact}", b.1, b.0);
                // …and not uselessly loose.
                assert!(exact - b.0 < 0.1 * exact.max(0.1), "{} vs {exact}", b.0);
            }
        }
    }

    #[test]
    fn removing_and_adding_keep_the_int8_copy_in_step() {
        let mut g = gallery(DistanceKind::Euclidean, 2 * TWO_STAGE_MIN_ROWS, 128);
        let e = pseudo_random(128, 4321);
        g.add("late", std::slice::from_ref(&e), "test").unwrap();
        let top = g.search(&e, 3);
        assert_eq!(g.people()[top[0].person], "late");
        let without = g.without("p3").unwrap();
        let q = pseudo_random(128, 8);
        assert_same(
            &without.search(&q, 5),
            &without.search_exact(&q, 5),
            "without",
        );
        assert_eq!(without.quant.scale.len(), without.len());
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

    #[test]
    fn dropping_rows_by_source_keeps_the_rest_and_drops_emptied_people() {
        let mut g = Gallery::empty(DistanceKind::Cosine, 2);
        g.add("ann", &[vec![1.0, 0.0]], "review:a1").unwrap();
        g.add("bob", &[vec![0.0, 1.0]], "review:b1").unwrap();
        g.add("ann", &[vec![0.9, 0.1]], "review:a2").unwrap();
        let without = g.without_rows(|p, s| p == "ann" && s == "review:a1");
        assert_eq!(without.people(), ["ann", "bob"]);
        assert_eq!(without.sources(), ["review:b1", "review:a2"]);
        assert_eq!(without.counts(), [1, 1]);
        let top = without.search(&[0.9, 0.1], 1);
        assert_eq!(without.people()[top[0].person], "ann");
        // Bob's only row gone: Bob is gone, Ann's rows now belong to person 0.
        let no_bob = g.without_rows(|_, s| s == "review:b1");
        assert_eq!(no_bob.people(), ["ann"]);
        assert_eq!(no_bob.row_person(), [0, 0]);
        assert_eq!(no_bob.quant.scale.len(), 2);
    }
}
