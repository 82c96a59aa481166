//! Executors run one worker invocation per task attempt and report whether it ran to the end.
//! They do not interpret results: the client reads the task's status object from storage,
//! which is the only thing that proves the work was done.
//!
//! - [`LocalExecutor`] runs tasks in child processes of `facepipe worker` on this machine.
//!   Processes, not threads, because a worker that crashes (a decoder bug, an abort, the OOM
//!   killer) or hangs must cost one task attempt, not the whole job: the executor kills it
//!   and the client retries the task in a fresh process. Each worker's peak memory is its
//!   own, as on Lambda.
//!
//!   The processes are *warm* by default ([`LocalMode::Warm`]): up to N long-lived
//!   `facepipe worker --serve` children, each running one task at a time from a JSON line on
//!   stdin and answering one JSON line on stdout. Starting `facepipe` costs about 0.4 s and
//!   450 MB (it links libtorch) and each process loads the networks again, so a process per
//!   task spent much of its time starting up; a warm worker pays that once, like a warm
//!   Lambda container. Crash isolation is unchanged: a worker that dies, closes its stdout,
//!   answers garbage or runs past the task timeout is killed and never reused, and a task is
//!   never handed to a process that is not idle. [`LocalMode::PerTask`] (one
//!   `facepipe worker --request JSON` process per attempt) stays as the benchmark baseline.
//! - [`LambdaExecutor`] invokes an AWS Lambda function (or the `cargo lambda watch`
//!   emulator) synchronously with a [`WorkerRequest`] payload.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::protocol::{TaskState, WorkerReply, WorkerRequest};
use crate::error::{Error, Result};
use crate::storage::{BoxFuture, StorageOptions};

/// Runs one worker for one task.
pub trait Executor: Send + Sync {
    /// `local` or `lambda`.
    fn name(&self) -> &'static str;
    /// Run the worker to its end. `Err` means it crashed, timed out or could not start.
    fn invoke<'a>(&'a self, request: &'a WorkerRequest, timeout: Duration) -> BoxFuture<'a, ()>;
    /// Whether workers need the weights uploaded to storage (they have no local copy).
    fn needs_remote_models(&self) -> bool;
}

/// How [`LocalExecutor`] uses its child processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalMode {
    /// Long-lived `… --serve` workers reused across tasks (start-up paid once per process).
    #[default]
    Warm,
    /// A fresh `… --request JSON` process per task attempt (start-up paid every task).
    PerTask,
}

/// Lines of a warm worker's stderr kept for the error message when it dies.
const STDERR_TAIL: usize = 20;

/// Child processes of a worker program on this machine.
pub struct LocalExecutor {
    program: PathBuf,
    args: Vec<String>,
    /// Extra environment for the children.
    env: Vec<(String, String)>,
    mode: LocalMode,
    /// Idle warm workers kept at most (the client runs at most this many tasks at once).
    keep_idle: usize,
    idle: Mutex<Vec<WarmWorker>>,
}

impl LocalExecutor {
    /// Warm workers: `program args… --serve` must run [`super::worker::serve`];
    /// with [`LocalMode::PerTask`], `program args… --request JSON` must run
    /// [`super::worker::run_task`] and exit 0 (the `facepipe worker` subcommand does both).
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        LocalExecutor {
            program: program.into(),
            args,
            // One thread per worker: parallelism comes from the number of workers, and
            // per-worker timings stay comparable with single-threaded Lambda workers.
            env: vec![
                ("RAYON_NUM_THREADS".into(), "1".into()),
                ("MATMUL_NUM_THREADS".into(), "1".into()),
                // Their stderr ends up in error messages: plain text, no colour codes.
                ("NO_COLOR".into(), "1".into()),
            ],
            mode: LocalMode::Warm,
            keep_idle: 2,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Keep up to `workers` warm processes (use the job's worker count).
    pub fn workers(mut self, workers: usize) -> Self {
        self.keep_idle = workers.max(1);
        self
    }

    /// Choose warm workers (the default) or a process per task.
    pub fn mode(mut self, mode: LocalMode) -> Self {
        self.mode = mode;
        self
    }

    /// Add an environment variable for every child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args).kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn start_error(&self, e: std::io::Error) -> Error {
        Error::Worker(format!(
            "cannot start the worker {}: {e}",
            self.program.display()
        ))
    }

    /// One attempt in a fresh process that exits when the task is done.
    async fn invoke_per_task(&self, request: &WorkerRequest, timeout: Duration) -> Result<()> {
        let payload =
            serde_json::to_string(request).map_err(|e| Error::json("worker request", e))?;
        let mut cmd = self.command();
        cmd.arg("--request")
            .arg(payload)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| self.start_error(e))?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            // The child is dropped with the timed-out future: kill_on_drop ends it.
            Err(_) => Err(timed_out(request, timeout)),
            Ok(Err(e)) => Err(Error::Worker(format!("waiting for the worker: {e}"))),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().collect();
                Err(Error::Worker(format!(
                    "{}: worker exited with {} ({})",
                    request.describe(),
                    out.status,
                    last_lines(&tail, 3)
                )))
            }
        }
    }

    /// One attempt on an idle warm worker (or a new one).
    async fn invoke_warm(&self, request: &WorkerRequest, timeout: Duration) -> Result<()> {
        let mut line =
            serde_json::to_string(request).map_err(|e| Error::json("worker request", e))?;
        line.push('\n');
        let mut worker = match self.take_idle() {
            Some(w) => w,
            None => self.spawn_warm()?,
        };
        if worker.send(&line).await.is_err() {
            // The idle worker died since its last task (the OOM killer, say). The task never
            // reached it, so it costs no attempt: start a fresh worker instead.
            let gone = worker.end().await;
            tracing::warn!(
                worker = gone.pid,
                "an idle worker had died: {}",
                gone.describe()
            );
            worker = self.spawn_warm()?;
            if let Err(e) = worker.send(&line).await {
                let gone = worker.end().await;
                return Err(Error::Worker(format!(
                    "{}: a new worker would not take the task ({e}); it {}",
                    request.describe(),
                    gone.describe()
                )));
            }
        }
        match tokio::time::timeout(timeout, worker.reply(request)).await {
            Err(_) => {
                worker.kill().await;
                Err(timed_out(request, timeout))
            }
            Ok(Err(why)) => {
                // Crashed, killed, or broke the protocol: never reuse it.
                let gone = worker.end().await;
                Err(Error::Worker(format!(
                    "{}: the worker (pid {}) {why}; it {}",
                    request.describe(),
                    gone.pid,
                    gone.describe()
                )))
            }
            Ok(Ok(reply)) => {
                worker.tasks += 1;
                self.put_idle(worker);
                match reply.state {
                    TaskState::Done => Ok(()),
                    TaskState::Failed => Err(Error::Worker(format!(
                        "{}: {}",
                        request.describe(),
                        reply
                            .message
                            .as_deref()
                            .unwrap_or("the worker reported a failure")
                    ))),
                }
            }
        }
    }

    /// An idle worker that is still alive, if any.
    fn take_idle(&self) -> Option<WarmWorker> {
        let mut idle = lock(&self.idle);
        while let Some(mut w) = idle.pop() {
            match w.child.try_wait() {
                // Still running: ready for a task.
                Ok(None) => return Some(w),
                // Died while idle; dropping it reaps (or kills) it.
                Ok(Some(status)) => {
                    tracing::warn!(worker = w.pid, "an idle worker exited with {status}");
                }
                Err(e) => tracing::warn!(worker = w.pid, "checking an idle worker: {e}"),
            }
        }
        None
    }

    fn put_idle(&self, worker: WarmWorker) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.keep_idle {
            idle.push(worker);
        }
        // Otherwise it is dropped here, and kill_on_drop ends it.
    }

    fn spawn_warm(&self) -> Result<WarmWorker> {
        let mut cmd = self.command();
        cmd.arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.start_error(e))?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::Worker(
                "the worker's stdin, stdout or stderr is not a pipe".into(),
            ));
        };
        // Drain stderr all the time (a full pipe would block the worker), keeping the tail
        // for the error message when the worker dies; with -v the lines go to the log.
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let keep = Arc::clone(&tail);
        let drain = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = strip_ansi(&line);
                tracing::debug!(worker = pid, "{line}");
                let mut tail = lock(&keep);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        tracing::debug!(worker = pid, "started a warm worker");
        Ok(WarmWorker {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            stderr_tail: tail,
            drain,
            pid,
            tasks: 0,
        })
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn needs_remote_models(&self) -> bool {
        false
    }

    fn invoke<'a>(&'a self, request: &'a WorkerRequest, timeout: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.mode {
                LocalMode::Warm => self.invoke_warm(request, timeout).await,
                LocalMode::PerTask => self.invoke_per_task(request, timeout).await,
            }
        })
    }
}

/// A `… --serve` child process. Dropping it kills the process (kill_on_drop), so a worker
/// whose invocation was abandoned half-way (timeout, cancelled client) never runs on.
struct WarmWorker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    drain: tokio::task::JoinHandle<()>,
    pid: u32,
    /// Tasks it answered.
    tasks: u32,
}

/// How a discarded worker ended, for the error message.
struct Ended {
    pid: u32,
    status: Option<ExitStatus>,
    tasks: u32,
    stderr: String,
}

impl Ended {
    fn describe(&self) -> String {
        let how = match self.status {
            Some(s) => format!("exited with {s}"),
            None => "was killed".to_string(),
        };
        let stderr = if self.stderr.is_empty() {
            String::new()
        } else {
            format!(": {}", self.stderr)
        };
        format!(
            "{how} after {} earlier task{}{stderr}",
            self.tasks,
            if self.tasks == 1 { "" } else { "s" }
        )
    }
}

impl WarmWorker {
    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await
    }

    /// The worker's answer to `request`. `Err` says why there is none; lines that are not
    /// replies (a library printing to stdout) are logged and skipped.
    async fn reply(&mut self, request: &WorkerRequest) -> std::result::Result<WorkerReply, String> {
        loop {
            match self.stdout.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<WorkerReply>(&line) {
                    Ok(reply) if reply.answers(request) => return Ok(reply),
                    Ok(other) => {
                        return Err(format!(
                            "answered task {} attempt {} instead",
                            other.task, other.attempt
                        ))
                    }
                    Err(_) => {
                        tracing::debug!(worker = self.pid, "not a reply on stdout: {line}");
                    }
                },
                Ok(None) => return Err("closed its stdout before answering".into()),
                Err(e) => return Err(format!("could not be read ({e})")),
            }
        }
    }

    /// Kill the process and wait for it.
    async fn kill(&mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(worker = self.pid, "killing a worker: {e}");
        }
    }

    /// Discard the worker: give it a moment to exit on its own (it usually already has),
    /// kill it otherwise, and collect its exit status and last stderr lines.
    async fn end(mut self) -> Ended {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                self.kill().await;
                None
            }
        };
        // stderr ends with the process; the last lines explain a crash.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.drain).await;
        let tail: Vec<String> = lock(&self.stderr_tail).iter().cloned().collect();
        let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
        Ended {
            pid: self.pid,
            status,
            tasks: self.tasks,
            stderr: last_lines(&tail, 3),
        }
    }
}

fn timed_out(request: &WorkerRequest, timeout: Duration) -> Error {
    Error::Timeout(format!(
        "{} ran longer than {:.0} s; the worker was killed",
        request.describe(),
        timeout.as_secs_f64()
    ))
}

/// The last `n` non-empty lines, newest first, on one line.
fn last_lines(lines: &[&str], n: usize) -> String {
    lines
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `line` without terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip up to and including the sequence's final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An AWS Lambda function running `facepipe-lambda-worker`.
pub struct LambdaExecutor {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaExecutor {
    /// `endpoint` overrides the Lambda API endpoint (the `cargo lambda watch` emulator).
    pub async fn connect(
        function: &str,
        endpoint: Option<&str>,
        storage: &StorageOptions,
    ) -> Result<Self> {
        let shared = crate::storage::s3::aws_config(storage).await;
        let mut config = aws_sdk_lambda::config::Builder::from(&shared);
        if let Some(url) = endpoint {
            config = config.endpoint_url(url);
        }
        // Workers run for minutes; the default read timeout is far shorter.
        config = config.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        );
        Ok(LambdaExecutor {
            client: aws_sdk_lambda::Client::from_conf(config.build()),
            function: function.to_string(),
        })
    }
}

impl Executor for LambdaExecutor {
    fn name(&self) -> &'static str {
        "lambda"
    }

    fn needs_remote_models(&self) -> bool {
        true
    }

    fn invoke<'a>(&'a self, request: &'a WorkerRequest, timeout: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let payload =
                serde_json::to_vec(request).map_err(|e| Error::json("worker request", e))?;
            let call = self
                .client
                .invoke()
                .function_name(&self.function)
                .payload(Blob::new(payload))
                .send();
            let out = match tokio::time::timeout(timeout, call).await {
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "{}: Lambda did not answer within {:.0} s",
                        request.describe(),
                        timeout.as_secs_f64()
                    )))
                }
                Ok(Err(e)) => {
                    return Err(Error::Worker(format!(
                        "invoking Lambda function {:?}: {} (check the function name, the Lambda \
                         endpoint and that the function is deployed)",
                        self.function,
                        DisplayErrorContext(&e)
                    )))
                }
                Ok(Ok(out)) => out,
            };
            if let Some(kind) = out.function_error() {
                let body = out
                    .payload()
                    .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
                    .unwrap_or_default();
                return Err(Error::Worker(format!(
                    "{}: the Lambda worker failed ({kind}): {body}",
                    request.describe()
                )));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tails_lose_colour_codes() {
        let line =
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m test fault \u{1b}[3mtask\u{1b}[0m=1";
        assert_eq!(strip_ansi(line), "2026 ERROR test fault task=1");
        assert_eq!(last_lines(&["a", "", "b", "c"], 2), "c | b");
    }
}
