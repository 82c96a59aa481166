//! A clustering result held for review (`facepipe serve --review OUT`): the output folder
//! of `facepipe cluster` (`clusters.json`, `faces/`, `decisions.json`), read from disk, and
//! the reviewer's actions, each recorded in `decisions.json` at once so the next
//! `facepipe cluster` run over the folder keeps them.
//!
//! What the page shows is [`facepipe_cluster::review::view`]: the grouping with the
//! decisions made since it ran applied on top. The two files are the only state: a
//! restart, or a re-run of `facepipe cluster` (noticed by the file's change), shows the
//! same thing. Naming a group enrolls its faces through [`crate::edits`], each under the
//! source [`face_source`], so a face is enrolled once however often its group is named, and
//! taking it out again removes exactly its embedding. The routes are in [`routes`].

pub mod routes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use facepipe_cluster::output::{DECISIONS_FILE, FACES_DIR};
use facepipe_cluster::{review, ClustersFile, Decisions};
use facepipe_pipeline::dataset::Manifest;

use crate::error::{Error, Result};

/// The gallery source of a face enrolled from a review: its face id, so the face is
/// enrolled once and can be taken out again.
pub fn face_source(face: &str) -> String {
    format!("review:{face}")
}

/// The output folder under review.
pub struct Review {
    dir: PathBuf,
    /// Review actions take turns: each reads the view, may publish, then records.
    turn: tokio::sync::Mutex<()>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Review {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Review").field("dir", &self.dir).finish()
    }
}

/// `clusters.json` and the aligned crops, as of the file's last change.
struct Loaded {
    stamp: Stamp,
    file: Arc<ClustersFile>,
    /// The stored JPEG of every face (about 6 KB each).
    crops: Crops,
}

/// The stored JPEG of every face, by face id.
type Crops = Arc<HashMap<String, Bytes>>;

/// When `clusters.json` last changed, and its length (a re-run rewrites it).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Review {
    /// Open the output folder `dir` of `facepipe cluster` (blocking: reads every crop).
    pub fn open(dir: &Path) -> Result<Review> {
        let loaded = load(dir)?;
        Ok(Review {
            dir: dir.to_path_buf(),
            turn: tokio::sync::Mutex::new(()),
            loaded: Mutex::new(loaded),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Faces and groups as last loaded (for the start-up line).
    pub fn counts(&self) -> (usize, usize) {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        (loaded.file.face_count, loaded.file.groups.len())
    }

    /// Wait for this action's turn.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// `clusters.json` and the crops, reloaded first when a re-run has rewritten it.
    /// Blocking.
    fn current(&self) -> Result<(Arc<ClustersFile>, Crops)> {
        let now = stamp(&self.dir.join(facepipe_cluster::output::CLUSTERS_FILE));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now != loaded.stamp {
            match load(&self.dir) {
                Ok(fresh) => *loaded = fresh,
                // A run still writing its files: keep showing the last complete result.
                Err(e) => tracing::warn!("keeping the loaded clustering result: {e}"),
            }
        }
        Ok((loaded.file.clone(), loaded.crops.clone()))
    }

    /// The grouping with every decision applied (blocking).
    pub fn view(&self) -> Result<(ClustersFile, Decisions)> {
        let (file, _) = self.current()?;
        let decisions = self.decisions()?;
        Ok((review::view(&file, &decisions), decisions))
    }

    /// The stored crop of `face` (blocking when the result must be reloaded).
    pub fn crop(&self, face: &str) -> Result<Option<Bytes>> {
        let (_, crops) = self.current()?;
        Ok(crops.get(face).cloned())
    }

    /// The decisions as stored now (blocking).
    pub fn decisions(&self) -> Result<Decisions> {
        Decisions::load(&self.decisions_path()).map_err(review_error)
    }

    /// Apply `decide` to the stored decisions and write them back whole (blocking). Called
    /// in the action's turn; the file is read again first, so a decision another process
    /// wrote meanwhile is kept.
    pub fn record(&self, decide: impl FnOnce(&mut Decisions)) -> Result<()> {
        let mut decisions = self.decisions()?;
        decide(&mut decisions);
        decisions.save(&self.decisions_path()).map_err(review_error)
    }

    fn decisions_path(&self) -> PathBuf {
        self.dir.join(DECISIONS_FILE)
    }
}

/// A file of the review folder failed: the operator's to fix, logged with its path; the
/// caller gets no detail.
fn review_error(e: facepipe_cluster::Error) -> Error {
    Error::Internal(format!("the review folder: {e}"))
}

fn load(dir: &Path) -> Result<Loaded> {
    let clusters = dir.join(facepipe_cluster::output::CLUSTERS_FILE);
    let before = stamp(&clusters);
    let file = ClustersFile::load(dir).map_err(|e| Error::BadRequest(e.to_string()))?;
    let faces = dir.join(FACES_DIR);
    let manifest = Manifest::load(&faces).map_err(|e| {
        Error::BadRequest(format!(
            "{} holds no aligned faces ({e}): give --review the output folder of `facepipe cluster`",
            faces.display()
        ))
    })?;
    let mut crops = HashMap::new();
    for sample in manifest.samples(&faces) {
        let sample = sample.map_err(|e| Error::BadRequest(format!("{}: {e}", faces.display())))?;
        crops.insert(sample.key, Bytes::from(sample.jpeg));
    }
    Ok(Loaded {
        stamp: before,
        file: Arc::new(file),
        crops: Arc::new(crops),
    })
}
