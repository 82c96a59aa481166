//! The deployment registry: numbered deployment versions and a pointer to the current one,
//! in a local folder or under an S3 prefix (anything the pipeline's `Storage` reaches).
//!
//! ```text
//! REGISTRY/
//!   CURRENT                      "v0003\n", replaced only by compare-and-swap
//!   deployments/v0003/CLAIM      who took the number (created only if absent)
//!   deployments/v0003/…          gallery.safetensors, labels.json, then deployment.json
//!   models/<sha256>/             trained artifacts, stored once however many versions use them
//!   leases/<server>.json         the version each running server serves (for `registry gc`)
//! ```
//!
//! # Publishing never loses an accepted change
//! Every publish — `facepipe deploy`, an enroll or a delete on any server, a roll-back — runs
//! the same loop ([`Registry::publish_edit`]):
//! 1. Read `CURRENT` with its storage version (a content hash locally, the ETag on S3).
//! 2. Derive the new bundle from the version `CURRENT` names (an enroll adds faces to *that*
//!    gallery, not to whatever a server holds in memory).
//! 3. Take a fresh number above every number seen by creating `deployments/vNNNN/CLAIM`
//!    *only if absent* (a hard link on a local disk, `If-None-Match: *` on S3), and write
//!    the bundle's files, `deployment.json` last.
//! 4. Replace `CURRENT` *only if it is still at the version read in step 1* (a locked
//!    compare locally, `If-Match: <ETag>` on S3). When another publisher moved it first,
//!    withdraw the bundle (remove its `deployment.json`; the number stays claimed and is
//!    skipped) and start again from step 1 after a short random backoff, a bounded number of
//!    times. The caller learns the outcome only when it is known.
//!
//! Numbers only grow, so `CURRENT` only moves forward and never repeats a value: a storage
//! version read in step 1 cannot match again later (no ABA). A roll-back publishes the old
//! version's content under a new number.
//!
//! On a local folder the whole publish also runs under an exclusive advisory lock
//! (`REGISTRY/.publish.lock`, `flock`), so publishers on one machine take turns and rarely
//! conflict. The kernel drops the lock when its holder dies, so a crash leaves no stale lock.
//! S3 has no locks; the compare-and-swap alone keeps it correct there, as it does locally.
//!
//! # Retention
//! [`Registry::gc`] removes versions older than `CURRENT` beyond the newest N, never
//! `CURRENT`, never a version a server holds a fresh lease on, never anything newer than
//! `CURRENT` (a publish may be writing it).
//!
//! The registry's API is blocking (callers run it off the async workers); the storage is
//! async, so the registry drives it on a small runtime of its own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use facepipe_pipeline::storage::{self, join_key, Location, Storage, StorageOptions, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::deployment::{
    Bundle, DeploymentInfo, ModelRef, DEPLOYMENT_JSON, GALLERY_FILE, LABELS_JSON,
};
use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";
const DEPLOYMENTS: &str = "deployments";
const MODELS: &str = "models";
const LEASES: &str = "leases";
const CLAIM: &str = "CLAIM";
const LOCK_FILE: &str = ".publish.lock";
const WEIGHTS: &str = "model.safetensors";
/// Version numbers tried before a publish gives up (only reachable under a flood of
/// concurrent publishers).
const MAX_CLAIM_ATTEMPTS: usize = 1000;
/// Rounds of the publish loop before giving up when other publishers keep moving `CURRENT`.
const MAX_PUBLISH_ATTEMPTS: usize = 24;
/// Backoff between lost rounds: doubling from the first, capped, with random jitter so
/// racing publishers spread out.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// How often a serving process refreshes its lease (its watcher does, every this often and
/// whenever it swaps).
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(30);
/// How old a lease may be and still protect its version from `gc` (many renewals, so a
/// briefly unreachable registry does not cost a serving version).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);

/// A handle on one registry; clones share its storage client and I/O runtime.
#[derive(Clone)]
pub struct Registry {
    location: Location,
    store: Arc<dyn Storage>,
    /// Where model artifacts are read from: the registry's own folder when it is local,
    /// a download cache when it is S3 ([`Registry::with_model_cache`]).
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
            Location::S3 { .. } => default_model_cache(),
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

    /// Download model artifacts of an S3 registry into `dir` instead of the default,
    /// `<facepipe cache>/registry-models` (the cache folder of
    /// [`facepipe_pipeline::models::cache_dir`]). A local registry ignores it: its
    /// artifacts are read where they are stored, `REGISTRY/models/`.
    pub fn with_model_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        if self.location.is_s3() {
            self.models_dir = dir.into();
        }
        self
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
        Ok(self.read_current()?.map(|(v, _)| v))
    }

    /// `CURRENT` with the storage version to compare-and-swap it from.
    fn read_current(&self) -> Result<Option<(u32, Version)>> {
        let (store, k) = (self.store.clone(), CURRENT.to_string());
        let (bytes, token) = match self.io.run(async move { store.get_versioned(&k).await })? {
            Ok(got) => got,
            Err(facepipe_pipeline::Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(Error::registry(self.location.display_key(CURRENT), e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        let version = parse_version(text.trim()).ok_or_else(|| {
            Error::registry(
                self.location.display_key(CURRENT),
                format!(
                    "not a version: {:?} (it should read like \"v0003\"; fix it by hand)",
                    text.trim()
                ),
            )
        })?;
        Ok(Some((version, token)))
    }

    /// Load one published version (downloading its model artifact into the local cache
    /// first when the registry is on S3).
    pub fn load(&self, version: u32) -> Result<Bundle> {
        let bundle = self.load_bundle(version)?;
        if let ModelRef::Artifact { sha256, .. } = &bundle.info.model {
            self.fetch_model(sha256)?;
        }
        Ok(bundle)
    }

    /// One published version's description and gallery, without its model artifact.
    fn load_bundle(&self, version: u32) -> Result<Bundle> {
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
        Bundle::decode(
            &self.version_location(version),
            &deployment,
            &required(LABELS_JSON)?,
            &required(GALLERY_FILE)?,
        )
    }

    /// Load the current version; an error that says what to do when there is none.
    pub fn load_current(&self) -> Result<Bundle> {
        match self.current_version()? {
            Some(v) => self.load(v),
            None => Err(Error::NotReady(format!(
                "the registry {} has no current deployment: publish one into it with `facepipe deploy` first",
                self.location
            ))),
        }
    }

    /// Publish `bundle` (a whole new gallery, `facepipe deploy`) as the next version on top
    /// of whatever is current. The bundle's `version` and `parent` are set here.
    pub fn publish(&self, bundle: Bundle) -> Result<DeploymentInfo> {
        let published = self.publish_with(false, &mut |_| Ok(bundle.clone()))?;
        Ok(published.info)
    }

    /// Publish an edit of the current deployment: `edit` gets the bundle `CURRENT` names
    /// (`None` in an empty registry) and returns the new one. It runs again on the newer
    /// bundle whenever another publisher moved `CURRENT` first, so the result always
    /// contains every change published before it. An error from `edit` ends the publish
    /// with nothing written. Returns the bundle as published.
    pub fn publish_edit(
        &self,
        mut edit: impl FnMut(Option<&Bundle>) -> Result<Bundle>,
    ) -> Result<Bundle> {
        self.publish_with(true, &mut edit)
    }

    /// Publish the content of an older version again as the newest one (`CURRENT` only
    /// moves forward, so going back is a new version too).
    pub fn roll_back_to(&self, version: u32) -> Result<DeploymentInfo> {
        let old = self.load(version)?;
        let published = self.publish_with(false, &mut |_| {
            let mut b = old.clone();
            b.info.created = crate::deployment::now_rfc3339();
            b.info.gallery_source = format!("v{version:04}");
            b.info.reason = format!("roll back to v{version:04}");
            Ok(b)
        })?;
        Ok(published.info)
    }

    /// The publish loop of the module documentation.
    fn publish_with(
        &self,
        load_base: bool,
        edit: &mut dyn FnMut(Option<&Bundle>) -> Result<Bundle>,
    ) -> Result<Bundle> {
        let _lock = self.lock()?;
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_PUBLISH_ATTEMPTS {
            let current = self.read_current()?;
            let base_version = current.as_ref().map(|(v, _)| *v);
            let base = match base_version {
                Some(v) if load_base => Some(self.load_bundle(v)?),
                _ => None,
            };
            let mut bundle = edit(base.as_ref())?;
            let version = self.claim_next(base_version.unwrap_or(0))?;
            bundle.info.version = version;
            bundle.info.parent = base_version;
            let prefix = version_prefix(version);
            // `encode` puts deployment.json last: it marks the version complete.
            for (name, bytes) in bundle.encode()? {
                self.put(&join_key(&prefix, name), bytes)?;
            }
            let expected = current.map(|(_, token)| token);
            if self.swap_current(expected.as_ref(), version)? {
                return Ok(bundle);
            }
            // Another publisher moved CURRENT since we read it: this bundle lacks its
            // change. Withdraw it and derive again from the new CURRENT.
            self.delete(&join_key(&prefix, DEPLOYMENT_JSON))?;
            tracing::info!(
                attempt,
                "v{version:04} lost the race for CURRENT to another publisher; deriving again"
            );
            std::thread::sleep(jittered(backoff));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(Error::registry(
            self.location.display_key(CURRENT),
            format!(
                "other publishers moved CURRENT {MAX_PUBLISH_ATTEMPTS} times in a row during this publish; \
                 nothing was published: try again"
            ),
        ))
    }

    /// Take the lowest free number above `floor` and every version seen, creating its claim
    /// only if nobody has; on a clash try the next number.
    fn claim_next(&self, floor: u32) -> Result<u32> {
        let owner = serde_json::json!({
            "claimed": crate::deployment::now_rfc3339(),
            "pid": std::process::id(),
            "id": uuid::Uuid::new_v4().to_string(),
        });
        let mut version = self.scan()?.taken.last().copied().unwrap_or(0).max(floor) + 1;
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

    /// Point `CURRENT` at `version` only while it is still at `expected` (`None`: absent).
    fn swap_current(&self, expected: Option<&Version>, version: u32) -> Result<bool> {
        let (store, expected) = (self.store.clone(), expected.cloned());
        let data = Bytes::from(format!("v{version:04}\n"));
        self.io
            .run(async move { store.put_if_version(CURRENT, data, expected.as_ref()).await })?
            .map_err(|e| Error::registry(self.location.display_key(CURRENT), e))
    }

    // --- leases: which version each running server serves ---

    /// Record (or refresh) that server `server` serves `version`, so `gc` keeps it.
    pub fn renew_lease(&self, server: &str, version: u32) -> Result<()> {
        let lease = Lease {
            server: server.to_string(),
            version,
            renewed_unix: unix_now(),
            pid: std::process::id(),
        };
        let bytes = serde_json::to_vec_pretty(&lease)
            .map_err(|e| Error::Internal(format!("encoding a lease: {e}")))?;
        self.put(&lease_key(server), bytes)
    }

    /// Remove a server's lease (when it stops).
    pub fn release_lease(&self, server: &str) -> Result<()> {
        self.delete(&lease_key(server))
    }

    /// Every lease in the registry (unreadable ones are skipped with a warning).
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let mut out = Vec::new();
        for o in self.list(&format!("{LEASES}/"))? {
            let Some(bytes) = self.get(&o.key)? else {
                continue;
            };
            match serde_json::from_slice::<Lease>(&bytes) {
                Ok(lease) => out.push(lease),
                Err(e) => tracing::warn!("skipping the unreadable lease {}: {e}", o.key),
            }
        }
        Ok(out)
    }

    // --- retention ---

    /// Remove old versions: keep `CURRENT`, the newest `keep` published versions up to it,
    /// every version leased by a server within `lease_ttl`, and everything newer than
    /// `CURRENT`. With `dry_run` only report what would go. Expired leases are removed too.
    pub fn gc(&self, keep: usize, lease_ttl: Duration, dry_run: bool) -> Result<GcReport> {
        if keep == 0 {
            return Err(Error::BadRequest(
                "at least 1 version must be kept (CURRENT always is)".into(),
            ));
        }
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let Some(current) = self.current_version()? else {
            // Without CURRENT nothing tells finished versions from ones being written.
            return Ok(report);
        };
        report.current = Some(current);
        let now = unix_now();
        let mut expired_leases = Vec::new();
        for lease in self.leases()? {
            if now.saturating_sub(lease.renewed_unix) <= lease_ttl.as_secs() {
                report.leased.push(lease.version);
            } else {
                expired_leases.push(lease.server);
            }
        }
        report.leased.sort_unstable();
        report.leased.dedup();
        let scan = self.scan()?;
        report.kept = scan
            .published
            .iter()
            .rev()
            .filter(|&&v| v <= current)
            .take(keep)
            .copied()
            .collect();
        report.kept.sort_unstable();
        let objects = self.list(&format!("{DEPLOYMENTS}/"))?;
        for &v in &scan.taken {
            if v >= current || report.kept.contains(&v) || report.leased.contains(&v) {
                continue;
            }
            report.removed.push(v);
            if dry_run {
                continue;
            }
            let prefix = format!("{}/", version_prefix(v));
            let mut keys: Vec<&str> = objects
                .iter()
                .map(|o| o.key.as_str())
                .filter(|k| k.starts_with(&prefix))
                .collect();
            // deployment.json first (the version stops counting as published), CLAIM last.
            keys.sort_by_key(|k| match k.rsplit('/').next() {
                Some(DEPLOYMENT_JSON) => 0,
                Some(CLAIM) => 2,
                _ => 1,
            });
            for key in keys {
                self.delete(key)?;
            }
            if let Location::Local(root) = &self.location {
                // The emptied folder, and temporary files of writers that crashed in it.
                let dir = root.join(version_prefix(v));
                std::fs::remove_dir_all(&dir).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(Error::registry(dir.display(), e)),
                })?;
            }
        }
        if !dry_run {
            for server in expired_leases {
                self.delete(&lease_key(&server))?;
            }
        }
        Ok(report)
    }

    /// Copy a trained model artifact folder into `models/<sha256>/` (once) and reference it.
    pub fn store_model(&self, artifact: &Path) -> Result<ModelRef> {
        let weights = artifact.join(WEIGHTS);
        let bytes = std::fs::read(&weights).map_err(|e| {
            Error::BadRequest(format!(
                "{}: {e}; a model is a folder written by `facepipe train` (or `pretrained`)",
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
                "the model artifact is missing: deploy the model again",
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

    fn delete(&self, key: &str) -> Result<()> {
        let (store, k) = (self.store.clone(), key.to_string());
        self.io
            .run(async move { store.delete(&k).await })?
            .map_err(|e| Error::registry(self.location.display_key(key), e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<storage::ObjectInfo>> {
        let (store, p) = (self.store.clone(), prefix.to_string());
        self.io
            .run(async move { store.list(&p).await })?
            .map_err(|e| Error::registry(self.location.display_key(prefix), e))
    }
}

/// `leases/<server>.json`: what one running server serves, refreshed by its watcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub server: String,
    pub version: u32,
    /// Seconds since the Unix epoch at the last refresh (machines' clocks must roughly
    /// agree: keep the gc's lease TTL well above any skew).
    pub renewed_unix: u64,
    pub pid: u32,
}

/// What [`Registry::gc`] kept and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub current: Option<u32>,
    /// The newest published versions kept (CURRENT among them).
    pub kept: Vec<u32>,
    /// Versions kept because a server leases them.
    pub leased: Vec<u32>,
    /// Version numbers removed (or, in a dry run, that would be).
    pub removed: Vec<u32>,
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

fn lease_key(server: &str) -> String {
    // Server ids are ours (uuids), but keep the key a single safe path segment anyway.
    let safe: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{LEASES}/{safe}.json")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `base` scaled by a random factor in [0.5, 1.5).
fn jittered(base: Duration) -> Duration {
    let r = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + r)
}

fn version_prefix(version: u32) -> String {
    format!("{DEPLOYMENTS}/v{version:04}")
}

fn parse_version(name: &str) -> Option<u32> {
    name.strip_prefix('v')?.parse().ok()
}

/// Where S3 registries' model artifacts are downloaded unless the caller says otherwise
/// ([`Registry::with_model_cache`]): `registry-models` in the project's one cache folder.
fn default_model_cache() -> PathBuf {
    facepipe_pipeline::models::cache_dir().join("registry-models")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::bundle;

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
    fn model_artifacts_of_a_local_registry_stay_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path().to_str().unwrap())
            .unwrap()
            .with_model_cache(elsewhere.path());
        assert_eq!(reg.model_dir("ab"), dir.path().join("models").join("ab"));
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
