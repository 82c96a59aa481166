//! The deployment registry: numbered deployment versions and a pointer to the current one,
//! in a local folder or under an S3 prefix (anything the pipeline's `Storage` reaches).
//!
//! ```text
//! REGISTRY/
//!   CURRENT                      "v0003\n", replaced atomically
//!   deployments/v0003/CLAIM      who took the number (created only if absent)
//!   deployments/v0003/…          gallery.safetensors, labels.json, then deployment.json
//!   models/<sha256>/             trained artifacts, stored once however many versions use them
//! ```
//!
//! # Publishing without losing a version
//! 1. Take the next number by creating `deployments/vNNNN/CLAIM` *only if absent* (a
//!    hard link on a local disk, a conditional `PUT` with `If-None-Match: *` on S3). Exactly
//!    one publisher gets each number; the others retry with the next.
//! 2. Write the bundle's files, `deployment.json` last: a version counts as published once
//!    it has one, so a reader never sees half a deployment. A crashed publisher leaves a
//!    claimed number without it, which is skipped.
//! 3. Point `CURRENT` at the newest published version, and look again: when a version newer
//!    than the one just written appeared meanwhile, write again. The last writer has seen
//!    every version published before its write, so two racing publishers cannot leave
//!    `CURRENT` on the older one.
//!
//! On a local folder the whole publish also runs under an exclusive advisory lock
//! (`REGISTRY/.publish.lock`, `flock`), so publishers on one machine take turns and
//! numbers stay consecutive. The kernel drops the lock when its holder dies, so a crash
//! leaves no stale lock to clean up, unlike a lock *file*. S3 has no locks; steps 1–3 alone
//! keep it correct there.
//!
//! The registry's API is blocking (callers run it off the async workers); the storage is
//! async, so the registry drives it on a small runtime of its own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use facepipe_pipeline::storage::{self, join_key, Location, Storage, StorageOptions};
use sha2::{Digest, Sha256};

use crate::deployment::{
    Bundle, DeploymentInfo, ModelRef, DEPLOYMENT_JSON, GALLERY_FILE, LABELS_JSON,
};
use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";
const DEPLOYMENTS: &str = "deployments";
const MODELS: &str = "models";
const CLAIM: &str = "CLAIM";
const LOCK_FILE: &str = ".publish.lock";
const WEIGHTS: &str = "model.safetensors";
/// Version numbers tried before a publish gives up (only reachable under a flood of
/// concurrent publishers).
const MAX_CLAIM_ATTEMPTS: usize = 1000;

#[derive(Clone)]
pub struct Registry {
    location: Location,
    store: Arc<dyn Storage>,
    /// Where model artifacts are read from: the registry's own folder when it is local,
    /// a download cache when it is S3.
    models_dir: PathBuf,
    io: Arc<Io>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("location", &self.location.to_string())
            .field("models_dir", &self.models_dir)
            .finish()
    }
}

impl Registry {
    /// Open (creating a local folder if needed) the registry at `location`: a folder,
    /// `file://…` or `s3://bucket/prefix` (credentials and endpoint from the AWS
    /// environment, `AWS_ENDPOINT_URL` included).
    pub fn open(location: &str) -> Result<Self> {
        Registry::open_with(location, &StorageOptions::default())
    }

    /// [`Registry::open`] with explicit S3 options (endpoint, region).
    pub fn open_with(location: &str, options: &StorageOptions) -> Result<Self> {
        let bad = |e: facepipe_pipeline::Error| {
            Error::BadRequest(format!(
                "registry {location}: {e} (use a folder or s3://BUCKET/PREFIX)"
            ))
        };
        let location = Location::parse(location)
            .map_err(bad)?
            .absolutize()
            .map_err(bad)?;
        let io = Arc::new(Io::new()?);
        let models_dir = match &location {
            Location::Local(root) => {
                for dir in [root.join(DEPLOYMENTS), root.join(MODELS)] {
                    std::fs::create_dir_all(&dir).map_err(|e| Error::registry(dir.display(), e))?;
                }
                root.join(MODELS)
            }
            Location::S3 { .. } => model_cache_dir(),
        };
        let (loc, opts) = (location.clone(), options.clone());
        let store = io
            .run(async move {
                let store = storage::open(&loc, &opts).await?;
                // Fail here, once, with the storage's advice (missing bucket, credentials).
                store.check().await?;
                Ok::<_, facepipe_pipeline::Error>(store)
            })?
            .map_err(|e| Error::registry(&location, e))?;
        Ok(Registry {
            location,
            store,
            models_dir,
            io,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Where version `version` lives, for messages (`…/deployments/v0003`).
    pub fn version_location(&self, version: u32) -> String {
        self.location.display_key(&version_prefix(version))
    }

    /// Published versions (those with a `deployment.json`), ascending.
    pub fn versions(&self) -> Result<Vec<u32>> {
        Ok(self.scan()?.published)
    }

    /// The version `CURRENT` points at, if any.
    pub fn current_version(&self) -> Result<Option<u32>> {
        match self.get(CURRENT)? {
            None => Ok(None),
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                parse_version(text.trim()).map(Some).ok_or_else(|| {
                    Error::registry(
                        self.location.display_key(CURRENT),
                        format!("not a version: {:?}", text.trim()),
                    )
                })
            }
        }
    }

    /// Load one published version (downloading its model artifact into the local cache
    /// first when the registry is on S3).
    pub fn load(&self, version: u32) -> Result<Bundle> {
        let prefix = version_prefix(version);
        let file = |name: &str| join_key(&prefix, name);
        let Some(deployment) = self.get(&file(DEPLOYMENT_JSON))? else {
            return Err(Error::NotFound(format!(
                "deployment v{version:04} is not in the registry {}",
                self.location
            )));
        };
        let required = |name: &str| {
            self.get(&file(name))?.ok_or_else(|| {
                Error::registry(
                    self.location.display_key(&file(name)),
                    "missing from a published version: the registry was edited by hand?",
                )
            })
        };
        let bundle = Bundle::decode(
            &self.version_location(version),
            &deployment,
            &required(LABELS_JSON)?,
            &required(GALLERY_FILE)?,
        )?;
        if let ModelRef::Artifact { sha256, .. } = &bundle.info.model {
            self.fetch_model(sha256)?;
        }
        Ok(bundle)
    }

    /// Load the current version; an error that says what to do when there is none.
    pub fn load_current(&self) -> Result<Bundle> {
        match self.current_version()? {
            Some(v) => self.load(v),
            None => Err(Error::NotReady(format!(
                "the registry {} has no current deployment: run `facepipe deploy --registry {} …` first",
                self.location, self.location
            ))),
        }
    }

    /// Publish `bundle` as the next version and make the newest version current. The
    /// bundle's `version` field is overwritten with the number it gets.
    pub fn publish(&self, mut bundle: Bundle) -> Result<DeploymentInfo> {
        let _lock = self.lock()?;
        let version = self.claim_next()?;
        bundle.info.version = version;
        let prefix = version_prefix(version);
        // `encode` puts deployment.json last: it marks the version complete.
        for (name, bytes) in bundle.encode()? {
            self.put(&join_key(&prefix, name), bytes)?;
        }
        self.advance_current()?;
        Ok(bundle.info)
    }

    /// Take the lowest free number above every version seen, creating its claim only if
    /// nobody has; on a clash try the next number.
    fn claim_next(&self) -> Result<u32> {
        let owner = serde_json::json!({
            "claimed": crate::deployment::now_rfc3339(),
            "pid": std::process::id(),
            "id": uuid::Uuid::new_v4().to_string(),
        });
        let mut version = self.scan()?.taken.last().copied().unwrap_or(0) + 1;
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let key = join_key(&version_prefix(version), CLAIM);
            if self.put_if_absent(&key, owner.to_string().into_bytes())? {
                return Ok(version);
            }
            tracing::debug!("v{version:04} taken by another publisher, trying the next number");
            let newest = self.scan()?.taken.last().copied().unwrap_or(version);
            version = newest.max(version) + 1;
        }
        Err(Error::registry(
            &self.location,
            format!("no free version number after {MAX_CLAIM_ATTEMPTS} tries: too many concurrent publishers?"),
        ))
    }

    /// Point `CURRENT` at the newest published version until a fresh look finds none newer.
    fn advance_current(&self) -> Result<()> {
        let mut newest = self.newest_published()?;
        loop {
            let Some(v) = newest else { return Ok(()) };
            self.write_current(v)?;
            let again = self.newest_published()?;
            if again <= newest {
                return Ok(());
            }
            newest = again;
        }
    }

    fn newest_published(&self) -> Result<Option<u32>> {
        Ok(self.scan()?.published.last().copied())
    }

    /// Point `CURRENT` at `version` (atomic replace), e.g. to roll back.
    pub fn set_current(&self, version: u32) -> Result<()> {
        if !self.versions()?.contains(&version) {
            return Err(Error::NotFound(format!(
                "deployment v{version:04} does not exist in {}",
                self.location
            )));
        }
        self.write_current(version)
    }

    fn write_current(&self, version: u32) -> Result<()> {
        self.put(CURRENT, format!("v{version:04}\n").into_bytes())
    }

    /// Copy a trained model artifact folder into `models/<sha256>/` (once) and reference it.
    pub fn store_model(&self, artifact: &Path) -> Result<ModelRef> {
        let weights = artifact.join(WEIGHTS);
        let bytes = std::fs::read(&weights).map_err(|e| {
            Error::BadRequest(format!(
                "{}: {e}; --model must be a folder written by `facepipe train` (or `pretrained`)",
                weights.display()
            ))
        })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let prefix = join_key(MODELS, &sha);
        if self.get(&join_key(&prefix, WEIGHTS))?.is_none() {
            // Every other file first, the weights last: their presence marks the artifact
            // complete (the same rule as deployment.json).
            let entries =
                std::fs::read_dir(artifact).map_err(|e| Error::registry(artifact.display(), e))?;
            for entry in entries {
                let path = entry
                    .map_err(|e| Error::registry(artifact.display(), e))?
                    .path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if path.is_file() && name != WEIGHTS {
                    let data =
                        std::fs::read(&path).map_err(|e| Error::registry(path.display(), e))?;
                    self.put(&join_key(&prefix, name), data)?;
                }
            }
            self.put(&join_key(&prefix, WEIGHTS), bytes)?;
        }
        self.fetch_model(&sha)?;
        Ok(ModelRef::Artifact {
            sha256: sha,
            source: artifact.display().to_string(),
        })
    }

    /// The local folder holding a stored artifact (in the download cache for S3; filled
    /// by [`Registry::load`] and [`Registry::store_model`]).
    pub fn model_dir(&self, sha256: &str) -> PathBuf {
        self.models_dir.join(sha256)
    }

    /// Make `models/<sha256>/` available locally: a no-op for a local registry, a
    /// download (checked against the hash) into the cache for S3.
    fn fetch_model(&self, sha256: &str) -> Result<()> {
        if !self.location.is_s3() {
            return Ok(());
        }
        let target = self.model_dir(sha256);
        if target.join(WEIGHTS).is_file() {
            return Ok(());
        }
        let prefix = join_key(MODELS, sha256);
        let objects = self.list(&format!("{prefix}/"))?;
        if !objects
            .iter()
            .any(|o| o.key.ends_with(&format!("/{WEIGHTS}")))
        {
            return Err(Error::registry(
                self.location.display_key(&prefix),
                "the model artifact is missing: deploy it again with --model",
            ));
        }
        let tmp = self
            .models_dir
            .join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&tmp).map_err(|e| Error::registry(tmp.display(), e))?;
        let fetched = (|| {
            for o in &objects {
                let Some(name) = o.key.rsplit('/').next() else {
                    continue;
                };
                let data = self.get(&o.key)?.ok_or_else(|| {
                    Error::registry(self.location.display_key(&o.key), "vanished while reading")
                })?;
                if name == WEIGHTS && hex::encode(Sha256::digest(&data)) != sha256 {
                    return Err(Error::registry(
                        self.location.display_key(&o.key),
                        "content does not match its SHA-256 name: the registry is corrupt",
                    ));
                }
                let path = tmp.join(name);
                std::fs::write(&path, data).map_err(|e| Error::registry(path.display(), e))?;
            }
            Ok(())
        })();
        let placed = fetched.and_then(|()| {
            std::fs::rename(&tmp, &target).or_else(|e| {
                // Another process cached the same artifact first: fine.
                if target.join(WEIGHTS).is_file() {
                    Ok(())
                } else {
                    Err(Error::registry(target.display(), e))
                }
            })
        });
        let _ = std::fs::remove_dir_all(&tmp);
        placed
    }

    /// The local registry's publish lock (none for S3).
    fn lock(&self) -> Result<Option<std::fs::File>> {
        let Location::Local(root) = &self.location else {
            return Ok(None);
        };
        let path = root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::registry(path.display(), e))?;
        // Blocks while another publisher holds it; released when `file` is dropped.
        file.lock()
            .map_err(|e| Error::registry(path.display(), format!("cannot lock: {e}")))?;
        Ok(Some(file))
    }

    /// Version numbers taken (any object under them) and published (with deployment.json).
    fn scan(&self) -> Result<Scan> {
        let mut scan = Scan::default();
        for o in self.list(&format!("{DEPLOYMENTS}/"))? {
            let mut parts = o.key.splitn(3, '/').skip(1);
            let (Some(dir), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(v) = parse_version(dir) else {
                continue;
            };
            if scan.taken.last() != Some(&v) {
                scan.taken.push(v);
            }
            if name == DEPLOYMENT_JSON {
                scan.published.push(v);
            }
        }
        scan.taken.sort_unstable();
        scan.taken.dedup();
        scan.published.sort_unstable();
        Ok(scan)
    }

    // --- blocking wrappers over the async storage, errors located in the registry ---

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let (store, k) = (self.store.clone(), key.to_string());
        match self.io.run(async move { store.get(&k).await })? {
            Ok(bytes) => Ok(Some(bytes)),
            Err(facepipe_pipeline::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(Error::registry(self.location.display_key(key), e)),
        }
    }

    fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let (store, k) = (self.store.clone(), key.to_string());
        self.io
            .run(async move { store.put(&k, Bytes::from(data)).await })?
            .map_err(|e| Error::registry(self.location.display_key(key), e))
    }

    fn put_if_absent(&self, key: &str, data: Vec<u8>) -> Result<bool> {
        let (store, k) = (self.store.clone(), key.to_string());
        self.io
            .run(async move { store.put_if_absent(&k, Bytes::from(data)).await })?
            .map_err(|e| Error::registry(self.location.display_key(key), e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<storage::ObjectInfo>> {
        let (store, p) = (self.store.clone(), prefix.to_string());
        self.io
            .run(async move { store.list(&p).await })?
            .map_err(|e| Error::registry(self.location.display_key(prefix), e))
    }
}

#[derive(Default)]
struct Scan {
    taken: Vec<u32>,
    published: Vec<u32>,
}

/// A one-thread runtime that runs the storage's futures for the blocking API. Work is
/// handed over a channel, so it may be called from any thread, async workers included,
/// without tokio's "runtime within a runtime" panic.
struct Io(Option<tokio::runtime::Runtime>);

impl Io {
    fn new() -> Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("facepipe-registry-io")
            .enable_all()
            .build()
            .map(|rt| Io(Some(rt)))
            .map_err(|e| Error::Internal(format!("starting the registry's I/O runtime: {e}")))
    }

    fn run<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let Some(rt) = &self.0 else {
            return Err(Error::Internal("the registry's I/O runtime is gone".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Internal("the registry's I/O task stopped".into()))
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code (the last
        // registry handle may go away there): let it wind down in the background.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn version_prefix(version: u32) -> String {
    format!("{DEPLOYMENTS}/v{version:04}")
}

fn parse_version(name: &str) -> Option<u32> {
    name.strip_prefix('v')?.parse().ok()
}

/// Content-addressed model downloads from S3 registries: `FACEPIPE_REGISTRY_CACHE`, else
/// `$XDG_CACHE_HOME/facepipe/models` or `~/.cache/facepipe/models`, else the temp folder.
fn model_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FACEPIPE_REGISTRY_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("facepipe").join("registry-models")
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
    fn concurrent_publishers_get_distinct_versions_and_current_ends_newest() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap().to_string();
        // Separate handles, as separate services would have.
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let reg = Registry::open(&location).unwrap();
                std::thread::spawn(move || reg.publish(bundle(&format!("p{i}"))).unwrap().version)
            })
            .collect();
        let mut got: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4]);
        let reg = Registry::open(&location).unwrap();
        assert_eq!(reg.current_version().unwrap(), Some(4));
        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("deployments/v0004"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn bad_locations_are_refused_with_advice() {
        let err = Registry::open("gs://bucket/registry").unwrap_err();
        assert!(err.to_string().contains("s3://BUCKET/PREFIX"), "{err}");
    }

    #[test]
    fn a_registry_can_be_dropped_inside_async_code() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            // Blocking calls from an async task work, and the drop does not panic.
            assert_eq!(reg.current_version().unwrap(), None);
            drop(reg);
        });
    }
}
