//! `facepipe deploy`, `serve` and `score` as a user runs them: the real binary, a registry
//! in a temp dir, the fixture gallery (Barack Obama, Joe Biden) and real photos.
//! Needs the binary: `cargo build -p facepipe` (scripts/test.sh builds it first).
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;

use facepipe_tests::{fixtures, serve_command, setup, Dir, Server, TestCommand};

fn deploy(registry: &Path) {
    let stdout = setup::deploy_gallery(registry).stdout();
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
    let dir = Dir::new();
    let registry = dir.join("registry");
    deploy(&registry);

    // --local: in-process, JSON lines, one photo failing (not an image) → exit code 1.
    let notes = dir.create("notes.jpg", b"this is not a photo");
    let s = fixtures().join("serving");
    let out = TestCommand::new()
        .args(["-q", "score", "--local", "--json", "--registry"])
        .arg(&registry)
        .arg(s.join("Barack_Obama_0005.jpg"))
        .arg(&notes)
        .arg(s.join("Anthony_Hopkins_0001.jpg"))
        .assert_exit(1);
    let stdout = &out.stdout;
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["faces"][0]["person"], "Barack_Obama", "{stdout}");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("unreadable"),
        "{stdout}"
    );
    assert_eq!(lines[2]["faces"].as_array().unwrap().len(), 1, "{stdout}");
    assert!(lines[2]["faces"][0]["person"].is_null(), "{stdout}");

    // A real server on a free port, then `score --url` prints a table.
    let server = Server::start(&mut serve_command(&registry));
    let table = TestCommand::new()
        .args(["-q", "score", "--url", server.url()])
        .arg(s.join("obama_and_biden.jpg"))
        .arg(s.join("Anthony_Hopkins_0001.jpg"))
        .stdout();
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
    let bad = TestCommand::new()
        .args(["-q", "score", "--url", server.url()])
        .arg(&notes)
        .assert_exit(1);
    assert!(bad.stderr.contains("bad_image"), "{}", bad.stderr);
}
