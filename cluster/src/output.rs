//! The files `facepipe cluster` writes into its output folder, read back by the review
//! service: `clusters.json` ([`ClustersFile`]) and `decisions.json` ([`Decisions`]).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decisions::Decisions;
use crate::error::{Error, Result};
use crate::grouping::{Conflict, Group, Reason};
use crate::record::{Quality, QualityGate};
use crate::score::Scores;

/// The grouping, in OUT.
pub const CLUSTERS_FILE: &str = "clusters.json";
/// The reviewer's decisions, in OUT; read on every run.
pub const DECISIONS_FILE: &str = "decisions.json";
/// The aligned faces (a prepared dataset: manifest and shards), in OUT.
pub const FACES_DIR: &str = "faces";

/// `clusters.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClustersFile {
    pub photos: String,
    pub model: String,
    /// The deployment version whose model and people were used.
    pub deployment: Option<u32>,
    pub threshold: ThresholdUsed,
    pub gate: QualityGate,
    /// Photos listed, and how each ended (ok, no_face, unreadable, ...).
    pub photo_count: usize,
    pub photo_outcomes: HashMap<String, usize>,
    pub face_count: usize,
    /// Largest first.
    pub groups: Vec<GroupOut>,
    pub unclustered: Vec<FaceOut>,
    pub conflicts: Vec<Conflict>,
    /// Seconds the grouping step took (after embedding).
    pub grouping_s: f64,
    /// The grouping against `--truth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<TruthScores>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TruthScores {
    /// Faces the truth names (photos holding exactly one face).
    pub labelled_faces: usize,
    pub people: usize,
    pub pairwise: Scores,
    pub bcubed: Scores,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdUsed {
    /// Cosine distance of L2-normalised embeddings.
    pub cosine_distance: f32,
    /// Where it came from.
    pub source: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupOut {
    pub key: String,
    pub suggested_name: Option<String>,
    pub size: usize,
    pub representative: String,
    /// The contact sheet, relative to OUT.
    pub sheet: String,
    pub members: Vec<FaceOut>,
}

impl GroupOut {
    /// The group as the decision helpers take it.
    pub fn as_group(&self) -> Group {
        Group {
            key: self.key.clone(),
            members: self.members.iter().map(|m| m.face.clone()).collect(),
            representative: self.representative.clone(),
            suggested_name: self.suggested_name.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaceOut {
    /// The face's sample key in faces/.
    pub face: String,
    pub photo: String,
    /// `[x, y, width, height]` in photo pixels.
    pub bbox: [f32; 4],
    pub quality: Quality,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

impl ClustersFile {
    /// Read `clusters.json` from the output folder `out`.
    pub fn load(out: &Path) -> Result<ClustersFile> {
        let path = out.join(CLUSTERS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: format!(
                "not a clusters file written by facepipe cluster ({e}): run `facepipe cluster` again"
            ),
        })
    }

    /// The group holding `key`, if any.
    pub fn group(&self, key: &str) -> Option<&GroupOut> {
        self.groups.iter().find(|g| g.key == key)
    }
}

impl Decisions {
    /// Read decisions from `path`; a missing file is no decisions.
    pub fn load(path: &Path) -> Result<Decisions> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::File {
                path: path.display().to_string(),
                reason: format!("not a decisions file ({e}): fix or remove it to start over"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Decisions::default()),
            Err(e) => Err(Error::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Write the decisions to `path` whole or not at all (a temporary file renamed over
    /// it), so a crash mid-write never leaves a half file that loses every decision.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DECISIONS_FILE.into());
        let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&temp, text).map_err(io)?;
        std::fs::rename(&temp, path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io(e)
        })
    }
}
