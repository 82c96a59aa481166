//! `facepipe deploy`, `serve` and `score` as a user runs them: the real binary, a registry
//! in a temp dir, the fixture gallery (Barack Obama, Joe Biden) and real photos.
//! Needs the binary: `cargo build -p facepipe` (scripts/test.sh builds it first).
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facepipe_tests::{facepipe_bin, fixtures};

fn bin() -> std::path::PathBuf {
    let bin = facepipe_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p facepipe` first",
        bin.display()
    );
    bin
}

fn deploy(registry: &std::path::Path) {
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
        .arg(registry)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("published deployment v0001"), "{stdout}");
    assert!(stdout.contains("2 people, 4 embeddings"), "{stdout}");
    assert!(registry.join("CURRENT").is_file());
    assert!(registry
        .join("deployments/v0001/gallery.safetensors")
        .is_file());
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(registry.join("deployments/v0001/deployment.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["people"], 2);
    assert_eq!(info["metric"]["distance"], "euclidean");
}

#[test]
fn deploy_then_score_locally_and_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    deploy(&registry);

    // --local: in-process, JSON lines, one photo failing (not an image) → exit code 1.
    let notes = dir.path().join("notes.jpg");
    std::fs::write(&notes, b"this is not a photo").unwrap();
    let s = fixtures().join("serving");
    let out = Command::new(bin())
        .args(["-q", "score", "--local", "--json", "--registry"])
        .arg(&registry)
        .arg(s.join("Barack_Obama_0005.jpg"))
        .arg(&notes)
        .arg(s.join("Anthony_Hopkins_0001.jpg"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["faces"][0]["person"], "Barack_Obama", "{stdout}");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("unreadable"),
        "{stdout}"
    );
    assert_eq!(lines[2]["faces"].as_array().unwrap().len(), 1, "{stdout}");
    assert!(lines[2]["faces"][0]["person"].is_null(), "{stdout}");

    // A real server on a free port, then `score --url` prints a table.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(bin())
        .args(["serve", "--registry"])
        .arg(&registry)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(300) {
        match lines.next() {
            Some(Ok(line)) if line.contains("web page and API at http://") => {
                ready = true;
                break;
            }
            Some(Ok(_)) => continue,
            _ => break,
        }
    }
    let result = std::panic::catch_unwind(|| {
        assert!(ready, "the server did not start");
        let out = Command::new(bin())
            .args(["-q", "score", "--url", &format!("http://127.0.0.1:{port}")])
            .arg(s.join("obama_and_biden.jpg"))
            .arg(s.join("Anthony_Hopkins_0001.jpg"))
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{table}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            table.contains("obama_and_biden.jpg: 2 faces (deployment v0001"),
            "{table}"
        );
        assert!(
            table.contains("Barack_Obama") && table.contains("Joe_Biden"),
            "{table}"
        );
        assert!(
            table.contains("Anthony_Hopkins_0001.jpg: 1 face"),
            "{table}"
        );
        assert!(table.contains("unknown"), "{table}");
        // A photo the server cannot read: non-zero exit, the error on stderr.
        let bad = Command::new(bin())
            .args(["-q", "score", "--url", &format!("http://127.0.0.1:{port}")])
            .arg(dir.path().join("notes.jpg"))
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("bad_image"));
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
