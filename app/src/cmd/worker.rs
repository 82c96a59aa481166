//! `facepipe worker` (in progress).

use std::process::ExitCode;

use clap::Args;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct WorkerArgs {}

pub fn run(_global: &GlobalArgs, _args: WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`facepipe worker` is not built yet")
}
