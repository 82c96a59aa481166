//! What goes in: one record per detected face, the quality gate in front of the
//! clustering, and the people already enrolled in a deployment.

use serde::{Deserialize, Serialize};

/// One detected face of the collection, embedded by the caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    /// Stable face id, e.g. `"2019/beach.jpg#0"`; decisions refer to faces by it.
    pub id: String,
    /// The photo the face was found in. Two faces of one photo are never the same person.
    pub photo: String,
    /// The detection box `[x, y, width, height]` in photo pixels (as the pipeline's `BBox`);
    /// carried through for contact sheets, not used by the clustering.
    pub bbox: [f32; 4],
    /// The embedding, L2-normalised (normalised again here, so any length but zero works).
    pub embedding: Vec<f32>,
    pub quality: Quality,
}

/// How much an embedding can be trusted, measured by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// The detector's confidence.
    pub det_score: f32,
    /// Shorter side of the detection box in photo pixels.
    pub box_px: f32,
    /// Variance of the 4-neighbour Laplacian of the aligned crop's luma, in squared 8-bit
    /// grey levels (the pipeline's `quality::sharpness`); low means blurred.
    pub sharpness: f32,
}

/// Why a face failed the [`QualityGate`], in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityIssue {
    /// Detector score under `min_det_score` (often not a face, a profile or occluded).
    LowScore,
    /// Box shorter side under `min_box_px`.
    TooSmall,
    /// Sharpness under `min_sharpness`.
    Blurred,
}

/// Faces whose embeddings are too unreliable to cluster. A bad embedding does more harm
/// than a missing one: it lands between people and, through average linkage, pulls two
/// of them together. Gated faces are reported, not dropped, so a reviewer can still name
/// them (a `named` face passes the gate, see [`crate::Decisions`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityGate {
    pub min_det_score: f32,
    pub min_box_px: f32,
    pub min_sharpness: f32,
}

impl Default for QualityGate {
    fn default() -> Self {
        QualityGate {
            // The detector keeps boxes above 0.5, so this only keeps out faces it did not
            // find at all (the whole-frame fallback scores 0). Raising it to 0.7 would drop
            // false positives but also the tight pre-aligned chips, which the padded retry
            // finds at 0.5–0.65 (measured on the bundled sample people).
            min_det_score: 0.5,
            // The aligned chip is 150 px with the face about 100 px across: a face under
            // 40 px is upsampled more than 2.5×, and its embedding mostly encodes the blur.
            min_box_px: 40.0,
            // Sharp 150 px face chips score in the hundreds; under 20 is strong motion or
            // focus blur. Deliberately low: it only removes the hopeless crops. Tune per
            // camera, and compute it on the aligned chip, as the scale depends on it.
            min_sharpness: 20.0,
        }
    }
}

impl QualityGate {
    /// `Ok` when the face may be clustered, else the first failed check. A value that is
    /// not a number fails its check.
    pub fn check(&self, q: &Quality) -> Result<(), QualityIssue> {
        // A plain `x < min` would let NaN through.
        let below = |x: f32, min: f32| x.is_nan() || x < min;
        if below(q.det_score, self.min_det_score) {
            Err(QualityIssue::LowScore)
        } else if below(q.box_px, self.min_box_px) {
            Err(QualityIssue::TooSmall)
        } else if below(q.sharpness, self.min_sharpness) {
            Err(QualityIssue::Blurred)
        } else {
            Ok(())
        }
    }
}

/// A person already enrolled in a deployment, with the embeddings they were enrolled
/// with (same model as the faces). Anchors name groups and are never merged together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    pub name: String,
    pub embeddings: Vec<Vec<f32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(det_score: f32, box_px: f32, sharpness: f32) -> Quality {
        Quality {
            det_score,
            box_px,
            sharpness,
        }
    }

    #[test]
    fn the_gate_reports_the_first_failed_check() {
        let gate = QualityGate::default();
        assert_eq!(gate.check(&q(0.9, 80.0, 150.0)), Ok(()));
        assert_eq!(
            gate.check(&q(0.5, 40.0, 20.0)),
            Ok(()),
            "limits are inclusive"
        );
        assert_eq!(
            gate.check(&q(0.45, 80.0, 150.0)),
            Err(QualityIssue::LowScore)
        );
        assert_eq!(
            gate.check(&q(0.9, 30.0, 150.0)),
            Err(QualityIssue::TooSmall)
        );
        assert_eq!(gate.check(&q(0.9, 80.0, 5.0)), Err(QualityIssue::Blurred));
        assert_eq!(gate.check(&q(0.1, 10.0, 1.0)), Err(QualityIssue::LowScore));
        assert_eq!(gate.check(&q(0.9, 10.0, 1.0)), Err(QualityIssue::TooSmall));
        assert_eq!(
            gate.check(&q(0.9, 80.0, f32::NAN)),
            Err(QualityIssue::Blurred)
        );
        assert_eq!(
            gate.check(&q(f32::NAN, 80.0, 150.0)),
            Err(QualityIssue::LowScore)
        );
    }

    #[test]
    fn a_partial_gate_config_keeps_the_other_defaults() {
        let gate: QualityGate = serde_json::from_str(r#"{"min_box_px": 64}"#).unwrap();
        assert_eq!(gate.min_box_px, 64.0);
        assert_eq!(gate.min_det_score, QualityGate::default().min_det_score);
        assert_eq!(gate.min_sharpness, QualityGate::default().min_sharpness);
    }
}
