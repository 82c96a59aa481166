//! [`TestCommand`]: the built `facepipe` binary as a [`std::process::Command`] with the
//! checks every test makes of what it printed, and [`CommandOutput`], what a run printed.
//! A failed check panics with the command line, the exit status and both outputs.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};

use serde_json::Value;

use crate::paths::facepipe_bin;

/// One run of the `facepipe` binary, built up like a [`Command`] (`arg`, `args`, `env`, …)
/// and finished with the check the test wants: [`stdout`](Self::stdout) (it must succeed),
/// [`assert_err`](Self::assert_err) (it must fail cleanly), [`assert_exit`](Self::assert_exit).
#[derive(Debug)]
pub struct TestCommand {
    cmd: Command,
}

impl Default for TestCommand {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCommand {
    /// The `facepipe` binary next to the test binaries; panics, saying how to build it,
    /// when it is not there.
    pub fn new() -> TestCommand {
        let bin = facepipe_bin();
        assert!(
            bin.is_file(),
            "{} is missing: run `cargo build --workspace --all-features --bins` first",
            bin.display()
        );
        TestCommand {
            cmd: Command::new(bin),
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    /// Each `(key, value)` in the environment.
    pub fn envs<K, V>(&mut self, vars: &[(K, V)]) -> &mut Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self.cmd.env(key, value);
        }
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(dir);
        self
    }

    /// The wrapped command, for what the helpers do not cover (stdio, process group).
    pub fn cmd_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// The command line, for messages, with the variables it sets:
    /// `FACEPIPE_TEST_FAULT=crash:1 facepipe prepare in out --json`.
    pub fn line(&self) -> String {
        let quoted = |part: &OsStr| {
            let part = part.to_string_lossy();
            if part.is_empty() || part.contains(char::is_whitespace) {
                format!("'{part}'")
            } else {
                part.into_owned()
            }
        };
        let vars = self.cmd.get_envs().filter_map(|(key, value)| {
            value.map(|value| format!("{}={}", key.to_string_lossy(), quoted(value)))
        });
        let program = Path::new(self.cmd.get_program())
            .file_name()
            .unwrap_or_else(|| self.cmd.get_program());
        let words = std::iter::once(program)
            .chain(self.cmd.get_args())
            .map(quoted);
        vars.chain(words).collect::<Vec<_>>().join(" ")
    }

    /// Starts the command and returns the child (its stdio as set on [`cmd_mut`](Self::cmd_mut)).
    pub fn spawn(&mut self) -> Child {
        self.cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting `{}`: {e}", self.line()))
    }

    /// Runs the command to its end, whatever its exit status.
    pub fn output(&mut self) -> CommandOutput {
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("running `{}`: {e}", self.line()));
        CommandOutput {
            line: self.line(),
            status: out.status,
            stdout: String::from_utf8(out.stdout).unwrap_or_else(|e| {
                panic!("`{}` printed stdout that is not UTF-8: {e}", self.line())
            }),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the command, asserts that it succeeded and returns its stdout.
    pub fn stdout(&mut self) -> String {
        let out = self.output();
        assert!(out.status.success(), "{}", out.report("failed"));
        out.stdout
    }

    /// Runs the command, asserts that it succeeded and returns its stdout parsed as one
    /// JSON document (the `--json` report of `prepare`, `registry gc`).
    pub fn json(&mut self) -> Value {
        let line = self.line();
        let stdout = self.stdout();
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("`{line}` printed a report that is not JSON ({e}): {stdout}")
        })
    }

    /// Runs the command, asserts that it succeeded and returns every line of its stdout
    /// parsed as JSON (the `--json` output of `faces`, `compare`, `score`, `evaluate`).
    pub fn json_lines(&mut self) -> Vec<Value> {
        let out = self.output();
        assert!(out.status.success(), "{}", out.report("failed"));
        out.json_lines()
    }

    /// Runs the command, asserts that it failed with an error rather than a crash (an exit
    /// code, no panic message) and returns what it printed.
    pub fn assert_err(&mut self) -> CommandOutput {
        let out = self.output();
        assert!(
            !out.status.success(),
            "{}",
            out.report("was expected to fail")
        );
        out.assert_not_crashed();
        out
    }

    /// Runs the command, asserts that it exited with `code` (without a panic) and returns
    /// what it printed.
    pub fn assert_exit(&mut self, code: i32) -> CommandOutput {
        let out = self.output();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            out.report(&format!("was expected to exit with {code}"))
        );
        out.assert_not_crashed();
        out
    }
}

/// What one run of a [`TestCommand`] printed, and how it ended.
#[derive(Debug)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub line: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    /// Every line of stdout parsed as JSON (the `--json` output of `faces`, `compare`,
    /// `score`, `evaluate`).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("`{}` printed a line that is not JSON ({e}): {l}", self.line)
                })
            })
            .collect()
    }

    /// `` `LINE` WHAT (STATUS)`` with both outputs: the message of a failed check.
    pub fn report(&self, what: &str) -> String {
        format!(
            "`{}` {what} ({})\n--- stderr\n{}\n--- stdout\n{}",
            self.line, self.status, self.stderr, self.stdout
        )
    }

    fn assert_not_crashed(&self) {
        assert!(
            self.status.code().is_some() && !self.stderr.contains("panicked"),
            "{}",
            self.report("crashed instead of giving an error")
        );
    }
}
