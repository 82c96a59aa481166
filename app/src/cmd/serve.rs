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
use facepipe_serving::server::ConnectionLimits;
use facepipe_serving::{
    AdmissionConfig, AppState, LoadOptions, Registry, ServeOptions, ServiceConfig,
};

use crate::common::{parse_device, read_secret_file, GlobalArgs};
use facepipe_serving::review::Review;

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
    /// Hold the output folder of `facepipe cluster` for review: the page's People view
    /// shows its groups, and naming one enrolls its faces. Needs the API key; every review
    /// action is recorded in OUT/decisions.json for the next `facepipe cluster` run.
    #[arg(long, value_name = "OUT")]
    pub review: Option<PathBuf>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How the service listens and what it accepts (shared by `serve` and `deploy`).
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Address to listen on (use 0.0.0.0:8080 to accept other machines).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// API key callers send as `Authorization: Bearer KEY`; enroll and delete are disabled
    /// without one. Prefer --api-key-file or FACEPIPE_API_KEY: argv is visible to every
    /// user of the machine.
    #[arg(
        long,
        env = "FACEPIPE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Read the API key from this file (its text without surrounding whitespace); takes
    /// precedence over --api-key and FACEPIPE_API_KEY.
    #[arg(long, env = "FACEPIPE_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Require the API key for identify, verify and people too (not only enroll and delete).
    #[arg(long)]
    pub require_key_for_all: bool,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between looks at the registry for a new current deployment (0: never;
    /// otherwise 0.1 to 86400).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub poll_interval: f64,
    /// Largest request body, in MiB (1 to 1024).
    #[arg(long, default_value_t = 20, value_name = "MIB")]
    pub max_body_mb: usize,
    /// Largest image accepted, in megapixels (checked from the header, before decoding).
    #[arg(long, default_value_t = 40.0, value_name = "MP")]
    pub max_megapixels: f64,
    /// Seconds a request may take from its arrival before it is answered with a timeout
    /// error and its work is stopped (1 to 3600).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// Requests running inference at once (default: the number of cores; lowered to fit
    /// --memory-budget-mb).
    #[arg(long, value_name = "N")]
    pub max_inflight: Option<usize>,
    /// Requests that may wait for an inference slot; beyond that they get 503 with
    /// Retry-After (default: 4 per slot).
    #[arg(long, value_name = "N")]
    pub max_queue: Option<usize>,
    /// Seconds a request may wait for an inference slot before it gets 503.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub queue_timeout: f64,
    /// Memory all requests in flight may hold, in MiB: each may hold its upload, the decoded
    /// photo and the networks' working set (default: half the machine's memory).
    #[arg(long, value_name = "MIB")]
    pub memory_budget_mb: Option<u64>,
    /// Faces identified per photo: the largest ones (answers say `faces_truncated`).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_faces: usize,
    /// Client connections served at once; more wait until one closes.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and to start the next request on
    /// an idle connection, and to finish a TLS handshake).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub header_timeout: f64,
    /// Seconds a client has to deliver a request's body once its headers are in (0.1 to
    /// 3600, and never past --timeout); a slower upload gets 408 and holds no inference
    /// slot while it trickles in.
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS")]
    pub body_timeout: f64,
    /// Endpoint of an S3-compatible store holding an s3:// registry (e.g.
    /// http://127.0.0.1:8333 for SeaweedFS); default: AWS / AWS_ENDPOINT_URL.
    #[arg(long, env = "FACEPIPE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Where models of an s3:// registry are downloaded to (default: the facepipe cache's
    /// registry-models/ folder).
    #[arg(long, env = "FACEPIPE_REGISTRY_CACHE", value_name = "DIR")]
    pub registry_cache: Option<PathBuf>,
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

/// Largest `--max-body-mb`: bigger uploads belong in object storage, not one request.
const MAX_BODY_MB: usize = 1024;
/// Largest `--max-megapixels` (a 40000×25000 photo).
const MAX_MEGAPIXELS: f64 = 1000.0;
/// Shortest `--poll-interval` other than 0: faster polling only loads the registry.
const MIN_POLL_SECONDS: f64 = 0.1;
const MAX_POLL_SECONDS: f64 = 86_400.0;
const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// A flag in seconds as a duration: finite and within `[min, max]`, else an error that
/// names the flag and the range.
fn seconds(flag: &str, value: f64, min: f64, max: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && (min..=max).contains(&value),
        "{flag} {value} is out of range: give seconds from {min} to {max}"
    );
    Ok(Duration::from_secs_f64(value))
}

/// A count flag that must be at least 1.
fn positive(flag: &str, value: usize) -> anyhow::Result<usize> {
    anyhow::ensure!(value >= 1, "{flag} must be at least 1");
    Ok(value)
}

impl ServiceArgs {
    pub fn config(&self) -> anyhow::Result<ServiceConfig> {
        anyhow::ensure!(
            (1..=MAX_BODY_MB).contains(&self.max_body_mb),
            "--max-body-mb {} is out of range: give 1 to {MAX_BODY_MB} MiB",
            self.max_body_mb
        );
        let max_body_bytes = self
            .max_body_mb
            .checked_mul(1024 * 1024)
            .context("--max-body-mb is too large for this machine")?;
        anyhow::ensure!(
            self.max_megapixels.is_finite()
                && self.max_megapixels > 0.0
                && self.max_megapixels <= MAX_MEGAPIXELS,
            "--max-megapixels {} is out of range: give more than 0 and at most {MAX_MEGAPIXELS}",
            self.max_megapixels
        );
        anyhow::ensure!(
            (1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout),
            "--timeout {} is out of range: give 1 to {MAX_TIMEOUT_SECONDS} seconds",
            self.timeout
        );
        let api_key = match &self.api_key_file {
            Some(file) => Some(read_secret_file(file, "--api-key-file")?),
            None => self.api_key.clone().filter(|k| !k.is_empty()),
        };
        anyhow::ensure!(
            api_key.is_some() || !self.require_key_for_all,
            "--require-key-for-all needs an API key: give --api-key-file, FACEPIPE_API_KEY or --api-key"
        );
        let defaults = AdmissionConfig::default();
        let max_inflight = match self.max_inflight {
            Some(n) => positive("--max-inflight", n)?,
            None => defaults.max_inflight,
        };
        let memory_budget = match self.memory_budget_mb {
            Some(mb) => {
                anyhow::ensure!(mb >= 1, "--memory-budget-mb must be at least 1");
                mb.checked_mul(1024 * 1024)
                    .context("--memory-budget-mb is too large")?
            }
            None => defaults.memory_budget,
        };
        let admission = AdmissionConfig {
            max_inflight,
            max_queue: self
                .max_queue
                .unwrap_or_else(|| max_inflight.saturating_mul(4)),
            queue_timeout: seconds("--queue-timeout", self.queue_timeout, 0.0, 3600.0)?,
            memory_budget,
        };
        Ok(ServiceConfig {
            api_key,
            require_key_for_all: self.require_key_for_all,
            limits: DecodeLimits {
                max_pixels: (self.max_megapixels * 1e6) as u64,
                max_bytes: max_body_bytes as u64,
                ..DecodeLimits::default()
            },
            max_body_bytes,
            request_timeout: Duration::from_secs(self.timeout),
            body_timeout: seconds("--body-timeout", self.body_timeout, 0.1, 3600.0)?,
            max_faces: positive("--max-faces", self.max_faces)?,
            admission,
            ..ServiceConfig::default()
        })
    }

    /// `--poll-interval`: 0 turns polling off; anything else must be a sane period.
    fn poll_interval(&self) -> anyhow::Result<Option<Duration>> {
        if self.poll_interval == 0.0 {
            return Ok(None);
        }
        seconds(
            "--poll-interval",
            self.poll_interval,
            MIN_POLL_SECONDS,
            MAX_POLL_SECONDS,
        )
        .map(Some)
        .context("use 0 to never look for new deployments")
    }

    /// Open the registry at `location` (a folder or s3://…) with the S3 flags.
    pub fn open_registry(&self, location: &str) -> anyhow::Result<Registry> {
        let options = StorageOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            ..StorageOptions::default()
        };
        let registry = Registry::open_with(location, &options)
            .with_context(|| format!("opening the registry {location}"))?;
        Ok(match &self.registry_cache {
            Some(dir) => registry.with_model_cache(dir),
            None => registry,
        })
    }

    pub fn load_options(&self, global: &GlobalArgs) -> anyhow::Result<LoadOptions> {
        let mut load = LoadOptions::new(global.model_dir()?);
        load.device = parse_device(&self.device)?;
        load.engine.detector.kind = self.detector;
        Ok(load)
    }

    pub fn serve_options(&self) -> anyhow::Result<ServeOptions> {
        let header_read_timeout = seconds("--header-timeout", self.header_timeout, 0.1, 3600.0)?;
        Ok(ServeOptions {
            listen: self.listen,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            poll_interval: self.poll_interval()?,
            connections: ConnectionLimits {
                max_connections: positive("--max-connections", self.max_connections)?,
                header_read_timeout,
                tls_handshake_timeout: header_read_timeout,
            },
        })
    }
}

pub fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Refuse bad flags before the (slow) deployment load.
    let config = args.service.config()?;
    args.service.serve_options()?;
    let registry = args.service.open_registry(&args.registry)?;
    let load = args.service.load_options(global)?;
    anyhow::ensure!(
        args.review.is_none() || config.api_key.is_some(),
        "--review shows the collection's faces and enrolls people, so it needs an API key: \
         add --api-key-file FILE (or set FACEPIPE_API_KEY)"
    );
    let review = match &args.review {
        Some(out) => Some(
            Review::open(out)
                .with_context(|| format!("reading the clustering result in {}", out.display()))?,
        ),
        None => None,
    };
    let state = AppState::load(registry, load, config)
        .with_context(|| format!("loading the current deployment of {}", args.registry))?;
    if let Some(review) = review {
        let (faces, groups) = review.counts();
        println!(
            "reviewing {}: {faces} faces in {groups} groups (the page's People view; \
             decisions go to its decisions.json)",
            review.dir().display()
        );
        state.hold_review(review);
    }
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
    let slots = state.admission().capacity();
    let options = service.serve_options()?;
    runtime.block_on(facepipe_serving::serve(state, options, |addr, scheme| {
        // Printed on stdout so scripts can wait for it; the page is at this URL.
        println!("serving {summary}");
        println!("{slots} inference slot(s); more requests wait in a bounded queue or get 503");
        println!("web page and API at {scheme}://{addr}/  (Ctrl-C to stop)");
        if !keyed {
            println!("enroll/delete are disabled: start with --api-key-file (or FACEPIPE_API_KEY) to allow them");
        }
    }))
    .map_err(|e| match e {
        facepipe_serving::Error::Listen { .. } => {
            anyhow::anyhow!("{e}; pick another address with --listen")
        }
        other => other.into(),
    })?;
    Ok(())
}
