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
    /// Threads of the embedding network on CPU (libtorch; default: the cores this process
    /// may use).
    #[arg(long, global = true, env = "FACEPIPE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Threads inside each detector matrix product (default: 1 for batch commands, which
    /// run photos in parallel instead; `serve` and `deploy` use --threads).
    #[arg(long, global = true, env = "FACEPIPE_GEMM_THREADS", value_name = "N")]
    pub gemm_threads: Option<usize>,
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
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process's thread pools, set once before any work. A service answers one photo per
/// request, so its detector products may use as many threads as the embedder; batch
/// commands parallelise over photos and keep one thread per product.
pub fn init_threads(global: &GlobalArgs, runs_network: bool, serves: bool) {
    if runs_network {
        facepipe_model::set_threads(global.threads);
    }
    let per_product = global
        .gemm_threads
        .or_else(|| serves.then(|| usize::try_from(tch::get_num_threads()).unwrap_or(1)));
    facepipe_pipeline::nn::set_gemm_threads(per_product.map(|n| n.max(1)));
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

/// clap value parser for a decision threshold: a positive, finite distance.
pub fn parse_threshold(s: &str) -> Result<f32, String> {
    let t: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number: give a distance such as 0.6"))?;
    if !(t.is_finite() && t > 0.0) {
        return Err(format!(
            "{s} is not a usable threshold: give a positive, finite distance such as 0.6"
        ));
    }
    Ok(t)
}

/// Longest secret file read (an API key is a line, not a document).
const MAX_SECRET_FILE: u64 = 4096;

/// The secret in `path` (e.g. an API key for `--api-key-file`): the file's text without
/// surrounding whitespace, so a trailing newline does not become part of the key. Refuses an
/// empty or oversized file, naming `flag`.
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            anyhow::anyhow!(
                "{flag} {}: {e} (the file must be UTF-8 text)",
                path.display()
            )
        })?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_SECRET_FILE,
        "{flag} {} is longer than {MAX_SECRET_FILE} bytes: it should hold only the key",
        path.display()
    );
    let secret = text.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "{flag} {} is empty: write the key into it",
        path.display()
    );
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_must_be_positive_and_finite() {
        assert_eq!(parse_threshold("0.6"), Ok(0.6));
        for bad in ["inf", "-inf", "NaN", "0", "-0.5", "1e39", "six"] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_files_are_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "s3cret\n").unwrap();
        assert_eq!(read_secret_file(&key, "--api-key-file").unwrap(), "s3cret");
        std::fs::write(&key, " \n").unwrap();
        let e = read_secret_file(&key, "--api-key-file").unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        std::fs::write(&key, vec![b'k'; 10_000]).unwrap();
        let e = read_secret_file(&key, "--api-key-file").unwrap_err();
        assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        let e = read_secret_file(&dir.path().join("missing"), "--api-key-file").unwrap_err();
        assert!(e.to_string().contains("--api-key-file"), "{e}");
    }
}
