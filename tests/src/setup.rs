//! The `facepipe` steps many tests start from: a registry deployed from the fixture
//! gallery, and `prepare` over photos copied from the sample data.

use std::ffi::OsStr;
use std::path::PathBuf;

use crate::command::TestCommand;
use crate::paths::fixtures;

/// The fixture gallery: a folder per person (Barack_Obama, Joe_Biden; 4 photos in all).
pub fn gallery() -> PathBuf {
    fixtures().join("serving").join("gallery")
}

/// `facepipe -q deploy --no-serve --model pretrained --gallery GALLERY --registry REGISTRY`
/// with the fixture [`gallery`]; add S3 options or environment before running it. It
/// prints `published deployment v0001 … 2 people, 4 embeddings`.
pub fn deploy_gallery(registry: impl AsRef<OsStr>) -> TestCommand {
    let mut cmd = TestCommand::new();
    cmd.args(["-q", "deploy", "--no-serve", "--model", "pretrained"])
        .arg("--gallery")
        .arg(gallery())
        .arg("--registry")
        .arg(registry);
    cmd
}

/// `facepipe prepare INPUT OUTPUT`; add `--json` and the options under test.
pub fn prepare(input: impl AsRef<OsStr>, output: impl AsRef<OsStr>) -> TestCommand {
    let mut cmd = TestCommand::new();
    cmd.arg("prepare").arg(input).arg(output);
    cmd
}
