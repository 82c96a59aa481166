//! The deployment registry: a folder of numbered deployment versions and a pointer to the
//! current one.
//!
//! ```text
//! REGISTRY/
//!   CURRENT                      "v0003\n", replaced atomically (write a temp file, rename)
//!   deployments/v0001/ …         one Bundle per version, never modified once published
//!   models/<sha256>/             trained artifacts, stored once however many versions use them
//! ```
//!
//! A version is written under a temporary name and renamed into place, so a reader never
//! sees half a deployment; two publishers racing for the same number retry with the next.
//! Registries are local folders (an `s3://` location is refused with a message for now).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::deployment::{Bundle, DeploymentInfo, ModelRef};
use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";

#[derive(Clone, Debug)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Open (creating if needed) the registry at `location`, a local folder.
    pub fn open(location: &str) -> Result<Self> {
        if location.starts_with("s3://") {
            return Err(Error::BadRequest(format!(
                "registry {location}: S3 registries are not supported yet; use a local folder \
                 (for example --registry ./registry)"
            )));
        }
        let root = PathBuf::from(location);
        for dir in [root.join("deployments"), root.join("models")] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::registry(dir.display(), e))?;
        }
        Ok(Registry { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn version_dir(&self, version: u32) -> PathBuf {
        self.root.join("deployments").join(format!("v{version:04}"))
    }

    /// Published versions, ascending.
    pub fn versions(&self) -> Result<Vec<u32>> {
        let dir = self.root.join("deployments");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::registry(dir.display(), e))?;
        let mut out: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(parse_version))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The version `CURRENT` points at, if any.
    pub fn current_version(&self) -> Result<Option<u32>> {
        let path = self.root.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_version(text.trim()).map(Some).ok_or_else(|| {
                Error::registry(path.display(), format!("not a version: {:?}", text.trim()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::registry(path.display(), e)),
        }
    }

    /// Load one published version.
    pub fn load(&self, version: u32) -> Result<Bundle> {
        let dir = self.version_dir(version);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!(
                "deployment v{version:04} is not in the registry {}",
                self.root.display()
            )));
        }
        Bundle::read(&dir)
    }

    /// Load the current version; an error that says what to do when there is none.
    pub fn load_current(&self) -> Result<Bundle> {
        match self.current_version()? {
            Some(v) => self.load(v),
            None => Err(Error::NotReady(format!(
                "the registry {} has no current deployment: run `facepipe deploy --registry {} …` first",
                self.root.display(),
                self.root.display()
            ))),
        }
    }

    /// Publish `bundle` as the next version and make it current. The bundle's `version`
    /// field is overwritten with the number it gets.
    pub fn publish(&self, mut bundle: Bundle) -> Result<DeploymentInfo> {
        let deployments = self.root.join("deployments");
        let tmp = deployments.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&tmp).map_err(|e| Error::registry(tmp.display(), e))?;
        let mut version = self.versions()?.last().copied().unwrap_or(0) + 1;
        let mut attempts = 0;
        loop {
            bundle.info.version = version;
            bundle.write(&tmp)?;
            let target = self.version_dir(version);
            // rename() refuses a non-empty target: a concurrent publisher took the number.
            match std::fs::rename(&tmp, &target) {
                Ok(()) => break,
                Err(e) if target.exists() && attempts < 100 => {
                    tracing::debug!("v{version:04} taken ({e}), trying the next number");
                    attempts += 1;
                    version = self.versions()?.last().copied().unwrap_or(version) + 1;
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(Error::registry(target.display(), e));
                }
            }
        }
        self.set_current(version)?;
        Ok(bundle.info)
    }

    /// Point `CURRENT` at `version` (atomic replace).
    pub fn set_current(&self, version: u32) -> Result<()> {
        if !self.version_dir(version).is_dir() {
            return Err(Error::NotFound(format!(
                "deployment v{version:04} does not exist"
            )));
        }
        let tmp = self.root.join(format!(".CURRENT-{}", uuid::Uuid::new_v4()));
        std::fs::write(&tmp, format!("v{version:04}\n"))
            .map_err(|e| Error::registry(tmp.display(), e))?;
        let path = self.root.join(CURRENT);
        std::fs::rename(&tmp, &path).map_err(|e| Error::registry(path.display(), e))
    }

    /// Copy a trained model artifact folder into `models/<sha256>/` (once) and reference it.
    pub fn store_model(&self, artifact: &Path) -> Result<ModelRef> {
        let weights = artifact.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| {
            Error::BadRequest(format!(
                "{}: {e}; --model must be a folder written by `facepipe train` (or `pretrained`)",
                weights.display()
            ))
        })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let target = self.root.join("models").join(&sha);
        if !target.join("model.safetensors").is_file() {
            let tmp = self
                .root
                .join("models")
                .join(format!(".tmp-{}", uuid::Uuid::new_v4()));
            copy_dir(artifact, &tmp)?;
            if let Err(e) = std::fs::rename(&tmp, &target) {
                let _ = std::fs::remove_dir_all(&tmp);
                // Another publisher stored the same model first: fine.
                if !target.join("model.safetensors").is_file() {
                    return Err(Error::registry(target.display(), e));
                }
            }
        }
        Ok(ModelRef::Artifact {
            sha256: sha,
            source: artifact.display().to_string(),
        })
    }

    /// The folder holding a stored artifact.
    pub fn model_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("models").join(sha256)
    }
}

fn parse_version(name: &str) -> Option<u32> {
    name.strip_prefix('v')?.parse().ok()
}

/// Copy the plain files of `from` (one level: an artifact folder) into a new folder `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::registry(to.display(), e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::registry(from.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::registry(from.display(), e))?;
        let path = entry.path();
        if path.is_file() {
            let dest = to.join(entry.file_name());
            std::fs::copy(&path, &dest).map_err(|e| Error::registry(dest.display(), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{now_rfc3339, pretrained_metric};
    use crate::gallery::Gallery;
    use facepipe_training::DistanceKind;

    fn bundle(name: &str) -> Bundle {
        let mut gallery = Gallery::empty(DistanceKind::Euclidean, 2);
        gallery.add(name, &[vec![1.0, 0.0]], "x").unwrap();
        Bundle {
            info: DeploymentInfo {
                version: 0,
                name: None,
                created: now_rfc3339(),
                model: ModelRef::pretrained(),
                metric: pretrained_metric(),
                embedding_dim: 2,
                people: 1,
                embeddings: 1,
                gallery_source: "test".into(),
                parent: None,
                reason: "deploy".into(),
            },
            gallery,
        }
    }

    #[test]
    fn versions_count_up_and_current_follows() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(reg.current_version().unwrap(), None);
        assert!(matches!(reg.load_current(), Err(Error::NotReady(_))));
        assert_eq!(reg.publish(bundle("a")).unwrap().version, 1);
        assert_eq!(reg.publish(bundle("b")).unwrap().version, 2);
        assert_eq!(reg.versions().unwrap(), [1, 2]);
        assert_eq!(reg.current_version().unwrap(), Some(2));
        assert_eq!(reg.load_current().unwrap().gallery.people(), ["b"]);
        reg.set_current(1).unwrap();
        assert_eq!(reg.load_current().unwrap().gallery.people(), ["a"]);
        assert!(reg.set_current(9).is_err());
        // No temporary folders are left behind.
        let leftovers = std::fs::read_dir(dir.path().join("deployments"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn concurrent_publishers_get_distinct_versions() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let reg = reg.clone();
                std::thread::spawn(move || reg.publish(bundle(&format!("p{i}"))).unwrap().version)
            })
            .collect();
        let mut got: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4]);
    }

    #[test]
    fn s3_locations_are_refused_with_advice() {
        let err = Registry::open("s3://bucket/registry").unwrap_err();
        assert!(err.to_string().contains("local folder"));
    }
}
