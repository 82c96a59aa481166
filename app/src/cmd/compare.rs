//! `facepipe compare` (in progress).

use std::process::ExitCode;

use clap::Args;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct CompareArgs {}

pub fn run(_global: &GlobalArgs, _args: CompareArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`facepipe compare` is not built yet")
}
