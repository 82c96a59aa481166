//! The prepare fan-out: a client and stateless workers that share nothing but object
//! storage. The client lists the input, writes one task descriptor per K images, invokes one
//! worker per task through an [`Executor`] (warm local child processes or AWS Lambda), waits for
//! each task's status object, retries failed or timed-out tasks, and merges the results into
//! `manifest.json` + shards. Objects have fixed keys, so retries and reruns are idempotent,
//! and a rerun of the same job skips finished tasks.

pub mod client;
pub mod executor;
pub mod protocol;
pub mod worker;

pub use client::{prepare, PrepareConfig, PrepareProgress, PrepareReport, DEFAULT_TASK_SIZE};
pub use executor::{Executor, LambdaExecutor, LocalExecutor, LocalMode};
pub use protocol::{SeveralFaces, TaskStatus, WorkerReply, WorkerRequest};
pub use worker::{run_task, serve, EngineCache, ModelSource};
