//! Storage in a local directory: keys are relative paths. Every write goes to a temporary
//! file in the same directory, is flushed to the disk (`fsync`), then renamed (or linked)
//! into place, and the directory is flushed too, so a published object survives a power
//! cut whole or not at all. Conditional replaces hold an exclusive `flock` on a lock file
//! beside the object while they compare and write.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{BoxFuture, Location, ObjectInfo, Storage, Version};
use crate::error::{Error, Result};

/// Marks temporary files of unfinished puts (and lock files); `list` never returns them.
const TMP_MARK: &str = ".facepipe-tmp-";

pub struct LocalStorage {
    location: Location,
    root: PathBuf,
}

/// How a durable write places its temporary file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Replace whatever is there (rename).
    Replace,
    /// Only when nothing is there (link, which never replaces a name).
    IfAbsent,
}

impl LocalStorage {
    /// `location` must be [`Location::Local`]; anything else gives an empty root.
    pub fn new(location: Location) -> Self {
        let root = match &location {
            Location::Local(p) => p.clone(),
            Location::S3 { .. } => PathBuf::new(),
        };
        LocalStorage { location, root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind a key; refuses keys that would leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::Invalid(format!(
                "storage key {key:?} must be a relative path without '..'"
            )));
        }
        Ok(self.root.join(rel))
    }

    /// Run blocking file work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Storage {
                location: self.location.to_string(),
                reason: format!("file task failed: {e}"),
            })?
    }
}

/// The version of a local object: a hash of its content.
fn version_of(bytes: &[u8]) -> Version {
    Version::new(hex::encode(Sha256::digest(bytes)))
}

/// Flush a directory's entries (a new or renamed name) to the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// `create_dir_all`, flushing each new folder's name into its parent.
fn create_dirs_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Temporary file, fsync, rename (or link), fsync the directory. `Ok(false)` only for
/// [`Place::IfAbsent`] when the name already exists.
fn write_durably(path: &Path, data: &[u8], place: Place) -> Result<bool> {
    let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    create_dirs_durably(&parent)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let tmp = parent.join(format!("{name}{TMP_MARK}{}", uuid::Uuid::new_v4().simple()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    let placed = match place {
        Place::Replace => std::fs::rename(&tmp, path),
        // link() never replaces an existing name, so exactly one writer wins, and the
        // object appears whole.
        Place::IfAbsent => {
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            linked
        }
    };
    match placed {
        Ok(()) => {}
        Err(e) if place == Place::IfAbsent && e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(false)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
    }
    sync_dir(&parent)?;
    Ok(true)
}

/// Compare-and-swap of one file under an exclusive lock on a hidden file beside it.
fn replace_if_version(path: &Path, data: &[u8], expected: Option<&Version>) -> Result<bool> {
    let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    create_dirs_durably(&parent)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let lock_path = parent.join(format!("{name}{TMP_MARK}lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    // Released when `lock` is dropped, and by the kernel if this process dies.
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    let current = match std::fs::read(path) {
        Ok(bytes) => Some(version_of(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path, e)),
    };
    if current.as_ref() != expected {
        return Ok(false);
    }
    write_durably(path, data, Place::Replace)
}

fn walk(dir: &Path, root: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
    walk_tree(dir, root, prefix, out, &mut Vec::new())
}

/// `ancestors` holds the real paths of the folders being walked, outermost first: a
/// symlink leading back into one of them is a loop, refused instead of walked forever.
fn walk_tree(
    dir: &Path,
    root: &Path,
    prefix: &str,
    out: &mut Vec<ObjectInfo>,
    ancestors: &mut Vec<PathBuf>,
) -> Result<()> {
    let real = match std::fs::canonicalize(dir) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    if ancestors.contains(&real) {
        return Err(Error::Invalid(format!(
            "symlink loop: {} leads back to {}, which contains it; remove the link or point it \
             outside the input folder",
            dir.display(),
            real.display()
        )));
    }
    ancestors.push(real);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str() else {
            tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        let key = rel.replace(std::path::MAIN_SEPARATOR, "/");
        // Follow symlinks to files and folders: datasets are often linked in.
        let is_dir = file_type.is_dir() || (file_type.is_symlink() && path.is_dir());
        if is_dir {
            let as_prefix = format!("{key}/");
            if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                walk_tree(&path, root, prefix, out, ancestors)?;
            }
        } else if key.starts_with(prefix) && !key.contains(TMP_MARK) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            out.push(ObjectInfo { key, size });
        }
    }
    ancestors.pop();
    Ok(())
}

impl Storage for LocalStorage {
    fn location(&self) -> &Location {
        &self.location
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Bytes> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            match tokio::fs::read(&path).await {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::NotFound(path.display().to_string()))
                }
                Err(e) => Err(Error::io(path, e)),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            self.blocking(move || write_durably(&path, &data, Place::Replace).map(drop))
                .await
        })
    }

    fn put_if_absent<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            self.blocking(move || write_durably(&path, &data, Place::IfAbsent))
                .await
        })
    }

    fn get_versioned<'a>(&'a self, key: &'a str) -> BoxFuture<'a, (Bytes, Version)> {
        Box::pin(async move {
            // A rename replaces the file whole, so the bytes read are one state of it.
            let bytes = self.get(key).await?;
            let version = version_of(&bytes);
            Ok((bytes, version))
        })
    }

    fn put_if_version<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
        expected: Option<&'a Version>,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            let expected = expected.cloned();
            self.blocking(move || replace_if_version(&path, &data, expected.as_ref()))
                .await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Vec<ObjectInfo>> {
        Box::pin(async move {
            let root = self.root.clone();
            let prefix = prefix.to_string();
            tokio::task::spawn_blocking(move || {
                // Start at the deepest folder the prefix names, not at the root.
                let start = match prefix.rfind('/') {
                    Some(i) => root.join(&prefix[..i]),
                    None => root.clone(),
                };
                let mut out = Vec::new();
                walk(&start, &root, &prefix, &mut out)?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await
            .map_err(|e| Error::Storage {
                location: self.location.to_string(),
                reason: format!("listing task failed: {e}"),
            })?
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            Ok(tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(path, e)),
            }
        })
    }

    fn check(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match tokio::fs::metadata(&self.root).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(Error::Invalid(format!(
                    "{} is a file, not a folder",
                    self.root.display()
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::NotFound(format!("folder {}", self.root.display())))
                }
                Err(e) => Err(Error::io(&self.root, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(Location::Local(dir.path().to_path_buf()));
        store.check().await.unwrap();
        store
            .put("a/b/one.json", Bytes::from_static(b"1"))
            .await
            .unwrap();
        store
            .put("a/b/two.json", Bytes::from_static(b"22"))
            .await
            .unwrap();
        store
            .put("a/c/Zoë Saldaña/x y.jpg", Bytes::from_static(b"333"))
            .await
            .unwrap();
        store
            .put("a/b/one.json", Bytes::from_static(b"111"))
            .await
            .unwrap();
        assert_eq!(
            store.get("a/b/one.json").await.unwrap(),
            Bytes::from_static(b"111")
        );
        assert!(matches!(store.get("nope").await, Err(Error::NotFound(_))));
        let keys: Vec<(String, u64)> = store
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        assert_eq!(
            keys,
            [
                ("a/b/one.json".to_string(), 3),
                ("a/b/two.json".to_string(), 2),
                ("a/c/Zoë Saldaña/x y.jpg".to_string(), 3)
            ]
        );
        assert_eq!(store.list("a/b/t").await.unwrap().len(), 1);
        assert!(store.exists("a/b/two.json").await.unwrap());
        store.delete("a/b/two.json").await.unwrap();
        store.delete("a/b/two.json").await.unwrap();
        assert!(!store.exists("a/b/two.json").await.unwrap());
        assert!(store.get("../escape").await.is_err());
        assert!(store
            .put_if_absent("a/b/claim", Bytes::from_static(b"first"))
            .await
            .unwrap());
        assert!(!store
            .put_if_absent("a/b/claim", Bytes::from_static(b"second"))
            .await
            .unwrap());
        assert_eq!(store.get("a/b/claim").await.unwrap(), "first");
        store.delete("a/b/claim").await.unwrap();
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn conditional_replace_has_one_winner_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(LocalStorage::new(Location::Local(dir.path().to_path_buf())));
        assert!(matches!(
            store.get_versioned("p/CURRENT").await,
            Err(Error::NotFound(_))
        ));
        // Create: only while absent.
        assert!(store
            .put_if_version("p/CURRENT", Bytes::from_static(b"v1"), None)
            .await
            .unwrap());
        assert!(!store
            .put_if_version("p/CURRENT", Bytes::from_static(b"v9"), None)
            .await
            .unwrap());
        let (bytes, v1) = store.get_versioned("p/CURRENT").await.unwrap();
        assert_eq!(bytes, "v1");
        // Many writers holding the same version: exactly one replaces it, and the
        // object ends with that writer's bytes.
        let writers: Vec<_> = (0..16)
            .map(|i| {
                let (store, v1) = (store.clone(), v1.clone());
                tokio::spawn(async move {
                    let data = Bytes::from(format!("w{i}"));
                    let won = store
                        .put_if_version("p/CURRENT", data.clone(), Some(&v1))
                        .await
                        .unwrap();
                    won.then_some(data)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for w in writers {
            winners.extend(w.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let (bytes, v2) = store.get_versioned("p/CURRENT").await.unwrap();
        assert_eq!(bytes, winners[0]);
        assert_ne!(v1, v2);
        // The stale version no longer matches.
        assert!(!store
            .put_if_version("p/CURRENT", Bytes::from_static(b"late"), Some(&v1))
            .await
            .unwrap());
        // The lock file stays out of listings.
        let keys: Vec<String> = store
            .list("p/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["p/CURRENT"]);
    }
}
