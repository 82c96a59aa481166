//! `facepipe prepare`: detect and align one face per photo of a labelled collection (or
//! every face of an unlabelled pile) into a prepared dataset (manifest + tar shards), fanned
//! out over workers through storage.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use facepipe_pipeline::dataset::layout::Layout;
use facepipe_pipeline::fanout::{
    self, Executor, LambdaExecutor, LocalExecutor, LocalMode, PrepareConfig, PrepareProgress,
    PrepareReport, SeveralFaces,
};
use facepipe_pipeline::storage::{Location, StorageOptions};
use facepipe_pipeline::DetectorKind;
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::GlobalArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// N warm worker processes on this machine.
    Local,
    /// An AWS Lambda function running facepipe-lambda-worker (or the cargo lambda emulator).
    Lambda,
}

const AFTER_HELP: &str = "\
INPUT holds one folder per person (LFW layout: INPUT/Ada_Lovelace/photo.jpg). OUTPUT receives
manifest.json (one outcome per photo: ok, no_face, several_faces, unreadable, too_large,
duplicate, failed) and tar shards of 150x150 aligned crops. Photos are split into tasks of
--task-size that workers run in parallel; the client and the workers share only the OUTPUT
storage, so rerunning the same command resumes an interrupted job without redoing finished
tasks. A task whose workers crash or hang on every attempt has its photos run one at a time:
a photo that kills its worker each time is recorded as failed (with the reason) and the job
still finishes.

With --layout unlabelled, INPUT is a pile of photos of nobody in particular: every file at
any depth is a photo (hidden files and folders are skipped), with no identity. Add
--several-faces all to store every face of each photo as its own sample (KEY_f0, KEY_f1, …,
largest face first), all listed in the photo's record: the input of grouping. Keeping all
faces needs the unlabelled layout, since in a person's folder it would give strangers in a
group photo that person's name.

Examples:
  facepipe prepare photos/ prepared/
  facepipe prepare s3://bucket/lfw s3://bucket/prepared --workers 8
  facepipe prepare s3://bucket/lfw s3://bucket/prepared --executor lambda --workers 100
  facepipe prepare holiday-photos/ faces/ --layout unlabelled --several-faces all";

/// `--layout`: clap's spelling of [`Layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// INPUT/Person_Name/photo.jpg: the folder names the person.
    Labelled,
    /// Every photo at any depth; nobody is named.
    Unlabelled,
}

impl From<LayoutArg> for Layout {
    fn from(arg: LayoutArg) -> Self {
        match arg {
            LayoutArg::Labelled => Layout::Labelled,
            LayoutArg::Unlabelled => Layout::Unlabelled,
        }
    }
}

/// Arguments of `facepipe prepare`.
#[derive(Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct PrepareArgs {
    /// The photos: a folder, file://PATH or s3://BUCKET/PREFIX with one sub-folder per person
    /// (or any layout, with --layout unlabelled).
    pub input: String,
    /// Where to write the prepared dataset: a folder, file://PATH or s3://BUCKET/PREFIX.
    pub output: String,
    /// How INPUT is laid out: labelled (one folder per person) or unlabelled (every photo at
    /// any depth, nobody named).
    #[arg(long, value_enum, default_value_t = LayoutArg::Labelled)]
    pub layout: LayoutArg,
    /// Photos with several faces: keep the largest, skip the photo, or keep all faces (each
    /// its own sample; needs --layout unlabelled).
    #[arg(long, default_value = "largest")]
    pub several_faces: SeveralFaces,
    /// Leave out people with fewer photos than this.
    #[arg(long, default_value_t = 1)]
    pub min_images_per_identity: u32,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fanout: FanoutArgs,
}

/// How a fan-out job runs: workers, tasks, detector, storage. Shared by `prepare` and
/// `cluster`, which fan out the same detection and alignment.
#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Where workers run.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// Workers at once (Lambda: the concurrency cap). Default: the CPU count (local), 16 (lambda).
    #[arg(long, short = 'j')]
    pub workers: Option<usize>,
    /// Photos per task.
    #[arg(long, default_value_t = fanout::DEFAULT_TASK_SIZE)]
    pub task_size: u32,
    /// Job id: rerun with the same id to resume. Default: derived from the input and options.
    #[arg(long)]
    pub job: Option<String>,
    /// Face detector: ssd (accurate) or tiny (fast).
    #[arg(long, default_value = "ssd")]
    pub detector: DetectorKind,
    /// Endpoint of an S3-compatible store (e.g. http://127.0.0.1:8333 for SeaweedFS).
    #[arg(long, env = "FACEPIPE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// AWS region (default: AWS_REGION / the profile / us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Lambda function running facepipe-lambda-worker.
    #[arg(
        long,
        env = "FACEPIPE_LAMBDA_FUNCTION",
        default_value = "facepipe-lambda-worker"
    )]
    pub lambda_function: String,
    /// Lambda API endpoint override (e.g. http://127.0.0.1:9000 for `cargo lambda watch`).
    #[arg(long, env = "FACEPIPE_LAMBDA_ENDPOINT")]
    pub lambda_endpoint: Option<String>,
    /// Where Lambda workers fetch the weights (default OUTPUT/models; uploaded by this command).
    #[arg(long)]
    pub models_location: Option<String>,
    /// Attempts per task before its photos are run one at a time.
    #[arg(long, default_value_t = fanout::client::DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Seconds after which a task attempt counts as hung and is retried.
    #[arg(long, default_value_t = 900)]
    pub task_timeout: u64,
    /// Local executor: start a fresh worker process per task instead of keeping warm ones
    /// (the baseline scripts/bench/prepare.sh compares against).
    #[arg(long, hide = true)]
    pub process_per_task: bool,
}

/// What a fan-out job reads and keeps.
#[derive(Clone, Copy, Debug)]
pub struct JobShape {
    pub layout: Layout,
    pub several_faces: SeveralFaces,
    pub min_images_per_identity: u32,
}

pub fn run(global: &GlobalArgs, args: PrepareArgs) -> anyhow::Result<ExitCode> {
    let shape = JobShape {
        layout: args.layout.into(),
        several_faces: args.several_faces,
        min_images_per_identity: args.min_images_per_identity,
    };
    let report = run_fanout(
        global,
        &args.fanout,
        &args.input,
        &args.output,
        shape,
        args.json,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Run one fan-out job from `input` to `output` with a progress bar (hidden when `quiet`
/// or -q), and return its report.
pub fn run_fanout(
    global: &GlobalArgs,
    args: &FanoutArgs,
    input: &str,
    output: &str,
    shape: JobShape,
    quiet: bool,
) -> anyhow::Result<PrepareReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(global, args, input, output, shape, quiet))
}

async fn run_async(
    global: &GlobalArgs,
    args: &FanoutArgs,
    input: &str,
    output: &str,
    shape: JobShape,
    quiet: bool,
) -> anyhow::Result<PrepareReport> {
    let input = Location::parse(input)?;
    let output = Location::parse(output)?;
    let storage = StorageOptions {
        s3_endpoint: args.s3_endpoint.clone(),
        region: args.region.clone(),
        ..StorageOptions::default()
    };
    let models = global.model_dir()?;
    let workers = args.workers.unwrap_or(match args.executor {
        ExecutorKind::Local => std::thread::available_parallelism().map_or(2, |n| n.get()),
        ExecutorKind::Lambda => 16,
    });
    // Checked here to name the flags; the library refuses zero counts too.
    anyhow::ensure!(
        args.task_size > 0 && workers > 0 && args.max_attempts > 0,
        "--task-size, --workers and --max-attempts must be at least 1"
    );
    anyhow::ensure!(
        shape.several_faces != SeveralFaces::All || shape.layout == Layout::Unlabelled,
        "--several-faces all needs --layout unlabelled: in a labelled collection every face of \
         a group photo in a person's folder would be stored under that person's name, strangers \
         included. Add --layout unlabelled to keep every face of an unlabelled pile, or use \
         --several-faces largest (or skip) for a labelled collection"
    );
    anyhow::ensure!(
        shape.layout == Layout::Labelled || shape.min_images_per_identity <= 1,
        "--min-images-per-identity needs identities, and --layout unlabelled has none: leave it \
         out"
    );
    let executor: Arc<dyn Executor> = match args.executor {
        ExecutorKind::Local => {
            let exe = std::env::current_exe().context("finding the facepipe binary")?;
            let mode = if args.process_per_task {
                LocalMode::PerTask
            } else {
                LocalMode::Warm
            };
            Arc::new(
                LocalExecutor::new(exe, vec!["worker".into()])
                    .workers(workers)
                    .mode(mode),
            )
        }
        ExecutorKind::Lambda => Arc::new(
            LambdaExecutor::connect(
                &args.lambda_function,
                args.lambda_endpoint.as_deref(),
                &storage,
            )
            .await?,
        ),
    };
    let mut config = PrepareConfig::new(input, output);
    config.storage = storage;
    config.workers = workers;
    config.task_size = args.task_size;
    config.job = args.job.clone();
    config.layout = shape.layout;
    config.detector = args.detector;
    config.several_faces = shape.several_faces;
    config.min_images_per_identity = shape.min_images_per_identity;
    config.max_attempts = args.max_attempts;
    config.task_timeout = Duration::from_secs(args.task_timeout.max(1));
    config.models = Some(models);
    config.models_location = args
        .models_location
        .as_deref()
        .map(Location::parse)
        .transpose()?;

    let bar = if global.quiet || quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} photos · {msg} · eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let progress = |p: &PrepareProgress| {
        bar.set_length(u64::from(p.images));
        bar.set_position(u64::from(p.images_done));
        bar.set_message(format!("tasks {}/{}", p.tasks_done, p.tasks));
    };
    let result = fanout::prepare(&config, executor, Some(&progress)).await;
    bar.finish_and_clear();
    let (report, _manifest) = result?;
    Ok(report)
}

pub fn print_report(r: &PrepareReport) {
    println!("prepared {} → {} (job {})", r.images, r.output, r.job);
    if r.layout == Layout::Unlabelled {
        println!("  photos      {} (unlabelled)", r.images);
    } else {
        println!(
            "  photos      {} in {} identities ({} identities left out by --min-images-per-identity)",
            r.images, r.identities, r.skipped_identities
        );
    }
    println!("  faces       {} aligned crops", r.faces);
    let failures: Vec<String> = r
        .outcomes
        .iter()
        .filter(|(k, n)| k.as_str() != "ok" && **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "  not stored  {}",
        if failures.is_empty() {
            "none".to_string()
        } else {
            failures.join(", ")
        }
    );
    println!(
        "  tasks       {} × {} photos on {} {} worker{} ({} reused from an earlier run, {} retries)",
        r.tasks,
        r.task_size,
        r.workers,
        r.executor,
        if r.workers == 1 { "" } else { "s" },
        r.tasks_reused,
        r.retries
    );
    println!(
        "  wall time   {:.2} s; per task p50 {:.2} s, p95 {:.2} s; cold start {:.2} s/task",
        r.wall_s, r.task_p50_s, r.task_p95_s, r.engine_load_mean_s
    );
    if r.images_this_run == 0 {
        println!("  throughput  no photo was processed: every task was finished by an earlier run");
    } else {
        println!(
            "  throughput  {:.2} photos/s; speed-up over one worker {:.2}× ({:.0} % of {} workers), \
             from {:.1} s of measured task time",
            r.throughput_img_s,
            r.speedup_vs_one_worker,
            100.0 * r.scaling_efficiency,
            r.workers,
            r.task_seconds_total
        );
    }
    if let Some(mib) = r.worker_peak_rss_mib {
        println!("  memory      {mib:.0} MiB peak per worker");
    }
    if r.tasks_isolated > 0 {
        println!(
            "  isolated    {} task{} run one photo at a time after every attempt failed; \
             {} photo{} failed",
            r.tasks_isolated,
            if r.tasks_isolated == 1 { "" } else { "s" },
            r.failed_images.len(),
            if r.failed_images.len() == 1 { "" } else { "s" },
        );
    }
    for failed in &r.failed_images {
        println!("  failed      {failed}");
    }
    for reason in &r.retry_reasons {
        println!("  retried     {reason}");
    }
}
