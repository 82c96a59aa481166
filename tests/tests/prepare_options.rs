//! `facepipe prepare` options that change what is stored, end to end through the real binary
//! (warm local workers, local folders): `--several-faces skip` against the default
//! `largest`, `--layout unlabelled --several-faces all` (and `all` refused for a labelled
//! collection), and `--detector tiny` against the default SSD.
//!
//! Needs `cargo build -p facepipe` first.

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use facepipe_pipeline::dataset::shards::read_all;
use facepipe_pipeline::dataset::{Manifest, Outcome, Record, Sample};
use facepipe_pipeline::{DetectorKind, FoundBy};
use facepipe_tests::{fixtures, setup, Dir};
use serde_json::Value;

const GROUP: &str = "Group Photos";

/// Two photos of two people each (SSD finds both faces in both; the tiny detector finds
/// only one in obama_and_biden), and three one-face ORL photos, in `dir`'s folder `in`.
fn input(dir: &Dir) -> usize {
    for name in ["two_people.jpg", "obama_and_biden.jpg"] {
        dir.copy(
            fixtures().join("engine").join(name),
            Path::new("in").join(GROUP).join(name),
        );
    }
    dir.copy_orl("s1", 3, "in/orl s1");
    5
}

/// Run `facepipe prepare INPUT OUTPUT --workers 2 --task-size 3 --json EXTRA…` and return
/// its report.
fn prepare(input: &Path, output: &Path, extra: &[&str]) -> Value {
    setup::prepare(input, output)
        .args(["--workers", "2", "--task-size", "3", "--json"])
        .args(extra)
        .json()
}

/// The manifest (typed and as raw JSON) and every stored sample by source.
fn load(output: &Path) -> (Manifest, Value, BTreeMap<String, Sample>) {
    let manifest = Manifest::load(output).unwrap();
    let raw: Value =
        serde_json::from_slice(&std::fs::read(output.join("manifest.json")).unwrap()).unwrap();
    let mut samples = BTreeMap::new();
    for shard in &manifest.shards {
        let bytes = std::fs::read(output.join(&shard.path)).unwrap();
        for s in read_all(&bytes, &shard.path).unwrap() {
            assert!(
                samples.insert(s.meta.source.clone(), s).is_none(),
                "a source stored twice"
            );
        }
    }
    (manifest, raw, samples)
}

fn record<'a>(m: &'a Manifest, source: &str) -> &'a Record {
    m.records
        .iter()
        .find(|r| r.source == source)
        .unwrap_or_else(|| panic!("no record for {source}"))
}

fn raw_record<'a>(raw: &'a Value, source: &str) -> &'a Value {
    raw["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == source)
        .unwrap()
}

#[test]
fn several_faces_skip_records_the_photo_and_stores_nothing_for_it() {
    let dir = Dir::new();
    let inputs = input(&dir);
    let two = format!("{GROUP}/two_people.jpg");
    let pair = format!("{GROUP}/obama_and_biden.jpg");

    // Default (largest): the group photos are kept, with the largest face.
    let largest = dir.join("largest");
    let report = prepare(&dir.join("in"), &largest, &[]);
    assert_eq!(report["images"], inputs);
    let (m, _, samples) = load(&largest);
    assert_eq!(m.records.len(), inputs);
    assert_eq!(m.outcome_counts()[&Outcome::Ok] as usize, inputs);
    for source in [&two, &pair] {
        let r = record(&m, source);
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.faces_found, Some(2), "{r:?}");
        assert_eq!(r.reason.as_deref(), Some("2 faces; kept the largest"));
        assert!(r.sample.is_some() && r.shard.is_some(), "{r:?}");
        assert!(
            samples.contains_key(source.as_str()),
            "{source} not in the shards"
        );
    }

    // skip: the group photos are recorded as several_faces and nothing is stored for them.
    let skip = dir.join("skip");
    let report = prepare(&dir.join("in"), &skip, &["--several-faces", "skip"]);
    assert_eq!(report["images"], inputs);
    assert_eq!(report["outcomes"]["several_faces"], 2, "{report}");
    assert_eq!(report["faces"], inputs - 2, "{report}");
    let (m, raw, samples) = load(&skip);
    assert_eq!(m.records.len(), inputs, "every input keeps its record");
    let counts = m.outcome_counts();
    assert_eq!(counts[&Outcome::SeveralFaces], 2, "{counts:?}");
    assert_eq!(counts[&Outcome::Ok] as usize, inputs - 2, "{counts:?}");
    for source in [&two, &pair] {
        let r = record(&m, source);
        assert_eq!(r.outcome, Outcome::SeveralFaces, "{r:?}");
        assert_eq!(r.faces_found, Some(2), "{r:?}");
        assert!(r
            .reason
            .as_deref()
            .unwrap()
            .contains("--several-faces skip"));
        assert_eq!((&r.sample, &r.shard, &r.found_by), (&None, &None, &None));
        assert!(
            !samples.contains_key(source.as_str()),
            "{source} was stored"
        );
        assert_eq!(raw_record(&raw, source)["outcome"], "several_faces");
    }
    // The one-face photos are stored exactly as with the default.
    assert_eq!(samples.len(), inputs - 2);
    assert_eq!(m.sample_count() as usize, inputs - 2);
    assert!(samples.keys().all(|s| s.starts_with("orl s1/")));
    let group = m.identities.iter().find(|i| i.name == GROUP).unwrap();
    assert_eq!((group.images, group.faces), (2, 0));
}

#[test]
fn tiny_detector_runs_and_is_recorded() {
    let dir = Dir::new();
    let inputs = input(&dir);
    let out = dir.join("tiny");
    let report = prepare(&dir.join("in"), &out, &["--detector", "tiny"]);
    assert_eq!(report["images"], inputs);
    let (m, raw, samples) = load(&out);
    assert_eq!(m.detector, DetectorKind::Tiny);
    assert_eq!(raw["detector"], "tiny");
    // The job's options name it too, so a rerun with another detector is another job.
    let job = &report["job"].as_str().unwrap();
    let job_file: Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("jobs/{job}/job.json"))).unwrap())
            .unwrap();
    assert_eq!(job_file["spec"]["detector"], "tiny");

    // Sane face counts: every photo has a face; the tiny detector sees both people in
    // two_people but only one in obama_and_biden (SSD sees two: see the other test).
    assert_eq!(m.records.len(), inputs);
    assert_eq!(m.outcome_counts()[&Outcome::Ok] as usize, inputs);
    assert_eq!(
        record(&m, &format!("{GROUP}/two_people.jpg")).faces_found,
        Some(2)
    );
    let pair = record(&m, &format!("{GROUP}/obama_and_biden.jpg"));
    assert_eq!(pair.faces_found, Some(1), "{pair:?}");
    assert_eq!(pair.reason, None, "{pair:?}");
    assert_eq!(samples.len(), inputs);
    for (source, s) in &samples {
        let r = record(&m, source);
        assert_eq!(r.found_by, Some(s.meta.found_by), "{source}");
        assert!(r.faces_found.is_some_and(|n| (1..=2).contains(&n)), "{r:?}");
        assert_eq!(s.meta.landmarks.len(), 68, "{source}");
        assert_eq!(s.image().unwrap().dimensions(), (150, 150), "{source}");
        if source.starts_with(GROUP) {
            assert_eq!(s.meta.found_by, FoundBy::Detector, "{source}");
            assert!(s.meta.score >= 0.5, "{source}: {}", s.meta.score);
        }
    }

    // A rerun finds every task done: its report says so instead of a speed-up of nothing.
    let text = setup::prepare(dir.join("in"), &out)
        .args(["--workers", "2", "--task-size", "3", "--detector", "tiny"])
        .stdout();
    assert!(
        text.contains("(2 reused from an earlier run, 0 retries)"),
        "{text}"
    );
    assert!(
        text.contains("no photo was processed: every task was finished by an earlier run"),
        "{text}"
    );
    assert!(!text.contains("speed-up"), "{text}");
}

#[test]
fn several_faces_all_keeps_every_face_of_an_unlabelled_pile() {
    let dir = Dir::new();
    let inputs = input(&dir);
    std::fs::write(dir.join("in/.DS_Store"), b"hidden").unwrap();

    // A labelled collection cannot keep every face: strangers would get the folder's name.
    let refused = setup::prepare(dir.join("in"), dir.join("refused"))
        .args(["--several-faces", "all"])
        .assert_err();
    assert!(
        refused.stderr.contains("--layout unlabelled") && refused.stderr.contains("strangers"),
        "{}",
        refused.stderr
    );
    assert!(!dir.join("refused/jobs").exists());

    let out = dir.join("all");
    let report = prepare(
        &dir.join("in"),
        &out,
        &["--layout", "unlabelled", "--several-faces", "all"],
    );
    assert_eq!(report["images"], inputs, "the hidden file is not an input");
    assert_eq!(report["layout"], "unlabelled");
    let manifest = Manifest::load(&out).unwrap();
    let mut stored = BTreeMap::new();
    for shard in &manifest.shards {
        let bytes = std::fs::read(out.join(&shard.path)).unwrap();
        for s in read_all(&bytes, &shard.path).unwrap() {
            assert!(
                stored.insert(s.key.clone(), s).is_none(),
                "a key stored twice"
            );
        }
    }
    // Two faces for each group photo, one for each ORL crop: every face is its own sample.
    assert_eq!(stored.len(), 2 + 2 + 3);
    assert_eq!(report["faces"], stored.len(), "{report}");
    for name in ["two_people.jpg", "obama_and_biden.jpg"] {
        let r = record(&manifest, &format!("{GROUP}/{name}"));
        assert_eq!((r.outcome, r.faces_found), (Outcome::Ok, Some(2)), "{r:?}");
        assert_eq!(r.identity, "", "{r:?}");
        let keys: Vec<&str> = r.sample_keys().collect();
        assert_eq!(keys.len(), 2, "{r:?}");
        assert!(
            keys[0].ends_with("_f0") && keys[1].ends_with("_f1"),
            "{keys:?}"
        );
        for k in keys {
            let s = &stored[k];
            assert_eq!(s.meta.source, r.source);
            assert_eq!((s.meta.identity.as_str(), s.meta.label), ("", 0));
            assert_eq!(s.meta.landmarks.len(), 68);
        }
    }
    let listed: Vec<&str> = manifest
        .records
        .iter()
        .flat_map(Record::sample_keys)
        .collect();
    assert_eq!(listed.len(), stored.len(), "every sample is listed once");
    assert!(listed.iter().all(|k| stored.contains_key(*k)));
}
