//! What tests need from outside the repository, and one rule for when it is missing: under
//! CI (`CI` set) the test fails saying what is missing and how to install it; elsewhere it
//! prints that it skips and returns early. A test never passes silently without its
//! component. Built only with the `test-support` feature.
//!
//! ```ignore
//! if !require(Component::SeaweedFs) {
//!     return;
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Something a test runs against that the repository does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    /// `weed` (SeaweedFS) on PATH, for S3.
    SeaweedFs,
    /// `cargo lambda` (the Lambda emulator) on PATH.
    LambdaEmulator,
    /// The Chromium binary the web-page test drives (`$CHROMIUM` or /usr/bin/chromium).
    Chromium,
    /// `node` on PATH.
    Node,
    /// The npm package playwright-core in the facepipe cache.
    PlaywrightCore,
    /// The pretrained face-api weights (`$FACEPIPE_MODELS` or the cache).
    ModelWeights,
    /// Sample photos at this folder.
    SampleData(PathBuf),
}

impl Component {
    fn describe(&self) -> String {
        match self {
            Component::SeaweedFs => "`weed` (SeaweedFS) is not on PATH".into(),
            Component::LambdaEmulator => {
                "`cargo lambda` (the Lambda emulator) is not on PATH".into()
            }
            Component::Chromium => format!("Chromium is not at {}", chromium().display()),
            Component::Node => "`node` is not on PATH".into(),
            Component::PlaywrightCore => {
                format!("playwright-core is not in {}", playwright_core().display())
            }
            Component::ModelWeights => match crate::ModelDir::locate(None) {
                Err(e) => format!("the pretrained weights are missing ({e})"),
                Ok(_) => "the pretrained weights are missing".into(),
            },
            Component::SampleData(dir) => format!("no sample data at {}", dir.display()),
        }
    }

    fn remedy(&self) -> &'static str {
        match self {
            Component::SeaweedFs | Component::LambdaEmulator => {
                "run `scripts/setup.sh` and `. scripts/env.sh`"
            }
            Component::Chromium | Component::Node | Component::PlaywrightCore => {
                "run `scripts/setup.sh --browser`"
            }
            Component::ModelWeights => {
                "run `scripts/setup.sh` or point FACEPIPE_MODELS at the weights"
            }
            Component::SampleData(_) => {
                "restore assets/sample from the repository or point FACEPIPE_SAMPLE_DATA at a copy"
            }
        }
    }

    /// Whether the component is here.
    pub fn available(&self) -> bool {
        match self {
            Component::SeaweedFs => crate::storage::seaweed::SeaweedFs::available(),
            Component::LambdaEmulator => runs("cargo", &["lambda", "--version"]),
            Component::Chromium => chromium().is_file(),
            Component::Node => runs("node", &["--version"]),
            Component::PlaywrightCore => playwright_core().join("package.json").is_file(),
            Component::ModelWeights => crate::ModelDir::locate(None).is_ok(),
            Component::SampleData(dir) => dir.is_dir(),
        }
    }
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Where `scripts/setup.sh --browser` installs playwright-core (as `tests/web/page.cjs`
/// looks for it).
fn playwright_core() -> PathBuf {
    let cache = std::env::var_os("FACEPIPE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache").join("facepipe")))
        .unwrap_or_else(|| PathBuf::from(".cache/facepipe"));
    cache
        .join("node")
        .join("node_modules")
        .join("playwright-core")
}

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// `true` when `component` is available. When it is missing: panics under CI (the test
/// fails with what is missing and how to install it); elsewhere prints a skip message and
/// returns `false`, and the caller returns early.
#[track_caller]
pub fn require(component: Component) -> bool {
    if component.available() {
        return true;
    }
    let what = component.describe();
    let remedy = component.remedy();
    let at = std::panic::Location::caller();
    if in_ci() {
        panic!(
            "{what}: this test needs it and CI is set, so it fails instead of skipping; {remedy}"
        );
    }
    eprintln!("skipping the test at {at}: {what} ({remedy}; with CI set this fails)");
    false
}

/// CUDA-only tests: `true` when a GPU is usable. Without one the test skips with a message,
/// in CI too (CI machines have no GPU; the device checks run where there is one).
#[track_caller]
pub fn require_cuda(cuda_available: bool) -> bool {
    if !cuda_available {
        let at = std::panic::Location::caller();
        eprintln!(
            "skipping the test at {at}: no CUDA device here (CUDA-only tests skip without a GPU, \
             also in CI)"
        );
    }
    cuda_available
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_components_are_described_with_a_remedy() {
        let nowhere = Component::SampleData(PathBuf::from("/nonexistent/facepipe-sample"));
        assert!(!nowhere.available());
        assert!(nowhere
            .describe()
            .contains("no sample data at /nonexistent/facepipe-sample"));
        assert!(nowhere.remedy().contains("FACEPIPE_SAMPLE_DATA"));
        let here = Component::SampleData(std::env::temp_dir());
        assert!(here.available());
    }
}
