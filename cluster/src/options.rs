//! How the clustering runs.

use serde::{Deserialize, Serialize};

/// The distance between two clusters, over the cosine distances of their members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Linkage {
    /// Mean distance over all cross pairs. Robust to one odd photo of a person (single
    /// linkage chains people together through it; complete linkage splits the person).
    /// For unit vectors it equals `1 − ΣA·ΣB / (|A||B|)`, so it is exact from cluster sums.
    #[default]
    Average,
    /// Largest distance over all cross pairs: every member within the threshold of every
    /// other. Higher precision, more groups per person.
    Complete,
}

/// Options of [`crate::group()`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterOptions {
    /// Cosine distance under which two faces may be the same person (strict). It comes
    /// from the deployed model's calibration, so there is no default.
    pub threshold: f32,
    #[serde(default)]
    pub linkage: Linkage,
    /// Groups with fewer faces go to `unclustered` (reason `small_group`), unless they
    /// carry a name. Default 2: a face seen once is not yet a person to review.
    #[serde(default = "default_min_group_size")]
    pub min_group_size: usize,
}

fn default_min_group_size() -> usize {
    2
}

impl ClusterOptions {
    /// Average linkage, the default minimum group size, and the model's threshold.
    pub fn new(threshold: f32) -> Self {
        ClusterOptions {
            threshold,
            linkage: Linkage::default(),
            min_group_size: default_min_group_size(),
        }
    }
}
