//! `facepipe serve`: serve the current deployment of a registry over HTTP(S), swapping in a
//! newer one when `CURRENT` moves. Also holds the service flags `deploy` shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use facepipe_pipeline::storage::StorageOptions;
use facepipe_pipeline::{DecodeLimits, DetectorKind};
use facepipe_serving::{AppState, LoadOptions, Registry, ServeOptions, ServiceConfig};

use crate::common::{parse_device, GlobalArgs};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Registry holding the deployments (`facepipe deploy` writes it): a folder or
    /// s3://BUCKET/PREFIX.
    #[arg(
        long,
        default_value = "registry",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub registry: String,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How the service listens and what it accepts (shared by `serve` and `deploy`).
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Address to listen on (use 0.0.0.0:8080 to accept other machines).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// API key callers send as `Authorization: Bearer KEY`; enroll and delete are disabled without one.
    #[arg(
        long,
        env = "FACEPIPE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Require the API key for identify, verify and people too (not only enroll and delete).
    #[arg(long, requires = "api_key")]
    pub require_key_for_all: bool,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between looks at the registry for a new current deployment (0: never).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub poll_interval: f64,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 20, value_name = "MIB")]
    pub max_body_mb: usize,
    /// Largest image accepted, in megapixels (checked from the header, before decoding).
    #[arg(long, default_value_t = 40.0, value_name = "MP")]
    pub max_megapixels: f64,
    /// Seconds a request may take before it is answered with a timeout error.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// Endpoint of an S3-compatible store holding an s3:// registry (e.g.
    /// http://127.0.0.1:8333 for SeaweedFS); default: AWS / AWS_ENDPOINT_URL.
    #[arg(long, env = "FACEPIPE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// AWS region of an s3:// registry (default: AWS_REGION / the profile / us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Where the embedding network runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Face detector for requests: ssd (accurate; ~85 ms a photo on one core) or tiny
    /// (~15 ms a photo; misses more small and turned faces). `facepipe deploy` enrols its
    /// gallery with ssd either way.
    #[arg(long, default_value = "ssd", value_name = "ssd|tiny")]
    pub detector: DetectorKind,
}

impl ServiceArgs {
    pub fn config(&self) -> anyhow::Result<ServiceConfig> {
        if self.max_megapixels <= 0.0 || self.max_body_mb == 0 {
            anyhow::bail!("--max-megapixels and --max-body-mb must be positive");
        }
        let max_body_bytes = self.max_body_mb * 1024 * 1024;
        Ok(ServiceConfig {
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            require_key_for_all: self.require_key_for_all,
            limits: DecodeLimits {
                max_pixels: (self.max_megapixels * 1e6) as u64,
                max_bytes: max_body_bytes as u64,
            },
            max_body_bytes,
            request_timeout: Duration::from_secs(self.timeout.max(1)),
            ..ServiceConfig::default()
        })
    }

    /// Open the registry at `location` (a folder or s3://…) with the S3 flags.
    pub fn open_registry(&self, location: &str) -> anyhow::Result<Registry> {
        let options = StorageOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
        };
        Registry::open_with(location, &options)
            .with_context(|| format!("opening the registry {location}"))
    }

    pub fn load_options(&self, global: &GlobalArgs) -> anyhow::Result<LoadOptions> {
        let mut load = LoadOptions::new(global.model_dir()?);
        load.device = parse_device(&self.device)?;
        load.engine.detector.kind = self.detector;
        Ok(load)
    }

    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            listen: self.listen,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            poll_interval: (self.poll_interval > 0.0)
                .then(|| Duration::from_secs_f64(self.poll_interval)),
        }
    }
}

pub fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let registry = args.service.open_registry(&args.registry)?;
    let config = args.service.config()?;
    let load = args.service.load_options(global)?;
    let state = AppState::load(registry, load, config)
        .with_context(|| format!("loading the current deployment of {}", args.registry))?;
    serve_blocking(state, &args.service)?;
    Ok(ExitCode::SUCCESS)
}

/// Run the service on a fresh tokio runtime until Ctrl-C / SIGTERM.
pub fn serve_blocking(state: Arc<AppState>, service: &ServiceArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let live = state.live();
    let summary = format!(
        "deployment v{:04} ({} people, {} embeddings, {})",
        live.info.version,
        live.gallery.people().len(),
        live.gallery.len(),
        live.info.model.describe()
    );
    let keyed = state.config().api_key.is_some();
    runtime.block_on(facepipe_serving::serve(state, service.serve_options(), |addr, scheme| {
        // Printed on stdout so scripts can wait for it; the page is at this URL.
        println!("serving {summary}");
        println!("web page and API at {scheme}://{addr}/  (Ctrl-C to stop)");
        if !keyed {
            println!("enroll/delete are disabled: start with --api-key (or FACEPIPE_API_KEY) to allow them");
        }
    }))?;
    Ok(())
}
