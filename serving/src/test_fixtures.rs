//! Fixtures shared by this crate's unit tests, `serving/tests` and the workspace's
//! `tests/tests` (feature `test-support`): small deployments that need no model or photo.

use facepipe_pipeline::DistanceKind;

use crate::deployment::{now_rfc3339, Bundle, DeploymentInfo, ModelRef};
use crate::gallery::Gallery;

/// A deployment of the pretrained model holding one person with one 2-d embedding,
/// `[1, 0]` (Euclidean), as `facepipe deploy` would publish it (version 0: publishing
/// numbers it).
pub fn bundle(person: &str) -> Bundle {
    bundle_with(person, &[[1.0, 0.0]])
}

/// [`bundle`] with `person` enrolled with `embeddings` (2-d, so they always fit).
pub fn bundle_with(person: &str, embeddings: &[[f32; 2]]) -> Bundle {
    let rows: Vec<Vec<f32>> = embeddings.iter().map(|e| e.to_vec()).collect();
    let mut gallery = Gallery::empty(DistanceKind::Euclidean, 2);
    gallery
        .add(person, &rows, "test")
        .expect("2-d embeddings fit a 2-d gallery");
    Bundle {
        info: DeploymentInfo {
            version: 0,
            name: None,
            created: now_rfc3339(),
            model: ModelRef::pretrained(),
            metric: facepipe_pipeline::PRETRAINED_METRIC,
            embedding_dim: gallery.dim(),
            people: gallery.people().len(),
            embeddings: gallery.len(),
            gallery_source: "test".into(),
            parent: None,
            reason: "deploy".into(),
        },
        gallery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_matches_the_gallery() {
        let b = bundle_with("ada", &[[1.0, 0.0], [0.9, 0.1]]);
        assert_eq!(b.gallery.people(), ["ada"]);
        assert_eq!((b.info.people, b.info.embeddings), (1, 2));
        assert_eq!(b.info.embedding_dim, 2);
        let one = bundle("bob");
        assert_eq!((one.info.people, one.info.embeddings), (1, 1));
        assert_eq!(one.gallery.data(), [1.0, 0.0]);
    }
}
