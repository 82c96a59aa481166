//! `facepipe registry`: look after a deployment registry. `gc` removes old versions so the
//! registry does not grow without bound, never `CURRENT` and never a version a running
//! server serves (servers keep a lease on it, see `facepipe_serving::registry`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use facepipe_pipeline::storage::StorageOptions;
use facepipe_serving::registry::DEFAULT_LEASE_TTL;
use facepipe_serving::Registry;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Remove old deployment versions, keeping CURRENT, the newest --keep, and every version
    /// a running server leases.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// The registry: a folder or s3://BUCKET/PREFIX (see --s3-endpoint).
    #[arg(
        long,
        default_value = "registry",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub registry: String,
    /// Published versions to keep, newest first (CURRENT is always one of them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Only print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds since its last refresh for which a server's lease still protects the version
    /// it serves (servers refresh every 30 s).
    #[arg(long, default_value_t = DEFAULT_LEASE_TTL.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(60..))]
    pub lease_ttl: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Endpoint of an S3-compatible store holding an s3:// registry.
    #[arg(long, env = "FACEPIPE_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// AWS region of an s3:// registry (default: AWS_REGION / the profile / us-east-1).
    #[arg(long)]
    pub region: Option<String>,
}

pub fn run(_global: &GlobalArgs, args: RegistryArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RegistryCommand::Gc(gc) => run_gc(gc),
    }
}

fn run_gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let options = StorageOptions {
        s3_endpoint: args.s3_endpoint.clone(),
        region: args.region.clone(),
        ..StorageOptions::default()
    };
    let registry = Registry::open_with(&args.registry, &options)
        .with_context(|| format!("opening the registry {}", args.registry))?;
    let report = registry
        .gc(
            args.keep as usize,
            Duration::from_secs(args.lease_ttl),
            args.dry_run,
        )
        .with_context(|| format!("collecting old versions of {}", args.registry))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |vs: &[u32]| {
        if vs.is_empty() {
            "none".to_string()
        } else {
            vs.iter()
                .map(|v| format!("v{v:04}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    match report.current {
        None => println!(
            "{} has no CURRENT deployment: nothing removed",
            args.registry
        ),
        Some(current) => {
            println!("current: v{current:04}");
            println!("kept (newest {}): {}", args.keep, list(&report.kept));
            println!("kept (leased by a server): {}", list(&report.leased));
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            println!("{verb}: {}", list(&report.removed));
        }
    }
    Ok(ExitCode::SUCCESS)
}
