//! The raw input layouts `facepipe prepare` reads, in a local folder or under an S3 prefix
//! (see [`Layout`]):
//!
//! - [`Layout::Labelled`] (the default): LFW-style `root/Identity/photo.jpg`. Identity names
//!   may hold spaces and any Unicode. Files directly under the root (an LFW `pairs.txt`, a
//!   README) and deeper than one folder are not inputs; hidden files are skipped; every
//!   other file inside an identity folder is an input.
//! - [`Layout::Unlabelled`]: a pile of photos of nobody in particular. Every file at any
//!   depth is an input, except hidden files and anything inside a hidden folder; inputs get
//!   the placeholder identity [`UNLABELLED_IDENTITY`] and label 0.
//!
//! In both, an input is taken whatever its extension, so a stray non-image gets a recorded
//! outcome instead of vanishing, and its key is its path relative to the root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// Extensions of the image formats the decoder reads (the decoder goes by content; this
/// list is only used to tell people what is expected).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "pgm", "ppm", "pbm", "pnm", "gif", "webp", "bmp", "tif", "tiff",
];

/// How the photos of an input are laid out, and so whether they name the people in them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `root/Identity/photo`: one folder per person, the folder name is the identity.
    #[default]
    Labelled,
    /// Every non-hidden file at any depth is a photo of unknown people (the input of
    /// grouping): identity [`UNLABELLED_IDENTITY`], label 0.
    Unlabelled,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Labelled => "labelled",
            Layout::Unlabelled => "unlabelled",
        }
    }

    /// For `skip_serializing_if`: a labelled job's records stay as they were before layouts.
    pub fn is_labelled(&self) -> bool {
        *self == Layout::Labelled
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "labelled" | "labeled" => Ok(Layout::Labelled),
            "unlabelled" | "unlabeled" => Ok(Layout::Unlabelled),
            other => Err(Error::Invalid(format!(
                "unknown input layout {other:?}: use labelled (one folder per person) or \
                 unlabelled (every photo at any depth, nobody named)"
            ))),
        }
    }
}

/// The identity of every input of an [`Layout::Unlabelled`] listing: empty, so nothing
/// reads it as a person's name. It is the only identity of such a listing (label 0), so a
/// label still indexes the manifest's identities.
pub const UNLABELLED_IDENTITY: &str = "";

/// One input photo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputImage {
    /// Key relative to the input root: `Identity/file`, or any relative path when unlabelled.
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

/// List an input laid out as `layout`: [`list`] for [`Layout::Labelled`],
/// [`list_unlabelled`] for [`Layout::Unlabelled`], which has no identities to apply
/// `min_images_per_identity` to, so it refuses a minimum above 1.
pub async fn list_layout(
    store: &dyn Storage,
    layout: Layout,
    min_images_per_identity: u32,
) -> Result<RawDataset> {
    match layout {
        Layout::Labelled => list(store, min_images_per_identity).await,
        Layout::Unlabelled if min_images_per_identity > 1 => Err(Error::Invalid(format!(
            "a minimum of {min_images_per_identity} photos per identity needs identities, and \
             the unlabelled layout has none: leave the minimum at 1 or use the labelled layout"
        ))),
        Layout::Unlabelled => list_unlabelled(store).await,
    }
}

/// List an unlabelled input: every file at any depth, sorted by key, except hidden files
/// and files inside hidden folders (any path segment starting with `.`). Every input has
/// identity [`UNLABELLED_IDENTITY`] and label 0, the listing's only identity.
pub async fn list_unlabelled(store: &dyn Storage) -> Result<RawDataset> {
    let mut images: Vec<InputImage> = store
        .list("")
        .await?
        .into_iter()
        .filter(|obj| {
            obj.key
                .split('/')
                .all(|part| !part.is_empty() && !part.starts_with('.'))
        })
        .map(|obj| InputImage {
            key: obj.key,
            identity: UNLABELLED_IDENTITY.to_string(),
            label: 0,
            size: obj.size,
        })
        .collect();
    if images.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no photos (hidden files and folders are skipped; formats: {})",
            store.location(),
            IMAGE_EXTENSIONS.join(", ")
        )));
    }
    images.sort_by(|a, b| a.key.cmp(&b.key));
    let count = u32::try_from(images.len()).unwrap_or(u32::MAX);
    Ok(RawDataset {
        identities: vec![(UNLABELLED_IDENTITY.to_string(), count)],
        images,
        skipped_identities: 0,
        skipped_images: 0,
    })
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
        return Err(no_photos(store.location().to_string()));
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
            "no identity in {} has at least {min_images_per_identity} photos: lower the minimum per identity",
            store.location()
        )));
    }
    raw.images.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(raw)
}

fn no_photos(location: String) -> Error {
    Error::NoPhotos {
        location,
        formats: IMAGE_EXTENSIONS.join(", "),
    }
}

/// True when the file name ends in one of [`IMAGE_EXTENSIONS`], in any case.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// One photo of a local `root/Identity/photo` folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelledPhoto {
    pub identity: String,
    pub path: PathBuf,
}

/// Every photo of a local `root/Identity/photo` folder, sorted by identity, then path: the
/// layout [`list`] reads (files directly under `root` and hidden names are not photos), but
/// only files with an image extension, because a caller that embeds photos has no manifest
/// to record a stray file's outcome in. An empty listing is an error.
pub fn list_photo_folder(root: &Path) -> Result<Vec<LabelledPhoto>> {
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|source| Error::NotAFolder {
            path: dir.to_path_buf(),
            source,
        })
    };
    let hidden = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'))
    };
    let mut photos = Vec::new();
    for entry in read(root)? {
        let dir = entry.map_err(|e| Error::io(root, e))?.path();
        if !dir.is_dir() || hidden(&dir) {
            continue;
        }
        let Some(identity) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        for file in read(&dir)? {
            let path = file.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_file() && !hidden(&path) && has_image_extension(&path) {
                photos.push(LabelledPhoto {
                    identity: identity.clone(),
                    path,
                });
            }
        }
    }
    if photos.is_empty() {
        return Err(no_photos(root.display().to_string()));
    }
    photos.sort();
    Ok(photos)
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
    async fn unlabelled_lists_every_visible_file_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(Location::Local(dir.path().to_path_buf()));
        for key in [
            "loose.jpg",
            "2019/Zoë's party/img 1.JPG",
            "2019/Zoë's party/.thumb.jpg",
            "2019/a/b/c/d/deep.png",
            ".trash/old.jpg",
            "2019/.cache/x.jpg",
            "notes.txt",
        ] {
            store.put(key, Bytes::from_static(b"xy")).await.unwrap();
        }
        let raw = list_layout(&store, Layout::Unlabelled, 1).await.unwrap();
        let keys: Vec<&str> = raw.images.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "2019/Zoë's party/img 1.JPG",
                "2019/a/b/c/d/deep.png",
                "loose.jpg",
                "notes.txt"
            ]
        );
        assert!(raw
            .images
            .iter()
            .all(|i| i.identity == UNLABELLED_IDENTITY && i.label == 0 && i.size == 2));
        assert_eq!(raw.identities, [(UNLABELLED_IDENTITY.to_string(), 4)]);
        assert_eq!((raw.skipped_identities, raw.skipped_images), (0, 0));

        // Read as labelled, the same folder has no `Identity/photo` file at all.
        let labelled = list_layout(&store, Layout::Labelled, 1).await;
        assert!(
            matches!(labelled, Err(Error::NoPhotos { .. })),
            "{labelled:?}"
        );

        // No identities to count: a minimum above 1 is refused, saying why.
        let e = list_layout(&store, Layout::Unlabelled, 2)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("unlabelled layout has none"), "{e}");

        let empty = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(Location::Local(empty.path().to_path_buf()));
        store
            .put(".hidden/a.jpg", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let e = list_unlabelled(&store).await.unwrap_err();
        assert!(
            e.is_bad_input() && e.to_string().contains("no photos"),
            "{e}"
        );
    }

    #[test]
    fn layouts_parse_and_serialize_by_name() {
        assert_eq!("unlabelled".parse::<Layout>().unwrap(), Layout::Unlabelled);
        assert_eq!("labelled".parse::<Layout>().unwrap(), Layout::Labelled);
        let e = "flat".parse::<Layout>().unwrap_err().to_string();
        assert!(e.contains("labelled") && e.contains("unlabelled"), "{e}");
        assert_eq!(
            serde_json::to_string(&Layout::Unlabelled).unwrap(),
            "\"unlabelled\""
        );
        assert_eq!(Layout::default(), Layout::Labelled);
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

    #[test]
    fn a_photo_folder_lists_images_by_identity_with_one_extension_rule() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "Zoë/b.JPG",
            "Zoë/a.webp",
            "Ada/1.pgm",
            "Ada/notes.txt",
            "Ada/.hidden.jpg",
            ".trash/x.jpg",
        ] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        std::fs::write(root.join("pairs.txt"), b"x").unwrap();
        std::fs::write(root.join("loose.jpg"), b"x").unwrap();
        let got: Vec<(String, String)> = list_photo_folder(root)
            .unwrap()
            .into_iter()
            .map(|p| {
                let file = p.path.file_name().unwrap().to_string_lossy().into_owned();
                (p.identity, file)
            })
            .collect();
        let want = [("Ada", "1.pgm"), ("Zoë", "a.webp"), ("Zoë", "b.JPG")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);

        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir(empty.path().join("Ada")).unwrap();
        let e = list_photo_folder(empty.path()).unwrap_err();
        assert!(matches!(e, Error::NoPhotos { .. }), "{e}");
        assert!(e.to_string().contains("IDENTITY/PHOTO"), "{e}");
        let e = list_photo_folder(&root.join("missing")).unwrap_err();
        assert!(matches!(e, Error::NotAFolder { .. }), "{e}");
        assert!(e.is_bad_input());
    }
}
