//! Object storage over a local directory or S3, behind one small trait.
//!
//! The prepare client and its workers share nothing but storage, so every backend gives the
//! same guarantees: keys are `/`-separated paths relative to the location, a `put` is atomic
//! (a reader sees the old object, the whole new one, or nothing — never half of it), and
//! `list` returns every key under a prefix however many pages the backend needs.
//!
//! Small pointer objects (a registry's `CURRENT`) are replaced with a compare-and-swap:
//! [`Storage::get_versioned`] reads the object with a [`Version`] token, and
//! [`Storage::put_if_version`] writes only while the object is still at that version
//! (a lock plus a content check on a local disk, `If-Match` / `If-None-Match` on S3).
//!
//! Locations: a path, `file:///abs/path`, or `s3://bucket/prefix`.

mod local;
pub mod s3;
#[cfg(feature = "test-support")]
pub mod seaweed;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};

pub use local::LocalStorage;
pub use s3::S3Storage;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Storage>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// One object returned by [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the storage location.
    pub key: String,
    pub size: u64,
}

/// One state of an object, for [`Storage::put_if_version`]. It changes whenever the content
/// does (an S3 ETag, a content hash on a local disk), so an object rewritten with the very
/// same bytes keeps its version: pointers that only move forward never repeat a state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    pub fn new(token: impl Into<String>) -> Self {
        Version(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Object storage rooted at one location.
pub trait Storage: Send + Sync {
    /// Where this storage points (for messages and for handing to workers).
    fn location(&self) -> &Location;
    /// The whole object; [`Error::NotFound`] when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Bytes>;
    /// Write the whole object atomically, replacing any earlier one.
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, ()>;
    /// Write the object only if no object has `key` yet: `Ok(true)` when this call created
    /// it, `Ok(false)` when one already existed (another writer got there first). Atomic
    /// like `put`; registries claim version numbers with it.
    fn put_if_absent<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, bool>;
    /// The whole object with its version; [`Error::NotFound`] when there is none.
    fn get_versioned<'a>(&'a self, key: &'a str) -> BoxFuture<'a, (Bytes, Version)>;
    /// Replace the object only while it is still at `expected` (`None`: only while there is
    /// no object): `Ok(true)` when this call wrote it, `Ok(false)` when another writer
    /// changed it first (read it again and retry). Atomic and durable like `put`; for small
    /// pointer objects only (never multipart).
    fn put_if_version<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
        expected: Option<&'a Version>,
    ) -> BoxFuture<'a, bool>;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Vec<ObjectInfo>>;
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool>;
    /// Remove an object; removing a missing object is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()>;
    /// Check that the location can be used (bucket exists, credentials accepted), so a
    /// job fails at once with one clear message instead of in every worker.
    fn check(&self) -> BoxFuture<'_, ()>;
}

/// A parsed storage location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parse a path, `file://…` or `s3://bucket/prefix`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Invalid(format!(
                    "{s:?} names no bucket: write s3://BUCKET/PREFIX"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(Error::Invalid(format!("{s:?} names no path")));
            }
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if s.contains("://") {
            return Err(Error::Invalid(format!(
                "unsupported location {s:?}: use a path, file://PATH or s3://BUCKET/PREFIX"
            )));
        }
        if s.is_empty() {
            return Err(Error::Invalid("empty location".into()));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// The location of `sub` below this one (e.g. `models` under the output).
    pub fn child(&self, sub: &str) -> Location {
        let sub = sub.trim_matches('/');
        match self {
            Location::Local(p) => Location::Local(p.join(sub)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: join_key(prefix, sub),
            },
        }
    }

    /// A local location as an absolute path, so it means the same in a child process.
    pub fn absolutize(&self) -> Result<Location> {
        match self {
            Location::Local(p) if p.is_relative() => {
                let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
                Ok(Location::Local(cwd.join(p)))
            }
            other => Ok(other.clone()),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// How to show `key` inside this location to a person.
    pub fn display_key(&self, key: &str) -> String {
        match self {
            Location::Local(p) => p.join(key).display().to_string(),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{}", join_key(prefix, key)),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Location::parse(s)
    }
}

/// `a` + `/` + `b` without doubled or leading slashes.
pub fn join_key(a: &str, b: &str) -> String {
    let a = a.trim_end_matches('/');
    let b = b.trim_start_matches('/');
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// How to reach S3 (ignored for local locations).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageOptions {
    /// Endpoint of an S3-compatible store (SeaweedFS, MinIO); else the AWS default
    /// (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` are honoured too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// Region; else `AWS_REGION` / the profile, else us-east-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// How long S3 calls may take, so a stalled endpoint fails a call instead of hanging it.
    #[serde(default)]
    pub timeouts: S3Timeouts,
}

/// Time limits and retries of every S3 call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Timeouts {
    /// Opening a connection.
    pub connect: std::time::Duration,
    /// Waiting for the first byte of an answer, and for each further part of a body.
    pub read: std::time::Duration,
    /// One whole call, retries and reading the body included.
    pub operation: std::time::Duration,
    /// Attempts per call (1 = no retry) for errors worth retrying.
    pub max_attempts: u32,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        // Generous enough for an 8 MiB part on a slow link; a dead endpoint still fails
        // within a few minutes at worst instead of never.
        S3Timeouts {
            connect: std::time::Duration::from_secs(5),
            read: std::time::Duration::from_secs(60),
            operation: std::time::Duration::from_secs(300),
            max_attempts: 3,
        }
    }
}

/// Open storage at a location.
pub async fn open(location: &Location, options: &StorageOptions) -> Result<Arc<dyn Storage>> {
    Ok(match location {
        Location::Local(_) => Arc::new(LocalStorage::new(location.absolutize()?)),
        Location::S3 { .. } => Arc::new(S3Storage::connect(location.clone(), options).await?),
    })
}

/// Parse and open in one step.
pub async fn open_str(location: &str, options: &StorageOptions) -> Result<Arc<dyn Storage>> {
    open(&Location::parse(location)?, options).await
}

/// Read a JSON object.
pub async fn get_json<T: serde::de::DeserializeOwned>(store: &dyn Storage, key: &str) -> Result<T> {
    let bytes = store.get(key).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(store.location().display_key(key), e))
}

/// Write a JSON object (atomically, like every put).
pub async fn put_json<T: serde::Serialize>(
    store: &dyn Storage,
    key: &str,
    value: &T,
) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::json(store.location().display_key(key), e))?;
    store.put(key, Bytes::from(bytes)).await
}

/// Copy every file of a local folder (not recursive) to `prefix` in `store`, skipping
/// objects that already exist with the same size.
pub async fn upload_dir(store: &dyn Storage, dir: &std::path::Path, prefix: &str) -> Result<usize> {
    let existing: std::collections::HashMap<String, u64> = store
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut uploaded = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let key = join_key(prefix, name);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        if existing.get(&key) == Some(&(bytes.len() as u64)) {
            continue;
        }
        store.put(&key, Bytes::from(bytes)).await?;
        uploaded += 1;
    }
    Ok(uploaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("s3://bkt/a/b/").unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bkt").unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/x").unwrap(),
            Location::Local("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("rel/dir").unwrap(),
            Location::Local("rel/dir".into())
        );
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("gs://b/x").is_err());
        let s3 = Location::parse("s3://bkt/out").unwrap();
        assert_eq!(s3.child("models").to_string(), "s3://bkt/out/models");
        assert_eq!(
            s3.display_key("manifest.json"),
            "s3://bkt/out/manifest.json"
        );
        assert_eq!(join_key("", "k"), "k");
        assert_eq!(join_key("a/", "/k"), "a/k");
    }
}
