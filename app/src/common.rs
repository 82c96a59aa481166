//! Options shared by every subcommand, and process-wide setup.

use std::path::PathBuf;

use clap::Args;
use facepipe_pipeline::ModelDir;

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Folder with the pretrained face-api weights (default: the cache, where scripts/setup.sh puts them).
    #[arg(long, global = true, env = "FACEPIPE_MODELS", value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only results and errors (no progress bars).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl GlobalArgs {
    pub fn model_dir(&self) -> anyhow::Result<ModelDir> {
        Ok(ModelDir::locate(self.models.as_deref())?)
    }
}

/// One tracing subscriber for the process: `RUST_LOG` wins, else a level from -v / -q.
pub fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        // The commands print their own progress and results; logs are for -v.
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parse `auto|cpu|cuda|cuda:N` into a tch device.
pub fn parse_device(s: &str) -> anyhow::Result<tch::Device> {
    match s {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(tch::Device::Cuda(n)),
            _ => anyhow::bail!("unknown device {other:?}: use auto, cpu, cuda or cuda:N"),
        },
    }
}
