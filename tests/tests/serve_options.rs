//! `facepipe serve`'s operator input: flags that make no sense are refused with an error
//! that names the flag and the accepted range, before anything is loaded; the API key can
//! come from a file or the environment instead of argv.
//! Needs the binary: `cargo build --workspace --all-features --bins` first.
#![allow(clippy::unwrap_used)] // tests may unwrap

use facepipe_tests::{serve_command, setup, Dir, Server};

/// `facepipe serve` with `flags` on a registry that does not exist: the flags must be
/// refused (an error, not a crash) before the registry is opened. Returns stderr.
fn refused(flags: &[&str]) -> String {
    let dir = Dir::new();
    serve_command(dir.join("no-registry"))
        .arg("-q")
        .args(flags)
        .env_remove("FACEPIPE_API_KEY")
        .env_remove("FACEPIPE_API_KEY_FILE")
        .assert_err()
        .stderr
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
    let dir = Dir::new();
    let missing = dir.join("missing-key");
    let err = refused(&["--api-key-file", missing.to_str().unwrap()]);
    assert!(err.contains("--api-key-file"), "{err}");
    let err = refused(&["--require-key-for-all"]);
    assert!(err.contains("API key"), "{err}");
}

/// Deploy the fixture gallery, serve it with `key_args` and `env`, and return the status
/// of a delete of someone not enrolled with the `presented` key (404 when it was accepted,
/// 403 when it was not).
fn delete_status_with(key_args: &[&str], env: &[(&str, &str)], presented: &str) -> u16 {
    let dir = Dir::new();
    let registry = dir.join("registry");
    setup::deploy_gallery(&registry).stdout();
    let server = Server::start(
        serve_command(&registry)
            .args(["-q", "--poll-interval", "0"])
            .args(key_args)
            .env_remove("FACEPIPE_API_KEY")
            .env_remove("FACEPIPE_API_KEY_FILE")
            .envs(env),
    );
    reqwest::blocking::Client::new()
        .delete(format!("{}/v1/people/Nobody_Enrolled", server.url()))
        .bearer_auth(presented)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn the_api_key_comes_from_a_file_or_the_environment() {
    let dir = Dir::new();
    let file = dir.create("api-key", "from-a-file-7c2\n");
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
