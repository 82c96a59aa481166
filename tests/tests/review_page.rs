//! The review flow as a user runs it, in headless Chromium: `facepipe cluster` over an
//! unlabelled pile, `facepipe serve --review OUT`, then in the page's People view name a
//! group and identify a held-out photo of that person; take a face out of a group, re-run
//! `facepipe cluster`, and see it stay out; and enroll a face of an uploaded group photo.
//! Needs the binary (`cargo build -p facepipe`) and `scripts/setup.sh --browser` (node,
//! Chromium, playwright-core): skips saying so when one is missing, and fails when `CI` is set.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use facepipe_pipeline::test_support::{require, Component};
use facepipe_tests::{
    person_photos, sample_data, serve_command, setup, workspace_root, Dir, Server, TestCommand,
};
use serde_json::{json, Value};

const KEY: &str = "review-test-key";

fn cluster(registry: &Path, pile: &Path, out: &Path) -> Value {
    TestCommand::new()
        .args(["-q", "cluster", "--workers", "2", "--deployment"])
        .arg(registry)
        .arg(pile)
        .arg(out)
        .stdout();
    serde_json::from_str(&std::fs::read_to_string(out.join("clusters.json")).unwrap()).unwrap()
}

/// The group (index) holding each face.
fn group_of(c: &Value) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, g) in c["groups"].as_array().unwrap().iter().enumerate() {
        for m in g["members"].as_array().unwrap() {
            map.insert(m["face"].as_str().unwrap().to_string(), i);
        }
    }
    map
}

/// The face id of a single-face photo.
fn face_of(c: &Value, photo: &str) -> String {
    let faces: Vec<&Value> = c["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["members"].as_array().unwrap())
        .chain(c["unclustered"].as_array().unwrap())
        .filter(|f| f["photo"] == photo)
        .collect();
    assert_eq!(faces.len(), 1, "{photo}: {faces:?}");
    faces[0]["face"].as_str().unwrap().to_string()
}

/// The one group that holds all of `faces`, as (index, key).
fn group_holding(c: &Value, faces: &[String]) -> (usize, String) {
    let groups = group_of(c);
    let index = groups[&faces[0]];
    for f in faces {
        assert_eq!(groups.get(f), Some(&index), "{f} is not with {}", faces[0]);
    }
    let key = c["groups"][index]["key"].as_str().unwrap().to_string();
    (index, key)
}

fn drive(url: &str, plan: &Value, dir: &Dir, name: &str) -> Value {
    let plan_file = dir.create(format!("{name}.json"), plan.to_string());
    let shots = std::env::var_os("FACEPIPE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("facepipe-web"));
    let output = Command::new("node")
        .arg(
            workspace_root()
                .join("tests")
                .join("web")
                .join("review.cjs"),
        )
        .arg(url)
        .arg(KEY)
        .arg(plan_file)
        .arg(shots)
        .output()
        .expect("node is needed for the review page test: run scripts/setup.sh --browser");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "review page {name} failed: {stderr}\n{stdout}"
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        seen["outside"].as_array().map_or(0, Vec::len),
        0,
        "requests left the server: {seen}"
    );
    seen
}

#[test]
fn a_group_named_in_the_page_identifies_its_person_and_a_removed_face_stays_out() {
    if !(require(Component::Node)
        && require(Component::Chromium)
        && require(Component::PlaywrightCore))
    {
        return;
    }
    let dir = Dir::new();
    let registry = dir.join("registry");
    setup::deploy_gallery(&registry).stdout();

    // The pile: 9 photos each of John Salley and John Simm under numbered names, Obama and
    // Biden together, and the dogs. Salley's other two photos are held out.
    let mut photos_of: HashMap<&str, Vec<String>> = HashMap::new();
    let mut held_out = Vec::new();
    let mut n = 0;
    for person in ["John_Salley", "John_Simm"] {
        let photos = person_photos(person);
        for (i, p) in photos.into_iter().enumerate() {
            if i >= 9 {
                held_out.push(p);
                continue;
            }
            n += 1;
            let key = format!("{n:03}.jpg");
            dir.copy(&p, format!("pile/{key}"));
            photos_of.entry(person).or_default().push(key);
        }
    }
    for scene in ["obama_and_biden.jpg", "dogs.jpg"] {
        dir.copy(
            sample_data().join("scenes").join(scene),
            format!("pile/{scene}"),
        );
    }
    let (pile, out) = (dir.join("pile"), dir.join("out"));
    let c = cluster(&registry, &pile, &out);
    let faces = |c: &Value, person: &str| -> Vec<String> {
        photos_of[person].iter().map(|p| face_of(c, p)).collect()
    };
    let (_, salley) = group_holding(&c, &faces(&c, "John_Salley"));
    let simm_faces = faces(&c, "John_Simm");
    let (simm_index, simm) = group_holding(&c, &simm_faces);
    assert!(c["groups"][simm_index]["suggested_name"].is_null(), "{c}");
    // Taken out as if it were someone else: the last (least central) member.
    let wrong = c["groups"][simm_index]["members"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["face"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(wrong, simm);

    let key_file = dir.create("key", KEY);
    let mut cmd = serve_command(&registry);
    cmd.arg("--review")
        .arg(&out)
        .arg("--api-key-file")
        .arg(&key_file);
    let server = Server::start(&mut cmd);

    let seen = drive(
        server.url(),
        &json!({
            "name": {"group": salley, "as": "John_Salley"},
            "identify": held_out[0],
            "remove": {"group": simm, "face": wrong},
            "enroll": {"photo": sample_data().join("scenes").join("kit_with_rose.jpg"), "face": 0, "as": "Guest_One"},
        }),
        &dir,
        "first",
    );
    // The People view showed every group with its thumbnails.
    assert_eq!(
        seen["groups_seen"],
        c["groups"].as_array().unwrap().len(),
        "{seen}"
    );
    assert!(seen["thumbnails_loaded"].as_u64().unwrap() >= 18, "{seen}");
    // Naming enrolled the group: the held-out photo now comes back with the name.
    assert_eq!(seen["named"]["name"], "John_Salley", "{seen}");
    assert_eq!(seen["identified"], json!(["John_Salley"]), "{seen}");
    assert_eq!(seen["removed"]["gone"], true, "{seen}");
    // A face of an uploaded group photo, enrolled from the page, is named on that photo.
    let boxes: Vec<&str> = seen["enrolled"]["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(
        boxes.iter().filter(|b| **b == "Guest_One").count(),
        1,
        "{seen}"
    );
    assert!(
        seen["enrolled"]["status"]
            .as_str()
            .unwrap()
            .contains("Enrolled Guest_One"),
        "{seen}"
    );

    // Every action is in decisions.json, and a re-run keeps the face out.
    let decisions: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("decisions.json")).unwrap())
            .unwrap();
    assert_eq!(decisions["named"][0]["name"], "John_Salley", "{decisions}");
    assert_eq!(
        decisions["removed"][0]["face"],
        wrong.as_str(),
        "{decisions}"
    );
    let again = cluster(&registry, &pile, &out);
    let rest: Vec<String> = faces(&again, "John_Simm")
        .into_iter()
        .filter(|f| *f != wrong)
        .collect();
    let (_, simm_now) = group_holding(&again, &rest);
    assert_ne!(group_of(&again).get(&wrong), group_of(&again).get(&rest[0]));
    // The enrolled person is an anchor now: the re-run names Salley's group itself.
    let (salley_now, _) = group_holding(&again, &faces(&again, "John_Salley"));
    assert_eq!(again["groups"][salley_now]["suggested_name"], "John_Salley");

    // The page shows the re-run (the service notices clusters.json changed).
    let seen = drive(
        server.url(),
        &json!({"check": {"group": simm_now, "face": wrong}}),
        &dir,
        "after-rerun",
    );
    assert_eq!(seen["check"]["shown_in_group"], false, "{seen}");
    assert_ne!(seen["check"]["group_of_face"], json!(simm_now), "{seen}");
}
