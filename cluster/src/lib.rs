//! facepipe-cluster: groups the faces of an unlabelled photo collection into people, using
//! what is known besides distances: two faces of one photo are two people, enrolled
//! people (anchors) name their groups and never merge, and a reviewer's decisions
//! (names, merges, "not this person", "ignore") hold on every re-run. Pure Rust; the
//! caller detects, embeds and measures quality (the `facepipe cluster` command).
//!
//! ```
//! use facepipe_cluster::{group, Anchor, ClusterOptions, Decisions, FaceRecord, Quality, QualityGate};
//!
//! let face = |id: &str, photo: &str, angle: f32| FaceRecord {
//!     id: id.into(),
//!     photo: photo.into(),
//!     bbox: [0.0, 0.0, 100.0, 100.0],
//!     embedding: vec![angle.cos(), angle.sin()],
//!     quality: Quality { det_score: 0.99, box_px: 100.0, sharpness: 300.0 },
//! };
//! // Two people, 90° apart; "b.jpg" shows both.
//! let faces = [
//!     face("a.jpg#0", "a.jpg", 0.00),
//!     face("b.jpg#0", "b.jpg", 0.05),
//!     face("b.jpg#1", "b.jpg", 1.60),
//!     face("c.jpg#0", "c.jpg", 1.55),
//! ];
//! let anchors = [Anchor { name: "Ann".into(), embeddings: vec![vec![1.0, 0.0]] }];
//! let opts = ClusterOptions::new(0.3); // the deployed model's calibrated threshold
//! let out = group(&faces, &anchors, &Decisions::default(), &opts, &QualityGate::default())?;
//! assert_eq!(out.groups.len(), 2);
//! assert_eq!(out.groups[0].suggested_name.as_deref(), Some("Ann"));
//! assert!(out.groups[1].members.contains(&"c.jpg#0".to_string()));
//! # Ok::<(), facepipe_cluster::Error>(())
//! ```
//!
//! Map of the crate:
//! - [`record`]: the input (face records, quality and its gate, anchors).
//! - [`decisions`]: the reviewer's decisions and the UI actions that produce them.
//! - [`options`]: threshold, linkage, minimum group size.
//! - [`group()`](group::group): the steps from input to [`Grouping`], in order.
//! - `edges`: the threshold graph (the one O(n²) step, tiled, on every core).
//! - `clusters`: union-find with the cannot-link checks and cluster sums.
//! - `agglomerate`: constrained agglomerative clustering (nearest-neighbour chains).
//! - [`grouping`]: the output (groups, unclustered faces, conflicting decisions).
//! - [`score`]: pairwise and BCubed precision/recall against labelled faces.
//! - [`output`]: the files of an output folder (`clusters.json`, `decisions.json`).
//! - [`review`]: the reviewer's view: the output with the decisions made since applied.
//!
//! Cost, for `n` points (faces and anchor embeddings) of dimension `dim` and `E` pairs
//! under the threshold: O(n²·dim) time for the threshold graph, tiled and split over the
//! cores; near O(E) for the agglomeration on face-like data (nearest-neighbour chains,
//! see `agglomerate`); O(n·dim + E) memory, no n×n matrix. 20,000 faces of 128
//! dimensions with one person in 3,000 of them (6.7 million pairs under the threshold)
//! take about 11 s on two busy cores, release build, half of it the threshold graph.

mod agglomerate;
mod clusters;
pub mod decisions;
mod edges;
pub mod error;
pub mod group;
pub mod grouping;
pub mod options;
pub mod output;
pub mod record;
pub mod review;
pub mod score;
mod vector;

pub use decisions::{Decisions, Merge, Naming, Removal, Target};
pub use error::{Error, Result};
pub use group::group;
pub use grouping::{Conflict, Group, Grouping, Reason, Unclustered};
pub use options::{ClusterOptions, Linkage};
pub use output::{ClustersFile, FaceOut, GroupOut, ThresholdUsed, TruthScores};
pub use record::{Anchor, FaceRecord, Quality, QualityGate, QualityIssue};
pub use score::{bcubed, pairwise_precision_recall, Scores};
