//! `facepipe faces` (in progress).

use std::process::ExitCode;

use clap::Args;

use crate::common::GlobalArgs;

#[derive(Args, Debug)]
pub struct FacesArgs {}

pub fn run(_global: &GlobalArgs, _args: FacesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`facepipe faces` is not built yet")
}
