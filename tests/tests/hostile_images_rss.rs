//! The real `facepipe faces` on every class of hostile image, each in its own child process:
//! the answer is the typed error (or a decode that skipped the bomb), and the child's peak
//! RSS, read with `wait4`, stays under [`PEAK_RSS_BOUND_KIB`]. Measured values are printed
//! (`--nocapture`), next to the baseline of the same binary on a small valid image.
//!
//! This is its own test binary so no other test shares the process: a spawned child's
//! peak RSS starts from its parent's high-water mark, so the parent must stay small.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod hostile;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use facepipe_pipeline::image_io::DecodeLimits;
use facepipe_tests::{Dir, TestCommand};
use hostile::*;
use serde_json::Value;

/// A generous bound on the peak RSS of `facepipe faces` on one hostile file. The binary
/// alone takes about 550 MiB (libtorch is linked in); an unbounded decode takes gigabytes.
const PEAK_RSS_BOUND_KIB: u64 = 1024 * 1024;

/// How long one child may run before it is killed and the test fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// Exit code (or minus the signal) and peak RSS in KiB of a child, reaped with `wait4`.
#[allow(unsafe_code)]
fn wait_with_peak_rss(mut child: std::process::Child) -> (i32, u64) {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain integers, valid when zeroed; `wait4` writes only through the
    // two pointers, which point at these locals; the child is ours and std never reaped it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(
            reaped >= 0,
            "wait4 failed: {}",
            std::io::Error::last_os_error()
        );
        if reaped == pid {
            break;
        }
        if start.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!("the child ran past {CHILD_DEADLINE:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    (code, usage.ru_maxrss as u64)
}

/// `facepipe faces --json` on one file: its JSON line and its peak RSS in KiB.
fn faces_in_child(path: &Path) -> (Value, u64) {
    let dir = path.parent().unwrap();
    let stdout = dir.join("stdout.jsonl");
    let stderr = dir.join("stderr.txt");
    let mut faces = TestCommand::new();
    faces
        .args(["--quiet", "faces", "--json"])
        // Crops too: aligning a face that fills a large photo must stay bounded as well.
        .arg("--crops")
        .arg(dir.join("crops"))
        .arg(path)
        .cmd_mut()
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap());
    let child = faces.spawn();
    let (code, peak_kib) = wait_with_peak_rss(child);
    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        code == 0 || code == 1,
        "facepipe faces exited with {code} on {}: {err}",
        path.display()
    );
    let line = out
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line from facepipe faces (exit {code}): {err}"));
    (line, peak_kib)
}

/// What a hostile file must give: faces found (possibly none) or an error naming this.
enum Expect {
    Decodes,
    Error(&'static str),
}

/// The generated input of one case; `None` is a sparse file one byte over the byte limit.
type Input = Option<fn() -> Vec<u8>>;

fn own_peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn faces_cli_stays_within_bounded_memory_on_every_hostile_class() {
    let cases: Vec<(&str, Input, Expect)> = vec![
        (
            "baseline_64x64.png",
            Some(|| png(64, 64, &[], 0)),
            Expect::Decodes,
        ),
        ("png_iccp_bomb.png", Some(iccp_bomb), Expect::Decodes),
        ("png_ztxt_bomb.png", Some(ztxt_bomb), Expect::Decodes),
        ("png_itxt_bomb.png", Some(itxt_bomb), Expect::Decodes),
        (
            "png_exif_20mib.png",
            Some(exif_over_budget),
            Expect::Error("ancillary data"),
        ),
        (
            "png_idat_bomb_64.png",
            Some(idat_bomb_small_header),
            Expect::Decodes,
        ),
        (
            "png_idat_bomb_6000.png",
            Some(idat_bomb_large_header),
            Expect::Decodes,
        ),
        (
            "gif_screen_65535.gif",
            Some(|| gif((65535, 65535), (1, 1))),
            Expect::Error("image too large: 65535x65535"),
        ),
        (
            "gif_frame_65535.gif",
            Some(|| gif((64, 64), (65535, 65535))),
            Expect::Error("MiB of decoder memory"),
        ),
        (
            "webp_16000.webp",
            Some(|| webp_vp8l(16000, 16000)),
            Expect::Error("image too large: 16000x16000"),
        ),
        (
            "webp_lying_exif.webp",
            Some(webp_lying_exif),
            Expect::Error("truncated WebP"),
        ),
        (
            "bmp_60000.bmp",
            Some(|| bmp(60000, 60000)),
            Expect::Error("image too large: 60000x60000"),
        ),
        (
            "pnm_60000.ppm",
            Some(|| pnm(60000, 60000)),
            Expect::Error("image too large: 60000x60000"),
        ),
        (
            "tiff_60000.tif",
            Some(|| tiff(60000, 60000)),
            Expect::Error("image too large: 60000x60000"),
        ),
        (
            "jpeg_65000.jpg",
            Some(|| jpeg_claiming(65000, 65000)),
            Expect::Error("image too large: 65000x65000"),
        ),
        (
            "strip_5000000x8.png",
            Some(|| png(5_000_000, 8, &[], 0)),
            Expect::Error("exceeds the limit of 32:1"),
        ),
        (
            "wide_20000x2000.png",
            Some(|| png(20_000, 2_000, &[], 0)),
            Expect::Decodes,
        ),
        ("oversized.png", None, Expect::Error("input too large")),
    ];
    let dir = Dir::new();
    let mut measured = Vec::new();
    for (name, input, expect) in cases {
        let case_dir = dir.create_dir(name.replace('.', "_"));
        let path = case_dir.join(name);
        let mut file = File::create(&path).unwrap();
        match input {
            // Generated one at a time and dropped before the child starts.
            Some(generate) => file.write_all(&generate()).unwrap(),
            None => file.set_len(DecodeLimits::default().max_bytes + 1).unwrap(),
        }
        drop(file);
        let on_disk = std::fs::metadata(&path).unwrap().len();
        let (line, peak_kib) = faces_in_child(&path);
        match expect {
            Expect::Decodes => assert!(line["faces"].is_array(), "{name}: {line}"),
            Expect::Error(text) => {
                let err = line["error"].as_str().unwrap_or_default();
                assert!(
                    err.contains(text),
                    "{name}: expected an error with {text:?}: {line}"
                );
            }
        }
        std::fs::remove_file(&path).unwrap();
        println!(
            "{name:<24} {on_disk:>9} bytes  peak RSS {:>6.1} MiB  {}",
            peak_kib as f64 / 1024.0,
            line.get("error")
                .and_then(Value::as_str)
                .unwrap_or("decoded")
        );
        measured.push((name, peak_kib));
    }
    println!(
        "(this test process peaked at {:.1} MiB: no child can report less)",
        own_peak_rss_kib() as f64 / 1024.0
    );
    for (name, peak_kib) in measured {
        assert!(
            peak_kib < PEAK_RSS_BOUND_KIB,
            "{name}: peak RSS {peak_kib} KiB exceeds {PEAK_RSS_BOUND_KIB} KiB"
        );
    }
}
