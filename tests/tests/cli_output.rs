//! What the binary does with its standard streams: a reader that stops early (`| head`)
//! ends the output quietly with exit status 0, and `-vv` turns on trace logs.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use facepipe_tests::{facepipe_bin, sample_data};

#[test]
fn faces_json_piped_into_head_exits_zero() {
    // Enough photos that the output outlives the reader.
    let photos: Vec<_> = std::fs::read_dir(sample_data().join("orl"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|d| d.is_dir())
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|f| f.unwrap().path())
        .take(40)
        .collect();
    assert!(photos.len() >= 20, "sample ORL photos: {}", photos.len());
    let mut child = Command::new(facepipe_bin())
        .args(["-q", "faces", "--json"])
        .args(&photos)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // `head -1` has what it wanted: the pipe closes here.
    let line: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(line["image"].is_string(), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn two_v_flags_mean_trace() {
    let photo = sample_data().join("orl").join("s1").join("1.pgm");
    assert!(photo.is_file(), "{}", photo.display());
    let run = |flag: &str| {
        let out = Command::new(facepipe_bin())
            .args([flag, "faces"])
            .arg(&photo)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{flag}: {stderr}");
        stderr
    };
    let trace = run("-vv");
    assert!(trace.contains("TRACE"), "no trace line with -vv: {trace}");
    let debug = run("-v");
    assert!(!debug.contains("TRACE"), "trace lines with -v: {debug}");
}
