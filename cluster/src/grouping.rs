//! What comes out: the groups, the faces left out and why, and the decisions that could
//! not be applied.

use serde::{Deserialize, Serialize};

use crate::record::QualityIssue;

/// The result of [`crate::group()`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Grouping {
    /// Largest first; ties by key.
    pub groups: Vec<Group>,
    /// Faces in no group, in input order.
    pub unclustered: Vec<Unclustered>,
    /// Decisions that contradict a stronger rule or each other, for the reviewer to fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

/// One person (as far as the clustering can tell).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable id of the group: its representative's face id. A removal "from this group"
    /// is stored against it (see [`crate::Target::Group`]), so it means "not the same
    /// person as this face", which survives re-runs that reshuffle the other members.
    pub key: String,
    /// Face ids, most central first, so the doubtful members are at the end of a sheet.
    pub members: Vec<String>,
    /// The member with the smallest mean cosine distance to the other members.
    pub representative: String,
    /// The anchor or `named` decision this group belongs to.
    pub suggested_name: Option<String>,
}

/// A face that is in no group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unclustered {
    pub face: String,
    pub reason: Reason,
}

/// Why a face is in no group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Failed the quality gate: detector score.
    LowScore,
    /// Failed the quality gate: box size.
    TooSmall,
    /// Failed the quality gate: sharpness.
    Blurred,
    /// A reviewer marked it "not a face / ignore".
    Ignored,
    /// Its embedding has the wrong dimension, is not finite, or is zero.
    BadEmbedding,
    /// Its group ended smaller than `min_group_size` and has no name.
    SmallGroup,
    /// A reviewer took it out of its group since the last run ("not this person"); the
    /// next run may group it elsewhere. Only in the review view ([`crate::review`]).
    Removed,
}

impl From<QualityIssue> for Reason {
    fn from(issue: QualityIssue) -> Self {
        match issue {
            QualityIssue::LowScore => Reason::LowScore,
            QualityIssue::TooSmall => Reason::TooSmall,
            QualityIssue::Blurred => Reason::Blurred,
        }
    }
}

/// A must-link decision that was refused because a cannot-link forbids it: the face
/// shares a photo with a face already there, a removal or cannot-link keeps it out, or
/// it already belongs to another name. "Not this person" beats "this person": it is the
/// narrower statement, and the usual later correction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// A face of a `named` decision could not join that name.
    Name { face: String, name: String },
    /// A face of a `merged` decision could not join the decision's first face.
    Merge { face: String, with: String },
}
