//! Where the pretrained weights live, and how to read them.
//!
//! The weights come from the npm package `@vladmandic/face-api@1.7.15`; `scripts/setup.sh`
//! fetches it with `npm pack`, checks its sha256 and unpacks it into the cache directory.
//! Code never downloads anything: it finds the unpacked `model/` folder or says what to run.

pub mod tfjs;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use tfjs::TfjsWeights;

/// The npm package the pretrained networks come from (pinned; see `assets/models.json`).
pub const PACKAGE: &str = "@vladmandic/face-api@1.7.15";

/// The four networks facepipe uses, by their file stem in the package's `model/` folder.
pub const SSD_MOBILENETV1: &str = "ssd_mobilenetv1_model";
pub const TINY_FACE_DETECTOR: &str = "tiny_face_detector_model";
pub const FACE_LANDMARK_68: &str = "face_landmark_68_model";
pub const FACE_RECOGNITION: &str = "face_recognition_model";
pub const ALL_MODELS: [&str; 4] = [
    SSD_MOBILENETV1,
    TINY_FACE_DETECTOR,
    FACE_LANDMARK_68,
    FACE_RECOGNITION,
];

/// The cache directory: `$FACEPIPE_CACHE`, else `$XDG_CACHE_HOME/facepipe`, else `~/.cache/facepipe`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FACEPIPE_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("facepipe");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("facepipe")
}

/// A folder holding the tfjs manifests and `.bin` files of the pretrained networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// The default location inside the cache, where `scripts/setup.sh` unpacks the package.
    pub fn default_path() -> PathBuf {
        cache_dir()
            .join("face-api-1.7.15")
            .join("package")
            .join("model")
    }

    /// Find the models: an explicit folder, else `$FACEPIPE_MODELS`, else the cache.
    /// Fails with what to run when the weights are not there.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("FACEPIPE_MODELS").filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => Self::default_path(),
            },
        };
        Self::open(root)
    }

    /// Use exactly this folder; checks that every network's manifest is present.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let missing: Vec<&str> = ALL_MODELS
            .iter()
            .copied()
            .filter(|m| !root.join(format!("{m}-weights_manifest.json")).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Error::ModelsMissing {
                dir: root,
                hint: format!(
                    "missing {}; run `scripts/setup.sh` (it fetches {PACKAGE} with npm and unpacks it), \
                     or name the package's model/ folder explicitly (FACEPIPE_MODELS)",
                    missing.join(", ")
                ),
            });
        }
        Ok(ModelDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Load one network's weights by file stem (e.g. [`SSD_MOBILENETV1`]).
    pub fn load(&self, name: &str) -> Result<TfjsWeights> {
        TfjsWeights::load(&self.root, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_models_say_what_to_run() {
        let dir = std::env::temp_dir().join("facepipe-no-models-here");
        let err = ModelDir::open(&dir).unwrap_err().to_string();
        assert!(err.contains("scripts/setup.sh"), "{err}");
        assert!(err.contains(SSD_MOBILENETV1), "{err}");
    }
}
