//! End-to-end tests of `facepipe prepare`: the real binary on real photos, through the three
//! deployments (local workers + local folder, local workers + S3, Lambda workers + S3), with
//! SeaweedFS and the `cargo lambda watch` emulator started by the tests themselves, plus the
//! faults the fan-out must survive (crashed and hung workers, corrupt inputs, bad credentials,
//! a missing bucket, an interrupted client).
//!
//! Needs `cargo build -p facepipe` and, for the Lambda test, the `weed` and `cargo-lambda`
//! binaries on PATH (`. scripts/env.sh`). Tests that need a missing tool say so and skip, or
//! fail when `CI` is set (`facepipe_pipeline::test_support::require`).

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facepipe_pipeline::dataset::shards::read_all;
use facepipe_pipeline::dataset::{Manifest, Outcome, Sample, MANIFEST_FILE};
use facepipe_pipeline::storage::seaweed::{
    SeaweedFs, ACCESS_KEY_ID as KEY_ID, SECRET_ACCESS_KEY as SECRET,
};
use facepipe_pipeline::storage::{self, Location, StorageOptions};
use facepipe_pipeline::test_support::{require, Component};
use facepipe_tests::{
    files_under, free_port, sample_data, wait_for_port, workspace_root, Dir, ProcessGroup,
    TestCommand,
};
use serde_json::Value;

const BUCKET: &str = "facepipe-e2e";

/// The Lambda worker under `cargo lambda watch`.
struct LambdaEmulator {
    port: u16,
    _group: ProcessGroup,
}

impl LambdaEmulator {
    fn start(concurrency: usize) -> LambdaEmulator {
        let port = free_port();
        let mut cmd = Command::new("cargo");
        cmd.current_dir(workspace_root().join("pipeline"))
            .args([
                "lambda",
                "watch",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .args([
                "--features",
                "lambda",
                "--bin",
                "facepipe-lambda-worker",
                "--ignore-changes",
            ])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ProcessGroup::spawn(cmd, "cargo lambda watch");
        wait_for_port(port, "cargo lambda watch", Duration::from_secs(120));
        LambdaEmulator {
            port,
            _group: group,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `facepipe ARGS…` in the AWS region the S3 tests use.
fn facepipe(args: &[&str]) -> TestCommand {
    let mut cmd = TestCommand::new();
    cmd.args(args).env("AWS_REGION", "us-east-1");
    cmd
}

/// Inputs for the comparison: all of people/ (70 photos, one byte-identical pair), three ORL
/// subjects (30 tight greyscale crops) under names with spaces and Unicode, and three bad
/// files (a truncated JPEG, text named .jpg, a PGM declaring 100 megapixels).
fn build_input(input: &Dir) -> usize {
    let data = sample_data();
    for entry in std::fs::read_dir(data.join("people")).unwrap() {
        let entry = entry.unwrap();
        input.copy_dir(entry.path(), entry.file_name());
    }
    for (s, name) in [("s1", "ORL sujet 1"), ("s2", "Zoë Ørl 2"), ("s3", "ORL s3")] {
        input.copy_dir(data.join("orl").join(s), name);
    }
    // The first 600 bytes of a real JPEG: a truncated image.
    let jpeg = std::fs::read(data.join("people/Joe_Biden/Joe_Biden_0001.jpg")).unwrap();
    input.create("Bad Files/truncated.jpg", &jpeg[..600]);
    input.create("Bad Files/notes.jpg", b"this is not an image at all\n");
    // A greyscale image whose header declares 100 megapixels: refused before decoding.
    let mut huge = b"P5\n10000 10000\n255\n".to_vec();
    huge.extend_from_slice(&[128u8; 4096]);
    input.create("Bad Files/huge.pgm", huge);
    // An LFW pairs file at the root is not an input.
    input.create("pairs.txt", "1\t1\n");
    files_under(input.path()).len() - 1
}

/// Load a manifest and every sample, from a folder or S3.
fn load_dataset(location: &str, options: &StorageOptions) -> (Manifest, BTreeMap<String, Sample>) {
    let rt = runtime();
    rt.block_on(async {
        let store = storage::open(&Location::parse(location).unwrap(), options)
            .await
            .unwrap();
        let manifest =
            Manifest::from_slice(&store.get(MANIFEST_FILE).await.unwrap(), location).unwrap();
        let mut samples = BTreeMap::new();
        for shard in &manifest.shards {
            let bytes = store.get(&shard.path).await.unwrap();
            let got = read_all(&bytes, &shard.path).unwrap();
            assert_eq!(got.len() as u32, shard.samples, "{}", shard.path);
            for s in got {
                samples.insert(s.meta.source.clone(), s);
            }
        }
        (manifest, samples)
    })
}

fn outcomes(m: &Manifest) -> BTreeMap<String, Outcome> {
    m.records
        .iter()
        .map(|r| (r.source.clone(), r.outcome))
        .collect()
}

fn upload_dir(root: &Path, location: &str, options: &StorageOptions) {
    runtime().block_on(async {
        let store = storage::open_str(location, options).await.unwrap();
        for path in files_under(root) {
            let key = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            store
                .put(&key, std::fs::read(&path).unwrap().into())
                .await
                .unwrap();
        }
    });
}

/// Checks that hold for any correct run over `build_input`'s photos.
fn check_dataset(m: &Manifest, samples: &BTreeMap<String, Sample>, inputs: usize) {
    assert_eq!(m.records.len(), inputs, "one record per input");
    let counts = m.outcome_counts();
    assert_eq!(counts[&Outcome::Duplicate], 1, "{counts:?}");
    assert_eq!(counts[&Outcome::Unreadable], 2, "{counts:?}");
    assert_eq!(counts[&Outcome::TooLarge], 1, "{counts:?}");
    let dup = m
        .records
        .iter()
        .find(|r| r.outcome == Outcome::Duplicate)
        .unwrap();
    assert!(dup.source.starts_with("John_Shimkus/"), "{dup:?}");
    for r in m
        .records
        .iter()
        .filter(|r| r.source.starts_with("Bad Files/"))
    {
        let expected = if r.source.ends_with("huge.pgm") {
            Outcome::TooLarge
        } else {
            Outcome::Unreadable
        };
        assert_eq!(r.outcome, expected, "{r:?}");
        assert!(r.reason.as_deref().is_some_and(|s| !s.is_empty()));
    }
    // Every real face photo yields a face (ORL and the chips through the tight-crop fallback).
    let ok = counts[&Outcome::Ok] as usize;
    assert_eq!(ok, inputs - 4, "{counts:?}");
    assert_eq!(m.sample_count() as usize, ok);
    assert_eq!(samples.len(), ok);
    let names = m.label_names();
    assert!(names.contains(&"Zoë Ørl 2".to_string()));
    for (source, s) in samples {
        assert_eq!(names[s.meta.label as usize], s.meta.identity);
        assert_eq!(&s.meta.source, source);
        assert_eq!(s.meta.landmarks.len(), 68);
        assert_eq!(s.image().unwrap().dimensions(), (150, 150));
    }
    let total_faces: u32 = m.identities.iter().map(|i| i.faces).sum();
    assert_eq!(total_faces as usize, ok);
}

/// Decoded crops agree within JPEG noise; boxes within half a pixel.
fn assert_crops_agree(a: &BTreeMap<String, Sample>, b: &BTreeMap<String, Sample>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (source, sa) in a {
        let sb = &b[source];
        assert_eq!(sa.key, sb.key, "{what}: {source}");
        assert_eq!(sa.meta.found_by, sb.meta.found_by, "{what}: {source}");
        let (ba, bb) = (sa.meta.bbox, sb.meta.bbox);
        for (x, y) in [
            (ba.x, bb.x),
            (ba.y, bb.y),
            (ba.width, bb.width),
            (ba.height, bb.height),
        ] {
            assert!((x - y).abs() < 0.5, "{what}: {source}: {ba:?} vs {bb:?}");
        }
        let (ia, ib) = (sa.image().unwrap(), sb.image().unwrap());
        let diff: f64 = ia
            .as_raw()
            .iter()
            .zip(ib.as_raw())
            .map(|(p, q)| f64::from(p.abs_diff(*q)))
            .sum::<f64>()
            / ia.as_raw().len() as f64;
        assert!(diff < 1.0, "{what}: {source}: mean pixel difference {diff}");
    }
}

#[test]
fn three_deployments_agree_on_people_and_orl() {
    if !(require(Component::SeaweedFs) && require(Component::LambdaEmulator)) {
        return;
    }
    let input = Dir::new();
    let inputs = build_input(&input);
    let out = Dir::new();
    let local_out = out.join("local");

    // 1. Local workers, local folders.
    let r1 = facepipe(&[
        "prepare",
        input.path().to_str().unwrap(),
        local_out.to_str().unwrap(),
        "--workers",
        "2",
        "--json",
    ])
    .json();
    assert_eq!(r1["images"], inputs);
    let (m1, s1) = load_dataset(local_out.to_str().unwrap(), &StorageOptions::default());
    check_dataset(&m1, &s1, inputs);

    // 2. Local workers, input and output in S3.
    let weed = SeaweedFs::start(BUCKET).unwrap();
    let opts = weed.options();
    let s3_in = format!("s3://{BUCKET}/input");
    upload_dir(input.path(), &s3_in, &opts);
    let endpoint = weed.endpoint();
    let creds = [
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let s3_out = format!("s3://{BUCKET}/local-workers");
    let r2 = facepipe(&[
        "prepare",
        &s3_in,
        &s3_out,
        "--s3-endpoint",
        &endpoint,
        "--workers",
        "2",
        "--json",
    ])
    .envs(&creds)
    .json();
    assert_eq!(r2["images"], inputs);
    let (m2, s2) = load_dataset(&s3_out, &opts);
    check_dataset(&m2, &s2, inputs);

    // 3. Lambda workers (the emulator), S3.
    let lambda = LambdaEmulator::start(2);
    let lambda_out = format!("s3://{BUCKET}/lambda-workers");
    let r3 = facepipe(&[
        "prepare",
        &s3_in,
        &lambda_out,
        "--s3-endpoint",
        &endpoint,
        "--executor",
        "lambda",
        "--lambda-endpoint",
        &lambda.endpoint(),
        "--workers",
        "2",
        "--json",
    ])
    .envs(&creds)
    .json();
    assert_eq!(r3["executor"], "lambda");
    let (m3, s3) = load_dataset(&lambda_out, &opts);
    check_dataset(&m3, &s3, inputs);
    // The Lambda workers fetched the weights from the output's models/ folder.
    let uploaded = runtime().block_on(async {
        let store = storage::open_str(&format!("{lambda_out}/models"), &opts)
            .await
            .unwrap();
        store.list("").await.unwrap().len()
    });
    assert_eq!(uploaded, 8, "four networks, manifest + weights each");

    // The three agree exactly on outcomes and counts, and on the crops.
    assert_eq!(outcomes(&m1), outcomes(&m2));
    assert_eq!(outcomes(&m1), outcomes(&m3));
    assert_eq!(m1.identities, m2.identities);
    assert_eq!(m1.identities, m3.identities);
    assert_crops_agree(&s1, &s2, "local dir vs local+S3");
    assert_crops_agree(&s1, &s3, "local dir vs lambda+S3");
}

/// ORL subjects s1..s3: 30 small photos, quick even in a debug build.
fn small_input(input: &Dir) -> usize {
    for s in ["s1", "s2", "s3"] {
        input.copy_dir(sample_data().join("orl").join(s), format!("orl {s}"));
    }
    30
}

/// The `worker` field of every task status of a local run: `local:<pid>` of the process
/// that ran the task.
fn status_workers(out: &Path) -> Vec<String> {
    files_under(&out.join("jobs"))
        .into_iter()
        .filter(|p| p.ends_with("status.json"))
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            v["worker"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Whether a process is still running (a zombie waiting to be reaped counts as ended).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until none of the processes `pids` runs; fails after `timeout` saying which
/// worker outlived `what`.
fn assert_all_end(pids: &[impl AsRef<str>], timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    for pid in pids.iter().map(AsRef::as_ref) {
        while running(pid) {
            assert!(Instant::now() < deadline, "worker {pid} outlived {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The pids of the running children of process `parent`.
fn children_of(parent: u32) -> Vec<String> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After "pid (name)": state, then the parent's pid.
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            (ppid == parent && running(&pid)).then_some(pid)
        })
        .collect()
}

#[test]
fn crashed_and_hung_workers_are_retried_and_nothing_is_lost() {
    let input = Dir::new();
    let n = small_input(&input);
    // The faulty attempt dies in a warm worker (crash: SIGABRT; hang: killed at the timeout;
    // fail: answers "failed" and stays warm); the retry runs in a healthy one.
    for (fault, timeout, says) in [
        ("crash:1", "600", "SIGABRT"),
        ("hang:2", "20", "ran longer than 20 s"),
        ("fail:0", "600", "failing on purpose"),
    ] {
        let out = Dir::new();
        let report = facepipe(&[
            "prepare",
            input.path().to_str().unwrap(),
            out.path().to_str().unwrap(),
            "--workers",
            "2",
            "--task-size",
            "5",
            "--task-timeout",
            timeout,
            "--json",
        ])
        .env("FACEPIPE_TEST_FAULT", fault)
        .json();
        assert_eq!(report["tasks"], 6, "{fault}");
        assert_eq!(report["retries"], 1, "{fault}: {report}");
        assert_eq!(report["images"], n);
        let m = Manifest::load(out.path()).unwrap();
        assert_eq!(m.records.len(), n, "{fault}");
        assert_eq!(m.outcome_counts()[&Outcome::Ok] as usize, n, "{fault}");
        assert_eq!(m.sample_count() as usize, n, "{fault}");
        let reasons = report["retry_reasons"].to_string();
        let task = fault.split(':').nth(1).unwrap();
        assert!(
            reasons.contains(&format!("task {task}")),
            "{fault}: {reasons}"
        );
        assert!(reasons.contains(says), "{fault}: {reasons}");

        // The warm path ran: 6 tasks on at most 2 warm workers plus 1 started in place of
        // a killed one, so workers ran several tasks each.
        let workers = status_workers(out.path());
        assert_eq!(workers.len(), 6, "{fault}: {workers:?}");
        let distinct: std::collections::BTreeSet<&String> = workers.iter().collect();
        let limit = if fault.starts_with("fail") { 2 } else { 3 };
        assert!(
            distinct.len() <= limit,
            "{fault}: {} processes for 6 tasks: {workers:?}",
            distinct.len()
        );
        // The warm workers end with the job.
        let pids: Vec<&str> = distinct
            .iter()
            .map(|w| w.strip_prefix("local:").unwrap())
            .collect();
        assert_all_end(&pids, Duration::from_secs(10), &format!("{fault}: the job"));
    }
}

#[test]
fn wrong_credentials_and_missing_bucket_give_one_clear_error() {
    if !require(Component::SeaweedFs) {
        return;
    }
    let weed = SeaweedFs::start(BUCKET).unwrap();
    let endpoint = weed.endpoint();
    let input = Dir::new();
    small_input(&input);
    let input = input.path().to_str().unwrap();
    let cases = [
        (
            format!("s3://{BUCKET}/out"),
            "not-the-secret",
            "credentials",
        ),
        (
            "s3://no-such-bucket/out".to_string(),
            SECRET,
            "does not exist",
        ),
    ];
    for (output, secret, expect) in cases {
        let out = facepipe(&["prepare", input, &output, "--s3-endpoint", &endpoint])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .assert_err();
        let stderr = &out.stderr;
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expect), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_interrupted_job_resumes_without_redoing_finished_tasks() {
    let input = Dir::new();
    let n = small_input(&input);
    let out = Dir::new();
    let args = [
        "prepare",
        input.path().to_str().unwrap(),
        out.path().to_str().unwrap(),
        "--workers",
        "1",
        "--task-size",
        "5",
        "--job",
        "resume-test",
        "--json",
    ];
    let mut client = TestCommand::new();
    client
        .args(args)
        .cmd_mut()
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut client = client.spawn();
    let results = out.path().join("jobs/resume-test/results");
    let statuses = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path().join("status.json"))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // Kill the client once two tasks are finished and before the job is.
    let deadline = Instant::now() + Duration::from_secs(600);
    while statuses(&results).len() < 2 {
        assert!(Instant::now() < deadline, "no task finished in time");
        assert!(client.try_wait().unwrap().is_none(), "client ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let workers = children_of(client.id());
    assert!(!workers.is_empty(), "the client has no worker processes");
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(!out.path().join(MANIFEST_FILE).exists());
    // A warm worker that was mid-task when the client died finishes that task, then sees its
    // stdin close and exits: it never lingers.
    assert_all_end(&workers, Duration::from_secs(120), "its client");
    let before: BTreeMap<PathBuf, String> = statuses(&results)
        .into_iter()
        .map(|p| {
            let s = std::fs::read_to_string(&p).unwrap();
            (p, s)
        })
        .collect();
    let finished = before.len();
    assert!((2..6).contains(&finished), "{finished} tasks finished");

    let report = facepipe(&args).json();
    assert_eq!(report["tasks_reused"], finished);
    assert_eq!(report["attempts"], 6 - finished);
    // The finished tasks' status objects were not rewritten.
    for (p, s) in &before {
        assert_eq!(&std::fs::read_to_string(p).unwrap(), s, "{}", p.display());
    }
    let m = Manifest::load(out.path()).unwrap();
    assert_eq!(m.records.len(), n);
    assert_eq!(m.sample_count() as usize, n);
    assert_eq!(m.job.tasks_reused as usize, finished);

    // A third run redoes nothing at all.
    let again = facepipe(&args).json();
    assert_eq!(again["tasks_reused"], 6);
    assert_eq!(again["attempts"], 0);
}
