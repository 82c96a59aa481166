//! Executors start one worker per task and report whether it ran to the end. They do not
//! interpret results: the client reads the task's status object from storage, which is the
//! only thing that proves the work was done.
//!
//! - [`LocalExecutor`] runs each task in a child process (`facepipe worker …`). A process
//!   per task, not a thread, because a worker that crashes (a decoder bug, an abort, the OOM
//!   killer) or hangs must cost one task attempt, not the whole job: the client kills it
//!   and retries. It is also the same shape as a Lambda invocation (cold start included),
//!   so local timings predict the serverless ones, and each worker's peak memory is its own.
//! - [`LambdaExecutor`] invokes an AWS Lambda function (or the `cargo lambda watch`
//!   emulator) synchronously with a [`WorkerRequest`] payload.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;

use super::protocol::WorkerRequest;
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

/// Child processes of a worker program on this machine.
pub struct LocalExecutor {
    program: PathBuf,
    args: Vec<String>,
    /// Extra environment for the children.
    env: Vec<(String, String)>,
}

impl LocalExecutor {
    /// `program args… --request JSON` must run [`super::worker::run_task`] and exit 0
    /// (the `facepipe worker` subcommand does).
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        LocalExecutor {
            program: program.into(),
            args,
            // One thread per worker: parallelism comes from the number of workers, and
            // per-worker timings stay comparable with single-threaded Lambda workers.
            env: vec![
                ("RAYON_NUM_THREADS".into(), "1".into()),
                ("MATMUL_NUM_THREADS".into(), "1".into()),
            ],
        }
    }

    /// Add an environment variable for every child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
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
            let payload =
                serde_json::to_string(request).map_err(|e| Error::json("worker request", e))?;
            let mut cmd = tokio::process::Command::new(&self.program);
            cmd.args(&self.args)
                .arg("--request")
                .arg(payload)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().map_err(|e| {
                Error::Worker(format!(
                    "cannot start the worker {}: {e}",
                    self.program.display()
                ))
            })?;
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                // The child is dropped with the timed-out future: kill_on_drop ends it.
                Err(_) => Err(Error::Timeout(format!(
                    "task {} attempt {} ran longer than {:.0} s; the worker was killed",
                    request.task,
                    request.attempt,
                    timeout.as_secs_f64()
                ))),
                Ok(Err(e)) => Err(Error::Worker(format!("waiting for the worker: {e}"))),
                Ok(Ok(out)) if out.status.success() => Ok(()),
                Ok(Ok(out)) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                    Err(Error::Worker(format!(
                        "task {} attempt {}: worker exited with {} ({})",
                        request.task, request.attempt, out.status, tail
                    )))
                }
            }
        })
    }
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
                        "task {} attempt {}: Lambda did not answer within {:.0} s",
                        request.task,
                        request.attempt,
                        timeout.as_secs_f64()
                    )))
                }
                Ok(Err(e)) => {
                    return Err(Error::Worker(format!(
                        "invoking Lambda function {:?}: {} (check --lambda-function, --lambda-endpoint \
                         and that the function is deployed)",
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
                    "task {} attempt {}: the Lambda worker failed ({kind}): {body}",
                    request.task, request.attempt
                )));
            }
            Ok(())
        })
    }
}
