//! What a reviewer decided, stored next to the clustering output so a re-run keeps it.
//!
//! Every decision names faces (or a person's name), never a group index: groups are
//! recomputed on every run, faces are not. The helper methods turn the UI's actions on a
//! [`Group`] into face-level decisions:
//!
//! | UI action                       | stored as                                        |
//! |---------------------------------|--------------------------------------------------|
//! | name a group                    | `named`: its members → the name                  |
//! | merge two groups                | `merged`: the members of both                    |
//! | take a face out ("not this one")| `removed`: face vs the group's name, else its key |
//! | mark a group / face as ignore   | `ignored`: the face ids                          |
//! | "these two are different people"| `cannot_link`: the two face ids                  |
//!
//! Precedence when decisions disagree: `ignored` wins over everything; cannot-links
//! (`cannot_link`, `removed`, and two faces of one photo) win over must-links (`named`,
//! `merged`), and each refused must-link is reported as a [`crate::Conflict`]. Ids of
//! faces that are no longer in the collection are skipped.

use serde::{Deserialize, Serialize};

use crate::grouping::Group;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Decisions {
    /// Pairs of faces that are different people.
    pub cannot_link: Vec<(String, String)>,
    /// Faces taken out of a group or a name.
    pub removed: Vec<Removal>,
    /// Faces that are not faces, or not to be grouped; they go to `unclustered`.
    pub ignored: Vec<String>,
    /// Faces that are the named person. Faces named alike are one person, and join the
    /// anchor of that name if there is one; two names never merge.
    pub named: Vec<Naming>,
    /// Faces that are one (unnamed) person.
    pub merged: Vec<Merge>,
}

/// "This face is not that person."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub face: String,
    pub from: Target,
}

/// Who a removed face is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A group by its key, i.e. the face that was its representative: the face never
    /// shares a group with that face.
    Group(String),
    /// A name (an anchor's or a `named` decision's): the face never gets that name.
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Naming {
    pub faces: Vec<String>,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    pub faces: Vec<String>,
}

impl Decisions {
    /// The reviewer named `group`: all its members are `name`. Naming again under the same
    /// name (the group grew, or the button was pressed twice) adds only the new faces to
    /// that name's entry, so the file records each face once.
    pub fn name_group(&mut self, group: &Group, name: &str) {
        match self.named.iter_mut().find(|n| n.name == name) {
            Some(naming) => {
                for face in &group.members {
                    if !naming.faces.contains(face) {
                        naming.faces.push(face.clone());
                    }
                }
            }
            None => self.named.push(Naming {
                faces: group.members.clone(),
                name: name.to_owned(),
            }),
        }
    }

    /// The reviewer merged groups: their members are one person. Merging two differently
    /// named groups is refused at grouping time and reported as a conflict.
    pub fn merge_groups(&mut self, groups: &[&Group]) {
        let faces: Vec<String> = groups.iter().flat_map(|g| g.members.clone()).collect();
        if faces.len() > 1 {
            self.merged.push(Merge { faces });
        }
    }

    /// The reviewer took `face` out of `group` ("not this person"). Against the group's
    /// name when it has one (the face then never gets that name), else against its key.
    /// Earlier must-links that would pull the face back in are dropped, so the decisions
    /// stay free of conflicts.
    pub fn remove_from_group(&mut self, face: &str, group: &Group) {
        let from = match &group.suggested_name {
            Some(name) => Target::Name(name.clone()),
            None => Target::Group(group.key.clone()),
        };
        if let Target::Name(name) = &from {
            for naming in self.named.iter_mut().filter(|n| &n.name == name) {
                naming.faces.retain(|f| f != face);
            }
        }
        for merge in &mut self.merged {
            if merge
                .faces
                .iter()
                .any(|f| f != face && group.members.contains(f))
            {
                merge.faces.retain(|f| f != face);
            }
        }
        self.named.retain(|n| !n.faces.is_empty());
        self.merged.retain(|m| m.faces.len() > 1);
        self.removed.push(Removal {
            face: face.to_owned(),
            from,
        });
    }

    /// The reviewer marked a whole group "ignore".
    pub fn ignore_group(&mut self, group: &Group) {
        self.ignored.extend(group.members.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(key: &str, members: &[&str], name: Option<&str>) -> Group {
        Group {
            key: key.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            representative: key.into(),
            suggested_name: name.map(str::to_owned),
        }
    }

    #[test]
    fn naming_again_under_a_name_adds_only_the_new_faces() {
        let mut d = Decisions::default();
        d.name_group(&group("a", &["a", "b"], None), "Ann");
        d.name_group(&group("a", &["a", "b"], Some("Ann")), "Ann");
        assert_eq!(d.named.len(), 1, "{:?}", d.named);
        assert_eq!(d.named[0].faces, ["a", "b"]);
        d.name_group(&group("a", &["a", "b", "c"], Some("Ann")), "Ann");
        d.name_group(&group("x", &["x"], None), "Bob");
        assert_eq!(d.named.len(), 2);
        assert_eq!(d.named[0].faces, ["a", "b", "c"]);
        assert_eq!(d.named[1].faces, ["x"]);
    }

    #[test]
    fn removing_a_face_targets_the_name_or_the_key_and_drops_its_must_links() {
        let ann = group("a", &["a", "b", "c"], Some("Ann"));
        let unnamed = group("x", &["x", "y"], None);
        let mut d = Decisions::default();
        d.name_group(&ann, "Ann");
        d.merge_groups(&[&unnamed, &group("z", &["z"], None)]);
        d.remove_from_group("c", &ann);
        d.remove_from_group("y", &unnamed);
        assert_eq!(d.named[0].faces, ["a", "b"]);
        assert_eq!(d.merged[0].faces, ["x", "z"]);
        assert_eq!(
            d.removed,
            [
                Removal {
                    face: "c".into(),
                    from: Target::Name("Ann".into())
                },
                Removal {
                    face: "y".into(),
                    from: Target::Group("x".into())
                },
            ]
        );
        d.ignore_group(&unnamed);
        assert_eq!(d.ignored, ["x", "y"]);
    }

    #[test]
    fn the_stored_form_is_plain_json_and_every_field_is_optional() {
        let d: Decisions = serde_json::from_str(
            r#"{"removed":[{"face":"p.jpg#1","from":{"name":"Ann"}}],
                "cannot_link":[["p.jpg#0","q.jpg#0"]]}"#,
        )
        .unwrap();
        assert_eq!(d.removed[0].from, Target::Name("Ann".into()));
        assert_eq!(d.cannot_link, [("p.jpg#0".into(), "q.jpg#0".into())]);
        assert!(d.named.is_empty() && d.merged.is_empty() && d.ignored.is_empty());
        assert_eq!(
            serde_json::from_str::<Decisions>("{}").unwrap(),
            Decisions::default()
        );
    }
}
