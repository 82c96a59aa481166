//! Gallery edits at run time (enroll, delete, and the review's names and removals) that never lose an accepted change.
//!
//! An edit is derived from the deployment the registry's `CURRENT` names — not from the
//! gallery this server holds in memory, which may be older (a `facepipe deploy`, another
//! replica's enroll) — and published with the registry's compare-and-swap loop
//! ([`Registry::publish_edit`]), which derives it again whenever another publisher wins.
//!
//! The publish runs in a task of its own, not in the HTTP handler's future: a request
//! timeout or a client that hangs up drops the handler, never a publish halfway through.
//! The handler waits for the task and answers with its outcome. Edits of one process take
//! turns through [`EditQueue`], whose turn is held by the task, not by the handler; edits
//! of other processes are ordered by the compare-and-swap.
//!
//! [`Registry::publish_edit`]: crate::registry::Registry::publish_edit

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::api::{AppState, Edited};
use crate::deployment::{now_rfc3339, Bundle, ModelRef};
use crate::error::{Error, Result};
use crate::gallery::Gallery;

/// The routes whose answer waits for a publish (enroll, delete, review name/remove/ignore).
/// The request timeout does
/// not cut them: they bound reading and embedding by the deadline themselves, and a publish,
/// once started, is answered with its outcome.
const EDIT_ROUTES: [&str; 5] = [
    "/v1/people/{name}/faces",
    "/v1/people/{name}",
    "/v1/review/name",
    "/v1/review/remove",
    "/v1/review/ignore",
];

/// Whether `route` (axum's matched path) answers only after a publish's outcome is known.
pub fn waits_for_publish(route: &str) -> bool {
    EDIT_ROUTES.contains(&route)
}

/// One change to the gallery.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Add `embeddings` (made by `model`) to `person`, creating them if new.
    Enroll {
        person: String,
        embeddings: Vec<Vec<f32>>,
        source: String,
        model: ModelRef,
    },
    /// Remove `person` and all their embeddings.
    Remove { person: String },
    /// Add reviewed faces to `person`, each once: a face whose source (see
    /// [`crate::review::face_source`]) `person` already has is skipped.
    EnrollFaces {
        person: String,
        /// (source, embedding) of every face.
        faces: Vec<(String, Vec<f32>)>,
        model: ModelRef,
    },
    /// Remove the embeddings of `person` that came from `sources` (faces a reviewer took
    /// out); a person left with none is removed.
    RemoveFaces {
        person: String,
        sources: Vec<String>,
    },
}

impl Edit {
    fn person(&self) -> &str {
        match self {
            Edit::Enroll { person, .. }
            | Edit::Remove { person }
            | Edit::EnrollFaces { person, .. }
            | Edit::RemoveFaces { person, .. } => person,
        }
    }

    /// The new bundle: this edit applied to `base` (the current deployment), and how many
    /// embeddings it added or removed.
    pub fn apply_to(&self, base: &Bundle) -> Result<(Bundle, usize)> {
        match self {
            Edit::Enroll {
                person,
                embeddings,
                source,
                model,
            } => {
                same_model(base, model)?;
                let mut gallery = base.gallery.clone();
                gallery.add(person, embeddings, source)?;
                Ok((
                    derived(base, gallery, format!("enroll {person}")),
                    embeddings.len(),
                ))
            }
            Edit::Remove { person } => {
                let index = base.gallery.person_index(person).ok_or_else(|| {
                    Error::NotFound(format!("nobody called {person:?} is enrolled"))
                })?;
                let faces = base.gallery.counts().get(index).copied().unwrap_or(0);
                let gallery = base.gallery.without(person).ok_or_else(|| {
                    Error::NotFound(format!("nobody called {person:?} is enrolled"))
                })?;
                Ok((derived(base, gallery, format!("delete {person}")), faces))
            }
            Edit::EnrollFaces {
                person,
                faces,
                model,
            } => {
                same_model(base, model)?;
                let known = sources_of(&base.gallery, person);
                let mut gallery = base.gallery.clone();
                let mut added = 0;
                for (source, embedding) in faces.iter().filter(|(s, _)| !known.contains(s)) {
                    gallery.add(person, std::slice::from_ref(embedding), source)?;
                    added += 1;
                }
                Ok((derived(base, gallery, format!("name {person}")), added))
            }
            Edit::RemoveFaces { person, sources } => {
                let gallery = base
                    .gallery
                    .without_rows(|p, s| p == person && sources.iter().any(|x| x == s));
                let removed = base.gallery.len() - gallery.len();
                Ok((
                    derived(base, gallery, format!("not {person}: {removed} faces")),
                    removed,
                ))
            }
        }
    }
}

/// Embeddings of another network than the one CURRENT uses now (a new deployment arrived
/// while the photos were processed) would not compare: refused.
fn same_model(base: &Bundle, model: &ModelRef) -> Result<()> {
    if base.info.model == *model {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "a deployment with another model (v{:04}) was published while the photos were \
         processed: send them again",
        base.info.version
    )))
}

/// The sources of `person`'s embeddings in `gallery`.
pub fn sources_of(gallery: &Gallery, person: &str) -> std::collections::HashSet<String> {
    let Some(index) = gallery.person_index(person) else {
        return Default::default();
    };
    gallery
        .row_person()
        .iter()
        .zip(gallery.sources())
        .filter(|(&p, _)| p as usize == index)
        .map(|(_, s)| s.clone())
        .collect()
}

/// A bundle with `gallery` in place of `base`'s; the registry sets version and parent.
fn derived(base: &Bundle, gallery: Gallery, reason: String) -> Bundle {
    let mut info = base.info.clone();
    info.created = now_rfc3339();
    info.people = gallery.people().len();
    info.embeddings = gallery.len();
    info.gallery_source = format!("v{:04}", base.info.version);
    info.reason = reason;
    Bundle { info, gallery }
}

/// This process's edits, one at a time, and who this server is in the registry's leases.
#[derive(Debug)]
pub struct EditQueue {
    turn: Arc<tokio::sync::Mutex<()>>,
    pending: Arc<AtomicUsize>,
    server_id: String,
}

impl Default for EditQueue {
    fn default() -> Self {
        EditQueue {
            turn: Arc::default(),
            pending: Arc::default(),
            server_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl EditQueue {
    /// Edits submitted and not finished yet (waiting for their turn or publishing).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// This server's name in `leases/` of the registry.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }
}

/// Counts an edit as pending from submission until its task ends, however it ends.
struct PendingGuard(Arc<AtomicUsize>);

impl PendingGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        PendingGuard(counter.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Publish `edit` and serve the result; resolves with the outcome. Dropping the returned
/// future does not stop the edit: it runs to its end in its own task.
pub async fn submit(state: Arc<AppState>, edit: Edit) -> Result<Edited> {
    let queue = state.edit_queue();
    let pending = PendingGuard::new(&queue.pending);
    let turn = queue.turn.clone();
    let task = tokio::spawn(async move {
        let _pending = pending;
        let _turn = turn.lock_owned().await;
        tokio::task::spawn_blocking(move || publish(&state, &edit))
            .await
            .map_err(|e| Error::Internal(format!("the edit task failed: {e}")))?
    });
    task.await
        .map_err(|e| Error::Internal(format!("the edit task failed: {e}")))?
}

/// Blocking: the compare-and-swap publish, then swap the published version in.
fn publish(state: &AppState, edit: &Edit) -> Result<Edited> {
    let mut faces = 0;
    let published = state.registry().publish_edit(|base| {
        let base = base.ok_or_else(|| {
            Error::NotReady(format!(
                "the registry {} has no current deployment: run `facepipe deploy` first",
                state.registry().location()
            ))
        })?;
        let (bundle, n) = edit.apply_to(base)?;
        faces = n;
        Ok(bundle)
    })?;
    let version = published.info.version;
    // Serve it now rather than at the watcher's next look (only if nothing newer is served).
    // The edit is published either way: a failure here is the watcher's to retry, not the
    // client's to see.
    if let Err(e) = state.swap_bundle(published) {
        tracing::warn!("published v{version:04} but could not serve it yet: {e}");
    }
    let queue = state.edit_queue();
    if let Err(e) = state
        .registry()
        .renew_lease(queue.server_id(), state.live().info.version)
    {
        tracing::warn!("could not renew this server's registry lease: {e}");
    }
    Ok(Edited {
        person: edit.person().to_string(),
        faces,
        deployment: version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::bundle_with;

    /// Version 7 of a deployment with one person, "ada", enrolled twice.
    fn base() -> Bundle {
        let mut base = bundle_with("ada", &[[1.0, 0.0], [0.9, 0.1]]);
        base.info.version = 7;
        base
    }

    #[test]
    fn edits_apply_to_the_base_they_are_given() {
        let enroll = Edit::Enroll {
            person: "bob".into(),
            embeddings: vec![vec![0.0, 1.0]],
            source: "api upload".into(),
            model: ModelRef::pretrained(),
        };
        let (b, n) = enroll.apply_to(&base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 1);
        assert_eq!(b.gallery.people(), ["ada", "bob"]);
        assert_eq!((b.info.people, b.info.embeddings), (2, 3));
        assert_eq!(b.info.gallery_source, "v0007");
        assert_eq!(b.info.reason, "enroll bob");

        let (b, n) = Edit::Remove {
            person: "ada".into(),
        }
        .apply_to(&b)
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 2);
        assert_eq!(b.gallery.people(), ["bob"]);
        let missing = Edit::Remove {
            person: "zoe".into(),
        }
        .apply_to(&b);
        assert!(matches!(missing, Err(Error::NotFound(_))));

        // Embeddings of another model never land in this gallery.
        let other = Edit::Enroll {
            person: "eve".into(),
            embeddings: vec![vec![0.5, 0.5]],
            source: "api upload".into(),
            model: ModelRef::Artifact {
                sha256: "ab".repeat(32),
                source: "elsewhere".into(),
            },
        };
        assert!(matches!(other.apply_to(&base()), Err(Error::Conflict(_))));
    }

    #[test]
    fn reviewed_faces_are_enrolled_once_and_taken_out_by_source() {
        let faces = |ids: &[&str]| -> Vec<(String, Vec<f32>)> {
            ids.iter()
                .map(|f| (crate::review::face_source(f), vec![0.0, 1.0]))
                .collect()
        };
        let name = |ids: &[&str]| Edit::EnrollFaces {
            person: "bob".into(),
            faces: faces(ids),
            model: ModelRef::pretrained(),
        };
        let (b, n) = name(&["f1", "f2"]).apply_to(&base()).unwrap();
        assert_eq!((n, b.gallery.counts()), (2, vec![2, 2]));
        assert_eq!(b.info.reason, "name bob");
        // Named again with one more face: only the new one is added.
        let (b, n) = name(&["f1", "f2", "f3"]).apply_to(&b).unwrap();
        assert_eq!((n, b.gallery.counts()), (1, vec![2, 3]));

        let out = |sources: &[&str]| Edit::RemoveFaces {
            person: "bob".into(),
            sources: sources
                .iter()
                .map(|f| crate::review::face_source(f))
                .collect(),
        };
        let (b, n) = out(&["f2"]).apply_to(&b).unwrap();
        assert_eq!((n, b.gallery.counts()), (1, vec![2, 2]));
        // Ada's rows have other sources: untouched. Bob's last rows gone: Bob is gone.
        let (b, n) = out(&["f1", "f3"]).apply_to(&b).unwrap();
        assert_eq!(n, 2);
        assert_eq!(b.gallery.people(), ["ada"]);
        let other = Edit::EnrollFaces {
            person: "bob".into(),
            faces: faces(&["f9"]),
            model: ModelRef::Artifact {
                sha256: "cd".repeat(32),
                source: "elsewhere".into(),
            },
        };
        assert!(matches!(other.apply_to(&b), Err(Error::Conflict(_))));
    }
}
