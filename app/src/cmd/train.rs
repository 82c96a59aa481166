//! `facepipe train` (in progress).

use std::process::ExitCode;

use clap::Args;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct TrainArgs {}

pub fn run(_global: &GlobalArgs, _args: TrainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`facepipe train` is not built yet")
}
