//! `facepipe prepare` (in progress).

use std::process::ExitCode;

use clap::Args;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct PrepareArgs {}

pub fn run(_global: &GlobalArgs, _args: PrepareArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`facepipe prepare` is not built yet")
}
