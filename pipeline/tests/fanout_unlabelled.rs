//! The prepare fan-out on an unlabelled photo pile with every face kept
//! (`Layout::Unlabelled` + `SeveralFaces::All`), through the real client and the real worker
//! on committed photos: nested folders and hidden files, a two-face photo giving two samples
//! that its record lists, a copy of it in another task removed as a duplicate, resume, a retried task that had already written its shard, and
//! the per-image fallback after every attempt at a task died. The worker runs in process
//! (the executor calls `run_task`), so no `facepipe` binary is needed; the weights are.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facepipe_pipeline::dataset::layout::{Layout, UNLABELLED_IDENTITY};
use facepipe_pipeline::dataset::shards::read_all;
use facepipe_pipeline::dataset::{Manifest, Outcome, Record, Sample};
use facepipe_pipeline::fanout::protocol::status_key;
use facepipe_pipeline::fanout::{
    prepare, run_task, EngineCache, Executor, ModelSource, PrepareConfig, PrepareReport,
    SeveralFaces, WorkerRequest,
};
use facepipe_pipeline::storage::{BoxFuture, Location};
use facepipe_pipeline::test_support::{require, Component};
use facepipe_pipeline::{Error, FoundBy, ModelDir};

const GROUP: &str = "2019/party night/obama_and_biden.jpg";
const SOLO: &str = "solo/Anthony_Hopkins_0001.jpg";
const NOTES: &str = "notes.txt";
/// The group photo again, in another task: a duplicate whose two faces the merge removes.
const COPY: &str = "zz/copy of obama_and_biden.jpg";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/serving")
        .join(name)
}

/// A pile: the two-face photo two folders deep, a one-face photo, a stray text file at the
/// root, a copy of the group photo, and hidden things that are not inputs (a hidden file, a
/// hidden folder's photo).
fn pile() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let put = |key: &str, from: Option<&str>| {
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match from {
            Some(name) => std::fs::copy(fixture(name), path).map(|_| ()).unwrap(),
            None => std::fs::write(path, b"not a photo").unwrap(),
        }
    };
    put(GROUP, Some("obama_and_biden.jpg"));
    put(SOLO, Some("Anthony_Hopkins_0001.jpg"));
    put(NOTES, None);
    put(COPY, Some("obama_and_biden.jpg"));
    put(".DS_Store", None);
    put("2019/.thumbnails/obama.jpg", Some("Barack_Obama_0005.jpg"));
    dir
}

/// How the in-process "workers" behave.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every attempt runs the real worker.
    Real,
    /// The first attempt of each task runs the real worker (shard written), then "dies"
    /// before its status counts: the status is removed and the executor reports a crash.
    DiesAfterWritingOnce,
    /// A whole task dies on every attempt; its images run alone do the real work.
    WholeTaskDies,
}

struct InProcess {
    engines: EngineCache,
    mode: Mode,
    output: PathBuf,
    /// `(task, image, attempt)` of every invocation.
    calls: Mutex<Vec<(u32, Option<u32>, u32)>>,
}

impl Executor for InProcess {
    fn name(&self) -> &'static str {
        "local"
    }

    fn needs_remote_models(&self) -> bool {
        false
    }

    fn invoke<'a>(&'a self, request: &'a WorkerRequest, _timeout: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((request.task, request.image, request.attempt));
            let died = || {
                Err(Error::Worker(
                    "the worker exited with signal 6 (SIGABRT)".into(),
                ))
            };
            if self.mode == Mode::WholeTaskDies && request.image.is_none() {
                return died();
            }
            run_task(request, &self.engines, "in-process").await?;
            if self.mode == Mode::DiesAfterWritingOnce && request.attempt == 1 {
                let status = self.output.join(status_key(&request.job, request.task));
                std::fs::remove_file(status).unwrap();
                return died();
            }
            Ok(())
        })
    }
}

fn config(input: &Path, output: &Path, models: &ModelDir) -> PrepareConfig {
    let mut config = PrepareConfig::new(
        Location::Local(input.to_path_buf()),
        Location::Local(output.to_path_buf()),
    );
    config.layout = Layout::Unlabelled;
    config.several_faces = SeveralFaces::All;
    config.task_size = 2;
    config.workers = 1;
    config.max_attempts = 2;
    config.models = Some(models.clone());
    config
}

async fn run(
    config: &PrepareConfig,
    models: &ModelDir,
    mode: Mode,
) -> (PrepareReport, Manifest, Vec<(u32, Option<u32>, u32)>) {
    let executor = Arc::new(InProcess {
        engines: EngineCache::new(ModelSource::Local(models.clone())),
        mode,
        output: match &config.output {
            Location::Local(p) => p.clone(),
            other => panic!("local output expected, got {other}"),
        },
        calls: Mutex::new(Vec::new()),
    });
    let (report, manifest) = prepare(config, Arc::clone(&executor) as Arc<dyn Executor>, None)
        .await
        .unwrap();
    let calls = executor.calls.lock().unwrap().clone();
    (report, manifest, calls)
}

fn record<'a>(m: &'a Manifest, source: &str) -> &'a Record {
    m.records.iter().find(|r| r.source == source).unwrap()
}

/// Every sample of the dataset at `dir`, in shard order.
fn samples(dir: &Path, m: &Manifest) -> Vec<Sample> {
    let mut out = Vec::new();
    for shard in &m.shards {
        let bytes = std::fs::read(dir.join(&shard.path)).unwrap();
        let got = read_all(&bytes, &shard.path).unwrap();
        assert_eq!(got.len() as u32, shard.samples, "{}", shard.path);
        out.extend(got);
    }
    out
}

/// What every run of the pile must give, whatever path the work took: one record per
/// visible input, every face of the group photo its own sample, listed by its record, each
/// sample carrying its face's box, landmarks, score and detection path.
fn check_dataset(dir: &Path, m: &Manifest, report: &PrepareReport) {
    let sources: Vec<&str> = m.records.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(
        sources,
        [GROUP, NOTES, SOLO, COPY],
        "hidden files are not inputs"
    );
    assert!(m.records.iter().all(|r| r.identity == UNLABELLED_IDENTITY));

    let group = record(m, GROUP);
    assert_eq!(group.outcome, Outcome::Ok, "{group:?}");
    assert_eq!(group.faces_found, Some(2), "{group:?}");
    let keys: Vec<&str> = group.sample_keys().collect();
    assert_eq!(keys.len(), 2, "{group:?}");
    assert_ne!(keys[0], keys[1]);
    assert_eq!(
        group.sample.as_deref(),
        Some(keys[0]),
        "sample is the first face"
    );
    assert_eq!(group.more_samples, [keys[1]]);
    assert!(
        keys[0].ends_with("_f0") && keys[1].ends_with("_f1"),
        "{keys:?}"
    );
    assert!(
        keys[0].contains("2019_party_night_obama_and_biden"),
        "{keys:?}"
    );
    assert_eq!(group.found_by, Some(FoundBy::Detector));
    assert!(group.reason.is_none(), "{group:?}");
    assert_eq!(record(m, NOTES).outcome, Outcome::Unreadable);
    let copy = record(m, COPY);
    assert_eq!(copy.outcome, Outcome::Duplicate, "{copy:?}");
    assert_eq!(copy.sample_count(), 0, "{copy:?}");
    assert!(
        copy.shard.is_none() && copy.faces_found.is_none(),
        "{copy:?}"
    );

    let stored = samples(dir, m);
    let stored_keys: BTreeSet<&str> = stored.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(stored_keys.len(), stored.len(), "sample keys are unique");
    let listed: BTreeSet<&str> = m.records.iter().flat_map(Record::sample_keys).collect();
    assert_eq!(
        stored_keys, listed,
        "the records list exactly the stored samples"
    );
    for r in &m.records {
        if r.outcome == Outcome::Ok {
            assert_eq!(
                r.faces_found,
                Some(r.sample_count()),
                "every face kept: {r:?}"
            );
        }
    }

    let faces: Vec<&Sample> = keys
        .iter()
        .map(|k| stored.iter().find(|s| s.key == *k).unwrap())
        .collect();
    for s in &faces {
        assert_eq!(s.meta.source, GROUP);
        assert_eq!((s.meta.identity.as_str(), s.meta.label), ("", 0));
        assert_eq!(s.meta.landmarks.len(), 68);
        assert!(s.meta.score >= 0.5, "{}", s.meta.score);
        assert_eq!(s.meta.found_by, FoundBy::Detector);
        assert_eq!(s.image().unwrap().dimensions(), (150, 150));
    }
    // Two different faces, the larger box first.
    assert!(faces[0].meta.bbox.area() >= faces[1].meta.bbox.area());
    assert_ne!(faces[0].meta.bbox, faces[1].meta.bbox);
    assert_ne!(faces[0].jpeg, faces[1].jpeg);

    assert_eq!(m.identities.len(), 1);
    let id = &m.identities[0];
    assert_eq!((id.name.as_str(), id.label, id.images), ("", 0, 4));
    assert_eq!(id.faces as usize, stored.len());
    assert_eq!(report.faces as usize, stored.len());
    assert_eq!(m.sample_count() as usize, stored.len());
}

fn weights() -> Option<ModelDir> {
    require(Component::ModelWeights).then(|| ModelDir::locate(None).unwrap())
}

#[tokio::test]
async fn every_face_of_an_unlabelled_pile_is_stored_and_a_rerun_resumes() {
    let Some(models) = weights() else { return };
    let input = pile();
    let out = tempfile::tempdir().unwrap();
    let config = config(input.path(), out.path(), &models);
    let (report, m, calls) = run(&config, &models, Mode::Real).await;
    check_dataset(out.path(), &m, &report);
    assert_eq!(report.tasks, 2);
    assert_eq!(calls.len(), 2, "one attempt per task: {calls:?}");

    // The job spec records the layout; the rerun finds the same job and redoes nothing.
    let job: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join(format!("jobs/{}/job.json", report.job))).unwrap(),
    )
    .unwrap();
    assert_eq!(job["spec"]["layout"], "unlabelled");
    assert_eq!(job["spec"]["several_faces"], "all");
    let (again, m2, calls) = run(&config, &models, Mode::Real).await;
    assert_eq!(again.job, report.job);
    assert_eq!(again.tasks_reused, 2);
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(m2.records, m.records);
    check_dataset(out.path(), &m2, &again);

    // The same photos read as a labelled collection are a different job (other inputs,
    // other keys), and keeping all faces of it is refused before anything runs.
    let labelled_out = tempfile::tempdir().unwrap();
    let mut labelled = config.clone();
    labelled.output = Location::Local(labelled_out.path().to_path_buf());
    labelled.layout = Layout::Labelled;
    let executor = Arc::new(InProcess {
        engines: EngineCache::new(ModelSource::Local(models.clone())),
        mode: Mode::Real,
        output: labelled_out.path().to_path_buf(),
        calls: Mutex::new(Vec::new()),
    });
    let e = prepare(&labelled, Arc::clone(&executor) as Arc<dyn Executor>, None)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(e.is_bad_input(), "{msg}");
    assert!(
        msg.contains("unlabelled layout") && msg.contains("strangers"),
        "{msg}"
    );
    assert!(executor.calls.lock().unwrap().is_empty());
    assert!(
        !labelled_out.path().join("jobs").exists(),
        "nothing written"
    );

    labelled.several_faces = SeveralFaces::Largest;
    let (lab_report, lab, _) = run(&labelled, &models, Mode::Real).await;
    assert_ne!(lab_report.job, report.job);
    let sources: Vec<&str> = lab.records.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, [SOLO, COPY], "labelled: only Identity/photo files");
    assert!(lab.records.iter().all(|r| r.more_samples.is_empty()));
}

#[tokio::test]
async fn a_retried_task_and_images_run_alone_store_the_same_faces() {
    let Some(models) = weights() else { return };
    let input = pile();
    let reference_out = tempfile::tempdir().unwrap();
    let (_, reference, _) = run(
        &config(input.path(), reference_out.path(), &models),
        &models,
        Mode::Real,
    )
    .await;

    // The first attempt wrote its shard, then died: the retry rewrites the same keys, and
    // no face is stored twice.
    let out = tempfile::tempdir().unwrap();
    let (report, m, calls) = run(
        &config(input.path(), out.path(), &models),
        &models,
        Mode::DiesAfterWritingOnce,
    )
    .await;
    assert_eq!(calls.len(), 4, "two attempts per task: {calls:?}");
    assert_eq!(report.retries, 2);
    check_dataset(out.path(), &m, &report);
    assert_eq!(m.records, reference.records);

    // Every attempt at a whole task died: its images run one at a time, and their shards
    // (two samples for the group photo) are folded into the task's.
    let out = tempfile::tempdir().unwrap();
    let (report, m, calls) = run(
        &config(input.path(), out.path(), &models),
        &models,
        Mode::WholeTaskDies,
    )
    .await;
    assert_eq!(report.tasks_isolated, 2);
    let alone: Vec<(u32, u32)> = calls
        .iter()
        .filter_map(|(t, i, _)| i.map(|i| (*t, i)))
        .collect();
    assert_eq!(alone, [(0, 0), (0, 1), (1, 0), (1, 1)], "{calls:?}");
    check_dataset(out.path(), &m, &report);
    assert_eq!(m.records, reference.records);
    assert!(
        m.job.tasks_isolated == 2 && report.failed_images.is_empty(),
        "{report:?}"
    );
}
