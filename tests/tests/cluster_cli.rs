//! `facepipe cluster` as a user runs it: an unlabelled pile of real photos (sample people
//! flattened into numbered files, group photos, a photo of dogs), grouped with the fixture
//! deployment's people as anchors, then re-run with a reviewer's decision.
//! Needs the binary: `cargo build -p facepipe` (scripts/test.sh builds it first).
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::HashMap;

use facepipe_tests::{person_photos, sample_data, setup, Dir, TestCommand};
use serde_json::Value;

/// Group of each face id, and the group objects.
fn group_of(clusters: &Value) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, g) in clusters["groups"].as_array().unwrap().iter().enumerate() {
        for m in g["members"].as_array().unwrap() {
            map.insert(m["face"].as_str().unwrap().to_string(), i);
        }
    }
    map
}

/// Face ids of a photo, in clusters.json (grouped or not).
fn faces_of(clusters: &Value, photo: &str) -> Vec<String> {
    let grouped = clusters["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["members"].as_array().unwrap().iter());
    grouped
        .chain(clusters["unclustered"].as_array().unwrap().iter())
        .filter(|f| f["photo"] == photo)
        .map(|f| f["face"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_unlabelled_pile_becomes_named_groups_and_a_decision_sticks() {
    let dir = Dir::new();
    let registry = dir.join("registry");
    setup::deploy_gallery(&registry).stdout();

    // The pile: no folder names anyone. Obama ×5, Biden ×2, Kit Harington ×2, Rose
    // Leslie ×2 as numbered files (some nested), plus the scenes.
    let mut truth: HashMap<String, &str> = HashMap::new();
    let mut n = 0;
    for person in ["Barack_Obama", "Joe_Biden", "Kit_Harington", "Rose_Leslie"] {
        let photos = person_photos(person);
        for p in photos {
            n += 1;
            let key = format!("{}/{n:03}.jpg", if n % 2 == 0 { "a/b" } else { "c" });
            dir.copy(&p, format!("pile/{key}"));
            truth.insert(key, person);
        }
    }
    for scene in ["obama_and_biden.jpg", "dogs.jpg", "kit_with_rose.jpg"] {
        dir.copy(
            sample_data().join("scenes").join(scene),
            format!("pile/{scene}"),
        );
    }
    dir.create("pile/.hidden/skip.jpg", b"hidden: not an input");
    dir.create("pile/c/notes.txt", b"not a photo");

    let out = dir.join("out");
    let run = || {
        TestCommand::new()
            .args(["-q", "cluster", "--workers", "2", "--deployment"])
            .arg(&registry)
            .arg(dir.join("pile"))
            .arg(&out)
            .stdout();
        let text = std::fs::read_to_string(out.join("clusters.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let c = run();

    // Every input has one outcome: 11 people photos, 3 scenes, the text file.
    assert_eq!(c["photo_count"], 15, "{}", c["photo_outcomes"]);
    assert_eq!(
        c["photo_outcomes"]["unreadable"], 1,
        "{}",
        c["photo_outcomes"]
    );
    assert_eq!(c["deployment"], 1);
    let t = c["threshold"]["cosine_distance"].as_f64().unwrap();
    assert!(t > 0.0 && t < 0.5, "threshold {t}");
    let groups = group_of(&c);

    // The enrolled people name their groups, and each holds that person's photos.
    let named: HashMap<&str, usize> = c["groups"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g["suggested_name"].as_str().map(|n| (n, i)))
        .collect();
    let obama = named["Barack_Obama"];
    let biden = named["Joe_Biden"];
    for (key, person) in &truth {
        let faces = faces_of(&c, key);
        assert_eq!(faces.len(), 1, "{key}: {faces:?}");
        match *person {
            "Barack_Obama" => assert_eq!(groups.get(&faces[0]), Some(&obama), "{key}"),
            "Joe_Biden" => assert_eq!(groups.get(&faces[0]), Some(&biden), "{key}"),
            // Not enrolled: grouped (or left out) but never under an enrolled name.
            _ => assert!(
                groups
                    .get(&faces[0])
                    .is_none_or(|g| *g != obama && *g != biden),
                "{key} joined an enrolled person"
            ),
        }
    }
    // Two faces of one photo are two people: Obama's and Biden's groups.
    let pair = faces_of(&c, "obama_and_biden.jpg");
    assert_eq!(pair.len(), 2, "{pair:?}");
    let mut pair_groups: Vec<usize> = pair.iter().filter_map(|f| groups.get(f).copied()).collect();
    pair_groups.sort_unstable();
    let mut enrolled = vec![obama, biden];
    enrolled.sort_unstable();
    assert_eq!(pair_groups, enrolled);
    // The dogs never become a person.
    for f in faces_of(&c, "dogs.jpg") {
        assert!(
            !groups.contains_key(&f),
            "a dog face joined group {:?}",
            groups.get(&f)
        );
    }
    // A contact sheet per group, as wide as its faces (75 px thumbnails, 8 a row).
    for g in c["groups"].as_array().unwrap() {
        let sheet = image::open(out.join(g["sheet"].as_str().unwrap())).unwrap();
        let size = g["size"].as_u64().unwrap() as u32;
        assert_eq!(sheet.width(), 75 * size.min(8), "{}", g["sheet"]);
    }

    // A reviewer says one Obama photo is not Obama: the re-run keeps it out of his group
    // and leaves the others in.
    let (wrong_key, _) = truth.iter().find(|(_, p)| **p == "Barack_Obama").unwrap();
    let wrong = faces_of(&c, wrong_key).remove(0);
    std::fs::write(
        out.join("decisions.json"),
        serde_json::json!({"removed": [{"face": wrong, "from": {"name": "Barack_Obama"}}]})
            .to_string(),
    )
    .unwrap();
    let again = run();
    let groups = group_of(&again);
    let obama_again = again["groups"]
        .as_array()
        .unwrap()
        .iter()
        .position(|g| g["suggested_name"] == "Barack_Obama")
        .unwrap();
    assert_ne!(groups.get(&wrong), Some(&obama_again), "{wrong} is back");
    let still: usize = truth
        .iter()
        .filter(|(k, p)| **p == "Barack_Obama" && *k != wrong_key)
        .filter(|(k, _)| groups.get(&faces_of(&again, k)[0]) == Some(&obama_again))
        .count();
    assert_eq!(still, 4);

    // A broken decisions file is an error that says what to do, not a silent reset.
    std::fs::write(out.join("decisions.json"), "{not json").unwrap();
    let err = TestCommand::new()
        .args(["-q", "cluster", "--workers", "2"])
        .arg(dir.join("pile"))
        .arg(&out)
        .assert_err();
    assert!(
        err.stderr.contains("not a decisions file"),
        "{}",
        err.stderr
    );
}
