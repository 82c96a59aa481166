//! The grouping's behaviour on synthetic embeddings: seeded people with noise, photos with
//! several people, siblings, anchors, and a reviewer's decisions across re-runs.

use std::collections::{BTreeSet, HashMap, HashSet};

use facepipe_cluster::{
    bcubed, group, pairwise_precision_recall, Anchor, ClusterOptions, Conflict, Decisions, Error,
    FaceRecord, Grouping, Linkage, Merge, Naming, Quality, QualityGate, Reason, Removal, Target,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------
// Synthetic embeddings
// ---------------------------------------------------------------------------------------

const GOOD: Quality = Quality {
    det_score: 0.99,
    box_px: 120.0,
    sharpness: 400.0,
};

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box–Muller; 1 − u keeps the logarithm finite.
    let u1: f32 = 1.0 - rng.random::<f32>();
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    normalised((0..dim).map(|_| gaussian(rng)).collect())
}

/// `centre` plus isotropic noise of norm about `noise`, normalised. Two samples of one
/// centre are at cosine distance about `noise² / (1 + noise²)`.
fn sample(rng: &mut StdRng, centre: &[f32], noise: f32) -> Vec<f32> {
    let scale = noise / (centre.len() as f32).sqrt();
    normalised(centre.iter().map(|c| c + scale * gaussian(rng)).collect())
}

/// `people` centres whose pairwise cosine similarity is about `shared` (real embeddings
/// of different people are not orthogonal: faces have a lot in common).
fn centres(rng: &mut StdRng, people: usize, dim: usize, shared: f32) -> Vec<Vec<f32>> {
    let common = random_unit(rng, dim);
    (0..people)
        .map(|_| {
            let own = random_unit(rng, dim);
            normalised(
                common
                    .iter()
                    .zip(&own)
                    .map(|(c, o)| shared.sqrt() * c + (1.0 - shared).sqrt() * o)
                    .collect(),
            )
        })
        .collect()
}

fn face(id: &str, photo: &str, embedding: Vec<f32>) -> FaceRecord {
    FaceRecord {
        id: id.into(),
        photo: photo.into(),
        bbox: [10.0, 20.0, 120.0, 140.0],
        embedding,
        quality: GOOD,
    }
}

struct Collection {
    faces: Vec<FaceRecord>,
    truth: HashMap<String, String>,
}

/// `photos` photos of 1–3 different people each; person `k` is picked with weight
/// 1/(k+1), so a few people are everywhere and some appear once or twice.
fn collection(seed: u64, people: usize, photos: usize, dim: usize, noise: f32) -> Collection {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres = centres(&mut rng, people, dim, 0.3);
    let weights: Vec<f32> = (0..people).map(|k| 1.0 / (k as f32 + 1.0)).collect();
    let total: f32 = weights.iter().sum();
    let mut faces = Vec::new();
    let mut truth = HashMap::new();
    for p in 0..photos {
        let photo = format!("photo{p:05}.jpg");
        let count = rng.random_range(1..=3usize);
        let mut present = BTreeSet::new();
        while present.len() < count {
            let mut x = rng.random::<f32>() * total;
            let person = weights
                .iter()
                .position(|w| {
                    x -= w;
                    x < 0.0
                })
                .unwrap_or(people - 1);
            present.insert(person);
        }
        for (k, &person) in present.iter().enumerate() {
            let id = format!("{photo}#{k}");
            faces.push(face(&id, &photo, sample(&mut rng, &centres[person], noise)));
            truth.insert(id, format!("person{person}"));
        }
    }
    Collection { faces, truth }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn run(faces: &[FaceRecord], anchors: &[Anchor], d: &Decisions, opts: &ClusterOptions) -> Grouping {
    let g = group(faces, anchors, d, opts, &QualityGate::default()).expect("valid input");
    assert_invariants(faces, &g);
    g
}

/// What must hold for every grouping.
fn assert_invariants(faces: &[FaceRecord], g: &Grouping) {
    let photo: HashMap<&str, &str> = faces
        .iter()
        .map(|f| (f.id.as_str(), f.photo.as_str()))
        .collect();
    let mut seen = HashSet::new();
    for grp in &g.groups {
        assert_eq!(grp.key, grp.representative);
        assert_eq!(grp.members[0], grp.representative, "most central first");
        let photos: HashSet<&str> = grp.members.iter().map(|m| photo[m.as_str()]).collect();
        assert_eq!(
            photos.len(),
            grp.members.len(),
            "two faces of one photo in group {}",
            grp.key
        );
        for m in &grp.members {
            assert!(seen.insert(m.as_str()), "{m} reported twice");
        }
    }
    for u in &g.unclustered {
        assert!(seen.insert(u.face.as_str()), "{} reported twice", u.face);
    }
    assert_eq!(seen.len(), faces.len(), "every face is reported once");
    assert!(
        g.groups
            .windows(2)
            .all(|w| w[0].members.len() >= w[1].members.len()),
        "largest first"
    );
}

/// The group containing `face`, if any.
fn group_of<'a>(g: &'a Grouping, face: &str) -> Option<&'a facepipe_cluster::Group> {
    g.groups
        .iter()
        .find(|grp| grp.members.iter().any(|m| m == face))
}

fn reason_of(g: &Grouping, face: &str) -> Option<Reason> {
    g.unclustered
        .iter()
        .find(|u| u.face == face)
        .map(|u| u.reason)
}

/// The grouping as sets, independent of order.
fn partition(g: &Grouping) -> BTreeSet<BTreeSet<String>> {
    g.groups
        .iter()
        .map(|grp| grp.members.iter().cloned().collect())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn recovers_noisy_people_from_a_photo_collection() {
    // 12 people, 400 photos of 1–3 people: about 800 faces. Same-person pairs sit near
    // cosine distance 0.26, different people near 0.8; the threshold is between.
    let c = collection(7, 12, 400, 64, 0.6);
    let g = run(
        &c.faces,
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.5),
    );
    let b = bcubed(&c.truth, &g);
    let p = pairwise_precision_recall(&c.truth, &g);
    eprintln!(
        "{} faces, {} groups; BCubed {b:?}; pairwise {p:?}",
        c.faces.len(),
        g.groups.len()
    );
    assert!(b.f1 >= 0.97, "BCubed {b:?}");
    assert!(p.f1 >= 0.97, "pairwise {p:?}");
    // The same collection with a too strict threshold splits people: the floor is not
    // met by a trivial answer.
    let strict = run(
        &c.faces,
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.2),
    );
    assert!(bcubed(&c.truth, &strict).f1 < 0.9);
}

#[test]
fn harder_noise_average_beats_the_floor_and_complete_trades_recall_for_precision() {
    // Within-person distance near 0.45 with the spread of 32 dimensions: people touch.
    let c = collection(11, 20, 500, 32, 0.9);
    let score = |linkage| {
        let opts = ClusterOptions {
            linkage,
            ..ClusterOptions::new(0.6)
        };
        let g = run(&c.faces, &[], &Decisions::default(), &opts);
        let b = bcubed(&c.truth, &g);
        eprintln!("{linkage:?}: {} groups, BCubed {b:?}", g.groups.len());
        (g.groups.len(), b)
    };
    let (average_groups, average) = score(Linkage::Average);
    let (complete_groups, complete) = score(Linkage::Complete);
    assert!(average.f1 >= 0.93, "average: {average:?}");
    assert!(complete.precision >= average.precision);
    assert!(complete.recall < average.recall);
    assert!(complete_groups > 2 * average_groups);
}

#[test]
fn the_input_order_does_not_change_the_grouping() {
    let c = collection(3, 8, 200, 32, 0.6);
    let opts = ClusterOptions::new(0.5);
    let g = run(&c.faces, &[], &Decisions::default(), &opts);
    let mut shuffled = c.faces.clone();
    shuffled.shuffle(&mut StdRng::seed_from_u64(99));
    let h = run(&shuffled, &[], &Decisions::default(), &opts);
    assert_eq!(partition(&g), partition(&h));
    let keys = |g: &Grouping| g.groups.iter().map(|x| x.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&g), keys(&h));
}

#[test]
fn siblings_in_the_same_photos_stay_apart() {
    // Two siblings about 0.03 apart (far under the 0.4 threshold), photographed together
    // in six photos; two faces of one sibling are about 0.005 apart.
    let mut rng = StdRng::seed_from_u64(5);
    let a = random_unit(&mut rng, 64);
    let b = sample(&mut rng, &a, 0.23);
    let dist = 1.0 - a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dist < 0.1, "siblings at {dist}");
    let mut together = Vec::new();
    for p in 0..6 {
        let photo = format!("family{p}.jpg");
        // Left/right order varies, so the face index says nothing.
        let (first, second) = if p % 2 == 0 { (&a, &b) } else { (&b, &a) };
        together.push(face(
            &format!("{photo}#0"),
            &photo,
            sample(&mut rng, first, 0.07),
        ));
        together.push(face(
            &format!("{photo}#1"),
            &photo,
            sample(&mut rng, second, 0.07),
        ));
    }
    let opts = ClusterOptions::new(0.4);
    let g = run(&together, &[], &Decisions::default(), &opts);
    assert_eq!(g.groups.len(), 2, "{g:#?}");
    let sibling_a: BTreeSet<String> = (0..6).map(|p| format!("family{p}.jpg#{}", p % 2)).collect();
    let sibling_b: BTreeSet<String> = (0..6)
        .map(|p| format!("family{p}.jpg#{}", 1 - p % 2))
        .collect();
    assert_eq!(partition(&g), BTreeSet::from([sibling_a, sibling_b]));

    // The same faces, each in its own photo: the threshold alone merges the siblings.
    let apart: Vec<FaceRecord> = together
        .iter()
        .map(|f| FaceRecord {
            photo: f.id.clone(),
            ..f.clone()
        })
        .collect();
    let merged = run(&apart, &[], &Decisions::default(), &opts);
    assert_eq!(merged.groups.len(), 1);
    assert_eq!(merged.groups[0].members.len(), 12);
}

#[test]
fn a_removed_face_stays_out_on_a_rerun() {
    let c = collection(21, 6, 150, 32, 0.6);
    let opts = ClusterOptions::new(0.5);
    let first = run(&c.faces, &[], &Decisions::default(), &opts);
    let biggest = &first.groups[0];
    let removed = biggest.members.last().expect("members").clone();
    let mut decisions = Decisions::default();
    decisions.remove_from_group(&removed, biggest);
    assert_eq!(
        decisions.removed,
        [Removal {
            face: removed.clone(),
            from: Target::Group(biggest.key.clone())
        }]
    );
    // Persisted with the output and read back for the re-run.
    let stored = serde_json::to_string(&decisions).unwrap();
    let decisions: Decisions = serde_json::from_str(&stored).unwrap();
    let second = run(&c.faces, &[], &decisions, &opts);
    let keyed = group_of(&second, &biggest.key).expect("the key face is still grouped");
    assert!(!keyed.members.contains(&removed), "{removed} came back");
    // Only that face moved: the rest of the group is as it was.
    let mut rest: BTreeSet<String> = biggest.members.iter().cloned().collect();
    rest.remove(&removed);
    assert_eq!(keyed.members.iter().cloned().collect::<BTreeSet<_>>(), rest);

    // Named, then a face taken out of the name: the removal is against the name.
    let mut decisions = Decisions::default();
    decisions.name_group(biggest, "Ann");
    let named = run(&c.faces, &[], &decisions, &opts);
    let ann = group_of(&named, &biggest.key).unwrap();
    assert_eq!(ann.suggested_name.as_deref(), Some("Ann"));
    decisions.remove_from_group(&removed, ann);
    let again = run(&c.faces, &[], &decisions, &opts);
    assert!(again.conflicts.is_empty(), "{:?}", again.conflicts);
    let ann = again
        .groups
        .iter()
        .find(|g| g.suggested_name.as_deref() == Some("Ann"))
        .unwrap();
    assert!(!ann.members.contains(&removed));
    assert_eq!(ann.members.len(), biggest.members.len() - 1);
}

#[test]
fn anchors_name_groups_and_never_merge() {
    let mut rng = StdRng::seed_from_u64(8);
    let people = centres(&mut rng, 3, 64, 0.3);
    // Twins: two enrolled people 0.06 apart, under the 0.45 threshold.
    let twin = sample(&mut rng, &people[0], 0.26);
    let mut faces = Vec::new();
    for p in 0..30 {
        let (who, centre) = match p % 3 {
            0 => ("ann", &people[0]),
            1 => ("anna", &twin),
            _ => ("bob", &people[1]),
        };
        let photo = format!("{who}{p}.jpg");
        faces.push(face(
            &format!("{photo}#0"),
            &photo,
            sample(&mut rng, centre, 0.1),
        ));
    }
    // Someone unknown appears too.
    for p in 0..4 {
        let photo = format!("guest{p}.jpg");
        faces.push(face(
            &format!("{photo}#0"),
            &photo,
            sample(&mut rng, &people[2], 0.3),
        ));
    }
    let anchor = |name: &str, centre: &[f32], rng: &mut StdRng| Anchor {
        name: name.into(),
        embeddings: (0..3).map(|_| sample(rng, centre, 0.1)).collect(),
    };
    let anchors = [
        anchor("Ann", &people[0], &mut rng),
        anchor("Anna", &twin, &mut rng),
        anchor("Bob", &people[1], &mut rng),
        // Enrolled, but not in this collection: no empty group for them.
        anchor("Carol", &random_unit(&mut rng, 64), &mut rng),
    ];
    let g = run(
        &faces,
        &anchors,
        &Decisions::default(),
        &ClusterOptions::new(0.45),
    );
    let named: HashMap<&str, BTreeSet<&str>> = g
        .groups
        .iter()
        .filter_map(|grp| {
            let members = grp
                .members
                .iter()
                .map(|m| m.split(|c: char| c.is_ascii_digit()).next().unwrap());
            Some((grp.suggested_name.as_deref()?, members.collect()))
        })
        .collect();
    assert_eq!(named.len(), 3, "{g:#?}");
    assert_eq!(named["Ann"], BTreeSet::from(["ann"]));
    assert_eq!(named["Anna"], BTreeSet::from(["anna"]));
    assert_eq!(named["Bob"], BTreeSet::from(["bob"]));
    for grp in &g.groups {
        if grp.suggested_name.is_some() {
            assert_eq!(grp.members.len(), 10);
        }
    }
    let guests = g
        .groups
        .iter()
        .find(|grp| grp.suggested_name.is_none())
        .unwrap();
    assert_eq!(guests.members.len(), 4);

    // Without anchors the twins are one group: the anchors are what keeps them apart.
    let plain = run(
        &faces,
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.45),
    );
    assert_eq!(plain.groups[0].members.len(), 20);

    // A single enrolled face names a single match, although it is under min_group_size.
    let one = [faces[2].clone()];
    let g = run(
        &one,
        &anchors,
        &Decisions::default(),
        &ClusterOptions::new(0.45),
    );
    assert_eq!(g.groups.len(), 1);
    assert_eq!(g.groups[0].suggested_name.as_deref(), Some("Bob"));
}

#[test]
fn two_matches_of_one_anchor_in_one_photo_give_it_the_closer_face() {
    let mut rng = StdRng::seed_from_u64(4);
    let ann = random_unit(&mut rng, 64);
    let close = sample(&mut rng, &ann, 0.1);
    let farther = sample(&mut rng, &ann, 0.4);
    let faces = [
        face("group.jpg#0", "group.jpg", farther),
        face("group.jpg#1", "group.jpg", close),
    ];
    let anchors = [Anchor {
        name: "Ann".into(),
        embeddings: vec![ann],
    }];
    let opts = ClusterOptions {
        min_group_size: 1,
        ..ClusterOptions::new(0.5)
    };
    let g = run(&faces, &anchors, &Decisions::default(), &opts);
    assert_eq!(g.groups.len(), 2);
    assert_eq!(
        group_of(&g, "group.jpg#1")
            .unwrap()
            .suggested_name
            .as_deref(),
        Some("Ann")
    );
    assert_eq!(group_of(&g, "group.jpg#0").unwrap().suggested_name, None);
}

#[test]
fn rejected_faces_carry_their_reason() {
    let mut rng = StdRng::seed_from_u64(2);
    let person = random_unit(&mut rng, 16);
    let mut with = |id: &str, quality: Quality| FaceRecord {
        quality,
        ..face(id, id, sample(&mut rng, &person, 0.2))
    };
    let mut faces = vec![
        with("ok1", GOOD),
        with("ok2", GOOD),
        with(
            "faint",
            Quality {
                det_score: 0.3,
                ..GOOD
            },
        ),
        with(
            "tiny",
            Quality {
                box_px: 24.0,
                ..GOOD
            },
        ),
        with(
            "blurred",
            Quality {
                sharpness: 3.0,
                ..GOOD
            },
        ),
        with(
            "everything",
            Quality {
                det_score: 0.1,
                box_px: 5.0,
                sharpness: 0.0,
            },
        ),
        with(
            "nan",
            Quality {
                sharpness: f32::NAN,
                ..GOOD
            },
        ),
        with("ignored", GOOD),
        with(
            "named-blurred",
            Quality {
                sharpness: 3.0,
                ..GOOD
            },
        ),
    ];
    faces.push(face("short", "short", vec![1.0; 15]));
    faces.push(face("zero", "zero", vec![0.0; 16]));
    faces.push(face("inf", "inf", vec![f32::INFINITY; 16]));
    let stranger = random_unit(&mut rng, 16);
    faces.push(face("alone", "alone", stranger));
    let decisions = Decisions {
        ignored: vec!["ignored".into(), "zero".into()],
        named: vec![Naming {
            faces: vec!["named-blurred".into()],
            name: "Ann".into(),
        }],
        ..Decisions::default()
    };
    let g = run(&faces, &[], &decisions, &ClusterOptions::new(0.3));
    let expected = [
        ("faint", Reason::LowScore),
        ("tiny", Reason::TooSmall),
        ("blurred", Reason::Blurred),
        ("everything", Reason::LowScore),
        ("nan", Reason::Blurred),
        ("ignored", Reason::Ignored),
        ("short", Reason::BadEmbedding),
        ("zero", Reason::Ignored),
        ("inf", Reason::BadEmbedding),
        ("alone", Reason::SmallGroup),
    ];
    for (id, reason) in expected {
        assert_eq!(reason_of(&g, id), Some(reason), "{id}");
    }
    assert_eq!(g.unclustered.len(), expected.len(), "{:?}", g.unclustered);
    // A face a reviewer named passes the gate and carries the name to its matches.
    assert_eq!(g.groups.len(), 1);
    assert_eq!(g.groups[0].suggested_name.as_deref(), Some("Ann"));
    let members: BTreeSet<&str> = g.groups[0].members.iter().map(String::as_str).collect();
    assert_eq!(members, BTreeSet::from(["ok1", "ok2", "named-blurred"]));
    // The stored reasons are plain strings.
    let json = serde_json::to_value(&g.unclustered[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"face": "faint", "reason": "low_score"})
    );
}

#[test]
fn names_and_merges_join_what_the_threshold_keeps_apart() {
    // One person with two looks (with and without a beard) 0.6 apart, past the 0.5
    // threshold, never in one photo; a second person is in some of the same photos.
    let mut rng = StdRng::seed_from_u64(13);
    let people = centres(&mut rng, 2, 64, 0.3);
    let bearded = sample(&mut rng, &people[0], 2.0);
    let mut faces = Vec::new();
    for p in 0..20 {
        let photo = format!("p{p}.jpg");
        let look = if p < 12 { &people[0] } else { &bearded };
        faces.push(face(
            &format!("{photo}#0"),
            &photo,
            sample(&mut rng, look, 0.3),
        ));
        if p % 2 == 0 {
            faces.push(face(
                &format!("{photo}#1"),
                &photo,
                sample(&mut rng, &people[1], 0.3),
            ));
        }
    }
    let opts = ClusterOptions::new(0.5);
    let g = run(&faces, &[], &Decisions::default(), &opts);
    let sizes: Vec<usize> = g.groups.iter().map(|x| x.members.len()).collect();
    assert_eq!(sizes, [12, 10, 8], "{g:#?}");
    let (plain, other, beard) = (&g.groups[0], &g.groups[1], &g.groups[2]);

    let mut decisions = Decisions::default();
    decisions.merge_groups(&[plain, beard]);
    decisions.name_group(other, "Zoe");
    let merged = run(&faces, &[], &decisions, &opts);
    assert!(merged.conflicts.is_empty(), "{:?}", merged.conflicts);
    assert_eq!(merged.groups.len(), 2);
    assert_eq!(merged.groups[0].members.len(), 20);
    assert_eq!(merged.groups[0].suggested_name, None);
    assert_eq!(merged.groups[1].suggested_name.as_deref(), Some("Zoe"));

    // Merging across people who share photos is refused face by face and reported.
    let mut across = Decisions::default();
    across.merge_groups(&[plain, other]);
    let refused = run(&faces, &[], &across, &opts);
    assert_eq!(refused.conflicts.len(), 6, "the 6 photos showing both");

    // Ignoring a group takes all of it out.
    let mut ignoring = Decisions::default();
    ignoring.ignore_group(other);
    let h = run(&faces, &[], &ignoring, &opts);
    assert_eq!(h.groups.len(), 2);
    for m in &other.members {
        assert_eq!(reason_of(&h, m), Some(Reason::Ignored));
    }
}

#[test]
fn named_groups_keep_their_name_when_photos_are_added() {
    let c = collection(17, 4, 160, 32, 0.6);
    let (old, new) = c.faces.split_at(100);
    let opts = ClusterOptions::new(0.5);
    let first = run(old, &[], &Decisions::default(), &opts);
    let mut decisions = Decisions::default();
    decisions.name_group(&first.groups[0], "Max");
    let second = run(&c.faces, &[], &decisions, &opts);
    let max = second
        .groups
        .iter()
        .find(|g| g.suggested_name.as_deref() == Some("Max"))
        .unwrap();
    let label = &c.truth[&first.groups[0].members[0]];
    let added = new.iter().filter(|f| &c.truth[&f.id] == label).count();
    assert!(added > 0);
    // The new photos of that person joined the name.
    assert!(max.members.len() >= first.groups[0].members.len() + added * 9 / 10);
    assert!(max.members.iter().all(|m| &c.truth[m] == label));
}

#[test]
fn contradicting_decisions_are_reported_not_applied() {
    let mut rng = StdRng::seed_from_u64(6);
    let p = random_unit(&mut rng, 16);
    let faces = [
        face("x.jpg#0", "x.jpg", sample(&mut rng, &p, 0.1)),
        face("x.jpg#1", "x.jpg", sample(&mut rng, &p, 0.1)),
        face("y.jpg#0", "y.jpg", sample(&mut rng, &p, 0.1)),
        face("z.jpg#0", "z.jpg", sample(&mut rng, &p, 0.1)),
    ];
    let decisions = Decisions {
        // Two faces of one photo named alike, a face named twice, and a merge across
        // a cannot-link.
        named: vec![
            Naming {
                faces: vec!["x.jpg#0".into(), "x.jpg#1".into()],
                name: "Ann".into(),
            },
            Naming {
                faces: vec!["x.jpg#0".into()],
                name: "Bea".into(),
            },
        ],
        cannot_link: vec![("y.jpg#0".into(), "z.jpg#0".into())],
        merged: vec![Merge {
            faces: vec!["y.jpg#0".into(), "z.jpg#0".into(), "gone.jpg#3".into()],
        }],
        ..Decisions::default()
    };
    let opts = ClusterOptions {
        min_group_size: 1,
        ..ClusterOptions::new(0.5)
    };
    let g = run(&faces, &[], &decisions, &opts);
    assert_eq!(
        g.conflicts,
        [
            Conflict::Name {
                face: "x.jpg#1".into(),
                name: "Ann".into()
            },
            Conflict::Name {
                face: "x.jpg#0".into(),
                name: "Bea".into()
            },
            Conflict::Merge {
                face: "z.jpg#0".into(),
                with: "y.jpg#0".into()
            },
        ]
    );
    assert_ne!(
        group_of(&g, "y.jpg#0").unwrap().key,
        group_of(&g, "z.jpg#0").unwrap().key
    );
    assert_eq!(
        group_of(&g, "x.jpg#0").unwrap().suggested_name.as_deref(),
        Some("Ann")
    );
}

#[test]
fn complete_linkage_refuses_a_chain_that_average_linkage_takes() {
    // Unit vectors at 0°, 45.6°, 91.1°: neighbours at cosine distance 0.3, ends at 1.02.
    let at = |deg: f32| vec![deg.to_radians().cos(), deg.to_radians().sin()];
    let faces = [
        face("a", "a", at(0.0)),
        face("b", "b", at(45.57)),
        face("c", "c", at(91.15)),
    ];
    let opts = |linkage| ClusterOptions {
        linkage,
        min_group_size: 1,
        ..ClusterOptions::new(0.7)
    };
    // Average: {a, b} at 0.3, then c at (0.3 + 1.02) / 2 = 0.66 < 0.7.
    let average = run(&faces, &[], &Decisions::default(), &opts(Linkage::Average));
    assert_eq!(average.groups.len(), 1);
    assert_eq!(average.groups[0].representative, "b", "the middle face");
    // Complete: c is 1.02 from a.
    let complete = run(&faces, &[], &Decisions::default(), &opts(Linkage::Complete));
    assert_eq!(complete.groups.len(), 2);
}

#[test]
fn input_that_makes_the_run_meaningless_is_an_error() {
    let faces = [
        face("a", "a", vec![1.0, 0.0]),
        face("a", "b", vec![0.0, 1.0]),
    ];
    let err = group(
        &faces,
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.5),
        &QualityGate::default(),
    );
    assert!(matches!(err, Err(Error::DuplicateFace { id }) if id == "a"));
    for threshold in [0.0, -1.0, 2.5, f32::NAN] {
        let err = group(
            &faces[..1],
            &[],
            &Decisions::default(),
            &ClusterOptions::new(threshold),
            &QualityGate::default(),
        );
        assert!(matches!(err, Err(Error::InvalidOption(_))), "{threshold}");
    }
    let anchors = [
        Anchor {
            name: "Ann".into(),
            embeddings: vec![vec![1.0, 0.0]],
        },
        Anchor {
            name: "Bob".into(),
            embeddings: vec![vec![1.0, 0.0, 0.0]],
        },
    ];
    let err = group(
        &faces[..1],
        &anchors,
        &Decisions::default(),
        &ClusterOptions::new(0.5),
        &QualityGate::default(),
    );
    assert!(
        matches!(&err, Err(Error::BadAnchor { name, .. }) if name == "Bob"),
        "{err:?}"
    );
    assert!(group(
        &[],
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.5),
        &QualityGate::default()
    )
    .unwrap()
    .groups
    .is_empty());
}

#[test]
fn decisions_and_groupings_round_trip_through_json() {
    let decisions = Decisions {
        cannot_link: vec![("a#0".into(), "b#0".into())],
        removed: vec![
            Removal {
                face: "c#0".into(),
                from: Target::Group("a#0".into()),
            },
            Removal {
                face: "d#0".into(),
                from: Target::Name("Ann".into()),
            },
        ],
        ignored: vec!["e#0".into()],
        named: vec![Naming {
            faces: vec!["a#0".into(), "f#0".into()],
            name: "Ann".into(),
        }],
        merged: vec![Merge {
            faces: vec!["g#0".into(), "h#0".into()],
        }],
    };
    let json = serde_json::to_string(&decisions).unwrap();
    assert_eq!(serde_json::from_str::<Decisions>(&json).unwrap(), decisions);
    assert!(
        json.contains(r#"{"face":"c#0","from":{"group":"a#0"}}"#),
        "{json}"
    );

    let c = collection(1, 4, 60, 16, 0.5);
    let mut d = Decisions::default();
    let first = run(&c.faces, &[], &d, &ClusterOptions::new(0.5));
    d.name_group(&first.groups[0], "Ann");
    // A removal that contradicts the naming: a conflict to round-trip.
    d.removed.push(Removal {
        face: first.groups[0].members[1].clone(),
        from: Target::Name("Ann".into()),
    });
    d.ignored.push(c.faces[0].id.clone());
    let g = run(&c.faces, &[], &d, &ClusterOptions::new(0.5));
    assert!(!g.conflicts.is_empty() && !g.unclustered.is_empty());
    let json = serde_json::to_string_pretty(&g).unwrap();
    assert_eq!(serde_json::from_str::<Grouping>(&json).unwrap(), g);
    assert!(json.contains(r#""kind": "name""#), "{json}");
}

#[test]
fn thousands_of_faces_in_a_test_run() {
    // 4,000 faces of 128 dimensions: the threshold graph is 8 million pairs.
    let c = collection(31, 60, 2_000, 128, 0.6);
    let started = std::time::Instant::now();
    let g = run(
        &c.faces,
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.5),
    );
    let b = bcubed(&c.truth, &g);
    eprintln!(
        "{} faces: {} groups in {:.2?}, BCubed {b:?}",
        c.faces.len(),
        g.groups.len(),
        started.elapsed()
    );
    assert!(b.f1 >= 0.97, "{b:?}");
}

/// `cargo test -p facepipe-cluster --release -- --ignored --nocapture`: tens of thousands.
#[test]
#[ignore = "timing run: 20,000 faces"]
fn twenty_thousand_faces() {
    let c = collection(41, 400, 10_000, 128, 0.6);
    let started = std::time::Instant::now();
    let g = run(
        &c.faces,
        &[],
        &Decisions::default(),
        &ClusterOptions::new(0.5),
    );
    eprintln!(
        "{} faces: {} groups in {:.2?}, BCubed {:?}",
        c.faces.len(),
        g.groups.len(),
        started.elapsed(),
        bcubed(&c.truth, &g)
    );
}

/// The textbook algorithm: repeatedly merge the closest pair of clusters that shares no
/// photo, while it is under the threshold. O(n³) per merge; the reference for small n.
fn brute_force(
    faces: &[FaceRecord],
    linkage: Linkage,
    threshold: f64,
) -> BTreeSet<BTreeSet<String>> {
    let dist = |a: &FaceRecord, b: &FaceRecord| {
        1.0 - a
            .embedding
            .iter()
            .zip(&b.embedding)
            .map(|(x, y)| f64::from(x * y))
            .sum::<f64>()
    };
    let mut clusters: Vec<Vec<usize>> = (0..faces.len()).map(|i| vec![i]).collect();
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for i in 0..clusters.len() {
            for j in i + 1..clusters.len() {
                let shares_photo = clusters[i].iter().any(|&a| {
                    clusters[j]
                        .iter()
                        .any(|&b| faces[a].photo == faces[b].photo)
                });
                if shares_photo {
                    continue;
                }
                let ds = clusters[i]
                    .iter()
                    .flat_map(|&a| clusters[j].iter().map(move |&b| (a, b)))
                    .map(|(a, b)| dist(&faces[a], &faces[b]));
                let d = match linkage {
                    Linkage::Average => {
                        ds.sum::<f64>() / (clusters[i].len() * clusters[j].len()) as f64
                    }
                    Linkage::Complete => ds.fold(0.0, f64::max),
                };
                if d < threshold && best.is_none_or(|b| d < b.0) {
                    best = Some((d, i, j));
                }
            }
        }
        let Some((_, i, j)) = best else { break };
        let moved = clusters.remove(j);
        clusters[i].extend(moved);
    }
    clusters
        .into_iter()
        .map(|c| c.into_iter().map(|i| faces[i].id.clone()).collect())
        .collect()
}

#[test]
fn nearest_neighbour_chains_give_the_textbook_result() {
    // How often the photo rule changed the answer, and how many merges were checked.
    let (mut constrained, mut merges) = (0, 0);
    for seed in 0..40 {
        let c = collection(1000 + seed, 6, 25, 8, 0.8);
        for linkage in [Linkage::Average, Linkage::Complete] {
            let opts = ClusterOptions {
                linkage,
                min_group_size: 1,
                ..ClusterOptions::new(0.6)
            };
            let g = run(&c.faces, &[], &Decisions::default(), &opts);
            assert_eq!(
                partition(&g),
                brute_force(&c.faces, linkage, 0.6),
                "seed {seed}, {linkage:?}"
            );
            let alone: Vec<FaceRecord> = c
                .faces
                .iter()
                .map(|f| FaceRecord {
                    photo: f.id.clone(),
                    ..f.clone()
                })
                .collect();
            if brute_force(&alone, linkage, 0.6) != partition(&g) {
                constrained += 1;
            }
            merges += c.faces.len() - g.groups.len();
        }
    }
    eprintln!("{constrained} of 80 runs changed by the photo rule, {merges} merges");
    assert!(
        constrained >= 20,
        "the photo rule must be exercised: {constrained}"
    );
}
