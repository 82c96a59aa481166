//! `facepipe worker`: run one prepare task (the local executor starts one such process per
//! task, so a crash or hang costs one task attempt, never the job).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_pipeline::fanout::protocol::TaskState;
use facepipe_pipeline::fanout::{run_task, EngineCache, ModelSource, WorkerRequest};
use facepipe_pipeline::ModelDir;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The task to run, as the JSON the client writes (output location, job, task, attempt).
    #[arg(long)]
    pub request: String,
}

pub fn run(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let request: WorkerRequest =
        serde_json::from_str(&args.request).context("parsing --request")?;
    // The client names the weights it uses, so client and workers agree.
    let models = match &request.models {
        Some(dir) => ModelDir::open(dir)?,
        None => global.model_dir()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engines = EngineCache::new(ModelSource::Local(models));
    let worker = format!("local:{}", std::process::id());
    let status = runtime.block_on(run_task(&request, &engines, &worker))?;
    Ok(match status.state {
        TaskState::Done => ExitCode::SUCCESS,
        TaskState::Failed => ExitCode::from(1),
    })
}
