//! The prepare client: list → partition → describe tasks → invoke workers → wait for their
//! status objects → retry → merge → manifest and report. See [`super::protocol`] for the
//! objects it reads and writes.
//!
//! [`prepare`] runs these steps in order, one submodule each:
//! - `plan`: list the input, derive the job id, split the images into tasks, record the job.
//! - `resume`: write the task descriptors; find the tasks an earlier run already finished.
//! - `weights`: tell the workers where the weights are (uploading them for remote workers).
//! - `dispatch`: invoke the workers N at a time with retries, then collect the outcomes.
//! - `isolate`: run a task's images one at a time after every attempt at it died.
//! - `merge`: build the manifest from every task's status, removing duplicates.
//! - `report`: the [`PrepareReport`] and the job summary stored in the manifest.
//!
//! The client draws and prints nothing: it tells the caller how far a job is through a
//! callback taking a [`PrepareProgress`], and returns the report for the caller to show.

mod dispatch;
mod isolate;
mod merge;
mod plan;
mod report;
mod resume;
mod weights;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::executor::Executor;
use super::protocol::{SeveralFaces, TaskStatus};
use crate::align::Alignment;
use crate::dataset::layout::Layout;
use crate::dataset::{Manifest, MANIFEST_FILE};
use crate::detect::DetectorKind;
use crate::error::{Error, Result};
use crate::models::ModelDir;
use crate::storage::{self, Location, Storage, StorageOptions};

pub use report::{percentile, PrepareReport};

/// Default images per task: see `scripts/bench/prepare.sh` for the sweep behind it.
pub const DEFAULT_TASK_SIZE: u32 = 16;
/// Default attempts per task before its images are run one at a time.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Attempts for an image run alone: one retry, so a worker lost to something else (the OOM
/// killer picking the largest process, say) does not make a good image `failed`.
pub const IMAGE_ALONE_ATTEMPTS: u32 = 2;

/// Everything `facepipe prepare` needs to know.
#[derive(Clone, Debug)]
pub struct PrepareConfig {
    pub input: Location,
    pub output: Location,
    pub storage: StorageOptions,
    /// Workers running at once (the Lambda concurrency cap for `lambda`).
    pub workers: usize,
    pub task_size: u32,
    /// Job id; default: derived from the input listing and the options, so rerunning the
    /// same command resumes the same job.
    pub job: Option<String>,
    /// How the input is laid out: one folder per person (default), or an unlabelled pile.
    pub layout: Layout,
    pub detector: DetectorKind,
    pub alignment: Alignment,
    /// [`SeveralFaces::All`] needs [`Layout::Unlabelled`]: [`prepare`] refuses it otherwise.
    pub several_faces: SeveralFaces,
    pub min_images_per_identity: u32,
    pub max_attempts: u32,
    /// A worker running longer than this is killed (local) or abandoned (Lambda) and retried.
    pub task_timeout: Duration,
    /// The local weights: passed to local workers, uploaded for remote ones.
    pub models: Option<ModelDir>,
    /// Where remote workers fetch the weights (default `<output>/models`).
    pub models_location: Option<Location>,
}

impl PrepareConfig {
    pub fn new(input: Location, output: Location) -> Self {
        PrepareConfig {
            input,
            output,
            storage: StorageOptions::default(),
            workers: 2,
            task_size: DEFAULT_TASK_SIZE,
            job: None,
            layout: Layout::Labelled,
            detector: DetectorKind::Ssd,
            alignment: Alignment::DlibChip,
            several_faces: SeveralFaces::Largest,
            min_images_per_identity: 1,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            task_timeout: Duration::from_secs(900),
            models: None,
            models_location: None,
        }
    }
}

/// How far a job is: given to the progress callback of [`prepare`] once the tasks to run are
/// known, and again each time one of them finishes or fails for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrepareProgress {
    /// Tasks finished, those reused from an earlier run included.
    pub tasks_done: u32,
    /// Tasks whose every attempt failed: the job ends with an error once the others ran.
    pub tasks_failed: u32,
    /// Tasks in the job.
    pub tasks: u32,
    /// Images in the finished tasks.
    pub images_done: u32,
    /// Images in the job.
    pub images: u32,
}

/// Run a whole prepare job; `progress`, when given, hears how far it is.
pub async fn prepare(
    config: &PrepareConfig,
    executor: Arc<dyn Executor>,
    progress: Option<&(dyn Fn(&PrepareProgress) + Sync)>,
) -> Result<(PrepareReport, Manifest)> {
    let started = Instant::now();
    check(config)?;
    let stores = Stores::open(config).await?;
    let output = stores.output.as_ref();

    let plan = plan::plan_job(stores.input.as_ref(), &stores.input_location, config).await?;
    plan::write_job(output, &plan).await?;
    let mut resumed = resume::resume(output, &plan).await?;
    let tasks_reused = resumed.tasks_done();
    let models = weights::weights_for_workers(
        config,
        executor.as_ref(),
        &stores.output_location,
        !resumed.pending.is_empty(),
    )
    .await?;

    let progress = dispatch::Progress::start(
        PrepareProgress {
            tasks_done: tasks_reused,
            tasks_failed: 0,
            tasks: plan.task_count(),
            images_done: resumed.done.keys().map(|&t| plan.task_images(t)).sum(),
            images: plan.image_count(),
        },
        progress,
    );
    let dispatch = dispatch::Dispatch {
        executor: executor.as_ref(),
        output,
        output_location: stores.output_location.to_string(),
        config,
        plan: &plan,
        models,
    };
    let runs = dispatch.run_all(&resumed.pending, &progress).await;
    let outcomes = dispatch::collect(runs, &mut resumed.done, &plan, config)?;

    let mut manifest = merge::merge(
        output,
        &stores.input_location,
        config,
        &plan.raw,
        &resumed.done,
    )
    .await?;
    let tasks_isolated =
        u32::try_from(resumed.done.values().filter(|s| s.isolated).count()).unwrap_or(u32::MAX);
    let report = report::Finished {
        config,
        plan: &plan,
        executor: executor.name(),
        output: &stores.output_location,
        tasks_reused,
        tasks_isolated,
        outcomes,
        wall_s: started.elapsed().as_secs_f64(),
    }
    .report(&manifest);
    // The manifest records the timing too, so a dataset says how it was made.
    manifest.job = report::job_summary(&report);
    output
        .put(MANIFEST_FILE, Bytes::from(manifest.to_json()?))
        .await?;
    Ok((report, manifest))
}

/// Options that cannot make a sound job: counts of zero would never finish (or never
/// start) one, and keeping every face of a labelled photo would name strangers.
fn check(config: &PrepareConfig) -> Result<()> {
    if config.task_size == 0 || config.workers == 0 || config.max_attempts == 0 {
        return Err(Error::Invalid(
            "the task size, the number of workers and the attempts per task must be at least 1"
                .into(),
        ));
    }
    if config.several_faces == SeveralFaces::All && config.layout == Layout::Labelled {
        return Err(Error::Invalid(
            "keeping all faces of a photo (several faces: all) needs the unlabelled layout: in \
             a labelled collection every face of a group photo in a person's folder would be \
             stored under that person's name, strangers included. Use the unlabelled layout \
             to keep every face, or keep the largest face (or skip such photos) of a \
             labelled collection"
                .into(),
        ));
    }
    Ok(())
}

/// The job's input and output storage, both checked to be reachable.
struct Stores {
    input_location: Location,
    output_location: Location,
    input: Arc<dyn Storage>,
    output: Arc<dyn Storage>,
}

impl Stores {
    async fn open(config: &PrepareConfig) -> Result<Self> {
        let input_location = config.input.absolutize()?;
        let output_location = config.output.absolutize()?;
        let input = storage::open(&input_location, &config.storage).await?;
        input.check().await.map_err(|e| context(e, "the input"))?;
        if let Location::Local(dir) = &output_location {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| Error::io(dir, e))?;
        }
        let output = storage::open(&output_location, &config.storage).await?;
        output.check().await.map_err(|e| context(e, "the output"))?;
        Ok(Stores {
            input_location,
            output_location,
            input,
            output,
        })
    }
}

/// Say which store (`the input`, `the output`) a missing folder or bucket is.
fn context(e: Error, what: &str) -> Error {
    match e {
        Error::NotFound(p) => Error::NotFound(format!("{what}: {p}")),
        other => other,
    }
}

/// The status object at `key`, if there is a readable one.
async fn read_status(output: &dyn Storage, key: &str) -> Result<Option<TaskStatus>> {
    match output.get(key).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Outcome, Record};
    use crate::fanout::protocol::{
        image_started_key, task_key, TaskDescriptor, TaskState, WorkerRequest,
    };

    /// How the scripted workers of [`Scripted`] behave.
    #[derive(Clone, Copy, PartialEq)]
    enum Script {
        /// A whole task dies; alone, every image but `*poison*` is done, the poison one
        /// dies after the worker reached it.
        Poison,
        /// Every attempt reports a failure in its status (storage or weights trouble).
        Reports,
        /// Every attempt dies before reaching any image (the worker cannot start).
        NeverStarts,
    }

    /// An executor whose "workers" follow a [`Script`], writing what real workers write,
    /// so the client's retry and isolation decisions can be watched without the networks.
    struct Scripted {
        output: std::path::PathBuf,
        script: Script,
        alone: std::sync::Mutex<Vec<u32>>,
    }

    impl Scripted {
        async fn run(&self, request: &WorkerRequest) -> Result<()> {
            let store = crate::storage::LocalStorage::new(Location::Local(self.output.clone()));
            let task: TaskDescriptor =
                storage::get_json(&store, &task_key(&request.job, request.task)).await?;
            let mut status = TaskStatus {
                job: request.job.clone(),
                task: request.task,
                attempt: request.attempt,
                state: TaskState::Failed,
                error: Some("storage is down".into()),
                worker: "scripted".into(),
                seconds: 0.1,
                engine_load_s: 0.0,
                peak_rss_mib: None,
                records: Vec::new(),
                shard: None,
                isolated: false,
            };
            let died = Err(Error::Worker(
                "the worker exited with signal 6 (SIGABRT)".into(),
            ));
            match (self.script, request.image) {
                (Script::Reports, _) => {}
                (Script::NeverStarts, _) | (Script::Poison, None) => return died,
                (Script::Poison, Some(i)) => {
                    let img = &task.images[i as usize];
                    let started = image_started_key(&request.job, request.task, i);
                    storage::put_json(&store, &started, &i).await?;
                    if img.input.key.contains("poison") {
                        return died;
                    }
                    status.state = TaskState::Done;
                    status.error = None;
                    status.records = vec![Record::without_sample(
                        &img.input.key,
                        &img.input.identity,
                        Outcome::NoFace,
                        "scripted",
                    )];
                }
            }
            storage::put_json(&store, &request.status_key(), &status).await
        }
    }

    impl Executor for Scripted {
        fn name(&self) -> &'static str {
            "local"
        }

        fn needs_remote_models(&self) -> bool {
            false
        }

        fn invoke<'a>(
            &'a self,
            request: &'a WorkerRequest,
            _timeout: Duration,
        ) -> crate::storage::BoxFuture<'a, ()> {
            Box::pin(async move {
                if let Some(i) = request.image {
                    self.alone.lock().unwrap().push(i);
                }
                self.run(request).await
            })
        }
    }

    async fn run_script(script: Script) -> (Result<(PrepareReport, Manifest)>, Vec<u32>) {
        let input = tempfile::tempdir().unwrap();
        for key in ["P/a.jpg", "P/b_poison.jpg", "P/c.jpg"] {
            let path = input.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, key).unwrap();
        }
        let output = tempfile::tempdir().unwrap();
        let mut config = PrepareConfig::new(
            Location::Local(input.path().into()),
            Location::Local(output.path().into()),
        );
        config.task_size = 3;
        config.max_attempts = 2;
        config.workers = 1;
        let executor = Arc::new(Scripted {
            output: output.path().into(),
            script,
            alone: std::sync::Mutex::new(Vec::new()),
        });
        let heard = std::sync::Mutex::new(Vec::new());
        let progress = |p: &PrepareProgress| heard.lock().unwrap().push(*p);
        let result = prepare(
            &config,
            Arc::clone(&executor) as Arc<dyn Executor>,
            Some(&progress),
        )
        .await;
        let alone = executor.alone.lock().unwrap().clone();
        // Before the run, then once for the only task (finished or failed).
        let heard = heard.into_inner().unwrap();
        let start = PrepareProgress {
            tasks: 1,
            images: 3,
            ..PrepareProgress::default()
        };
        let end = if result.is_ok() {
            PrepareProgress {
                tasks_done: 1,
                images_done: 3,
                ..start
            }
        } else {
            PrepareProgress {
                tasks_failed: 1,
                ..start
            }
        };
        assert_eq!(heard, [start, end]);
        (result, alone)
    }

    #[tokio::test]
    async fn a_poison_image_becomes_one_failed_record_and_the_job_finishes() {
        let (result, alone) = run_script(Script::Poison).await;
        let (report, manifest) = result.unwrap();
        // Each image ran alone; the poison one twice.
        assert_eq!(alone, [0, 1, 1, 2]);
        assert_eq!(report.tasks_isolated, 1);
        assert_eq!(report.attempts, 2 + 4);
        let outcomes: Vec<(&str, Outcome)> = manifest
            .records
            .iter()
            .map(|r| (r.source.as_str(), r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("P/a.jpg", Outcome::NoFace),
                ("P/b_poison.jpg", Outcome::Failed),
                ("P/c.jpg", Outcome::NoFace)
            ]
        );
        let reason = manifest.records[1].reason.as_deref().unwrap();
        assert!(reason.contains("SIGABRT"), "{reason}");
        assert_eq!(report.failed_images.len(), 1);
        assert_eq!(manifest.job.tasks_isolated, 1);
    }

    #[tokio::test]
    async fn failures_a_worker_reports_are_not_blamed_on_an_image() {
        let (result, alone) = run_script(Script::Reports).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("storage is down"), "{err}");
        assert!(err.contains("not because of one image"), "{err}");
        assert!(alone.is_empty(), "no image ran alone: {alone:?}");
    }

    #[tokio::test]
    async fn workers_that_never_reach_an_image_fail_the_task() {
        let (result, alone) = run_script(Script::NeverStarts).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("SIGABRT"), "{err}");
        // The first image alone never started either: the others are not tried.
        assert_eq!(alone, [0, 0]);
    }
}
