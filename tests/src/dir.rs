//! [`Dir`]: a temporary folder a test works in, removed when dropped, with helpers that
//! write files and copy fixtures and sample photos into it.

use std::path::{Path, PathBuf};

use crate::command::TestCommand;
use crate::paths::sample_data;

/// A fresh temporary folder. Every helper takes paths relative to it, creates the parent
/// folders it needs and returns the absolute path it wrote.
#[derive(Debug)]
pub struct Dir {
    temp: tempfile::TempDir,
}

impl Default for Dir {
    fn default() -> Self {
        Self::new()
    }
}

impl Dir {
    pub fn new() -> Dir {
        let temp =
            tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temporary folder: {e}"));
        Dir { temp }
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// `rel` under this folder (nothing is created).
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// Creates the folder `rel` and its parents.
    pub fn create_dir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let dir = self.join(rel);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        dir
    }

    /// Writes `contents` to the file `rel`.
    pub fn create(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let file = self.join(rel);
        create_parent(&file);
        std::fs::write(&file, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        file
    }

    /// Copies the file `from` to `rel`.
    pub fn copy(&self, from: impl AsRef<Path>, rel: impl AsRef<Path>) -> PathBuf {
        let (from, to) = (from.as_ref(), self.join(rel));
        create_parent(&to);
        std::fs::copy(from, &to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
        to
    }

    /// Copies the files of the folder `from` (not its subfolders) into the folder `rel`.
    pub fn copy_dir(&self, from: impl AsRef<Path>, rel: impl AsRef<Path>) -> PathBuf {
        let (from, rel) = (from.as_ref(), rel.as_ref());
        let entries =
            std::fs::read_dir(from).unwrap_or_else(|e| panic!("listing {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", from.display()));
            if entry.path().is_file() {
                self.copy(entry.path(), rel.join(entry.file_name()));
            }
        }
        self.create_dir(rel)
    }

    /// Copies the ORL photos `orl/SUBJECT/1.pgm ..= PHOTOS.pgm` of the sample data into the
    /// folder `rel`, under the same names.
    pub fn copy_orl(&self, subject: &str, photos: u32, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        for i in 1..=photos {
            let name = format!("{i}.pgm");
            self.copy(
                sample_data().join("orl").join(subject).join(&name),
                rel.join(name),
            );
        }
        self.create_dir(rel)
    }

    /// `facepipe` run in this folder.
    pub fn command(&self) -> TestCommand {
        let mut cmd = TestCommand::new();
        cmd.current_dir(self.path());
        cmd
    }
}

fn create_parent(file: &Path) {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    }
}

/// Every file below `root`, in no particular order.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
