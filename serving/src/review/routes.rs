//! The review API under `/v1/review` (every route needs the API key: the faces are the
//! reviewed collection's, not the public's):
//!
//! | route                        | does                                                     |
//! |------------------------------|----------------------------------------------------------|
//! | `GET /v1/review`             | the groups, largest first, and the faces left out         |
//! | `GET /v1/review/faces/{face}`| a face's aligned crop (JPEG)                              |
//! | `POST /v1/review/name`       | `{group, name}`: enroll the group's faces as that person  |
//! | `POST /v1/review/merge`      | `{groups: [..]}`: the groups are one person               |
//! | `POST /v1/review/remove`     | `{group, face}`: "not this person"                        |
//! | `POST /v1/review/ignore`     | `{group}`: "not a face / ignore"                          |
//!
//! Each action runs in the review's turn, publishes a deployment when the gallery changes
//! (naming enrolls; taking an enrolled face out removes its embedding), and then records
//! its decision in `decisions.json`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use facepipe_cluster::{ClustersFile, Decisions, FaceOut, GroupOut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{face_source, Review};
use crate::api::AppState;
use crate::edits::{self, sources_of, Edit};
use crate::error::{Error, Result};
use crate::request::Cancel;

/// `GET /v1/review`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReviewView {
    pub photos: String,
    pub model: String,
    /// Cosine distance the grouping used.
    pub threshold: f32,
    pub photo_count: usize,
    pub face_count: usize,
    /// The deployment served now.
    pub deployment: u32,
    pub groups: Vec<GroupView>,
    pub unclustered: Vec<FaceOut>,
    pub decisions: DecisionCounts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupView {
    pub key: String,
    pub name: Option<String>,
    pub size: usize,
    pub representative: String,
    /// Members enrolled under `name` in the served deployment.
    pub enrolled: usize,
    pub members: Vec<FaceOut>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DecisionCounts {
    pub named: usize,
    pub merged: usize,
    pub removed: usize,
    pub ignored: usize,
    pub cannot_link: usize,
}

impl From<&Decisions> for DecisionCounts {
    fn from(d: &Decisions) -> Self {
        DecisionCounts {
            named: d.named.len(),
            merged: d.merged.len(),
            removed: d.removed.len(),
            ignored: d.ignored.len(),
            cannot_link: d.cannot_link.len(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct NameRequest {
    group: String,
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Named {
    pub group: String,
    pub name: String,
    /// Faces enrolled by this action (faces enrolled before are not enrolled again).
    pub faces: usize,
    pub deployment: u32,
}

#[derive(Debug, Deserialize)]
struct MergeRequest {
    groups: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Merged {
    pub group: String,
    pub size: usize,
}

#[derive(Debug, Deserialize)]
struct RemoveRequest {
    group: String,
    face: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    pub group: String,
    pub face: String,
    /// The deployment published without the face's embedding, when it was enrolled.
    pub deployment: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct IgnoreRequest {
    group: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Ignored {
    pub group: String,
    pub faces: usize,
    /// The deployment published without the group's enrolled faces, if any were.
    pub deployment: Option<u32>,
}

/// `GET /v1/review`.
pub(crate) async fn show(State(state): State<Arc<AppState>>) -> Result<Json<ReviewView>> {
    let review = state.review()?;
    let (file, decisions) = off_thread(move || review.view()).await?;
    let live = state.live();
    let groups = file
        .groups
        .iter()
        .map(|g| GroupView {
            key: g.key.clone(),
            name: g.suggested_name.clone(),
            size: g.size,
            representative: g.representative.clone(),
            enrolled: enrolled(&live.gallery, g).len(),
            members: g.members.clone(),
        })
        .collect();
    Ok(Json(ReviewView {
        photos: file.photos.clone(),
        model: file.model.clone(),
        threshold: file.threshold.cosine_distance,
        photo_count: file.photo_count,
        face_count: file.face_count,
        deployment: live.info.version,
        groups,
        unclustered: file.unclustered,
        decisions: DecisionCounts::from(&decisions),
    }))
}

/// `GET /v1/review/faces/{face}`.
pub(crate) async fn face(
    State(state): State<Arc<AppState>>,
    Path(face): Path<String>,
) -> Result<Response> {
    let review = state.review()?;
    let wanted = face.clone();
    let crop = off_thread(move || review.crop(&wanted)).await?;
    let crop =
        crop.ok_or_else(|| Error::NotFound(format!("no face {face:?} in the clustering result")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            // A face's crop never changes; the key guards it, so only the browser keeps it.
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        crop,
    )
        .into_response())
}

/// `POST /v1/review/name`: enroll the group's faces (those not enrolled yet) as `name`,
/// publishing a new deployment through the same path as `POST /v1/people/{name}/faces`,
/// then record the name.
pub(crate) async fn name(
    State(state): State<Arc<AppState>>,
    Extension(cancel): Extension<Cancel>,
    req: Request,
) -> Result<(StatusCode, Json<Named>)> {
    let NameRequest { group: key, name } = json_body(req).await?;
    crate::api::check_name(&name)?;
    let review = state.review()?;
    let _turn = review.turn().await;
    let group = group_in_view(&review, &key).await?;
    if let Some(existing) = group.suggested_name.as_deref().filter(|n| *n != name) {
        return Err(Error::Conflict(format!(
            "this group is already {existing:?}: take the faces that are not out of it, or name \
             it {existing:?} to enroll the rest"
        )));
    }
    let live = state.live();
    let known = sources_of(&live.gallery, &name);
    let todo: Vec<String> = group
        .members
        .iter()
        .map(|m| m.face.clone())
        .filter(|f| !known.contains(&face_source(f)))
        .collect();
    let faces_review = review.clone();
    let st = state.clone();
    let embed = async move {
        let crops = off_thread(move || {
            todo.iter()
                .map(|f| {
                    let bytes = faces_review.crop(f)?.ok_or_else(|| {
                        Error::NotFound(format!("the crop of face {f:?} is missing"))
                    })?;
                    Ok((f.clone(), bytes))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        let recognizer = st.live().recognizer.clone();
        st.infer(move |cancel| {
            let mut faces = Vec::with_capacity(crops.len());
            for chunk in crops.chunks(EMBED_BATCH) {
                cancel.check()?;
                let images = chunk
                    .iter()
                    .map(|(f, bytes)| {
                        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
                            .map(|i| i.to_rgb8())
                            .map_err(|e| Error::Internal(format!("the crop of {f}: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let embeddings = recognizer.embed(&images)?;
                faces.extend(chunk.iter().map(|(f, _)| face_source(f)).zip(embeddings));
            }
            Ok((faces, recognizer.model().clone()))
        })
        .await
    };
    let (faces, model) = match tokio::time::timeout_at(cancel.deadline().into(), embed).await {
        Ok(embedded) => embedded?,
        Err(_) => {
            cancel.cancel();
            return Err(Error::Timeout(cancel.budget()));
        }
    };
    let (added, deployment) = if faces.is_empty() {
        (0, live.info.version)
    } else {
        let edit = Edit::EnrollFaces {
            person: name.clone(),
            faces,
            model,
        };
        let edited = edits::submit(state.clone(), edit).await?;
        (edited.faces, edited.deployment)
    };
    let g = group.as_group();
    let who = name.clone();
    let recorder = review.clone();
    off_thread(move || recorder.record(|d| d.name_group(&g, &who))).await?;
    Ok((
        StatusCode::CREATED,
        Json(Named {
            group: key,
            name,
            faces: added,
            deployment,
        }),
    ))
}

/// Faces embedded per batch when a group is named.
const EMBED_BATCH: usize = 32;

/// `POST /v1/review/merge`.
pub(crate) async fn merge(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Merged>> {
    let MergeRequest { groups: keys } = json_body(req).await?;
    if keys.len() < 2 {
        return Err(Error::BadRequest(
            "name two or more groups to merge: {\"groups\": [KEY, KEY, ...]}".into(),
        ));
    }
    let review = state.review()?;
    let _turn = review.turn().await;
    let r = review.clone();
    let (view, _) = off_thread(move || r.view()).await?;
    let groups = keys
        .iter()
        .map(|k| find(&view, k).cloned())
        .collect::<Result<Vec<GroupOut>>>()?;
    let mut names: Vec<&str> = groups
        .iter()
        .filter_map(|g| g.suggested_name.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > 1 {
        return Err(Error::Conflict(format!(
            "these groups are different people ({}): two names never merge",
            names.join(", ")
        )));
    }
    let first = groups[0].members.first().map(|m| m.face.clone());
    let r = review.clone();
    let (view, _) = off_thread(move || {
        let refs: Vec<facepipe_cluster::Group> = groups.iter().map(GroupOut::as_group).collect();
        r.record(|d| d.merge_groups(&refs.iter().collect::<Vec<_>>()))?;
        r.view()
    })
    .await?;
    let merged = view
        .groups
        .iter()
        .find(|g| {
            first
                .as_ref()
                .is_some_and(|f| g.members.iter().any(|m| m.face == *f))
        })
        .ok_or_else(|| Error::Internal("the merged group is not in the view".into()))?;
    Ok(Json(Merged {
        group: merged.key.clone(),
        size: merged.size,
    }))
}

/// `POST /v1/review/remove`: "not this person". An enrolled face leaves the gallery too.
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Removed>> {
    let RemoveRequest { group: key, face } = json_body(req).await?;
    let review = state.review()?;
    let _turn = review.turn().await;
    let group = group_in_view(&review, &key).await?;
    if !group.members.iter().any(|m| m.face == face) {
        return Err(Error::NotFound(format!(
            "face {face:?} is not in group {key:?} (reload the review)"
        )));
    }
    let deployment = unenroll(&state, &group, |f| f == face).await?;
    let g = group.as_group();
    let who = face.clone();
    let recorder = review.clone();
    off_thread(move || recorder.record(|d| d.remove_from_group(&who, &g))).await?;
    Ok(Json(Removed {
        group: key,
        face,
        deployment,
    }))
}

/// `POST /v1/review/ignore`: "not a face / ignore". Enrolled faces leave the gallery too.
pub(crate) async fn ignore(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Ignored>> {
    let IgnoreRequest { group: key } = json_body(req).await?;
    let review = state.review()?;
    let _turn = review.turn().await;
    let group = group_in_view(&review, &key).await?;
    let deployment = unenroll(&state, &group, |_| true).await?;
    let g = group.as_group();
    let faces = g.members.len();
    let recorder = review.clone();
    off_thread(move || recorder.record(|d| d.ignore_group(&g))).await?;
    Ok(Json(Ignored {
        group: key,
        faces,
        deployment,
    }))
}

/// Remove from the gallery the members of `group` (those `which` picks) that a review
/// enrolled under its name; the published version, if anything was removed.
async fn unenroll(
    state: &Arc<AppState>,
    group: &GroupOut,
    which: impl Fn(&str) -> bool,
) -> Result<Option<u32>> {
    let Some(name) = group.suggested_name.clone() else {
        return Ok(None);
    };
    let live = state.live();
    let sources: Vec<String> = enrolled(&live.gallery, group)
        .into_iter()
        .filter(|(face, _)| which(face))
        .map(|(_, source)| source)
        .collect();
    if sources.is_empty() {
        return Ok(None);
    }
    let edited = edits::submit(
        state.clone(),
        Edit::RemoveFaces {
            person: name,
            sources,
        },
    )
    .await?;
    Ok(Some(edited.deployment))
}

/// (face, source) of the members of `group` enrolled under its name.
fn enrolled<'g>(gallery: &crate::Gallery, group: &'g GroupOut) -> Vec<(&'g str, String)> {
    let Some(name) = &group.suggested_name else {
        return Vec::new();
    };
    let known = sources_of(gallery, name);
    group
        .members
        .iter()
        .map(|m| (m.face.as_str(), face_source(&m.face)))
        .filter(|(_, s)| known.contains(s))
        .collect()
}

async fn group_in_view(review: &Arc<Review>, key: &str) -> Result<GroupOut> {
    let r = review.clone();
    let (view, _) = off_thread(move || r.view()).await?;
    find(&view, key).cloned()
}

fn find<'v>(view: &'v ClustersFile, key: &str) -> Result<&'v GroupOut> {
    view.group(key).ok_or_else(|| {
        Error::NotFound(format!(
            "no group {key:?} in the clustering result (it may have been merged or re-run: \
             reload the review)"
        ))
    })
}

/// A JSON request body, or a 400 that says what was expected.
async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T> {
    let body = Bytes::from_request(req, &())
        .await
        .map_err(|r| Error::BadRequest(r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "the body must be JSON as /openapi.json describes for this route: {e}"
        ))
    })
}

/// File work (the review folder) off the async threads.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("the review task failed: {e}")))?
}
