//! `facepipe serve`'s operator input: flags that make no sense are refused with an error
//! that names the flag and the accepted range, before anything is loaded; the API key can
//! come from a file or the environment instead of argv.
//! Needs the binary: `cargo build --workspace --all-features --bins` first.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use facepipe_tests::{facepipe_bin, fixtures};

fn bin() -> std::path::PathBuf {
    let bin = facepipe_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --all-features --bins` first",
        bin.display()
    );
    bin
}

/// `facepipe serve` with `flags` on a registry that does not exist: the flags must be
/// refused before the registry is opened. Returns stderr.
fn refused(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["-q", "serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(dir.path().join("no-registry"))
        .args(flags)
        .env_remove("FACEPIPE_API_KEY")
        .env_remove("FACEPIPE_API_KEY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{flags:?} was accepted: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "{flags:?} crashed instead of an error: {stderr}"
    );
    stderr
}

#[test]
fn nonsense_flags_get_a_clear_error() {
    for value in ["inf", "1e-12", "NaN", "1e300"] {
        let err = refused(&["--poll-interval", value]);
        assert!(
            err.contains("--poll-interval") && err.contains("0.1"),
            "{value}: {err}"
        );
    }
    for value in ["0", "4096", "18446744073709551615"] {
        let err = refused(&["--max-body-mb", value]);
        assert!(err.contains("--max-body-mb"), "{value}: {err}");
    }
    for (flag, value) in [
        ("--max-megapixels", "inf"),
        ("--max-megapixels", "0"),
        ("--timeout", "0"),
        ("--timeout", "18446744073709551615"),
        ("--max-inflight", "0"),
        ("--queue-timeout", "inf"),
        ("--max-faces", "0"),
        ("--max-connections", "0"),
        ("--header-timeout", "1e-12"),
        ("--body-timeout", "0"),
        ("--body-timeout", "inf"),
        ("--memory-budget-mb", "18446744073709551615"),
    ] {
        let err = refused(&[flag, value]);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-key");
    let err = refused(&["--api-key-file", missing.to_str().unwrap()]);
    assert!(err.contains("--api-key-file"), "{err}");
    let err = refused(&["--require-key-for-all"]);
    assert!(err.contains("API key"), "{err}");
}

/// Deploy the fixture gallery, serve it with `key_args` and `env`, and return the status
/// of a delete of someone not enrolled with the `presented` key (404 when it was accepted,
/// 403 when it was not).
fn delete_status_with(key_args: &[&str], env: &[(&str, &str)], presented: &str) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    let out = Command::new(bin())
        .args([
            "-q",
            "deploy",
            "--no-serve",
            "--model",
            "pretrained",
            "--gallery",
        ])
        .arg(fixtures().join("serving").join("gallery"))
        .arg("--registry")
        .arg(&registry)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(bin());
    cmd.args([
        "-q",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--poll-interval",
        "0",
    ])
    .arg("--registry")
    .arg(&registry)
    .args(key_args)
    .env_remove("FACEPIPE_API_KEY")
    .env_remove("FACEPIPE_API_KEY_FILE")
    .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut server = cmd.spawn().unwrap();
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("API at ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(300));
    let status = url.map(|url| {
        reqwest::blocking::Client::new()
            .delete(format!("{}v1/people/Nobody_Enrolled", url))
            .bearer_auth(presented)
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    let _ = server.kill();
    let _ = server.wait();
    status.expect("the server never said where it listens")
}

#[test]
fn the_api_key_comes_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-key");
    std::fs::write(&file, "from-a-file-7c2\n").unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(
        delete_status_with(&["--api-key-file", path], &[], "from-a-file-7c2"),
        404
    );
    assert_eq!(
        delete_status_with(&[], &[("FACEPIPE_API_KEY_FILE", path)], "wrong-key"),
        403
    );
    assert_eq!(
        delete_status_with(
            &[],
            &[("FACEPIPE_API_KEY", "from-the-env-91d")],
            "from-the-env-91d"
        ),
        404
    );
}
