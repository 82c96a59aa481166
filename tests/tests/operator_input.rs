//! Hostile or mistaken operator input to the real binary gets one clear error: a
//! non-finite or non-positive `deploy --threshold`, a pairs-file header promising billions
//! of pairs, a symlink loop in a `prepare` input tree, a held-out split too small to
//! evaluate. And `score` takes its API key from a file or the environment, not only argv.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a failed test

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use facepipe_pipeline::test_support::{require, Component};
use facepipe_tests::{sample_data, Dir, TestCommand};

/// `facepipe ARGS… --quiet`, with no API key from this process's environment.
fn facepipe(args: &[&str]) -> TestCommand {
    let mut cmd = TestCommand::new();
    cmd.args(args).arg("--quiet").env_remove("FACEPIPE_API_KEY");
    cmd
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn deploy_refuses_a_threshold_that_is_not_a_positive_number() {
    let dir = Dir::new();
    let gallery = path(dir.path());
    for bad in ["inf", "NaN", "-1", "0", "1e39"] {
        let flag = format!("--threshold={bad}");
        let err = facepipe(&["deploy", "--gallery", gallery, &flag, "--no-serve"])
            .assert_err()
            .stderr;
        assert!(
            err.contains("not a usable threshold") && err.contains("such as 0.6"),
            "{bad}: {err}"
        );
    }
    let err = facepipe(&["deploy", "--gallery", gallery, "--threshold", "six"])
        .assert_err()
        .stderr;
    assert!(err.contains("is not a number"), "{err}");
}

#[test]
fn evaluate_refuses_a_pairs_header_with_a_huge_count_before_any_work() {
    let dir = Dir::new();
    let pairs = dir.create("pairs.txt", "10 999999999999\nAda 1 2\nAda 1 Bo 1\n");
    let err = facepipe(&[
        "evaluate",
        "pretrained",
        path(dir.path()),
        "--pairs",
        path(&pairs),
        "--out",
        path(&dir.join("eval")),
    ])
    .assert_err()
    .stderr;
    assert!(
        err.contains("promises 10 folds") && err.contains("the file has 2 pair lines"),
        "{err}"
    );
}

#[test]
fn prepare_refuses_a_symlink_loop_in_the_input_tree() {
    if !require(Component::ModelWeights) {
        return;
    }
    let dir = Dir::new();
    let input = dir.join("in");
    let person = dir.copy_orl("s1", 1, "in/s1");
    // Two links back to the root: walking them would branch forever.
    std::os::unix::fs::symlink(&input, person.join("up")).unwrap();
    std::os::unix::fs::symlink(&input, person.join("up again")).unwrap();
    let err = facepipe(&[
        "prepare",
        path(&input),
        path(&dir.join("out")),
        "--workers",
        "1",
    ])
    .assert_err()
    .stderr;
    assert!(err.contains("symlink loop"), "{err}");
}

#[test]
fn train_refuses_a_test_split_of_one_person_before_the_first_epoch() {
    if !(require(Component::ModelWeights)
        && require(Component::SampleData(sample_data().join("orl"))))
    {
        return;
    }
    let dir = Dir::new();
    let input = dir.join("in");
    for s in 1..=8 {
        dir.copy_orl(&format!("s{s}"), 2, format!("in/s{s}"));
    }
    let prepared = dir.join("prepared");
    facepipe(&["prepare", path(&input), path(&prepared), "--workers", "2"]).stdout();
    let model = dir.join("model");
    let err = facepipe(&[
        "train",
        path(&prepared),
        path(&model),
        "--arch",
        "mobilefacenet",
        "--init",
        "scratch",
        "--device",
        "cpu",
        "--val-people",
        "2",
        "--test-people",
        "0.1",
    ])
    .assert_err()
    .stderr;
    assert!(
        err.contains("--test-people 0.1 of 8 identities is 1 person")
            && err.contains("use --test-people 2 or more"),
        "{err}"
    );
    assert!(!model.join("checkpoint").exists(), "no epoch may have run");
}

/// A one-request HTTP server that records the `Authorization` header it is sent and
/// answers 401; returns the port and a handle yielding the header.
fn recording_server() -> (u16, std::thread::JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut auth = None;
        let mut line = String::new();
        while reader.read_line(&mut line).ok()? > 0 && line != "\r\n" {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    auth = Some(value.trim().to_string());
                }
            }
            line.clear();
        }
        let body = r#"{"error":{"code":"unauthorized","message":"recorded"}}"#;
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        auth
    });
    (port, handle)
}

#[test]
fn score_takes_the_api_key_from_a_file_or_the_environment() {
    let dir = Dir::new();
    let photo = dir.create("photo.jpg", b"not really a photo");
    let key_file = dir.create("key", "from-the-file\n");

    let file_flag = ["--api-key-file", path(&key_file)];
    let env_key = [("FACEPIPE_API_KEY", "from-the-env")];
    let cases = [
        (&file_flag[..], &[][..], "Bearer from-the-file"),
        (&[][..], &env_key[..], "Bearer from-the-env"),
        // The file wins over the environment.
        (&file_flag[..], &env_key[..], "Bearer from-the-file"),
    ];
    for (flags, env, expected) in cases {
        let (port, server) = recording_server();
        let url = format!("http://127.0.0.1:{port}");
        let mut args = vec!["score", path(&photo), "--url", &url];
        args.extend_from_slice(flags);
        // The server answered 401: an error.
        facepipe(&args).envs(env).assert_err();
        assert_eq!(
            server.join().unwrap().as_deref(),
            Some(expected),
            "{flags:?} {env:?}"
        );
    }

    dir.create("key", "\n");
    let err = facepipe(&["score", path(&photo), "--api-key-file", path(&key_file)])
        .assert_err()
        .stderr;
    assert!(err.contains("is empty"), "{err}");
}
