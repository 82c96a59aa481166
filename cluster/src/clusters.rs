//! Clusters under constraints: a union-find over points (faces and anchor embeddings)
//! whose roots carry what a merge must respect.
//!
//! Every cannot-link is checked at merge time against per-cluster state, never a matrix:
//! - the set of photos (two faces of one photo are never one person),
//! - the identity (an anchor or `named` name; two identities never merge),
//! - excluded points and excluded identities (cannot-links and removals).
//!
//! A conflict between two clusters persists for every pair of clusters containing them,
//! which is what lets the agglomeration drop a conflicting pair for good.

use std::collections::HashSet;

use crate::vector::dot64;

pub(crate) struct Clusters {
    dim: usize,
    parent: Vec<u32>,
    /// Points in the cluster (valid at roots).
    size: Vec<u32>,
    /// Sum of the cluster's unit vectors, `dim` per point (valid at roots).
    sum: Vec<f64>,
    photos: Vec<HashSet<u32>>,
    identity: Vec<Option<u32>>,
    /// One point of each identity's cluster, once it has one.
    identity_point: Vec<Option<u32>>,
    excluded_points: Vec<Vec<u32>>,
    excluded_identities: Vec<Vec<u32>>,
}

impl Clusters {
    /// One cluster per point. `photo[p]` is `None` for anchor embeddings.
    pub(crate) fn new(
        points: &[f32],
        dim: usize,
        photo: &[Option<u32>],
        identities: usize,
    ) -> Self {
        let n = photo.len();
        Clusters {
            dim,
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            sum: points.iter().map(|&x| f64::from(x)).collect(),
            photos: photo.iter().map(|p| p.iter().copied().collect()).collect(),
            identity: vec![None; n],
            identity_point: vec![None; identities],
            excluded_points: vec![Vec::new(); n],
            excluded_identities: vec![Vec::new(); n],
        }
    }

    pub(crate) fn find(&mut self, mut p: u32) -> u32 {
        // Path halving: every visited node skips to its grandparent.
        while self.parent[p as usize] != p {
            let grand = self.parent[self.parent[p as usize] as usize];
            self.parent[p as usize] = grand;
            p = grand;
        }
        p
    }

    pub(crate) fn size(&self, root: u32) -> u32 {
        self.size[root as usize]
    }

    pub(crate) fn identity(&mut self, p: u32) -> Option<u32> {
        let r = self.find(p);
        self.identity[r as usize]
    }

    /// Point `a` and point `b` are different people.
    pub(crate) fn exclude_point(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        self.excluded_points[ra as usize].push(b);
        self.excluded_points[rb as usize].push(a);
    }

    /// Point `p` is not identity `id`.
    pub(crate) fn exclude_identity(&mut self, p: u32, id: u32) {
        let r = self.find(p);
        self.excluded_identities[r as usize].push(id);
    }

    /// The cluster of identity `id`, if it has points yet.
    pub(crate) fn identity_root(&mut self, id: u32) -> Option<u32> {
        let p = self.identity_point[id as usize]?;
        Some(self.find(p))
    }

    /// True when roots `a` and `b` must never be one cluster.
    pub(crate) fn conflict(&mut self, a: u32, b: u32) -> bool {
        let (ai, bi) = (a as usize, b as usize);
        if let (Some(x), Some(y)) = (self.identity[ai], self.identity[bi]) {
            if x != y {
                return true;
            }
        }
        let (small, large) = if self.photos[ai].len() <= self.photos[bi].len() {
            (&self.photos[ai], &self.photos[bi])
        } else {
            (&self.photos[bi], &self.photos[ai])
        };
        if small.iter().any(|p| large.contains(p)) {
            return true;
        }
        for (this, other) in [(ai, b), (bi, a)] {
            if let Some(id) = self.identity[other as usize] {
                if self.excluded_identities[this].contains(&id) {
                    return true;
                }
            }
            for k in 0..self.excluded_points[this].len() {
                let p = self.excluded_points[this][k];
                if self.find(p) == other {
                    return true;
                }
            }
        }
        false
    }

    /// Merge roots `a` and `b` (the caller checked [`Self::conflict`]); returns the new
    /// root. Union by size keeps trees shallow and moves the smaller sets into the larger.
    pub(crate) fn union(&mut self, a: u32, b: u32) -> u32 {
        let (root, child) = if self.size[a as usize] >= self.size[b as usize] {
            (a, b)
        } else {
            (b, a)
        };
        let (r, c) = (root as usize, child as usize);
        self.parent[c] = root;
        self.size[r] += self.size[c];
        let d = self.dim;
        for k in 0..d {
            self.sum[r * d + k] += self.sum[c * d + k];
        }
        let photos = std::mem::take(&mut self.photos[c]);
        if photos.len() > self.photos[r].len() {
            let small = std::mem::replace(&mut self.photos[r], photos);
            self.photos[r].extend(small);
        } else {
            self.photos[r].extend(photos);
        }
        if self.identity[r].is_none() {
            self.identity[r] = self.identity[c];
        }
        let points = std::mem::take(&mut self.excluded_points[c]);
        self.excluded_points[r].extend(points);
        let ids = std::mem::take(&mut self.excluded_identities[c]);
        self.excluded_identities[r].extend(ids);
        root
    }

    /// Merge the clusters of points `p` and `q` unless a cannot-link forbids it.
    pub(crate) fn try_join(&mut self, p: u32, q: u32) -> bool {
        let (a, b) = (self.find(p), self.find(q));
        if a == b {
            return true;
        }
        if self.conflict(a, b) {
            return false;
        }
        self.union(a, b);
        true
    }

    /// Put point `p`'s cluster into identity `id` unless a cannot-link forbids it.
    pub(crate) fn join_identity(&mut self, p: u32, id: u32) -> bool {
        if let Some(q) = self.identity_point[id as usize] {
            return self.try_join(p, q);
        }
        let r = self.find(p) as usize;
        if self.identity[r].is_some() || self.excluded_identities[r].contains(&id) {
            return false;
        }
        self.identity[r] = Some(id);
        self.identity_point[id as usize] = Some(p);
        true
    }

    /// Average-linkage cosine distance of roots `a` and `b`: the mean of `1 − x·y` over
    /// all cross pairs is `1 − ΣA·ΣB / (|A||B|)` for unit vectors, so O(dim), exactly.
    pub(crate) fn average_distance(&self, a: u32, b: u32) -> f64 {
        let d = self.dim;
        let (sa, sb) = (
            &self.sum[a as usize * d..][..d],
            &self.sum[b as usize * d..][..d],
        );
        let pairs = f64::from(self.size[a as usize]) * f64::from(self.size[b as usize]);
        1.0 - dot64(sa, sb) / pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_distance_from_sums_is_the_mean_over_pairs() {
        // Unit vectors at angles 0°, 40° | 100°, 170°, 250°.
        let v: Vec<[f32; 2]> = [0.0f32, 40.0, 100.0, 170.0, 250.0]
            .iter()
            .map(|a| [a.to_radians().cos(), a.to_radians().sin()])
            .collect();
        let points: Vec<f32> = v.iter().flatten().copied().collect();
        let mut c = Clusters::new(
            &points,
            2,
            &[Some(0), Some(1), Some(2), Some(3), Some(4)],
            0,
        );
        let a = c.union(0, 1);
        let b = c.union(2, 3);
        let b = c.union(b, 4);
        let mut brute = 0.0;
        for x in &v[..2] {
            for y in &v[2..] {
                brute += 1.0 - f64::from(x[0] * y[0] + x[1] * y[1]);
            }
        }
        brute /= 6.0;
        assert!((c.average_distance(a, b) - brute).abs() < 1e-6);
    }

    #[test]
    fn conflicts_follow_photos_identities_and_exclusions() {
        let points = [1.0f32, 0.0].repeat(6);
        // Points 0 and 1 share a photo; 3 is an anchor embedding.
        let photo = [Some(0), Some(0), Some(1), None, Some(2), Some(3)];
        let mut c = Clusters::new(&points, 2, &photo, 2);
        assert!(!c.try_join(0, 1), "same photo");
        assert!(c.join_identity(3, 0));
        c.exclude_identity(2, 0);
        assert!(!c.try_join(2, 3), "removed from the name");
        assert!(!c.join_identity(2, 0));
        assert!(c.join_identity(2, 1));
        assert!(!c.try_join(2, 3), "two identities");
        assert!(c.try_join(1, 3));
        assert_eq!(c.identity(1), Some(0));
        c.exclude_point(4, 5);
        assert!(c.try_join(5, 1));
        assert!(!c.try_join(4, 3), "4 is not 5, and 5 is now in 3's cluster");
        assert!(c.try_join(4, 2));
    }
}
