//! Dispatching: invoke one worker per pending task, N at a time, each retried with backoff
//! (and its images run one at a time if every attempt died); then collect the outcomes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;

use super::isolate::isolate;
use super::plan::JobPlan;
use super::{read_status, PrepareConfig, PrepareProgress};
use crate::error::{Error, Result};
use crate::fanout::executor::Executor;
use crate::fanout::protocol::{TaskState, TaskStatus, WorkerRequest};
use crate::storage::Storage;

/// What one task's attempts came to.
pub(super) struct TaskRun {
    pub status: Option<TaskStatus>,
    pub attempts: u32,
    pub errors: Vec<String>,
    /// The last attempt left no status of its own: the worker died, hung or never started
    /// (rather than reporting a failure it could describe).
    pub died: bool,
}

/// Counts finished and failed tasks and tells the caller's callback.
pub(super) struct Progress<'a> {
    state: Mutex<PrepareProgress>,
    callback: Option<&'a (dyn Fn(&PrepareProgress) + Sync)>,
}

impl<'a> Progress<'a> {
    /// Start from `start` (the tasks reused from an earlier run) and report it.
    pub fn start(
        start: PrepareProgress,
        callback: Option<&'a (dyn Fn(&PrepareProgress) + Sync)>,
    ) -> Self {
        if let Some(f) = callback {
            f(&start);
        }
        Progress {
            state: Mutex::new(start),
            callback,
        }
    }

    fn update(&self, change: impl FnOnce(&mut PrepareProgress)) {
        let now = {
            // A panicking callback cannot leave the counts half-updated: take them anyway.
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut state);
            *state
        };
        if let Some(f) = self.callback {
            f(&now);
        }
    }

    fn task_finished(&self, images: u32) {
        self.update(|p| {
            p.tasks_done += 1;
            p.images_done += images;
        });
    }

    fn task_failed(&self) {
        self.update(|p| p.tasks_failed += 1);
    }
}

/// Everything the workers of one job share.
pub(super) struct Dispatch<'a> {
    pub executor: &'a dyn Executor,
    pub output: &'a dyn Storage,
    /// The output location as workers are told it.
    pub output_location: String,
    pub config: &'a PrepareConfig,
    pub plan: &'a JobPlan,
    /// Where the workers find the weights (see `weights_for_workers`).
    pub models: Option<String>,
}

impl Dispatch<'_> {
    /// Run every pending task, `config.workers` at a time; results in completion order.
    pub async fn run_all(&self, pending: &[u32], progress: &Progress<'_>) -> Vec<(u32, TaskRun)> {
        futures::stream::iter(pending.iter().copied())
            .map(|task| async move { (task, self.run_task(task, progress).await) })
            .buffer_unordered(self.config.workers)
            .collect()
            .await
    }

    fn request(&self, task: u32) -> WorkerRequest {
        WorkerRequest {
            output: self.output_location.clone(),
            job: self.plan.job.clone(),
            task,
            attempt: 1,
            storage: self.config.storage.clone(),
            models: self.models.clone(),
            image: None,
        }
    }

    async fn run_task(&self, task: u32, progress: &Progress<'_>) -> TaskRun {
        let request = self.request(task);
        let mut run = run_with_retries(
            self.executor,
            self.output,
            request.clone(),
            self.config,
            self.config.max_attempts,
        )
        .await;
        // Workers that died or hung every time (rather than report an error): maybe one
        // image kills them. Run the images one at a time.
        let descriptor = self.plan.task(task);
        if let Some(descriptor) = descriptor.filter(|_| run.status.is_none() && run.died) {
            let alone = isolate(
                self.executor,
                self.output,
                &request,
                self.config,
                descriptor,
            )
            .await;
            run.attempts += alone.attempts;
            run.errors.extend(alone.errors);
            run.status = alone.status;
        }
        match run.status {
            Some(_) => progress.task_finished(self.plan.task_images(task)),
            None => progress.task_failed(),
        }
        run
    }
}

/// Invoke `request` until its status object says done, at most `max_attempts` times.
pub(super) async fn run_with_retries(
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

/// What the workers did in this run, for the report.
pub(super) struct Outcomes {
    /// Worker invocations, retries included.
    pub attempts: u32,
    /// Every failed attempt with its reason, `task N: …`.
    pub retry_reasons: Vec<String>,
    /// The statuses of the tasks finished in this run.
    pub fresh: Vec<TaskStatus>,
}

/// Add the finished runs to `done`. Fails, naming each one, if any task failed for good:
/// the finished ones stay stored, so a rerun of the same job retries only those.
pub(super) fn collect(
    runs: Vec<(u32, TaskRun)>,
    done: &mut BTreeMap<u32, TaskStatus>,
    plan: &JobPlan,
    config: &PrepareConfig,
) -> Result<Outcomes> {
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
            "{} of {} tasks failed after {} attempts each, and not because of one \
             image: their workers reported errors, or never reached an image when run one at \
             a time ({}); finished tasks are kept: fix the cause, then rerun the same command \
             (job {}) to retry only the failed ones",
            failed.len(),
            plan.task_count(),
            config.max_attempts,
            failed.join("; "),
            plan.job,
        )));
    }
    Ok(Outcomes {
        attempts,
        retry_reasons,
        fresh,
    })
}
