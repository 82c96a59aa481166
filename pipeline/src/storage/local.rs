//! Storage in a local directory: keys are relative paths, puts go to a temporary file in
//! the same directory and are renamed into place (rename is atomic within a filesystem).

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::{BoxFuture, Location, ObjectInfo, Storage};
use crate::error::{Error, Result};

/// Marks temporary files of unfinished puts; `list` never returns them.
const TMP_MARK: &str = ".facepipe-tmp-";

pub struct LocalStorage {
    location: Location,
    root: PathBuf,
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

    /// Write `data` to a uniquely named temporary file beside the key's file (hidden from
    /// listings) and return both paths; the caller publishes it with a rename or a link.
    async fn write_temp(&self, key: &str, data: &[u8]) -> Result<(PathBuf, PathBuf)> {
        let path = self.path_of(key)?;
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| Error::io(&parent, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = parent.join(format!("{name}{TMP_MARK}{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, data)
            .await
            .map_err(|e| Error::io(&tmp, e))?;
        Ok((path, tmp))
    }
}

fn walk(dir: &Path, root: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
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
                walk(&path, root, prefix, out)?;
            }
        } else if key.starts_with(prefix) && !key.contains(TMP_MARK) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            out.push(ObjectInfo { key, size });
        }
    }
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
            let (path, tmp) = self.write_temp(key, &data).await?;
            if let Err(e) = tokio::fs::rename(&tmp, &path).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(Error::io(path, e));
            }
            Ok(())
        })
    }

    fn put_if_absent<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (path, tmp) = self.write_temp(key, &data).await?;
            // link() never replaces an existing name, so exactly one writer wins, and the
            // object appears whole.
            let linked = tokio::fs::hard_link(&tmp, &path).await;
            let _ = tokio::fs::remove_file(&tmp).await;
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Error::io(path, e)),
            }
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
}
