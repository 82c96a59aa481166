//! `facepipe prepare` against inputs that used to stop a job or blow a worker's memory, end
//! to end through the real binary (warm local workers, local folders):
//!
//! - a poison photo that aborts its worker on every attempt (fault injection, compiled in
//!   with the `test-support` feature the workspace build enables): the job still finishes,
//!   the photo is one `failed` record with the reason, its task-mates are processed;
//! - an 8 GB (sparse) file among the photos: `too_large` from the listing's size, never read;
//! - two byte-identical photos in tasks of one: the second task's shard holds only a
//!   duplicate and is deleted by the merge; a rerun must not trip over it.
//!
//! Needs `cargo build --workspace --all-features --bins` first.

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use facepipe_pipeline::dataset::shards::read_all;
use facepipe_pipeline::dataset::{Manifest, Outcome};
use facepipe_tests::{sample_data, setup, Dir};
use serde_json::Value;

/// `facepipe prepare INPUT OUTPUT --json EXTRA…` with `env`: its report.
fn prepare(input: &Dir, output: &Dir, extra: &[&str], env: &[(&str, &str)]) -> Value {
    setup::prepare(input.path(), output.path())
        .arg("--json")
        .args(extra)
        .envs(env)
        .json()
}

/// Every stored sample's source, checking each shard holds what the manifest says.
fn stored_sources(output: &Path, m: &Manifest) -> Vec<String> {
    let mut sources = Vec::new();
    for shard in &m.shards {
        let bytes = std::fs::read(output.join(&shard.path)).unwrap();
        let samples = read_all(&bytes, &shard.path).unwrap();
        assert_eq!(samples.len() as u32, shard.samples, "{}", shard.path);
        sources.extend(samples.into_iter().map(|s| s.meta.source));
    }
    sources.sort();
    sources
}

#[test]
fn a_poison_photo_fails_alone_and_the_job_finishes() {
    let input = Dir::new();
    input.copy_orl("s1", 9, "orl s1");
    // Sorted keys: 1 2 3 4 | 4b_poison 5 6 7 | 8 9 — the poison photo shares a task of 4.
    let poison = "orl s1/4b_poison.pgm";
    input.copy(sample_data().join("orl/s2/1.pgm"), poison);
    let inputs = 10;
    let out = Dir::new();
    let args = [
        "--workers",
        "2",
        "--task-size",
        "4",
        "--max-attempts",
        "2",
        "--job",
        "poison",
    ];
    let fault = [("FACEPIPE_TEST_FAULT", "poison:4b_poison.pgm")];
    let report = prepare(&input, &out, &args, &fault);
    assert_eq!(report["tasks"], 3, "{report}");
    assert_eq!(report["tasks_isolated"], 1, "{report}");
    let failed = report["failed_images"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    let failed = failed[0].as_str().unwrap();
    assert!(failed.starts_with(poison), "{failed}");
    assert!(failed.contains("SIGABRT"), "{failed}");
    assert_eq!(report["outcomes"]["failed"], 1, "{report}");
    assert_eq!(report["outcomes"]["ok"], inputs - 1, "{report}");

    let m = Manifest::load(out.path()).unwrap();
    assert_eq!(m.records.len(), inputs, "one record per input");
    assert_eq!(m.job.tasks_isolated, 1);
    for r in &m.records {
        if r.source == poison {
            assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
            let reason = r.reason.as_deref().unwrap();
            assert!(reason.contains("each of the 2 times"), "{reason}");
            assert!(reason.contains("SIGABRT"), "{reason}");
            assert!(r.sample.is_none() && r.shard.is_none(), "{r:?}");
        } else {
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
            assert!(r.sample.is_some(), "{r:?}");
        }
    }
    // The poison photo's three task-mates are in their task's shard like any others.
    let mut expected: Vec<String> = m
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .map(|r| r.source.clone())
        .collect();
    expected.sort();
    assert_eq!(stored_sources(out.path(), &m), expected);
    let task1 = m
        .shards
        .iter()
        .find(|s| s.path.ends_with("00001.tar"))
        .unwrap();
    assert_eq!(task1.samples, 3);
    // The one-image shards were folded into it and removed.
    let images = out.path().join("jobs/poison/results/00001/images");
    for entry in std::fs::read_dir(&images).unwrap() {
        assert!(!entry.unwrap().path().join("shard.tar").exists());
    }

    // Resume: the isolated task is finished, so a rerun redoes nothing and agrees.
    let again = prepare(&input, &out, &args, &fault);
    assert_eq!(again["tasks_reused"], 3, "{again}");
    assert_eq!(again["attempts"], 0, "{again}");
    assert_eq!(again["tasks_isolated"], 1, "{again}");
    let m2 = Manifest::load(out.path()).unwrap();
    assert_eq!(m2.records, m.records);
    assert_eq!(m2.shards, m.shards);
}

#[test]
fn an_8_gb_file_is_too_large_without_being_read() {
    let input = Dir::new();
    input.copy_orl("s1", 3, "orl s1");
    // Sparse: 8 GiB long, no disk blocks. Reading it would take 8 GiB of memory.
    let huge = input.join("orl s1/huge.jpg");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let out = Dir::new();
    let report = prepare(&input, &out, &["--workers", "1", "--task-size", "2"], &[]);
    let m = Manifest::load(out.path()).unwrap();
    assert_eq!(m.records.len(), 4);
    let r = m
        .records
        .iter()
        .find(|r| r.source == "orl s1/huge.jpg")
        .unwrap();
    assert_eq!(r.outcome, Outcome::TooLarge, "{r:?}");
    let reason = r.reason.as_deref().unwrap();
    assert!(reason.contains("8589934592 bytes"), "{reason}");
    assert!(reason.contains("without reading"), "{reason}");
    assert!(r.sha256.is_none(), "the bytes were never hashed: {r:?}");
    assert_eq!(m.outcome_counts()[&Outcome::Ok], 3);
    // The worker holds the networks and a few photos, nowhere near 8 GiB.
    let peak = report["worker_peak_rss_mib"].as_f64().unwrap();
    assert!(peak < 2048.0, "worker peak RSS {peak} MiB");
    eprintln!("worker peak RSS with an 8 GiB input listed: {peak:.0} MiB");
}

#[test]
fn rerunning_after_a_duplicate_only_shard_was_deleted_gives_the_same_manifest() {
    let input = Dir::new();
    let photo = sample_data().join("people/Joe_Biden/Joe_Biden_0001.jpg");
    for dir in ["A", "B"] {
        input.copy(&photo, format!("{dir}/1.jpg"));
    }
    let out = Dir::new();
    let args = ["--workers", "1", "--task-size", "1", "--job", "dups"];
    let first = prepare(&input, &out, &args, &[]);
    assert_eq!(first["tasks"], 2, "{first}");
    let m1 = Manifest::load(out.path()).unwrap();
    // B/1.jpg is the duplicate; its task's shard held only it and is gone.
    assert_eq!(m1.outcome_counts()[&Outcome::Duplicate], 1);
    assert_eq!(m1.outcome_counts()[&Outcome::Ok], 1);
    assert!(!out.path().join("shards/dups/00001.tar").exists());
    assert_eq!(m1.shards.len(), 1);

    let second = prepare(&input, &out, &args, &[]);
    assert_eq!(second["tasks_reused"], 2, "{second}");
    let m2 = Manifest::load(out.path()).unwrap();
    assert_eq!(m2.records, m1.records);
    assert_eq!(m2.shards, m1.shards);
    assert_eq!(m2.identities, m1.identities);
    assert_eq!(stored_sources(out.path(), &m2), ["A/1.jpg"]);
}
