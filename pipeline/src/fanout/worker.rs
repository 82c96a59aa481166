//! The worker: run one task. Fetch the task descriptor and its images from storage, find and
//! align one face per image (or every face, with [`SeveralFaces::All`]), write the shard,
//! then the status object (last, so a status means the shard is complete). Bad images become records, never task failures; only
//! storage or model trouble fails a task, and the client retries it. An image is fetched only
//! when the listing says it fits the byte limit, and never read past that limit.
//!
//! [`serve`] runs many tasks in one process, one at a time (the warm local worker): the
//! networks are loaded once, like in a warm Lambda container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::protocol::{
    face_order, face_sample_key, image_shard_key, image_started_key, task_key, SeveralFaces,
    TaskDescriptor, TaskImage, TaskState, TaskStatus, WorkerReply, WorkerRequest,
};
use crate::dataset::{encode_crop, Outcome, Record, SampleMeta, ShardInfo, ShardWriter};
use crate::detect::DetectorKind;
use crate::engine::{EngineOptions, FaceEngine};
use crate::error::{Error, Result};
use crate::models::ModelDir;
use crate::storage::{self, Location, Storage};

/// Images fetched from storage at the same time within one task.
const FETCH_CONCURRENCY: usize = 8;

/// Loaded engines, one per detector, kept for the life of the process (a warm Lambda
/// container reuses them).
pub struct EngineCache {
    models: ModelSource,
    engines: Mutex<HashMap<DetectorKind, Arc<FaceEngine>>>,
    fetched: Mutex<Option<ModelDir>>,
}

/// Where a worker finds the weights.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A local folder (the local executor's children).
    Local(ModelDir),
    /// Fetched from storage on first use into a local cache folder (Lambda: /tmp).
    Remote { location: String, cache: PathBuf },
}

impl EngineCache {
    pub fn new(models: ModelSource) -> Self {
        EngineCache {
            models,
            engines: Mutex::new(HashMap::new()),
            fetched: Mutex::new(None),
        }
    }

    /// The engine for these options, loading (and fetching) it on first use.
    /// Returns the seconds spent loading (0 when it was already loaded).
    async fn engine(
        &self,
        options: &EngineOptions,
        request: &WorkerRequest,
    ) -> Result<(Arc<FaceEngine>, f64)> {
        if let Some(e) = lock(&self.engines).get(&options.detector.kind) {
            return Ok((Arc::clone(e), 0.0));
        }
        let start = Instant::now();
        let dir = match &self.models {
            ModelSource::Local(dir) => dir.clone(),
            ModelSource::Remote { location, cache } => {
                let known = lock(&self.fetched).clone();
                match known {
                    Some(dir) => dir,
                    None => {
                        let store = storage::open_str(location, &request.storage).await?;
                        let dir = fetch_models(store.as_ref(), cache).await?;
                        *lock(&self.fetched) = Some(dir.clone());
                        dir
                    }
                }
            }
        };
        let opts = options.clone();
        let engine = tokio::task::spawn_blocking(move || FaceEngine::load(&dir, opts))
            .await
            .map_err(|e| Error::Worker(format!("loading the networks panicked: {e}")))??;
        let engine = Arc::new(engine);
        lock(&self.engines).insert(options.detector.kind, Arc::clone(&engine));
        Ok((engine, start.elapsed().as_secs_f64()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copy every object under `store` into `dir` (skipping files already there with the same
/// size) and open it as a model folder.
pub async fn fetch_models(store: &dyn Storage, dir: &Path) -> Result<ModelDir> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))?;
    let objects = store.list("").await?;
    if objects.is_empty() {
        return Err(Error::ModelsMissing {
            dir: dir.to_path_buf(),
            hint: format!(
                "no weights under {}: the client uploads them there before invoking workers",
                store.location()
            ),
        });
    }
    for obj in objects {
        if obj.key.contains('/') {
            continue;
        }
        let dest = dir.join(&obj.key);
        if tokio::fs::metadata(&dest)
            .await
            .is_ok_and(|m| m.len() == obj.size)
        {
            continue;
        }
        let bytes = store.get(&obj.key).await?;
        let tmp = dir.join(format!(".{}.part", obj.key));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| Error::io(&tmp, e))?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| Error::io(&dest, e))?;
    }
    ModelDir::open(dir)
}

/// The process's peak resident memory in MiB (Linux), for the benchmark report.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Fault injection for the fan-out's tests, compiled in only with the `test-support`
/// feature: `FACEPIPE_TEST_FAULT=crash:T`, `hang:T` or `fail:T` makes the first attempt of
/// task T abort the process, sleep for an hour, or report a failure; `poison:NAME` aborts
/// the process on every attempt that reaches an image whose key ends with NAME.
#[cfg(feature = "test-support")]
pub mod fault {
    use super::WorkerRequest;

    pub const FAULT_ENV: &str = "FACEPIPE_TEST_FAULT";

    fn spec() -> Option<(String, String)> {
        let spec = std::env::var(FAULT_ENV).ok()?;
        let (kind, arg) = spec.split_once(':')?;
        Some((kind.trim().to_string(), arg.trim().to_string()))
    }

    /// The fault for this attempt of this task, if any.
    pub(super) fn for_task(request: &WorkerRequest) -> Option<String> {
        let (kind, task) = spec()?;
        let task: u32 = task.parse().ok()?;
        (task == request.task && request.attempt == 1).then_some(kind)
    }

    /// Abort the process when the image `key` is the poison one.
    pub(super) fn before_image(key: &str) {
        if let Some((kind, name)) = spec() {
            if kind == "poison" && !name.is_empty() && key.ends_with(&name) {
                tracing::error!(key, "test fault: a poison image aborts the worker");
                std::process::abort();
            }
        }
    }
}

/// Without `test-support` no fault can be injected.
#[cfg(not(feature = "test-support"))]
mod fault {
    use super::WorkerRequest;

    pub(super) fn for_task(_: &WorkerRequest) -> Option<String> {
        None
    }

    pub(super) fn before_image(_: &str) {}
}

/// Run one task end to end and write its status. Returns the status written; an error
/// means not even a failed status could be written (the client treats it as a failure).
pub async fn run_task(
    request: &WorkerRequest,
    engines: &EngineCache,
    worker_name: &str,
) -> Result<TaskStatus> {
    let start = Instant::now();
    let output = storage::open_str(&request.output, &request.storage).await?;
    let injected = fault::for_task(request);
    match injected.as_deref() {
        Some("crash") => {
            tracing::error!(task = request.task, "test fault: aborting the worker");
            std::process::abort();
        }
        Some("hang") => {
            tracing::error!(task = request.task, "test fault: hanging");
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let result = match injected.as_deref() {
        Some("fail") => Err(Error::Worker("test fault: failing on purpose".into())),
        _ => process(request, output.as_ref(), engines).await,
    };
    let status = match result {
        Ok((records, shard, load_s)) => TaskStatus {
            job: request.job.clone(),
            task: request.task,
            attempt: request.attempt,
            state: TaskState::Done,
            error: None,
            worker: worker_name.to_string(),
            seconds: start.elapsed().as_secs_f64(),
            engine_load_s: load_s,
            peak_rss_mib: peak_rss_mib(),
            records,
            shard,
            isolated: false,
        },
        Err(e) => {
            tracing::error!(task = request.task, error = %e, "task failed");
            TaskStatus {
                job: request.job.clone(),
                task: request.task,
                attempt: request.attempt,
                state: TaskState::Failed,
                error: Some(e.to_string()),
                worker: worker_name.to_string(),
                seconds: start.elapsed().as_secs_f64(),
                engine_load_s: 0.0,
                peak_rss_mib: peak_rss_mib(),
                records: Vec::new(),
                shard: None,
                isolated: false,
            }
        }
    };
    storage::put_json(output.as_ref(), &request.status_key(), &status).await?;
    Ok(status)
}

/// Serve tasks until `input` ends: read one JSON [`WorkerRequest`] per line, run it with
/// [`run_task`], answer one JSON [`WorkerReply`] line on `output`. The engines stay loaded
/// between tasks; `models` says where the weights of a request are and is asked again only
/// when a request names other weights. Returns the number of tasks served.
///
/// A malformed request line is an error (the executor's side of the pipe is broken) and
/// ends the loop; a task that fails is answered `failed` and the loop goes on.
pub async fn serve<R, W, M>(
    input: R,
    mut output: W,
    worker_name: &str,
    mut models: M,
) -> Result<u32>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
    M: FnMut(&WorkerRequest) -> Result<ModelSource>,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut lines = input.lines();
    // The engines of the weights named by the last request (`None`: the worker's default).
    let mut cache: Option<(Option<String>, EngineCache)> = None;
    let mut served = 0;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| Error::Worker(format!("reading a request on stdin: {e}")))?
    {
        if line.trim().is_empty() {
            continue;
        }
        let request: WorkerRequest =
            serde_json::from_str(&line).map_err(|e| Error::json("a worker request line", e))?;
        let mut weights_error = None;
        if !matches!(&cache, Some((named, _)) if *named == request.models) {
            cache = match models(&request) {
                Ok(source) => Some((request.models.clone(), EngineCache::new(source))),
                Err(e) => {
                    weights_error = Some(e.to_string());
                    None
                }
            };
        }
        let reply = match &cache {
            None => {
                let why = weights_error.unwrap_or_else(|| "the worker has no weights".into());
                tracing::error!(task = request.task, "{why}");
                WorkerReply::failed(&request, why)
            }
            Some((_, engines)) => match run_task(&request, engines, worker_name).await {
                Ok(status) => WorkerReply {
                    task: request.task,
                    attempt: request.attempt,
                    image: request.image,
                    state: status.state,
                    message: status.error,
                },
                Err(e) => WorkerReply::failed(&request, e.to_string()),
            },
        };
        let mut json =
            serde_json::to_string(&reply).map_err(|e| Error::json("a worker reply", e))?;
        json.push('\n');
        let sent = async {
            output.write_all(json.as_bytes()).await?;
            output.flush().await
        }
        .await;
        sent.map_err(|e| Error::Worker(format!("answering on stdout: {e}")))?;
        served += 1;
    }
    Ok(served)
}

async fn process(
    request: &WorkerRequest,
    output: &dyn Storage,
    engines: &EngineCache,
) -> Result<(Vec<Record>, Option<ShardInfo>, f64)> {
    let mut task: TaskDescriptor =
        storage::get_json(output, &task_key(&request.job, request.task)).await?;
    // Alone, one image goes to a shard of its own that the client folds into the task's.
    let shard_path = match request.image {
        None => task.shard.clone(),
        Some(i) => {
            let image = usize::try_from(i)
                .ok()
                .and_then(|i| task.images.get(i))
                .cloned()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "task {} has {} images, so no image {i}",
                        task.task,
                        task.images.len()
                    ))
                })?;
            task.images = vec![image];
            image_shard_key(&request.job, request.task, i)
        }
    };
    let input = storage::open_str(&task.input, &request.storage).await?;
    let mut options = EngineOptions::default();
    options.detector.kind = task.detector;
    options.alignment = task.alignment;
    let max_bytes = options.limits.max_bytes;
    let (engine, load_s) = engines.engine(&options, request).await?;
    if let Some(i) = request.image {
        // From here on, a worker that dies has died on this image.
        let started = serde_json::json!({ "attempt": request.attempt });
        storage::put_json(
            output,
            &image_started_key(&request.job, request.task, i),
            &started,
        )
        .await?;
    }

    // Fetch every image first (concurrently: storage latency, not CPU, is the cost here).
    // Owned images: a closure over `&TaskImage` makes the future of `run_task` not provably
    // `Send` (a higher-ranked lifetime rustc cannot see through), so no caller could spawn it.
    let fetched: Vec<Result<Fetched>> = futures::stream::iter(task.images.clone())
        .map(|img| {
            let input = Arc::clone(&input);
            async move { fetch_bounded(input.as_ref(), &img, max_bytes).await }
        })
        .buffered(FETCH_CONCURRENCY)
        .collect()
        .await;
    let mut inputs = Vec::with_capacity(fetched.len());
    for (img, bytes) in task.images.iter().zip(fetched) {
        // A listed file that vanished or cannot be read is a storage problem: retry the task.
        inputs.push((img.clone(), bytes?));
    }

    let task2 = task.clone();
    let shard_path2 = shard_path.clone();
    let (records, shard_bytes, samples) = tokio::task::spawn_blocking(move || {
        detect_and_align(&task2, &engine, inputs, &shard_path2)
    })
    .await
    .map_err(|e| Error::Worker(format!("the task's image loop panicked: {e}")))??;
    let shard = if samples > 0 {
        output.put(&shard_path, Bytes::from(shard_bytes)).await?;
        Some(ShardInfo {
            path: shard_path,
            samples,
        })
    } else {
        // A retry of a task that once produced samples must not leave a stale shard.
        output.delete(&shard_path).await?;
        None
    };
    Ok((records, shard, load_s))
}

/// An input as the worker got it.
enum Fetched {
    Bytes(Bytes),
    /// Over the byte limit, by the listing or while reading: never read in full.
    TooLarge {
        bytes: u64,
    },
}

/// Fetch one input, holding at most `limit` bytes of it. The size the listing gave is
/// checked first, so an 8 GB file is refused without a read. A local file is read through
/// a bounded reader as well, in case it grew after the listing; an S3 object cannot grow in
/// place (a new one replaces it whole), so its listed size is the check.
async fn fetch_bounded(input: &dyn Storage, img: &TaskImage, limit: u64) -> Result<Fetched> {
    if img.input.size > limit {
        return Ok(Fetched::TooLarge {
            bytes: img.input.size,
        });
    }
    let bytes = match input.location() {
        Location::Local(root) => match read_local_bounded(root, &img.input.key, limit).await? {
            Some(bytes) => bytes,
            None => {
                let bytes = tokio::fs::metadata(root.join(&img.input.key))
                    .await
                    .map_or(limit.saturating_add(1), |m| m.len());
                return Ok(Fetched::TooLarge { bytes });
            }
        },
        Location::S3 { .. } => input.get(&img.input.key).await?,
    };
    if bytes.len() as u64 > limit {
        return Ok(Fetched::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    Ok(Fetched::Bytes(bytes))
}

/// Read `root/key`, or `None` when it holds more than `limit` bytes (reading stops at
/// `limit + 1`). Keys come from the listing; one that leaves the root is refused.
async fn read_local_bounded(root: &Path, key: &str, limit: u64) -> Result<Option<Bytes>> {
    use tokio::io::AsyncReadExt;
    let rel = Path::new(key);
    if key.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Invalid(format!(
            "input key {key:?} must be a relative path without '..'"
        )));
    }
    let path = root.join(rel);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(path.display().to_string()))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Error::io(&path, e))?;
    Ok((bytes.len() as u64 <= limit).then(|| Bytes::from(bytes)))
}

/// The CPU part of a task: one record per image, samples appended to an in-memory shard.
fn detect_and_align(
    task: &TaskDescriptor,
    engine: &FaceEngine,
    inputs: Vec<(TaskImage, Fetched)>,
    shard_path: &str,
) -> Result<(Vec<Record>, Vec<u8>, u32)> {
    let mut writer = ShardWriter::new(Vec::new());
    let mut records = Vec::with_capacity(inputs.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    let limit = engine.options().limits.max_bytes;
    for (img, fetched) in inputs {
        let bytes = match fetched {
            Fetched::Bytes(bytes) => bytes,
            Fetched::TooLarge { bytes } => {
                let e = Error::TooManyBytes { bytes, limit };
                records.push(Record::without_sample(
                    &img.input.key,
                    &img.input.identity,
                    Outcome::TooLarge,
                    format!("{e}; refused without reading it"),
                ));
                continue;
            }
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        let mut record = Record {
            source: img.input.key.clone(),
            identity: img.input.identity.clone(),
            outcome: Outcome::Ok,
            reason: None,
            sha256: Some(sha.clone()),
            sample: None,
            more_samples: Vec::new(),
            shard: None,
            found_by: None,
            faces_found: None,
        };
        if let Some(first) = seen.get(&sha) {
            record.outcome = Outcome::Duplicate;
            record.reason = Some(format!("same bytes as {first}"));
            records.push(record);
            continue;
        }
        seen.insert(sha, img.input.key.clone());
        fault::before_image(&img.input.key);
        // One bad image must not take the task down, whatever the decoder or network does.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_image(task, engine, &img, &bytes)
        }));
        match result {
            Ok(Ok(ImageResult::Faces { samples, faces })) => {
                for (meta, jpeg) in &samples {
                    writer.write(meta, jpeg)?;
                }
                let mut keys = samples.iter().map(|(meta, _)| meta.key.clone());
                record.sample = keys.next();
                record.more_samples = keys.collect();
                record.shard = Some(shard_path.to_string());
                record.found_by = samples.first().map(|(meta, _)| meta.found_by);
                record.faces_found = Some(faces);
                if faces > 1 && samples.len() == 1 {
                    record.reason = Some(format!("{faces} faces; kept the largest"));
                }
            }
            Ok(Ok(ImageResult::NoFace)) => {
                record.outcome = Outcome::NoFace;
                record.reason = Some("no face found, not even with the tight-crop fallback".into());
                record.faces_found = Some(0);
            }
            Ok(Ok(ImageResult::Several(n))) => {
                record.outcome = Outcome::SeveralFaces;
                record.reason = Some(format!("{n} faces and --several-faces skip"));
                record.faces_found = Some(n);
            }
            Ok(Err(e)) => {
                record.outcome = if e.is_too_large() {
                    Outcome::TooLarge
                } else {
                    Outcome::Unreadable
                };
                record.reason = Some(e.to_string());
            }
            Err(_) => {
                record.outcome = Outcome::Unreadable;
                record.reason = Some("the image crashed the decoder or a network".into());
            }
        }
        records.push(record);
    }
    let samples = writer.samples();
    Ok((records, writer.finish()?, samples))
}

enum ImageResult {
    /// The samples stored (the largest face, or every face), of `faces` found.
    Faces {
        samples: Vec<(SampleMeta, Vec<u8>)>,
        faces: u32,
    },
    NoFace,
    Several(u32),
}

fn one_image(
    task: &TaskDescriptor,
    engine: &FaceEngine,
    img: &TaskImage,
    bytes: &[u8],
) -> Result<ImageResult> {
    let limits = &engine.options().limits;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::TooManyBytes {
            bytes: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    let photo = crate::image_io::decode(bytes, limits)?;
    let mut faces = engine.faces(&photo);
    let count = u32::try_from(faces.len()).unwrap_or(u32::MAX);
    // (face, its sample key): one face under the image's key, or every face under its own.
    let keep: Vec<(&crate::engine::Face, String)> = match (faces.len(), task.several_faces) {
        (0, _) => return Ok(ImageResult::NoFace),
        (_, SeveralFaces::All) => {
            faces.sort_by(face_order);
            faces
                .iter()
                .enumerate()
                .map(|(i, face)| (face, face_sample_key(&img.sample_key, i)))
                .collect()
        }
        (1, _) | (_, SeveralFaces::Largest) => crate::engine::largest(&faces)
            .map(|face| (face, img.sample_key.clone()))
            .into_iter()
            .collect(),
        (_, SeveralFaces::Skip) => return Ok(ImageResult::Several(count)),
    };
    if keep.is_empty() {
        return Ok(ImageResult::NoFace);
    }
    let mut samples = Vec::with_capacity(keep.len());
    for (face, key) in keep {
        let crop = engine.align(&photo, face);
        let jpeg = encode_crop(&crop)?;
        let meta = SampleMeta {
            key,
            identity: img.input.identity.clone(),
            label: img.input.label,
            source: img.input.key.clone(),
            bbox: face.bbox,
            landmarks: face.landmarks.clone(),
            score: face.score,
            found_by: face.found_by,
            alignment: task.alignment,
        };
        samples.push((meta, jpeg));
    }
    Ok(ImageResult::Faces {
        samples,
        faces: count,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::fanout::protocol::status_key;
    use crate::storage::StorageOptions;

    fn request(output: &Path, task: u32, models: Option<&str>) -> WorkerRequest {
        WorkerRequest {
            output: output.display().to_string(),
            job: "serve-test".into(),
            task,
            attempt: 1,
            storage: StorageOptions::default(),
            models: models.map(str::to_string),
            image: None,
        }
    }

    fn remote_models() -> ModelSource {
        ModelSource::Remote {
            location: "/nowhere".into(),
            cache: "/nowhere".into(),
        }
    }

    #[tokio::test]
    async fn serve_answers_every_request_and_looks_weights_up_once_per_source() {
        let out = tempfile::tempdir().unwrap();
        let mut input = String::new();
        for r in [
            request(out.path(), 0, None),
            request(out.path(), 1, None),
            request(out.path(), 2, Some("/missing-weights")),
        ] {
            input.push_str(&serde_json::to_string(&r).unwrap());
            input.push_str("\n\n");
        }
        let mut lookups = Vec::new();
        let mut answers = Vec::new();
        let served = serve(input.as_bytes(), &mut answers, "test:1", |r| {
            lookups.push(r.models.clone());
            match &r.models {
                None => Ok(remote_models()),
                Some(m) => Err(Error::Invalid(format!("no weights at {m}"))),
            }
        })
        .await
        .unwrap();
        assert_eq!(served, 3);
        assert_eq!(lookups, vec![None, Some("/missing-weights".to_string())]);

        let replies: Vec<WorkerReply> = std::str::from_utf8(&answers)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(replies.len(), 3);
        assert_eq!(
            (replies[0].task, replies[1].task, replies[2].task),
            (0, 1, 2)
        );
        // No task descriptor was written: the task fails, and says so in its status too.
        assert!(replies.iter().all(|r| r.state == TaskState::Failed));
        assert!(
            replies[0]
                .message
                .as_deref()
                .unwrap()
                .contains("tasks/00000.json"),
            "{replies:?}"
        );
        let status: TaskStatus = serde_json::from_slice(
            &std::fs::read(out.path().join(status_key("serve-test", 0))).unwrap(),
        )
        .unwrap();
        assert_eq!(status.state, TaskState::Failed);
        assert_eq!(status.worker, "test:1");
        assert!(replies[2]
            .message
            .as_deref()
            .unwrap()
            .contains("no weights at /missing-weights"));
        // The weights could not be found, so no status was written for task 2.
        assert!(!out.path().join(status_key("serve-test", 2)).exists());
    }

    fn listed(key: &str, size: u64) -> TaskImage {
        TaskImage {
            input: crate::dataset::layout::InputImage {
                key: key.into(),
                identity: "P".into(),
                label: 0,
                size,
            },
            sample_key: "000000_P".into(),
        }
    }

    #[tokio::test]
    async fn inputs_over_the_byte_limit_are_never_read_past_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("P")).unwrap();
        std::fs::write(dir.path().join("P/small.jpg"), [1u8; 10]).unwrap();
        // Sparse, 8 GiB: a full read would need 8 GiB of memory.
        std::fs::File::create(dir.path().join("P/huge.jpg"))
            .unwrap()
            .set_len(8 << 30)
            .unwrap();
        let store = crate::storage::LocalStorage::new(Location::Local(dir.path().into()));

        let got = fetch_bounded(&store, &listed("P/small.jpg", 10), 10).await;
        assert!(matches!(got, Ok(Fetched::Bytes(b)) if b.len() == 10));
        // The listing says too large: refused without opening the file.
        let got = fetch_bounded(&store, &listed("P/missing.jpg", 11), 10).await;
        assert!(matches!(got, Ok(Fetched::TooLarge { bytes: 11 })));
        // Listed small, but it grew: the bounded read stops after limit + 1 bytes.
        let got = fetch_bounded(&store, &listed("P/huge.jpg", 5), 1 << 20).await;
        assert!(matches!(got, Ok(Fetched::TooLarge { bytes }) if bytes == 8 << 30));
        let got = read_local_bounded(dir.path(), "P/huge.jpg", 1 << 20).await;
        assert!(matches!(got, Ok(None)));
        // A vanished file is a storage problem (the task is retried), a bad key is refused.
        let got = fetch_bounded(&store, &listed("P/missing.jpg", 1), 10).await;
        assert!(matches!(got, Err(Error::NotFound(_))));
        let got = read_local_bounded(dir.path(), "../P/small.jpg", 10).await;
        assert!(matches!(got, Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn serve_stops_at_a_malformed_request() {
        let mut answers = Vec::new();
        let err = serve(&b"{not json\n"[..], &mut answers, "test:1", |_| {
            Ok(remote_models())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("worker request"), "{err}");
        assert!(answers.is_empty());
    }
}
