//! The raw input layout `facepipe prepare` reads: LFW-style `root/Identity/photo.jpg`, in a
//! local folder or under an S3 prefix. Identity names may hold spaces and any Unicode.
//! Files directly under the root (an LFW `pairs.txt`, a README) are not inputs; hidden
//! files are skipped; every other file inside an identity folder is an input, whatever its
//! extension, so a stray non-image gets a recorded outcome instead of vanishing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// Extensions of the image formats the decoder reads (the decoder goes by content; this
/// list is only used to tell people what is expected).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "pgm", "ppm", "pbm", "pnm", "gif", "webp", "bmp", "tif", "tiff",
];

/// One input photo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputImage {
    /// Key relative to the input root, `Identity/file`.
    pub key: String,
    pub identity: String,
    pub label: u32,
    /// Size in bytes as listed.
    pub size: u64,
}

/// A listed input: identities (sorted, labelled) and their photos (sorted by key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawDataset {
    /// `(name, images)` in label order.
    pub identities: Vec<(String, u32)>,
    pub images: Vec<InputImage>,
    /// Identities left out by `min_images_per_identity`.
    pub skipped_identities: u32,
    /// Images of the skipped identities.
    pub skipped_images: u32,
}

/// List an LFW-style input and label identities 0.. in name order, keeping identities with
/// at least `min_images_per_identity` files.
pub async fn list(store: &dyn Storage, min_images_per_identity: u32) -> Result<RawDataset> {
    let objects = store.list("").await?;
    let mut by_identity: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for obj in objects {
        let mut parts = obj.key.split('/');
        let (Some(identity), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if identity.is_empty()
            || file.is_empty()
            || identity.starts_with('.')
            || file.starts_with('.')
        {
            continue;
        }
        by_identity
            .entry(identity.to_string())
            .or_default()
            .push((obj.key.clone(), obj.size));
    }
    if by_identity.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no photos in the expected layout IDENTITY/PHOTO (e.g. Ada_Lovelace/Ada_Lovelace_0001.jpg, \
             formats: {})",
            store.location(),
            IMAGE_EXTENSIONS.join(", ")
        )));
    }
    let mut raw = RawDataset::default();
    for (identity, mut files) in by_identity {
        let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
        if count < min_images_per_identity {
            raw.skipped_identities += 1;
            raw.skipped_images += count;
            continue;
        }
        let label = u32::try_from(raw.identities.len()).unwrap_or(u32::MAX);
        files.sort();
        for (key, size) in files {
            raw.images.push(InputImage {
                key,
                identity: identity.clone(),
                label,
                size,
            });
        }
        raw.identities.push((identity, count));
    }
    if raw.identities.is_empty() {
        return Err(Error::Invalid(format!(
            "no identity in {} has at least {min_images_per_identity} photos: lower --min-images-per-identity",
            store.location()
        )));
    }
    raw.images.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStorage, Location};
    use bytes::Bytes;

    #[tokio::test]
    async fn lists_identities_with_unicode_and_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(Location::Local(dir.path().to_path_buf()));
        for key in [
            "pairs.txt",
            "Zoë Saldaña/1.jpg",
            "Zoë Saldaña/2.png",
            "Ada_Lovelace/a.jpg",
            "Ada_Lovelace/.DS_Store",
            "Solo/only.jpg",
            "Deep/nested/x.jpg",
        ] {
            store.put(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let raw = list(&store, 1).await.unwrap();
        let names: Vec<&str> = raw.identities.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Ada_Lovelace", "Solo", "Zoë Saldaña"]);
        assert_eq!(raw.images.len(), 4);
        assert_eq!(raw.images[3].key, "Zoë Saldaña/2.png");
        assert_eq!(raw.images[3].label, 2);

        let raw = list(&store, 2).await.unwrap();
        assert_eq!(raw.identities, [("Zoë Saldaña".to_string(), 2)]);
        assert_eq!(raw.images[0].label, 0);
        assert_eq!((raw.skipped_identities, raw.skipped_images), (2, 2));
        assert!(list(&store, 3).await.is_err());
    }

    #[tokio::test]
    async fn a_symlink_loop_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(Location::Local(dir.path().to_path_buf()));
        store
            .put("Ada/1.jpg", Bytes::from_static(b"x"))
            .await
            .unwrap();
        // A link inside the tree back to its root: walking it would never end.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("Ada").join("again")).unwrap();
        let e = list(&store, 1).await.unwrap_err().to_string();
        assert!(e.contains("symlink loop") && e.contains("again"), "{e}");

        // A link to a folder outside the tree is followed as before.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("2.jpg"), b"y").unwrap();
        std::fs::remove_file(dir.path().join("Ada").join("again")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("Bo")).unwrap();
        let raw = list(&store, 1).await.unwrap();
        let keys: Vec<&str> = raw.images.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["Ada/1.jpg", "Bo/2.jpg"]);
    }
}
