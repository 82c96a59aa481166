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
    job_key, sample_key, shard_key, status_key, task_key, valid_job_id, JobFile, JobSpec,
    SeveralFaces, TaskDescriptor, TaskImage, TaskState, TaskStatus, WorkerRequest,
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
/// Default attempts per task before the job gives up on it.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

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
            if let Some(status) = read_status(output.as_ref(), &job, t.task).await? {
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
            };
            let progress = progress.clone();
            let tasks_done = Arc::clone(&tasks_done);
            let images_done = Arc::clone(&images_done);
            let task_images = images_of.get(&task).copied().unwrap_or(0);
            async move {
                let run =
                    run_with_retries(executor.as_ref(), output.as_ref(), request, config).await;
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
            "{} of {n_tasks} tasks failed after {} attempts each ({}); finished tasks are kept: \
             rerun the same command (job {job}) to retry only the failed ones",
            failed.len(),
            config.max_attempts,
            failed.join("; ")
        )));
    }

    let manifest = merge(output.as_ref(), &input_loc, config, &raw, &done).await?;
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

async fn read_status(output: &dyn Storage, job: &str, task: u32) -> Result<Option<TaskStatus>> {
    match output.get(&status_key(job, task)).await {
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
}

async fn run_with_retries(
    executor: &dyn Executor,
    output: &dyn Storage,
    mut request: WorkerRequest,
    config: &PrepareConfig,
) -> TaskRun {
    let mut errors = Vec::new();
    for attempt in 1..=config.max_attempts {
        if attempt > 1 {
            // Exponential backoff: 0.5 s, 1 s, 2 s … capped at 30 s.
            let wait = Duration::from_millis(500u64.saturating_mul(1 << (attempt - 2).min(6)));
            tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
        }
        request.attempt = attempt;
        let invoked = executor.invoke(&request, config.task_timeout).await;
        // The status object, not the executor's word, says whether the work is done.
        match read_status(output, &request.job, request.task).await {
            Ok(Some(s)) if s.state == TaskState::Done => {
                return TaskRun {
                    status: Some(s),
                    attempts: attempt,
                    errors,
                }
            }
            Ok(Some(s)) => errors.push(format!(
                "attempt {attempt}: {}",
                s.error.unwrap_or_else(|| "failed".into())
            )),
            Ok(None) => errors.push(match invoked {
                Err(e) => format!("attempt {attempt}: {e}"),
                Ok(()) => format!("attempt {attempt}: the worker wrote no status"),
            }),
            Err(e) => errors.push(format!("attempt {attempt}: reading the status: {e}")),
        }
        tracing::warn!(task = request.task, attempt, error = %errors.last().map(String::as_str).unwrap_or(""), "task attempt failed");
    }
    TaskRun {
        status: None,
        attempts: config.max_attempts,
        errors,
    }
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
        let bytes = output.get(shard).await?;
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
}
