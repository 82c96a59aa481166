//! One deployment bundle on disk: `deployment.json` (what it is), `gallery.safetensors`
//! (the embedding matrix, tensor `embeddings`, `[rows, dim]` f32) and `labels.json` (the
//! people and the person of every row). The model is referenced, not copied per version:
//! trained artifacts are stored once, content-addressed, under `REGISTRY/models/`.

use std::path::Path;

use facepipe_pipeline::Metric;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gallery::Gallery;

pub const DEPLOYMENT_JSON: &str = "deployment.json";
pub const GALLERY_FILE: &str = "gallery.safetensors";
pub const LABELS_JSON: &str = "labels.json";
const EMBEDDINGS_TENSOR: &str = "embeddings";

/// Which network embeds faces for a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelRef {
    /// The pretrained 128-d network from the face-api weights found at run time.
    Pretrained { package: String },
    /// A trained artifact stored in the registry at `models/<sha256>/`.
    Artifact {
        /// SHA-256 of `model.safetensors` (and the folder name under `models/`).
        sha256: String,
        /// Where it was deployed from, for people reading `deployment.json`.
        source: String,
    },
}

impl ModelRef {
    pub fn pretrained() -> Self {
        ModelRef::Pretrained {
            package: facepipe_pipeline::models::PACKAGE.into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelRef::Pretrained { package } => format!("pretrained ({package})"),
            ModelRef::Artifact { sha256, source } => {
                format!("artifact {} from {source}", &sha256[..sha256.len().min(12)])
            }
        }
    }
}

/// `deployment.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    pub version: u32,
    /// A name people give the deployment (`facepipe deploy --name`).
    #[serde(default)]
    pub name: Option<String>,
    /// RFC 3339, UTC.
    pub created: String,
    pub model: ModelRef,
    pub metric: Metric,
    pub embedding_dim: usize,
    pub people: usize,
    pub embeddings: usize,
    /// What the gallery was built from (a path, or the version it was edited from).
    pub gallery_source: String,
    /// The version this one was derived from (enroll/delete at run time).
    pub parent: Option<u32>,
    /// Why it was published: "deploy", "enroll NAME", "delete NAME".
    pub reason: String,
}

/// `labels.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Labels {
    people: Vec<String>,
    /// Person index of every gallery row.
    rows: Vec<u32>,
    /// Source of every gallery row.
    sources: Vec<String>,
}

/// A deployment as published: its description and its gallery.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub info: DeploymentInfo,
    pub gallery: Gallery,
}

impl Bundle {
    /// The three files of the bundle as `(name, bytes)`, `deployment.json` last: a reader
    /// takes its presence to mean the others are complete.
    pub fn encode(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let g = &self.gallery;
        let bytes: Vec<u8> = g.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![g.len(), g.dim()], &bytes)
            .map_err(|e| Error::Internal(format!("gallery tensor: {e:?}")))?;
        let gallery = safetensors::serialize([(EMBEDDINGS_TENSOR, view)], &None)
            .map_err(|e| Error::Internal(format!("gallery tensor: {e:?}")))?;
        let labels = Labels {
            people: g.people().to_vec(),
            rows: g.row_person().to_vec(),
            sources: g.sources().to_vec(),
        };
        Ok(vec![
            (GALLERY_FILE, gallery),
            (LABELS_JSON, to_json(LABELS_JSON, &labels)?),
            (DEPLOYMENT_JSON, to_json(DEPLOYMENT_JSON, &self.info)?),
        ])
    }

    /// Rebuild a bundle from the bytes of its three files; `at` names where they came from
    /// in error messages.
    pub fn decode(at: &str, deployment: &[u8], labels: &[u8], gallery: &[u8]) -> Result<Self> {
        let info: DeploymentInfo = serde_json::from_slice(deployment)
            .map_err(|e| Error::registry(format!("{at}/{DEPLOYMENT_JSON}"), e))?;
        let labels: Labels = serde_json::from_slice(labels)
            .map_err(|e| Error::registry(format!("{at}/{LABELS_JSON}"), e))?;
        let path = format!("{at}/{GALLERY_FILE}");
        let tensors = safetensors::SafeTensors::deserialize(gallery)
            .map_err(|e| Error::registry(&path, format!("{e:?}")))?;
        let t = tensors
            .tensor(EMBEDDINGS_TENSOR)
            .map_err(|e| Error::registry(&path, format!("{e:?}")))?;
        if t.dtype() != Dtype::F32 || t.shape().len() != 2 {
            return Err(Error::registry(
                &path,
                format!(
                    "expected f32 [rows, dim], found {:?} {:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let dim = t.shape()[1];
        // Cosine rows were stored normalised; normalising again is harmless.
        let gallery = Gallery::from_parts(
            info.metric.distance,
            dim,
            labels.people,
            labels.rows,
            labels.sources,
            data,
        )
        .map_err(|e| Error::registry(at, e))?;
        Ok(Bundle { info, gallery })
    }

    /// Write the three files into `dir` (which must exist).
    pub fn write(&self, dir: &Path) -> Result<()> {
        for (name, bytes) in self.encode()? {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::registry(path.display(), e))?;
        }
        Ok(())
    }

    /// Read a bundle written by [`Bundle::write`].
    pub fn read(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| Error::registry(path.display(), e))
        };
        Bundle::decode(
            &dir.display().to_string(),
            &read(DEPLOYMENT_JSON)?,
            &read(LABELS_JSON)?,
            &read(GALLERY_FILE)?,
        )
    }
}

/// Current time as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

fn to_json<T: Serialize>(name: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(format!("encoding {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use facepipe_pipeline::DistanceKind;

    #[test]
    fn bundle_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut gallery = Gallery::empty(DistanceKind::Euclidean, 4);
        gallery
            .add(
                "Ada",
                &[vec![1.0, 2.0, 3.0, 4.0], vec![0.5, 0.0, 0.0, 1.0]],
                "a.jpg",
            )
            .unwrap();
        gallery
            .add("Bob", &[vec![-1.0, 0.0, 2.0, 0.0]], "b.jpg")
            .unwrap();
        let info = DeploymentInfo {
            version: 3,
            name: Some("test".into()),
            created: now_rfc3339(),
            model: ModelRef::pretrained(),
            metric: facepipe_pipeline::PRETRAINED_METRIC,
            embedding_dim: 4,
            people: 2,
            embeddings: 3,
            gallery_source: "test".into(),
            parent: None,
            reason: "deploy".into(),
        };
        Bundle {
            info: info.clone(),
            gallery,
        }
        .write(dir.path())
        .unwrap();
        let back = Bundle::read(dir.path()).unwrap();
        assert_eq!(back.info, info);
        assert_eq!(back.gallery.people(), ["Ada", "Bob"]);
        assert_eq!(back.gallery.row_person(), [0, 0, 1]);
        assert_eq!(back.gallery.data()[4..8], [0.5, 0.0, 0.0, 1.0]);
        assert_eq!(back.gallery.sources()[2], "b.jpg");
    }
}
