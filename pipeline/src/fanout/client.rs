//! The prepare client: list → partition → describe tasks → invoke workers → wait for their
//! status objects → retry → merge → manifest and report. See [`super::protocol`] for the
//! objects it reads and writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::executor::Executor;
use super::protocol::{
    image_shard_key, image_started_key, job_key, sample_key, shard_key, status_key, task_key,
    valid_job_id, JobFile, JobSpec, SeveralFaces, TaskDescriptor, TaskImage, TaskState, TaskStatus,
    WorkerRequest,
};
use crate::align::{Alignment, CROP_SIZE};
use crate::dataset::layout::{self, RawDataset};
use crate::dataset::shards::read_all;
use crate::dataset::{
    AlignmentInfo, Identity, JobSummary, Manifest, Outcome, Record, ShardInfo, ShardWriter,
    FORMAT_VERSION, MANIFEST_FILE,
};
use crate::detect::DetectorKind;
use crate::error::{Error, Result};
use crate::models::{ModelDir, ALL_MODELS};
use crate::storage::{self, Location, Storage, StorageOptions};

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
    pub detector: DetectorKind,
    pub alignment: Alignment,
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

/// The final report of a job (also `--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrepareReport {
    pub job: String,
    pub output: String,
    pub executor: String,
    pub workers: usize,
    pub task_size: u32,
    pub tasks: u32,
    /// Tasks finished by an earlier run of this job and not redone.
    pub tasks_reused: u32,
    /// Tasks whose every attempt failed and whose images were then run one at a time
    /// (in this run or the earlier one that finished them).
    pub tasks_isolated: u32,
    /// `source: reason` of every image that killed its worker each time it ran alone
    /// (outcome `failed`).
    pub failed_images: Vec<String>,
    /// Worker invocations in this run, retries included.
    pub attempts: u32,
    pub retries: u32,
    /// Input images (every one has an outcome).
    pub images: u32,
    /// Images processed by workers in this run.
    pub images_this_run: u32,
    /// Aligned faces stored.
    pub faces: u32,
    /// Records per outcome (`ok`, `no_face`, …).
    pub outcomes: BTreeMap<String, u32>,
    pub identities: u32,
    pub skipped_identities: u32,
    pub wall_s: f64,
    /// Per-task worker seconds in this run.
    pub task_p50_s: f64,
    pub task_p95_s: f64,
    pub task_max_s: f64,
    /// Sum of the per-task worker seconds: what one worker would have needed.
    pub task_seconds_total: f64,
    /// Mean seconds a task spent loading networks (cold starts).
    pub engine_load_mean_s: f64,
    /// Images per second of wall time in this run.
    pub throughput_img_s: f64,
    /// `task_seconds_total / wall_s`: the speed-up over one worker, from measured task times.
    pub speedup_vs_one_worker: f64,
    /// Speed-up divided by the number of workers.
    pub scaling_efficiency: f64,
    /// Largest peak resident memory any worker reported, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_peak_rss_mib: Option<f64>,
    /// Every retry with its reason, for the log.
    pub retry_reasons: Vec<String>,
}

/// Called as the job advances: `(tasks done, tasks, images done, images)`.
pub type ProgressFn = Arc<dyn Fn(u32, u32, u32, u32) + Send + Sync>;

/// Run a whole prepare job.
pub async fn prepare(
    config: &PrepareConfig,
    executor: Arc<dyn Executor>,
    progress: Option<ProgressFn>,
) -> Result<(PrepareReport, Manifest)> {
    let started = Instant::now();
    if config.task_size == 0 || config.workers == 0 || config.max_attempts == 0 {
        return Err(Error::Invalid(
            "--task-size, --workers and the attempts must be at least 1".into(),
        ));
    }
    let input_loc = config.input.absolutize()?;
    let output_loc = config.output.absolutize()?;
    let input = storage::open(&input_loc, &config.storage).await?;
    input.check().await.map_err(|e| context(e, "the input"))?;
    if let Location::Local(dir) = &output_loc {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
    }
    let output = storage::open(&output_loc, &config.storage).await?;
    output.check().await.map_err(|e| context(e, "the output"))?;

    let raw = layout::list(input.as_ref(), config.min_images_per_identity).await?;
    let spec = JobSpec {
        input: input_loc.to_string(),
        detector: config.detector,
        alignment: config.alignment,
        several_faces: config.several_faces,
        min_images_per_identity: config.min_images_per_identity,
        task_size: config.task_size,
        listing_sha256: listing_digest(&raw),
    };
    let job = match &config.job {
        Some(j) if valid_job_id(j) => j.clone(),
        Some(j) => {
            return Err(Error::Invalid(format!(
                "job id {j:?}: use up to 64 letters, digits, '-', '_' or '.'"
            )))
        }
        None => default_job_id(&spec)?,
    };
    let tasks = partition(&job, &spec, &raw);
    let n_tasks = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
    let n_images = u32::try_from(raw.images.len()).unwrap_or(u32::MAX);
    write_job(output.as_ref(), &job, &spec, n_tasks, n_images).await?;

    // Describe the tasks; find the ones an earlier run of this job already finished.
    let mut done: BTreeMap<u32, TaskStatus> = BTreeMap::new();
    let mut pending = Vec::new();
    for t in &tasks {
        let key = task_key(&job, t.task);
        let same = match output.get(&key).await {
            Ok(bytes) => {
                serde_json::from_slice::<TaskDescriptor>(&bytes)
                    .ok()
                    .as_ref()
                    == Some(t)
            }
            Err(Error::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        if same {
            if let Some(status) = read_status(output.as_ref(), &status_key(&job, t.task)).await? {
                if status.state == TaskState::Done {
                    done.insert(t.task, status);
                    continue;
                }
            }
        } else {
            storage::put_json(output.as_ref(), &key, t).await?;
        }
        pending.push(t.task);
    }
    let tasks_reused = u32::try_from(done.len()).unwrap_or(u32::MAX);
    let images_of: HashMap<u32, u32> = tasks
        .iter()
        .map(|t| (t.task, u32::try_from(t.images.len()).unwrap_or(u32::MAX)))
        .collect();

    // Remote workers fetch the weights from storage.
    let models_location = match &config.models_location {
        Some(l) => Some(l.clone()),
        None if executor.needs_remote_models() => Some(output_loc.child("models")),
        None => None,
    };
    if executor.needs_remote_models() && !pending.is_empty() {
        let (Some(models), Some(loc)) = (&config.models, &models_location) else {
            return Err(Error::Invalid(
                "remote workers need the weights: pass --models (or set FACEPIPE_MODELS)".into(),
            ));
        };
        let store = storage::open(loc, &config.storage).await?;
        upload_models(store.as_ref(), models).await?;
    }

    // Invoke the workers, N at a time, retrying with backoff.
    let tasks_done = Arc::new(std::sync::atomic::AtomicU32::new(tasks_reused));
    let images_done = Arc::new(std::sync::atomic::AtomicU32::new(
        done.keys()
            .map(|t| images_of.get(t).copied().unwrap_or(0))
            .sum(),
    ));
    if let Some(p) = &progress {
        p(
            tasks_done.load(std::sync::atomic::Ordering::Relaxed),
            n_tasks,
            images_done.load(std::sync::atomic::Ordering::Relaxed),
            n_images,
        );
    }
    let runs: Vec<(u32, TaskRun)> = futures::stream::iter(pending.iter().copied())
        .map(|task| {
            let executor = Arc::clone(&executor);
            let output = Arc::clone(&output);
            let request = WorkerRequest {
                output: output_loc.to_string(),
                job: job.clone(),
                task,
                attempt: 1,
                storage: config.storage.clone(),
                models: match (
                    &models_location,
                    executor.needs_remote_models(),
                    &config.models,
                ) {
                    (Some(l), true, _) => Some(l.to_string()),
                    (_, false, Some(dir)) => Some(dir.root().display().to_string()),
                    _ => None,
                },
                image: None,
            };
            let descriptor = usize::try_from(task).ok().and_then(|i| tasks.get(i));
            let progress = progress.clone();
            let tasks_done = Arc::clone(&tasks_done);
            let images_done = Arc::clone(&images_done);
            let task_images = images_of.get(&task).copied().unwrap_or(0);
            async move {
                let mut run = run_with_retries(
                    executor.as_ref(),
                    output.as_ref(),
                    request.clone(),
                    config,
                    config.max_attempts,
                )
                .await;
                // Workers that died or hung every time (rather than report an error):
                // maybe one image kills them. Run the images one at a time.
                if let Some(descriptor) = descriptor.filter(|_| run.status.is_none() && run.died) {
                    let alone = isolate(
                        executor.as_ref(),
                        output.as_ref(),
                        &request,
                        config,
                        descriptor,
                    )
                    .await;
                    run.attempts += alone.attempts;
                    run.errors.extend(alone.errors);
                    run.status = alone.status;
                }
                if run.status.is_some() {
                    use std::sync::atomic::Ordering::Relaxed;
                    let t = tasks_done.fetch_add(1, Relaxed) + 1;
                    let i = images_done.fetch_add(task_images, Relaxed) + task_images;
                    if let Some(p) = &progress {
                        p(t, n_tasks, i, n_images);
                    }
                }
                (task, run)
            }
        })
        .buffer_unordered(config.workers)
        .collect()
        .await;

    let mut attempts = 0;
    let mut retry_reasons = Vec::new();
    let mut failed = Vec::new();
    let mut fresh: Vec<TaskStatus> = Vec::new();
    for (task, run) in runs {
        attempts += run.attempts;
        retry_reasons.extend(run.errors.iter().map(|e| format!("task {task}: {e}")));
        match run.status {
            Some(s) => {
                fresh.push(s.clone());
                done.insert(task, s);
            }
            None => failed.push(format!(
                "task {task}: {}",
                run.errors.last().map(String::as_str).unwrap_or("no status")
            )),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        return Err(Error::Worker(format!(
            "{} of {n_tasks} tasks failed after {} attempts each, and not because of one \
             image: their workers reported errors, or never reached an image when run one at \
             a time ({}); finished tasks are kept: fix the cause, then rerun the same command \
             (job {job}) to retry only the failed ones",
            failed.len(),
            config.max_attempts,
            failed.join("; ")
        )));
    }

    let manifest = merge(output.as_ref(), &input_loc, config, &raw, &done).await?;
    let tasks_isolated =
        u32::try_from(done.values().filter(|s| s.isolated).count()).unwrap_or(u32::MAX);
    let wall_s = started.elapsed().as_secs_f64();

    let mut times: Vec<f64> = fresh.iter().map(|s| s.seconds).collect();
    times.sort_by(f64::total_cmp);
    let task_seconds_total: f64 = times.iter().sum();
    let images_this_run: u32 = fresh.iter().map(|s| s.records.len() as u32).sum();
    let speedup = if wall_s > 0.0 {
        task_seconds_total / wall_s
    } else {
        0.0
    };
    let counts = manifest.outcome_counts();
    let report = PrepareReport {
        job: job.clone(),
        output: output_loc.to_string(),
        executor: executor.name().to_string(),
        workers: config.workers,
        task_size: config.task_size,
        tasks: n_tasks,
        tasks_reused,
        tasks_isolated,
        failed_images: manifest
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .map(|r| format!("{}: {}", r.source, r.reason.as_deref().unwrap_or("failed")))
            .collect(),
        attempts,
        retries: attempts.saturating_sub(u32::try_from(fresh.len()).unwrap_or(u32::MAX)),
        images: n_images,
        images_this_run,
        faces: counts.get(&Outcome::Ok).copied().unwrap_or(0),
        outcomes: counts.iter().map(|(o, n)| (o.to_string(), *n)).collect(),
        identities: u32::try_from(raw.identities.len()).unwrap_or(u32::MAX),
        skipped_identities: raw.skipped_identities,
        wall_s,
        task_p50_s: percentile(&times, 0.50),
        task_p95_s: percentile(&times, 0.95),
        task_max_s: times.last().copied().unwrap_or(0.0),
        task_seconds_total,
        engine_load_mean_s: if fresh.is_empty() {
            0.0
        } else {
            fresh.iter().map(|s| s.engine_load_s).sum::<f64>() / fresh.len() as f64
        },
        throughput_img_s: if wall_s > 0.0 {
            f64::from(images_this_run) / wall_s
        } else {
            0.0
        },
        speedup_vs_one_worker: speedup,
        scaling_efficiency: speedup / config.workers.min(fresh.len().max(1)) as f64,
        worker_peak_rss_mib: fresh.iter().filter_map(|s| s.peak_rss_mib).reduce(f64::max),
        retry_reasons,
    };
    // The manifest records the timing too, so a dataset says how it was made.
    let mut manifest = manifest;
    manifest.job = JobSummary {
        job_id: job,
        executor: report.executor.clone(),
        workers: u32::try_from(config.workers).unwrap_or(u32::MAX),
        task_size: config.task_size,
        tasks: n_tasks,
        tasks_reused,
        tasks_isolated,
        attempts,
        wall_s,
        task_seconds_total,
        task_p50_s: report.task_p50_s,
        task_p95_s: report.task_p95_s,
    };
    output
        .put(MANIFEST_FILE, Bytes::from(manifest.to_json()?))
        .await?;
    Ok((report, manifest))
}

fn context(e: Error, what: &str) -> Error {
    match e {
        Error::NotFound(p) => Error::NotFound(format!("{what}: {p}")),
        other => other,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn listing_digest(raw: &RawDataset) -> String {
    let mut h = Sha256::new();
    for img in &raw.images {
        h.update(img.key.as_bytes());
        h.update([0]);
        h.update(img.size.to_le_bytes());
    }
    hex::encode(h.finalize())
}

fn default_job_id(spec: &JobSpec) -> Result<String> {
    let json = serde_json::to_vec(spec).map_err(|e| Error::json("job spec", e))?;
    Ok(format!("job-{}", &hex::encode(Sha256::digest(json))[..12]))
}

/// Split the sorted inputs into tasks of `task_size`, in order.
fn partition(job: &str, spec: &JobSpec, raw: &RawDataset) -> Vec<TaskDescriptor> {
    let size = spec.task_size.max(1) as usize;
    raw.images
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let task = u32::try_from(i).unwrap_or(u32::MAX);
            TaskDescriptor {
                job: job.to_string(),
                task,
                input: spec.input.clone(),
                detector: spec.detector,
                alignment: spec.alignment,
                several_faces: spec.several_faces,
                shard: shard_key(job, task),
                images: chunk
                    .iter()
                    .enumerate()
                    .map(|(j, img)| TaskImage {
                        input: img.clone(),
                        sample_key: sample_key(i * size + j, &img.identity),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Record the job, or check that an existing job of that id is the same job.
async fn write_job(
    output: &dyn Storage,
    job: &str,
    spec: &JobSpec,
    tasks: u32,
    images: u32,
) -> Result<()> {
    let key = job_key(job);
    match output.get(&key).await {
        Ok(bytes) => {
            let existing: JobFile = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(output.location().display_key(&key), e))?;
            if existing.spec != *spec {
                return Err(Error::Invalid(format!(
                    "job {job} already exists in {} with a different input or options: \
                     pick another --job (or leave it out to get one derived from the input)",
                    output.location()
                )));
            }
            Ok(())
        }
        Err(Error::NotFound(_)) => {
            let file = JobFile {
                job: job.to_string(),
                spec: spec.clone(),
                tasks,
                images,
            };
            storage::put_json(output, &key, &file).await
        }
        Err(e) => Err(e),
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

/// Copy the four networks' files to the models location (skipping ones already there).
async fn upload_models(store: &dyn Storage, models: &ModelDir) -> Result<()> {
    let existing: HashMap<String, u64> = store
        .list("")
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    for stem in ALL_MODELS {
        for name in [
            format!("{stem}-weights_manifest.json"),
            format!("{stem}.bin"),
        ] {
            let path = models.root().join(&name);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| Error::io(&path, e))?;
            if existing.get(&name) == Some(&(bytes.len() as u64)) {
                continue;
            }
            store.put(&name, Bytes::from(bytes)).await?;
        }
    }
    Ok(())
}

struct TaskRun {
    status: Option<TaskStatus>,
    attempts: u32,
    errors: Vec<String>,
    /// The last attempt left no status of its own: the worker died, hung or never started
    /// (rather than reporting a failure it could describe).
    died: bool,
}

/// Invoke `request` until its status object says done, at most `max_attempts` times.
async fn run_with_retries(
    executor: &dyn Executor,
    output: &dyn Storage,
    mut request: WorkerRequest,
    config: &PrepareConfig,
    max_attempts: u32,
) -> TaskRun {
    let mut errors = Vec::new();
    let mut died = false;
    let key = request.status_key();
    for attempt in 1..=max_attempts {
        if attempt > 1 {
            // Exponential backoff: 0.5 s, 1 s, 2 s … capped at 30 s.
            let wait = Duration::from_millis(500u64.saturating_mul(1 << (attempt - 2).min(6)));
            tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
        }
        request.attempt = attempt;
        let invoked = executor.invoke(&request, config.task_timeout).await;
        // The status object, not the executor's word, says whether the work is done.
        let status = read_status(output, &key).await;
        died = !matches!(&status, Ok(Some(s)) if s.attempt == attempt);
        match status {
            Ok(Some(s)) if s.state == TaskState::Done => {
                return TaskRun {
                    status: Some(s),
                    attempts: attempt,
                    errors,
                    died: false,
                }
            }
            Ok(Some(s)) if s.attempt == attempt => errors.push(format!(
                "attempt {attempt}: {}",
                s.error.unwrap_or_else(|| "failed".into())
            )),
            Ok(_) => errors.push(match invoked {
                Err(e) => format!("attempt {attempt}: {e}"),
                Ok(()) => format!("attempt {attempt}: the worker wrote no status"),
            }),
            Err(e) => errors.push(format!("attempt {attempt}: reading the status: {e}")),
        }
        tracing::warn!(task = %request.describe(), error = %errors.last().map(String::as_str).unwrap_or(""), "task attempt failed");
    }
    TaskRun {
        status: None,
        attempts: max_attempts,
        errors,
        died,
    }
}

/// After every attempt at a task failed, run its images one at a time: an image that kills
/// its worker each time (a decoder crash, an abort, a hang) becomes one `failed` record and
/// the others are processed as usual. The images' results are folded into the task's shard
/// and status, so the rest of the job (merge, resume) sees an ordinary finished task.
///
/// The task stays failed (status `None`) when a worker reported an error it could describe
/// (storage, weights) or never reached its image: then the images are not to blame.
async fn isolate(
    executor: &dyn Executor,
    output: &dyn Storage,
    request: &WorkerRequest,
    config: &PrepareConfig,
    task: &TaskDescriptor,
) -> TaskRun {
    tracing::warn!(
        task = task.task,
        images = task.images.len(),
        "every attempt failed; running the task's images one at a time"
    );
    let mut run = TaskRun {
        status: None,
        attempts: 0,
        errors: Vec::new(),
        died: false,
    };
    match isolate_images(executor, output, request, config, task, &mut run).await {
        Ok(status) => run.status = status,
        Err(e) => run
            .errors
            .push(format!("running its images one at a time: {e}")),
    }
    run
}

async fn isolate_images(
    executor: &dyn Executor,
    output: &dyn Storage,
    request: &WorkerRequest,
    config: &PrepareConfig,
    task: &TaskDescriptor,
    run: &mut TaskRun,
) -> Result<Option<TaskStatus>> {
    let attempts = IMAGE_ALONE_ATTEMPTS.min(config.max_attempts);
    let mut records = Vec::with_capacity(task.images.len());
    let mut writer = ShardWriter::new(Vec::new());
    let mut combined = TaskStatus {
        job: task.job.clone(),
        task: task.task,
        attempt: config.max_attempts,
        state: TaskState::Done,
        error: None,
        worker: "isolated".into(),
        seconds: 0.0,
        engine_load_s: 0.0,
        peak_rss_mib: None,
        records: Vec::new(),
        shard: None,
        isolated: true,
    };
    for (index, img) in task.images.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let alone = WorkerRequest {
            image: Some(index),
            attempt: 1,
            ..request.clone()
        };
        let started = image_started_key(&task.job, task.task, index);
        // Objects of an earlier, interrupted isolation must not speak for this one.
        output.delete(&alone.status_key()).await?;
        output.delete(&started).await?;
        let image_run = run_with_retries(executor, output, alone, config, attempts).await;
        run.attempts += image_run.attempts;
        run.errors.extend(
            image_run
                .errors
                .iter()
                .map(|e| format!("image {index} ({}) alone, {e}", img.input.key)),
        );
        match image_run.status {
            Some(s) => {
                combined.seconds += s.seconds;
                combined.engine_load_s += s.engine_load_s;
                combined.peak_rss_mib = match (combined.peak_rss_mib, s.peak_rss_mib) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                if let Some(shard) = &s.shard {
                    let bytes = output.get(&shard.path).await?;
                    for sample in read_all(&bytes, &shard.path)? {
                        writer.write(&sample.meta, &sample.jpeg)?;
                    }
                }
                for mut r in s.records {
                    if r.shard.is_some() {
                        r.shard = Some(task.shard.clone());
                    }
                    records.push(r);
                }
            }
            None if image_run.died && output.exists(&started).await? => {
                // The executor's words (signal, exit code, timeout, stderr tail), without
                // the "attempt N: " they were filed under.
                let last = image_run.errors.last().map_or("no status", String::as_str);
                let why = last.split_once(": ").map_or(last, |(_, e)| e).to_string();
                tracing::error!(image = %img.input.key, "{why}");
                records.push(Record::without_sample(
                    &img.input.key,
                    &img.input.identity,
                    Outcome::Failed,
                    format!(
                        "the worker died or hung on this image each of the {attempts} times \
                         it ran alone; last: {why}"
                    ),
                ));
            }
            None => return Ok(None),
        }
    }
    let samples = writer.samples();
    combined.shard = if samples > 0 {
        output
            .put(&task.shard, Bytes::from(writer.finish()?))
            .await?;
        Some(ShardInfo {
            path: task.shard.clone(),
            samples,
        })
    } else {
        output.delete(&task.shard).await?;
        None
    };
    combined.records = records;
    storage::put_json(output, &status_key(&task.job, task.task), &combined).await?;
    // Folded into the task's shard: the per-image shards are no longer needed.
    for index in 0..task.images.len() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        output
            .delete(&image_shard_key(&task.job, task.task, index))
            .await?;
    }
    Ok(Some(combined))
}

/// Build the manifest from every task's status: one record per input, byte-identical
/// inputs in different tasks marked `duplicate` (their samples removed from the shards).
async fn merge(
    output: &dyn Storage,
    input: &Location,
    config: &PrepareConfig,
    raw: &RawDataset,
    done: &BTreeMap<u32, TaskStatus>,
) -> Result<Manifest> {
    let mut records: Vec<Record> = Vec::with_capacity(raw.images.len());
    let mut shards: Vec<ShardInfo> = Vec::new();
    for status in done.values() {
        records.extend(status.records.iter().cloned());
        if let Some(s) = &status.shard {
            shards.push(s.clone());
        }
    }
    // Tasks follow the sorted input order, so "first" is the same for any task size.
    let mut first_of: HashMap<String, String> = HashMap::new();
    let mut drop: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &mut records {
        let Some(sha) = r.sha256.clone() else {
            continue;
        };
        match first_of.get(&sha) {
            Some(first) if r.outcome != Outcome::Duplicate => {
                if let (Some(shard), Some(sample)) = (r.shard.take(), r.sample.take()) {
                    drop.entry(shard).or_default().insert(sample);
                }
                r.outcome = Outcome::Duplicate;
                r.reason = Some(format!("same bytes as {first}"));
                r.found_by = None;
                r.faces_found = None;
            }
            Some(_) => {}
            None => {
                first_of.insert(sha, r.source.clone());
            }
        }
    }
    for (shard, keys) in &drop {
        let listed = shards.iter().find(|s| &s.path == shard).map(|s| s.samples);
        let bytes = match output.get(shard).await {
            Ok(bytes) => bytes,
            // An earlier merge of this job deleted it: every sample it held was a duplicate.
            Err(Error::NotFound(_)) if listed.is_some_and(|n| n as usize <= keys.len()) => {
                if let Some(info) = shards.iter_mut().find(|s| &s.path == shard) {
                    info.samples = 0;
                }
                continue;
            }
            Err(Error::NotFound(what)) => {
                return Err(Error::NotFound(format!(
                    "{what}: a finished task's shard is gone; run again with another --job \
                     to redo the job"
                )))
            }
            Err(e) => return Err(e),
        };
        let mut writer = ShardWriter::new(Vec::new());
        for s in read_all(&bytes, shard)? {
            if !keys.contains(&s.key) {
                writer.write(&s.meta, &s.jpeg)?;
            }
        }
        let kept = writer.samples();
        if kept == 0 {
            output.delete(shard).await?;
        } else {
            output.put(shard, Bytes::from(writer.finish()?)).await?;
        }
        if let Some(info) = shards.iter_mut().find(|s| &s.path == shard) {
            info.samples = kept;
        }
    }
    shards.retain(|s| s.samples > 0);
    records.sort_by(|a, b| a.source.cmp(&b.source));
    if records.len() != raw.images.len() {
        return Err(Error::Worker(format!(
            "the workers reported {} records for {} inputs",
            records.len(),
            raw.images.len()
        )));
    }
    let mut faces: HashMap<&str, u32> = HashMap::new();
    for r in &records {
        if r.outcome == Outcome::Ok {
            *faces.entry(r.identity.as_str()).or_default() += 1;
        }
    }
    let identities = raw
        .identities
        .iter()
        .enumerate()
        .map(|(label, (name, images))| Identity {
            name: name.clone(),
            label: u32::try_from(label).unwrap_or(u32::MAX),
            images: *images,
            faces: faces.get(name.as_str()).copied().unwrap_or(0),
        })
        .collect();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        source: input.to_string(),
        detector: config.detector,
        alignment: AlignmentInfo {
            kind: config.alignment,
            crop_size: CROP_SIZE,
        },
        created,
        identities,
        shards,
        records,
        job: JobSummary::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.95), 10.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

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
        let result = prepare(&config, Arc::clone(&executor) as Arc<dyn Executor>, None).await;
        let alone = executor.alone.lock().unwrap().clone();
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
