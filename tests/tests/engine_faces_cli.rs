//! `facepipe faces` end to end: the real binary on a mix of good and bad files. Every input
//! gets its JSON line, in order; the bad ones fail alone and the exit status is 1.

#![allow(clippy::unwrap_used)] // tests may unwrap

use facepipe_tests::{fixtures, Dir, TestCommand};
use serde_json::Value;

#[test]
fn faces_processes_every_input_and_fails_only_the_bad_ones() {
    let dir = Dir::new();
    let fake = dir.create("not_a_photo.jpg", "plain text, not a JPEG\n");
    let empty = dir.create("empty.png", b"");
    let engine = fixtures().join("engine");
    let crops = dir.join("crops");
    let drawn = dir.join("drawn.png");
    let inputs = [
        engine.join("two_people.jpg"),
        fake,
        engine.join("orl/s1_1.pgm"),
        empty,
    ];
    let lines: Vec<Value> = TestCommand::new()
        .arg("faces")
        .arg("--json")
        .arg("--crops")
        .arg(&crops)
        .arg("--draw")
        .arg(&drawn)
        .args(&inputs)
        .assert_exit(1)
        .json_lines();
    assert_eq!(lines.len(), 4);
    for (line, path) in lines.iter().zip(&inputs) {
        assert_eq!(line["image"], path.display().to_string());
    }
    // Two people, each with a box, a score and 68 landmarks.
    let faces = lines[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    for f in faces {
        assert_eq!(f["box"].as_array().unwrap().len(), 4);
        assert!(f["score"].as_f64().unwrap() > 0.5);
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 68);
        assert_eq!(f["found_by"], "detector");
    }
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .contains("not a recognised image format"));
    // The ORL tight crop comes through the padded retry.
    let orl = lines[2]["faces"].as_array().unwrap();
    assert_eq!(orl.len(), 1);
    assert_eq!(orl[0]["found_by"], "padded_retry");
    assert!(lines[3]["error"].as_str().unwrap().contains("empty"));
    // Aligned crops (150×150 chips) and one drawing per good photo.
    for name in [
        "two_people_face0.png",
        "two_people_face1.png",
        "s1_1_face0.png",
    ] {
        let crop = image::open(crops.join(name)).unwrap();
        assert_eq!((crop.width(), crop.height()), (150, 150), "{name}");
    }
    let drawing = image::open(dir.join("drawn_two_people.png")).unwrap();
    assert_eq!((drawing.width(), drawing.height()), (1126, 661));
}
