//! [`group()`]: from face records, anchors and decisions to a [`Grouping`].
//!
//! 1. Each face is ignored, refused (bad embedding, quality gate) or kept; faces a
//!    reviewer named or merged skip the gate, since a person has vouched for them.
//! 2. Kept faces and the anchors' embeddings become unit-vector points; the threshold
//!    graph holds every pair of them under the threshold (`edges`).
//! 3. Seeds: each anchor's embeddings are one cluster with its name. Cannot-links are
//!    recorded, then must-links applied: `named` faces join their name, `merged` faces
//!    each other, each refused one becomes a [`Conflict`].
//! 4. Faces within the threshold of an anchor's closest embedding (the gallery's rule)
//!    join it, closest pairs first, a face to one anchor only.
//! 5. Constrained agglomeration (`agglomerate`) over what is left.
//! 6. Groups with faces are reported; unnamed ones under `min_group_size` are not.

use std::collections::{HashMap, HashSet};

use crate::agglomerate::agglomerate;
use crate::clusters::Clusters;
use crate::decisions::{Decisions, Target};
use crate::edges::{self, Edge};
use crate::error::{Error, Result};
use crate::grouping::{Conflict, Group, Grouping, Reason, Unclustered};
use crate::options::ClusterOptions;
use crate::record::{Anchor, FaceRecord, QualityGate};
use crate::vector::{dot, unit};

/// Edges are collected a hair past the threshold, so that a pair exactly at it in `f32`
/// but under it in the `f64` cluster arithmetic is not lost.
const EDGE_SLACK: f32 = 1e-5;

/// Group `faces` into people. See the crate documentation for the rules; errors are only
/// for input that makes the whole run meaningless (see [`Error`]).
pub fn group(
    faces: &[FaceRecord],
    anchors: &[Anchor],
    decisions: &Decisions,
    opts: &ClusterOptions,
    gate: &QualityGate,
) -> Result<Grouping> {
    if !(opts.threshold > 0.0 && opts.threshold <= 2.0) {
        return Err(Error::InvalidOption(format!(
            "threshold {} is not a cosine distance in (0, 2]",
            opts.threshold
        )));
    }
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(faces.len());
    for (i, f) in faces.iter().enumerate() {
        if by_id.insert(f.id.as_str(), i).is_some() {
            return Err(Error::DuplicateFace { id: f.id.clone() });
        }
    }
    let names = Names::new(anchors, decisions);
    let dim = dimension(faces, anchors)?;

    // 1. Which faces take part.
    let ignored: HashSet<&str> = decisions.ignored.iter().map(String::as_str).collect();
    let vouched: HashSet<&str> = decisions
        .named
        .iter()
        .flat_map(|n| &n.faces)
        .chain(decisions.merged.iter().flat_map(|m| &m.faces))
        .map(String::as_str)
        .collect();
    let mut reason: Vec<Option<Reason>> = vec![None; faces.len()];
    let mut vectors: Vec<f32> = Vec::new();
    let mut face_of_point: Vec<usize> = Vec::new();
    for (i, f) in faces.iter().enumerate() {
        let u = (f.embedding.len() == dim)
            .then(|| unit(&f.embedding))
            .flatten();
        reason[i] = if ignored.contains(f.id.as_str()) {
            Some(Reason::Ignored)
        } else if u.is_none() {
            Some(Reason::BadEmbedding)
        } else if vouched.contains(f.id.as_str()) {
            None
        } else {
            gate.check(&f.quality).err().map(Reason::from)
        };
        if let (None, Some(u)) = (reason[i], u) {
            vectors.extend(u);
            face_of_point.push(i);
        }
    }
    let n_faces = face_of_point.len();
    let mut point_of_face: HashMap<&str, u32> = HashMap::with_capacity(n_faces);
    for (p, &i) in face_of_point.iter().enumerate() {
        point_of_face.insert(faces[i].id.as_str(), p as u32);
    }
    let mut photo_ids: HashMap<&str, u32> = HashMap::new();
    let mut photo: Vec<Option<u32>> = face_of_point
        .iter()
        .map(|&i| {
            let next = photo_ids.len() as u32;
            Some(*photo_ids.entry(faces[i].photo.as_str()).or_insert(next))
        })
        .collect();
    let mut anchor_identity: Vec<u32> = Vec::new();
    for a in anchors {
        for e in &a.embeddings {
            // `dimension` checked every anchor embedding already.
            let Some(u) = unit(e) else { continue };
            vectors.extend(u);
            anchor_identity.push(names.id(&a.name));
            photo.push(None);
        }
    }
    let n_points = photo.len();

    // 2. The threshold graph.
    let edges = edges::below(&vectors, dim, n_faces, opts.threshold + EDGE_SLACK);

    // 3. Seeds, cannot-links, must-links.
    let mut clusters = Clusters::new(&vectors, dim, &photo, names.len());
    for (k, &id) in anchor_identity.iter().enumerate() {
        let joined = clusters.join_identity((n_faces + k) as u32, id);
        debug_assert!(joined, "anchor points have no photos nor exclusions");
    }
    let point = |id: &str| point_of_face.get(id).copied();
    for (a, b) in &decisions.cannot_link {
        if let (Some(a), Some(b)) = (point(a), point(b)) {
            clusters.exclude_point(a, b);
        }
    }
    for r in &decisions.removed {
        let Some(p) = point(&r.face) else { continue };
        match &r.from {
            Target::Group(key) => {
                if let Some(q) = point(key) {
                    clusters.exclude_point(p, q);
                }
            }
            Target::Name(name) => {
                if let Some(id) = names.get(name) {
                    clusters.exclude_identity(p, id);
                }
            }
        }
    }
    let mut conflicts = Vec::new();
    for n in &decisions.named {
        let id = names.id(&n.name);
        for f in &n.faces {
            let Some(p) = point(f) else { continue };
            if !clusters.join_identity(p, id) {
                conflicts.push(Conflict::Name {
                    face: f.clone(),
                    name: n.name.clone(),
                });
            }
        }
    }
    for m in &decisions.merged {
        let mut present = m.faces.iter().filter_map(|f| Some((f, point(f)?)));
        let Some((first, base)) = present.next() else {
            continue;
        };
        for (f, p) in present {
            if !clusters.try_join(base, p) {
                conflicts.push(Conflict::Merge {
                    face: f.clone(),
                    with: first.clone(),
                });
            }
        }
    }

    // 4. Faces join the anchor they are closest to.
    attach_to_anchors(
        &mut clusters,
        &edges,
        n_faces,
        &anchor_identity,
        opts.threshold,
    );

    // 5. Everything else.
    agglomerate(&mut clusters, edges, n_points, opts.linkage, opts.threshold);

    // 6. Report.
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in 0..n_faces as u32 {
        members.entry(clusters.find(p)).or_default().push(p);
    }
    let min_size = opts.min_group_size.max(1);
    let mut groups = Vec::new();
    for (root, points) in members {
        let identity = clusters.identity(root);
        if identity.is_none() && points.len() < min_size {
            for p in points {
                reason[face_of_point[p as usize]] = Some(Reason::SmallGroup);
            }
            continue;
        }
        let ids: Vec<&str> = points
            .iter()
            .map(|&p| faces[face_of_point[p as usize]].id.as_str())
            .collect();
        let members = most_central_first(&vectors, dim, &points, &ids);
        groups.push(Group {
            key: members[0].clone(),
            representative: members[0].clone(),
            members,
            suggested_name: identity.map(|id| names.name(id).to_owned()),
        });
    }
    groups.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then_with(|| a.key.cmp(&b.key))
    });
    let unclustered = faces
        .iter()
        .zip(&reason)
        .filter_map(|(f, r)| {
            r.map(|reason| Unclustered {
                face: f.id.clone(),
                reason,
            })
        })
        .collect();
    Ok(Grouping {
        groups,
        unclustered,
        conflicts,
    })
}

/// Identities: anchor names, then names only decisions use, each name once.
struct Names {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    fn new(anchors: &[Anchor], decisions: &Decisions) -> Self {
        let mut names = Names {
            names: Vec::new(),
            ids: HashMap::new(),
        };
        let all = anchors.iter().map(|a| &a.name);
        for name in all.chain(decisions.named.iter().map(|n| &n.name)) {
            if !names.ids.contains_key(name) {
                names.ids.insert(name.clone(), names.names.len() as u32);
                names.names.push(name.clone());
            }
        }
        names
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The id of a name `new` saw.
    fn id(&self, name: &str) -> u32 {
        self.ids[name]
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// The embedding dimension: the anchors' (they come from the deployment, so they must
/// agree), else the most common among the faces (a face that differs is a bad record).
fn dimension(faces: &[FaceRecord], anchors: &[Anchor]) -> Result<usize> {
    let mut dim = None;
    for a in anchors {
        for e in &a.embeddings {
            let bad = |reason: String| Error::BadAnchor {
                name: a.name.clone(),
                reason,
            };
            if unit(e).is_none() {
                return Err(bad("an embedding is zero or not finite".into()));
            }
            match dim {
                None => dim = Some(e.len()),
                Some(d) if d != e.len() => {
                    return Err(bad(format!(
                        "an embedding has {} dimensions, other anchors {d}",
                        e.len()
                    )))
                }
                Some(_) => {}
            }
        }
    }
    if let Some(d) = dim {
        return Ok(d);
    }
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for f in faces.iter().filter(|f| !f.embedding.is_empty()) {
        *counts.entry(f.embedding.len()).or_default() += 1;
    }
    Ok(counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(d, _)| d))
}

/// Step 4: every (face, anchor) pair under the threshold, by the face's distance to the
/// anchor's closest embedding, closest first; a face joins the first anchor that takes it.
fn attach_to_anchors(
    clusters: &mut Clusters,
    edges: &[Edge],
    n_faces: usize,
    anchor_identity: &[u32],
    threshold: f32,
) {
    // Edges are (a < b) and anchor points come after the faces.
    let mut pairs: Vec<(f32, u32, u32)> = edges
        .iter()
        .filter(|e| (e.a as usize) < n_faces && e.b as usize >= n_faces && e.d < threshold)
        .map(|e| (e.d, e.a, anchor_identity[e.b as usize - n_faces]))
        .collect();
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    for (_, face, id) in pairs {
        if clusters.identity(face).is_some() {
            continue;
        }
        let Some(anchor) = clusters.identity_root(id) else {
            continue;
        };
        let face_root = clusters.find(face);
        if !clusters.conflict(face_root, anchor) {
            clusters.union(face_root, anchor);
        }
    }
}

/// Member ids ordered by closeness to the members' mean direction (ties by id): the
/// first has the smallest mean cosine distance to the others.
fn most_central_first(vectors: &[f32], dim: usize, points: &[u32], ids: &[&str]) -> Vec<String> {
    let row = |p: u32| &vectors[p as usize * dim..][..dim];
    let mut sum = vec![0.0f32; dim];
    for &p in points {
        for (s, x) in sum.iter_mut().zip(row(p)) {
            *s += x;
        }
    }
    let mut order: Vec<(f32, &str)> = points
        .iter()
        .zip(ids)
        .map(|(&p, &id)| (dot(row(p), &sum), id))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    order.into_iter().map(|(_, id)| id.to_owned()).collect()
}
