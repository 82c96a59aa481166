//! `facepipe score`: who is in these photos? Asks a running service (`--url`) or, with
//! `--local`, loads the registry's current deployment in-process and calls the very
//! function the service's identify handler calls.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_serving::{ErrorBody, Identification, Live, Registry, ServiceConfig};

use crate::common::{parse_device, read_secret_file, GlobalArgs};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Photos to identify.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// The service to ask.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "FACEPIPE_URL")]
    pub url: String,
    /// API key for services that require one for identify. Prefer --api-key-file or the
    /// FACEPIPE_API_KEY variable: a key on the command line is visible to other users (ps).
    #[arg(
        long,
        env = "FACEPIPE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Read the API key from this file (its text without surrounding whitespace); takes
    /// precedence over --api-key and FACEPIPE_API_KEY.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Print one JSON line per photo (the service's answer, with the file name) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Closest people listed per face.
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Score in this process, without a server (needs --registry).
    #[arg(long, requires = "registry")]
    pub local: bool,
    /// Registry whose current deployment `--local` uses.
    #[arg(long, value_name = "DIR")]
    pub registry: Option<String>,
    /// Where `--local` runs the embedding network: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Where answers come from.
enum Scorer {
    Remote {
        client: reqwest::blocking::Client,
        url: String,
        api_key: Option<String>,
    },
    Local {
        live: Box<Live>,
        config: ServiceConfig,
    },
}

impl Scorer {
    fn score(&self, path: &std::path::Path, top_k: usize) -> anyhow::Result<Identification> {
        // Refuse an oversized file by its size before reading it, whichever way it is scored.
        let default_limits = facepipe_pipeline::DecodeLimits::default();
        let limits = match self {
            Scorer::Local { config, .. } => &config.limits,
            Scorer::Remote { .. } => &default_limits,
        };
        let bytes = facepipe_pipeline::image_io::read_file(path, limits)
            .with_context(|| format!("reading {}", path.display()))?;
        match self {
            Scorer::Local { live, config } => {
                Ok(live.identify_bytes(&bytes, &config.limits, top_k)?)
            }
            Scorer::Remote {
                client,
                url,
                api_key,
            } => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "photo".into());
                let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(name);
                let form = reqwest::blocking::multipart::Form::new().part("image", part);
                let mut req = client
                    .post(format!(
                        "{}/v1/identify?top_k={top_k}",
                        url.trim_end_matches('/')
                    ))
                    .multipart(form);
                if let Some(k) = api_key {
                    req = req.bearer_auth(k);
                }
                let resp = req.send().with_context(|| {
                    format!("sending to {url} (is `facepipe serve` running there?)")
                })?;
                let status = resp.status();
                let text = resp.text().context("reading the answer")?;
                if !status.is_success() {
                    let msg = serde_json::from_str::<ErrorBody>(&text)
                        .map(|b| format!("{} ({})", b.error.message, b.error.code))
                        .unwrap_or(text);
                    anyhow::bail!("the service answered {status}: {msg}");
                }
                serde_json::from_str(&text)
                    .context("the service's answer is not an identify result")
            }
        }
    }
}

pub fn run(global: &GlobalArgs, args: ScoreArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.top_k >= 1, "--top-k must be at least 1");
    let scorer = if args.local {
        let registry_dir = args
            .registry
            .as_deref()
            .context("--local needs --registry DIR")?;
        let registry = Registry::open(registry_dir)?;
        let mut load = facepipe_serving::LoadOptions::new(global.model_dir()?);
        load.device = parse_device(&args.device)?;
        let live = Live::load_current(&registry, &load, None)
            .with_context(|| format!("loading the current deployment of {registry_dir}"))?;
        Scorer::Local {
            live: Box::new(live),
            config: ServiceConfig::default(),
        }
    } else {
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        let api_key = match &args.api_key_file {
            Some(file) => Some(read_secret_file(file, "--api-key-file")?),
            None => args.api_key.clone().filter(|k| !k.is_empty()),
        };
        Scorer::Remote {
            client,
            url: args.url.clone(),
            api_key,
        }
    };
    let mut failed = 0;
    for path in &args.images {
        match scorer.score(path, args.top_k) {
            Ok(answer) => {
                if args.json {
                    let mut v = facepipe_model::json::to_value(&answer)?;
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("file".into(), path.display().to_string().into());
                    }
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    print_table(path, &answer);
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    let v = serde_json::json!({"file": path.display().to_string(), "error": format!("{e:#}")});
                    println!("{v}");
                } else {
                    eprintln!("{}: error: {e:#}", path.display());
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} photos failed", args.images.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(path: &std::path::Path, answer: &Identification) {
    let n = answer.faces.len();
    println!(
        "{}: {n} face{} (deployment v{:04}, {}x{})",
        path.display(),
        if n == 1 { "" } else { "s" },
        answer.deployment,
        answer.width,
        answer.height
    );
    if n == 0 {
        return;
    }
    println!(
        "  {:>2}  {:<22}  {:<24}  {:>10}  {:>8}",
        "#", "box (x,y,w,h)", "person", "similarity", "distance"
    );
    for (i, f) in answer.faces.iter().enumerate() {
        let b = f.bbox;
        let bbox = format!("{:.0},{:.0},{:.0},{:.0}", b.x, b.y, b.width, b.height);
        let person = f.person.clone().unwrap_or_else(|| "unknown".into());
        let sim = f.similarity.map(|s| format!("{s:.2}")).unwrap_or_default();
        let dist = f.distance.map(|d| format!("{d:.3}")).unwrap_or_default();
        println!(
            "  {:>2}  {bbox:<22}  {person:<24}  {sim:>10}  {dist:>8}",
            i + 1
        );
    }
}
