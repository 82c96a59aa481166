//! `facepipe deploy`: embed a gallery of known people with a model, publish it as a new
//! deployment version in a registry, mark it current, and serve it (unless `--no-serve`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use facepipe_pipeline::{EngineOptions, FaceEngine};
use facepipe_serving::enroll::{
    gallery_from_dataset, gallery_from_photos, is_prepared_dataset, new_bundle, EnrollProgress,
};
use facepipe_serving::{AppState, Live, LoadedModel, ModelRef};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cmd::serve::{serve_blocking, ServiceArgs};
use crate::common::{parse_threshold, GlobalArgs};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The embedding model: a folder written by `facepipe train`, or `pretrained`.
    #[arg(long, default_value = "pretrained", value_name = "DIR|pretrained")]
    pub model: String,
    /// The people to recognise: a prepared dataset (from `facepipe prepare`: its aligned
    /// crops are embedded) or a folder of `Name/photo.jpg` folders (the largest face of each
    /// photo is enrolled under the folder's name).
    #[arg(long, value_name = "DIR")]
    pub gallery: PathBuf,
    /// Registry to publish into: a folder (created if missing) or s3://BUCKET/PREFIX
    /// (see --s3-endpoint).
    #[arg(
        long,
        default_value = "registry",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub registry: String,
    /// A name for this deployment, recorded in deployment.json.
    #[arg(long)]
    pub name: Option<String>,
    /// Decision threshold, a positive distance (default: the model's calibrated one; 0.6
    /// for `pretrained`).
    #[arg(long, value_parser = parse_threshold, value_name = "DISTANCE")]
    pub threshold: Option<f32>,
    /// Only publish the deployment; do not start the service.
    #[arg(long)]
    pub no_serve: bool,
    #[command(flatten)]
    pub service: ServiceArgs,
}

pub fn run(global: &GlobalArgs, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let registry = args.service.open_registry(&args.registry)?;
    let models = global.model_dir()?;
    let load = args.service.load_options(global)?;
    let model = if args.model == "pretrained" {
        ModelRef::pretrained()
    } else {
        registry
            .store_model(std::path::Path::new(&args.model))
            .with_context(|| format!("storing the model {} in the registry", args.model))?
    };
    let recognizer = LoadedModel::load(
        &models,
        &model,
        Some(&registry),
        load.engine.clone(),
        load.device,
    )
    .with_context(|| format!("loading the model {}", model.describe()))?;
    // Gallery photos may be tight, pre-aligned crops: let the engine fall back to the whole
    // image there (the service itself does not).
    let gallery_engine = FaceEngine::load(&models, EngineOptions::default())?;

    let bar = if global.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} photos ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("embedding the gallery");
    let progress = |p: EnrollProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    };
    let built = if is_prepared_dataset(&args.gallery) {
        gallery_from_dataset(&args.gallery, &recognizer, &progress)
    } else {
        gallery_from_photos(&args.gallery, &gallery_engine, &recognizer, &progress)
    }
    .with_context(|| format!("building the gallery from {}", args.gallery.display()))?;
    bar.finish_and_clear();
    for s in &built.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }

    let mut metric = recognizer.metric();
    if let Some(t) = args.threshold {
        metric.threshold = t;
    }
    let bundle = new_bundle(
        built.gallery,
        model,
        metric,
        &args.gallery.display().to_string(),
        args.name.clone(),
    );
    let info = registry.publish(bundle.clone())?;
    println!(
        "published deployment v{:04} in {}: {} people, {} embeddings ({} photos skipped), model {}, {:?} distance, threshold {}",
        info.version,
        registry.version_location(info.version),
        info.people,
        info.embeddings,
        built.skipped.len(),
        info.model.describe(),
        info.metric.distance,
        info.metric.threshold
    );
    if args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    let mut bundle = bundle;
    bundle.info = info;
    // Serve with the networks already loaded.
    let live = Live {
        info: bundle.info,
        gallery: bundle.gallery,
        recognizer: std::sync::Arc::new(recognizer),
    };
    let state = AppState::with_live(live, registry, load, args.service.config()?);
    serve_blocking(state, &args.service)?;
    Ok(ExitCode::SUCCESS)
}
