//! Hostile or mistaken operator input to the real binary gets one clear error: a
//! non-finite or non-positive `deploy --threshold`, a pairs-file header promising billions
//! of pairs, a symlink loop in a `prepare` input tree, a held-out split too small to
//! evaluate. And `score` takes its API key from a file or the environment, not only argv.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a failed test

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use facepipe_pipeline::test_support::{require, Component};
use facepipe_tests::{facepipe_bin, sample_data};

fn facepipe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = facepipe_bin();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p facepipe` first",
        bin.display()
    );
    Command::new(&bin)
        .args(args)
        .arg("--quiet")
        .env_remove("FACEPIPE_API_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn deploy_refuses_a_threshold_that_is_not_a_positive_number() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = path(dir.path());
    for bad in ["inf", "NaN", "-1", "0", "1e39"] {
        let flag = format!("--threshold={bad}");
        let out = facepipe(&["deploy", "--gallery", gallery, &flag, "--no-serve"], &[]);
        assert!(!out.status.success(), "{bad} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("not a usable threshold") && err.contains("such as 0.6"),
            "{bad}: {err}"
        );
    }
    let out = facepipe(&["deploy", "--gallery", gallery, "--threshold", "six"], &[]);
    assert!(stderr(&out).contains("is not a number"), "{}", stderr(&out));
}

#[test]
fn evaluate_refuses_a_pairs_header_with_a_huge_count_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, "10 999999999999\nAda 1 2\nAda 1 Bo 1\n").unwrap();
    let out = facepipe(
        &[
            "evaluate",
            "pretrained",
            path(dir.path()),
            "--pairs",
            path(&pairs),
            "--out",
            path(&dir.path().join("eval")),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
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
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let person = input.join("s1");
    std::fs::create_dir_all(&person).unwrap();
    std::fs::copy(sample_data().join("orl/s1/1.pgm"), person.join("1.pgm")).unwrap();
    // Two links back to the root: walking them would branch forever.
    std::os::unix::fs::symlink(&input, person.join("up")).unwrap();
    std::os::unix::fs::symlink(&input, person.join("up again")).unwrap();
    let out = facepipe(
        &[
            "prepare",
            path(&input),
            path(&dir.path().join("out")),
            "--workers",
            "1",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("symlink loop"), "{err}");
}

#[test]
fn train_refuses_a_test_split_of_one_person_before_the_first_epoch() {
    if !(require(Component::ModelWeights)
        && require(Component::SampleData(sample_data().join("orl"))))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    for s in 1..=8 {
        let person = input.join(format!("s{s}"));
        std::fs::create_dir_all(&person).unwrap();
        for k in 1..=2 {
            let from = sample_data().join(format!("orl/s{s}/{k}.pgm"));
            std::fs::copy(from, person.join(format!("{k}.pgm"))).unwrap();
        }
    }
    let prepared = dir.path().join("prepared");
    let out = facepipe(
        &["prepare", path(&input), path(&prepared), "--workers", "2"],
        &[],
    );
    assert!(out.status.success(), "prepare failed: {}", stderr(&out));
    let model = dir.path().join("model");
    let out = facepipe(
        &[
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
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
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
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, b"not really a photo").unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "from-the-file\n").unwrap();

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
        let out = facepipe(&args, env);
        assert!(!out.status.success(), "the server answered 401");
        assert_eq!(
            server.join().unwrap().as_deref(),
            Some(expected),
            "{flags:?} {env:?}"
        );
    }

    std::fs::write(&key_file, "\n").unwrap();
    let out = facepipe(
        &["score", path(&photo), "--api-key-file", path(&key_file)],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
}
