//! `facepipe evaluate` (in progress).

use std::process::ExitCode;

use clap::Args;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct EvaluateArgs {}

pub fn run(_global: &GlobalArgs, _args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`facepipe evaluate` is not built yet")
}
