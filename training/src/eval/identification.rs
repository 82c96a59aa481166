//! Closed-set identification: one gallery photo per person, every other photo a probe;
//! rank-1 is the share of probes whose nearest gallery photo is their own person.

use serde::{Deserialize, Serialize};

use facepipe_model::Metric;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identification {
    /// People in the gallery (one photo each; people with one photo are distractors).
    pub gallery: usize,
    /// Probe photos (people with at least two photos, minus their gallery photo).
    pub probes: usize,
    pub rank1: f64,
    /// Share of probes whose own gallery photo is among the five nearest.
    pub rank5: f64,
}

/// The first photo of each person (in input order) is the gallery photo.
pub fn identification(
    embeddings: &[Vec<f32>],
    labels: &[usize],
    metric: &Metric,
) -> Identification {
    let mut gallery: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, &l) in labels.iter().enumerate() {
        if seen.insert(l) {
            gallery.push(i);
        }
    }
    let gallery_set: std::collections::HashSet<usize> = gallery.iter().copied().collect();
    let (mut probes, mut hit1, mut hit5) = (0usize, 0usize, 0usize);
    for (i, e) in embeddings.iter().enumerate() {
        if gallery_set.contains(&i) {
            continue;
        }
        probes += 1;
        let mut ranked: Vec<(f32, usize)> = gallery
            .iter()
            .map(|&g| (metric.distance(e, &embeddings[g]), labels[g]))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        if ranked.first().is_some_and(|r| r.1 == labels[i]) {
            hit1 += 1;
        }
        if ranked.iter().take(5).any(|r| r.1 == labels[i]) {
            hit5 += 1;
        }
    }
    let rate = |h: usize| {
        if probes == 0 {
            0.0
        } else {
            h as f64 / probes as f64
        }
    };
    Identification {
        gallery: gallery.len(),
        probes,
        rank1: rate(hit1),
        rank5: rate(hit5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facepipe_model::DistanceKind;

    #[test]
    fn nearest_gallery_photo_decides() {
        let m = Metric {
            distance: DistanceKind::Euclidean,
            threshold: 0.6,
        };
        // Person 0 near x=0, person 1 near x=10; the last probe of person 1 sits near person 0.
        let e = vec![
            vec![0.0, 0.0],
            vec![10.0, 0.0],
            vec![0.5, 0.0],
            vec![9.0, 0.0],
            vec![1.0, 0.0],
        ];
        let labels = [0, 1, 0, 1, 1];
        let r = identification(&e, &labels, &m);
        assert_eq!((r.gallery, r.probes), (2, 3));
        assert!((r.rank1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.rank5, 1.0);
    }
}
