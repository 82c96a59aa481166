//! `facepipe-lambda-worker`: the prepare worker as an AWS Lambda function.
//!
//! The payload is a [`WorkerRequest`] (a reference to a task in storage, never image bytes).
//! The weights are fetched from the request's `models` location once per cold start into
//! `/tmp/facepipe-models` and the loaded networks stay in memory while the container is warm.
//! Build and deploy with cargo lambda (see the project README):
//! `cargo lambda build --release -p facepipe-pipeline --features lambda --bin facepipe-lambda-worker`.

use std::sync::OnceLock;

use facepipe_pipeline::fanout::protocol::TaskState;
use facepipe_pipeline::fanout::{run_task, EngineCache, ModelSource, WorkerRequest};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};

/// Where the weights are cached: /tmp is the only writable place in Lambda.
const MODEL_CACHE: &str = "/tmp/facepipe-models";

static ENGINES: OnceLock<EngineCache> = OnceLock::new();

async fn handle(event: LambdaEvent<WorkerRequest>) -> Result<Value, lambda_runtime::Error> {
    let (request, context) = event.into_parts();
    let Some(models) = request.models.clone() else {
        return Err("the request names no models location".into());
    };
    let engines = ENGINES.get_or_init(|| {
        EngineCache::new(ModelSource::Remote {
            location: models,
            cache: MODEL_CACHE.into(),
        })
    });
    let worker = format!("lambda:{}", context.request_id);
    let status = run_task(&request, engines, &worker).await?;
    match status.state {
        TaskState::Done => Ok(json!({
            "task": status.task,
            "attempt": status.attempt,
            "state": "done",
            "seconds": status.seconds,
            "images": status.records.len(),
        })),
        // A function error tells the client to retry; the status object says why.
        TaskState::Failed => Err(status
            .error
            .unwrap_or_else(|| "task failed".to_string())
            .into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    // A binary's settings come from its environment; the library takes them as arguments.
    let gemm_threads = std::env::var("FACEPIPE_GEMM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok());
    facepipe_pipeline::nn::set_gemm_threads(gemm_threads);
    lambda_runtime::run(service_fn(handle)).await
}
