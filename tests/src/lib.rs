//! The harness of the end-to-end tests: they run the real `facepipe` binary on real photos
//! in a temporary folder, in the style of ripgrep's `tests/util.rs`.
//!
//! - [`paths`]: where the workspace, fixtures, sample data and built binary are;
//! - [`dir`]: [`Dir`], a temporary folder with helpers to write files and copy fixtures;
//! - [`command`]: [`TestCommand`], the binary as a `Command` with the checks tests make
//!   (`stdout()` must succeed, `assert_err()` must fail cleanly), and its [`CommandOutput`];
//! - [`serve`]: a real `facepipe serve` on a free port, waited for and killed on drop;
//! - [`setup`]: the steps tests start from: deploy the fixture gallery, `prepare`;
//! - [`process`]: helper processes in their own group, free ports.
//!
//! ```no_run
//! use facepipe_tests::{setup, Dir};
//!
//! let dir = Dir::new();
//! let registry = dir.join("registry");
//! let stdout = setup::deploy_gallery(&registry).stdout();
//! assert!(stdout.contains("published deployment v0001"));
//! let err = dir
//!     .command()
//!     .args(["registry", "gc", "--keep", "0", "--registry"])
//!     .arg(&registry)
//!     .assert_err();
//! assert!(err.stderr.contains("--keep"));
//! ```

pub mod command;
pub mod dir;
pub mod paths;
pub mod process;
pub mod serve;
pub mod setup;

pub use command::{CommandOutput, TestCommand};
pub use dir::{files_under, Dir};
pub use paths::{facepipe_bin, fixtures, person_photos, sample_data, workspace_root};
pub use process::{free_port, wait_for_port, ProcessGroup};
pub use serve::{serve_command, Server};
