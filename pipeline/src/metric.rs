//! How two embeddings are compared: plain data shared by the networks (which produce
//! embeddings), the gallery (which searches them) and deployments (which record them).

use serde::{Deserialize, Serialize};

/// How two embeddings are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistanceKind {
    /// Euclidean distance of raw embeddings (the pretrained network; face-api's 0.6).
    Euclidean,
    /// 1 − cosine similarity of L2-normalised embeddings (trained models).
    Cosine,
}

/// The distance and the threshold under which two faces are the same person.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub distance: DistanceKind,
    pub threshold: f32,
}

impl Metric {
    pub fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.distance {
            DistanceKind::Euclidean => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            DistanceKind::Cosine => {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                1.0 - dot / (na * nb).max(1e-12)
            }
        }
    }

    /// True when `a` and `b` are closer than the threshold.
    pub fn same(&self, a: &[f32], b: &[f32]) -> bool {
        self.distance(a, b) < self.threshold
    }
}

/// The pretrained network's metric: Euclidean distance, face-api's threshold 0.6.
pub const PRETRAINED_METRIC: Metric = Metric {
    distance: DistanceKind::Euclidean,
    threshold: 0.6,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_the_threshold() {
        let m = PRETRAINED_METRIC;
        assert!((m.distance(&[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-6);
        assert!(m.same(&[0.0, 0.0], &[0.3, 0.4]));
        assert!(
            !m.same(&[0.0, 0.0], &[0.6, 0.0]),
            "the threshold is exclusive"
        );
        let c = Metric {
            distance: DistanceKind::Cosine,
            threshold: 0.5,
        };
        assert!(c.distance(&[1.0, 0.0], &[2.0, 0.0]).abs() < 1e-6);
        assert!((c.distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-6);
        // A zero vector has no direction: distance 1, never NaN.
        assert!((c.distance(&[0.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"distance":"cosine","threshold":0.5}"#);
    }
}
