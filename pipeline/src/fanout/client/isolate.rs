//! Isolation: after every attempt at a task died, run its images one at a time, so that an
//! image that kills its worker each time becomes one `failed` record and the rest of the
//! task is processed as usual.

use bytes::Bytes;

use super::dispatch::{run_with_retries, TaskRun};
use super::{PrepareConfig, IMAGE_ALONE_ATTEMPTS};
use crate::dataset::shards::read_all;
use crate::dataset::{Outcome, Record, ShardInfo, ShardWriter};
use crate::error::Result;
use crate::fanout::executor::Executor;
use crate::fanout::protocol::{
    image_shard_key, image_started_key, status_key, TaskDescriptor, TaskState, TaskStatus,
    WorkerRequest,
};
use crate::storage::{self, Storage};

/// After every attempt at a task failed, run its images one at a time: an image that kills
/// its worker each time (a decoder crash, an abort, a hang) becomes one `failed` record and
/// the others are processed as usual. The images' results are folded into the task's shard
/// and status, so the rest of the job (merge, resume) sees an ordinary finished task.
///
/// The task stays failed (status `None`) when a worker reported an error it could describe
/// (storage, weights) or never reached its image: then the images are not to blame.
pub(super) async fn isolate(
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
