//! Where things are: the workspace, the committed fixtures and sample data, and the built
//! `facepipe` binary.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Test photos committed with the project (see tests/fixtures/ATTRIBUTION.md).
pub fn fixtures() -> PathBuf {
    workspace_root().join("tests").join("fixtures")
}

/// The sample data committed with the project (`assets/sample`: `people/`, `orl/`,
/// `scenes/`), or `$FACEPIPE_SAMPLE_DATA`.
pub fn sample_data() -> PathBuf {
    std::env::var_os("FACEPIPE_SAMPLE_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("assets").join("sample"))
}

/// The photos of one sample person (`assets/sample/people/NAME/`), in name order.
///
/// # Panics
/// If the folder cannot be read: the sample data is committed, so that is a broken checkout.
pub fn person_photos(name: &str) -> Vec<PathBuf> {
    let dir = sample_data().join("people").join(name);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    photos.sort();
    photos
}

/// The `facepipe` binary built next to the test binaries.
pub fn facepipe_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/facepipe
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join("facepipe")
}
