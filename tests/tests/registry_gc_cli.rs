//! `facepipe registry gc` on a local registry: a dry run reports without removing, a real
//! run keeps CURRENT, the newest `--keep` and leased versions, and bad options are refused
//! with a clear message. Needs the binary (`cargo build -p facepipe`).
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::process::Command;

use facepipe_serving::test_fixtures::bundle;
use facepipe_serving::Registry;
use facepipe_tests::facepipe_bin;

fn gc(registry: &std::path::Path, args: &[&str]) -> std::process::Output {
    assert!(
        facepipe_bin().is_file(),
        "{} is missing: run `cargo build -p facepipe` first",
        facepipe_bin().display()
    );
    Command::new(facepipe_bin())
        .args(["-q", "registry", "gc", "--registry"])
        .arg(registry)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn gc_keeps_current_the_newest_and_leased_versions() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
    for i in 1..=5 {
        reg.publish(bundle(&format!("p{i}"))).unwrap();
    }
    reg.renew_lease("a-server", 1).unwrap();

    let out = gc(dir.path(), &["--keep", "2", "--dry-run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["current"], 5);
    assert_eq!(report["kept"], serde_json::json!([4, 5]));
    assert_eq!(report["leased"], serde_json::json!([1]));
    assert_eq!(report["removed"], serde_json::json!([2, 3]));
    assert_eq!(reg.versions().unwrap(), [1, 2, 3, 4, 5]);

    let out = gc(dir.path(), &["--keep", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("removed: v0002 v0003"), "{stdout}");
    assert_eq!(reg.versions().unwrap(), [1, 4, 5]);
    assert_eq!(reg.load_current().unwrap().gallery.people(), ["p5"]);

    let out = gc(dir.path(), &["--keep", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--keep"), "{stderr}");
}
