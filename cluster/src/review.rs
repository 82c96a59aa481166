//! The review view: `clusters.json` with the decisions made since it was written applied
//! on top, so a reviewer sees each action take effect at once, without re-running the
//! grouping. The next `facepipe cluster` run computes the same decisions properly (with
//! the cannot-links and anchors); this view only moves faces between the groups it has.
//!
//! Applying decisions the file was already computed with changes nothing, so the view of
//! a fresh run is the run itself.

use std::collections::{HashMap, HashSet};

use crate::decisions::{Decisions, Target};
use crate::grouping::Reason;
use crate::output::{ClustersFile, FaceOut, GroupOut};

/// `file` with `decisions` applied: ignores, merges, names, and last the removals ("not
/// this person"), which win over the must-links as they do in the grouping (a removal
/// against a name needs the name applied first). A merge or name that would join two
/// differently named groups is left for the next run to report as a conflict.
pub fn view(file: &ClustersFile, decisions: &Decisions) -> ClustersFile {
    let mut out = file.clone();
    let ignored: HashSet<&str> = decisions.ignored.iter().map(String::as_str).collect();
    take_out(&mut out, Reason::Ignored, |_, face| {
        ignored.contains(face.face.as_str())
    });
    for merge in &decisions.merged {
        join(&mut out, &merge.faces, None);
    }
    for naming in &decisions.named {
        join(&mut out, &naming.faces, Some(&naming.name));
    }
    for removal in &decisions.removed {
        take_out(&mut out, Reason::Removed, |group, face| {
            face.face == removal.face
                && match &removal.from {
                    Target::Group(key) => {
                        group.key == *key || group.members.iter().any(|m| m.face == *key)
                    }
                    Target::Name(name) => group.suggested_name.as_deref() == Some(name),
                }
        });
    }
    out.groups.retain(|g| !g.members.is_empty());
    for g in &mut out.groups {
        g.size = g.members.len();
        if !g.members.iter().any(|m| m.face == g.representative) {
            g.representative.clone_from(&g.members[0].face);
        }
    }
    // Largest first, as the grouping orders them (a stable sort keeps ties in place).
    out.groups.sort_by_key(|g| std::cmp::Reverse(g.size));
    out
}

/// Move the members for which `out_of` holds into `unclustered` with `reason`.
fn take_out(file: &mut ClustersFile, reason: Reason, out_of: impl Fn(&GroupOut, &FaceOut) -> bool) {
    let mut moved = Vec::new();
    for g in &mut file.groups {
        let (gone, kept): (Vec<FaceOut>, Vec<FaceOut>) = std::mem::take(&mut g.members)
            .into_iter()
            .partition(|m| out_of(g, m));
        g.members = kept;
        moved.extend(gone);
    }
    for mut face in moved {
        face.reason = Some(reason);
        file.unclustered.push(face);
    }
    if reason == Reason::Ignored {
        // Ignored faces already left out for another reason now say "ignored".
        let ignored: Vec<usize> = file
            .unclustered
            .iter()
            .enumerate()
            .filter(|(_, f)| out_of(&EMPTY, f))
            .map(|(i, _)| i)
            .collect();
        for i in ignored {
            file.unclustered[i].reason = Some(Reason::Ignored);
        }
    }
}

/// A group with no members, for tests of faces outside any group.
const EMPTY: GroupOut = GroupOut {
    key: String::new(),
    suggested_name: None,
    size: 0,
    representative: String::new(),
    sheet: String::new(),
    members: Vec::new(),
};

/// Merge the groups holding any of `faces` into one (named `name` when given). The group
/// kept is the named one, else the largest. Nothing happens when two names would meet.
fn join(file: &mut ClustersFile, faces: &[String], name: Option<&str>) {
    let wanted: HashSet<&str> = faces.iter().map(String::as_str).collect();
    let group_of: HashMap<&str, usize> = file
        .groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| g.members.iter().map(move |m| (m.face.as_str(), i)))
        .collect();
    let mut involved: Vec<usize> = wanted
        .iter()
        .filter_map(|f| group_of.get(f).copied())
        .collect();
    involved.sort_unstable();
    involved.dedup();
    let mut names: HashSet<&str> = involved
        .iter()
        .filter_map(|&i| file.groups[i].suggested_name.as_deref())
        .collect();
    if let Some(n) = name {
        names.insert(n);
    }
    if involved.is_empty() || names.len() > 1 {
        return;
    }
    let name = names.into_iter().next().map(str::to_owned);
    let keep = involved
        .iter()
        .copied()
        .max_by_key(|&i| {
            let g = &file.groups[i];
            (g.suggested_name.is_some(), g.members.len(), usize::MAX - i)
        })
        .unwrap_or(involved[0]);
    for &i in involved.iter().filter(|&&i| i != keep) {
        let members = std::mem::take(&mut file.groups[i].members);
        file.groups[keep].members.extend(members);
    }
    if name.is_some() {
        file.groups[keep].suggested_name = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Quality, QualityGate};

    fn face(id: &str) -> FaceOut {
        FaceOut {
            face: id.into(),
            photo: format!("{id}.jpg"),
            bbox: [0.0, 0.0, 10.0, 10.0],
            quality: Quality {
                det_score: 0.9,
                box_px: 50.0,
                sharpness: 100.0,
            },
            reason: None,
        }
    }

    fn group(key: &str, members: &[&str], name: Option<&str>) -> GroupOut {
        GroupOut {
            key: key.into(),
            suggested_name: name.map(str::to_owned),
            size: members.len(),
            representative: key.into(),
            sheet: String::new(),
            members: members.iter().map(|m| face(m)).collect(),
        }
    }

    fn file(groups: Vec<GroupOut>) -> ClustersFile {
        ClustersFile {
            photos: "pile".into(),
            model: "test".into(),
            deployment: None,
            threshold: crate::output::ThresholdUsed {
                cosine_distance: 0.1,
                source: "test".into(),
            },
            gate: QualityGate::default(),
            photo_count: 0,
            photo_outcomes: HashMap::new(),
            face_count: groups.iter().map(|g| g.members.len()).sum(),
            groups,
            unclustered: vec![FaceOut {
                reason: Some(Reason::LowScore),
                ..face("dog")
            }],
            conflicts: Vec::new(),
            grouping_s: 0.0,
            scores: None,
        }
    }

    fn members(f: &ClustersFile, key: &str) -> Vec<String> {
        f.group(key)
            .map(|g| g.members.iter().map(|m| m.face.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_action_shows_at_once_and_a_fresh_run_is_unchanged() {
        let base = file(vec![
            group("a", &["a", "b", "c"], None),
            group("x", &["x", "y"], Some("Ann")),
            group("p", &["p", "q"], None),
            group("z", &["z", "w"], Some("Bob")),
        ]);
        assert_eq!(
            serde_json::to_value(view(&base, &Decisions::default())).unwrap(),
            serde_json::to_value(&base).unwrap()
        );

        let mut d = Decisions::default();
        d.remove_from_group("c", &base.groups[0].as_group());
        d.remove_from_group("y", &base.groups[1].as_group());
        d.name_group(&base.groups[0].as_group(), "Cy");
        d.merge_groups(&[&base.groups[1].as_group(), &base.groups[2].as_group()]);
        d.ignored.push("dog".into());
        // Two names never meet: this merge waits for the run to report it.
        d.merge_groups(&[&base.groups[1].as_group(), &base.groups[3].as_group()]);
        let v = view(&base, &d);

        assert_eq!(members(&v, "a"), ["a", "b"]);
        assert_eq!(v.group("a").unwrap().suggested_name.as_deref(), Some("Cy"));
        // The unnamed group joined Ann's (the named one is kept), without the removed face.
        assert_eq!(members(&v, "x"), ["x", "p", "q"]);
        assert!(v.group("p").is_none());
        assert_eq!(members(&v, "z"), ["z", "w"]);
        let reasons: HashMap<&str, Reason> = v
            .unclustered
            .iter()
            .map(|f| (f.face.as_str(), f.reason.unwrap()))
            .collect();
        assert_eq!(reasons["c"], Reason::Removed);
        assert_eq!(reasons["y"], Reason::Removed);
        assert_eq!(reasons["dog"], Reason::Ignored);
        // Largest first, sizes and representatives kept right.
        let sizes: Vec<usize> = v.groups.iter().map(|g| g.size).collect();
        assert_eq!(sizes, [3, 2, 2]);

        // Ignoring a whole group empties it; a named group's removal by name holds.
        let mut d2 = d.clone();
        d2.ignore_group(&v.group("z").unwrap().as_group());
        let v2 = view(&base, &d2);
        assert!(v2.group("z").is_none());
        assert_eq!(v2.unclustered.len(), v.unclustered.len() + 2);

        // A face taken out of a group named in this review (by the name) leaves it.
        let named = v.group("a").unwrap().as_group();
        d2.remove_from_group("b", &named);
        assert_eq!(members(&view(&base, &d2), "a"), ["a"]);
    }

    #[test]
    fn a_removed_representative_is_replaced() {
        let base = file(vec![group("a", &["a", "b", "c"], None)]);
        let mut d = Decisions::default();
        d.remove_from_group("a", &base.groups[0].as_group());
        let v = view(&base, &d);
        // The group keeps its key (later removals still name it) and gets a new face.
        assert_eq!(members(&v, "a"), ["b", "c"]);
        assert_eq!(v.groups[0].representative, "b");
        assert_eq!(v.unclustered.last().unwrap().face, "a");
    }
}
