//! `facepipe`: the command-line entry point. Parsing and wiring only; the work lives in the
//! library crates (pipeline, model, training, serving).

mod cmd;
mod common;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// End-to-end face recognition: prepare a labelled photo collection, train an embedding
/// model, deploy it with a gallery of known people, and ask the service who is in a photo.
#[derive(Parser, Debug)]
#[command(name = "facepipe", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: common::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Detect faces, 68 landmarks and aligned crops in photos.
    Faces(cmd::faces::FacesArgs),
    /// Compare the largest face of two photos (or many pairs from a file).
    Compare(cmd::compare::CompareArgs),
    /// Detect and align every face of a labelled collection into a prepared dataset.
    Prepare(cmd::prepare::PrepareArgs),
    /// Train or fine-tune an embedding model on a prepared dataset.
    Train(cmd::train::TrainArgs),
    /// Evaluate a model (or the pretrained one) on a prepared dataset.
    Evaluate(cmd::evaluate::EvaluateArgs),
    /// Publish a deployment (model + enrolled gallery + threshold) and serve it.
    Deploy(cmd::deploy::DeployArgs),
    /// Serve the current deployment of a registry.
    Serve(cmd::serve::ServeArgs),
    /// Send photos to the service (or score locally) and print who is in them.
    Score(cmd::score::ScoreArgs),
    /// Find the people in an unlabelled photo pile: group every face, name the groups of
    /// enrolled people.
    Cluster(cmd::cluster::ClusterArgs),
    /// Look after a deployment registry (`gc`: remove old versions).
    Registry(cmd::registry::RegistryArgs),
    /// Run prepare tasks: one (`--request`) or a stream on stdin (`--serve`, the local executor).
    #[command(hide = true)]
    Worker(cmd::worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(&cli.global);
    // Only commands that run the embedding network start libtorch's thread pool.
    let runs_network = !matches!(
        cli.command,
        Command::Faces(_) | Command::Prepare(_) | Command::Registry(_) | Command::Worker(_)
    );
    let serves = matches!(cli.command, Command::Serve(_) | Command::Deploy(_));
    common::init_threads(&cli.global, runs_network, serves);
    let result = match cli.command {
        Command::Faces(a) => cmd::faces::run(&cli.global, a),
        Command::Compare(a) => cmd::compare::run(&cli.global, a),
        Command::Prepare(a) => cmd::prepare::run(&cli.global, a),
        Command::Train(a) => cmd::train::run(&cli.global, a),
        Command::Evaluate(a) => cmd::evaluate::run(&cli.global, a),
        Command::Deploy(a) => cmd::deploy::run(&cli.global, a),
        Command::Serve(a) => cmd::serve::run(&cli.global, a),
        Command::Score(a) => cmd::score::run(&cli.global, a),
        Command::Cluster(a) => cmd::cluster::run(&cli.global, a),
        Command::Registry(a) => cmd::registry::run(&cli.global, a),
        Command::Worker(a) => cmd::worker::run(&cli.global, a),
    };
    match result {
        Ok(code) => code,
        // A reader that stopped reading (`facepipe faces --json | head`) ends the output; it
        // is not a failure of the command.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
