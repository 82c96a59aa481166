//! `facepipe worker`: the prepare worker the local executor runs (hidden).
//!
//! - `--serve`: a warm worker. Reads one JSON task request per line on stdin, runs it with
//!   networks loaded once for the life of the process, answers one JSON line on stdout, and
//!   exits when stdin closes (also when the client dies). The executor kills a worker that
//!   crashes or hangs, so one bad task still costs one attempt, never the job.
//! - `--request JSON`: run one task and exit (0 done, 1 failed).
//!
//! stdout carries only the protocol; logs go to stderr.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_pipeline::fanout::protocol::TaskState;
use facepipe_pipeline::fanout::{run_task, serve, EngineCache, ModelSource, WorkerRequest};
use facepipe_pipeline::ModelDir;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("mode").required(true))]
pub struct WorkerArgs {
    /// The task to run, as the JSON the client writes (output location, job, task, attempt).
    #[arg(long, group = "mode")]
    pub request: Option<String>,
    /// Serve tasks one JSON line at a time on stdin, answering on stdout, until stdin ends.
    #[arg(long, group = "mode")]
    pub serve: bool,
}

pub fn run(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let worker = format!("local:{}", std::process::id());
    let Some(request) = args.request else {
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let served = runtime.block_on(serve(stdin, tokio::io::stdout(), &worker, |request| {
            Ok(ModelSource::Local(models_for(global, request)?))
        }))?;
        tracing::debug!(served, "stdin closed; the warm worker exits");
        return Ok(ExitCode::SUCCESS);
    };
    let request: WorkerRequest = serde_json::from_str(&request).context("parsing --request")?;
    let models = models_for(global, &request)?;
    let engines = EngineCache::new(ModelSource::Local(models));
    let status = runtime.block_on(run_task(&request, &engines, &worker))?;
    Ok(match status.state {
        TaskState::Done => ExitCode::SUCCESS,
        TaskState::Failed => ExitCode::from(1),
    })
}

/// The client names the weights it uses, so client and workers agree.
fn models_for(global: &GlobalArgs, request: &WorkerRequest) -> facepipe_pipeline::Result<ModelDir> {
    match &request.models {
        Some(dir) => ModelDir::open(dir),
        None => ModelDir::locate(global.models.as_deref()),
    }
}
