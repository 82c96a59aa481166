//! `facepipe compare` and `facepipe evaluate` end to end: the real binary on real photos.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a failed test

use std::path::{Path, PathBuf};

use facepipe_pipeline::test_support::{require, Component};
use facepipe_tests::{fixtures, sample_data, Dir, TestCommand};
use serde_json::Value;

/// `facepipe ARGS… --device cpu --quiet`.
fn facepipe(args: &[&str]) -> TestCommand {
    let mut cmd = TestCommand::new();
    cmd.args(args).args(["--device", "cpu", "--quiet"]);
    cmd
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sample people (70 photos of 11 people), or `None` when the test is to skip.
fn sample_people() -> Option<PathBuf> {
    let people = sample_data().join("people");
    require(Component::SampleData(people.clone())).then_some(people)
}

/// `facepipe evaluate pretrained DATA EXTRA… --out OUT_DIR --json`: its JSON report.
fn evaluate(data: &Path, out_dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["evaluate", "pretrained", path(data)];
    args.extend_from_slice(extra);
    args.extend(["--out", path(out_dir), "--json"]);
    let mut lines = facepipe(&args).json_lines();
    assert!(!lines.is_empty(), "evaluate printed no report");
    lines.swap_remove(0)
}

#[test]
fn compare_two_photos_and_a_pairs_file() {
    let dir = fixtures().join("compare");
    let simm1 = dir.join("John_Simm_0001.jpg");
    let simm5 = dir.join("John_Simm_0005.jpg");
    let rose = dir.join("Rose_Leslie_0001.jpg");

    let v = &facepipe(&["compare", "--json", path(&simm1), path(&simm5)]).json_lines()[0];
    assert_eq!(v["same"], true, "{v}");
    assert_eq!(v["threshold"], 0.6);
    let same_d = v["distance"].as_f64().unwrap();
    assert!(same_d > 0.0 && same_d < 0.6, "{v}");

    let v = &facepipe(&["compare", "--json", path(&simm1), path(&rose)]).json_lines()[0];
    assert_eq!(v["same"], false, "{v}");
    assert!(v["distance"].as_f64().unwrap() > 0.6, "{v}");

    // Pairs: in order, the good ones answered, a missing photo and a malformed line failing
    // alone, exit status 1.
    let tmp = Dir::new();
    let missing = tmp.join("missing.jpg");
    let list = tmp.create(
        "pairs.tsv",
        format!(
            "# comment\n{a}\t{b}\n{a}\t{c}\n{m}\t{a}\nno tab on this line\n",
            a = path(&simm1),
            b = path(&simm5),
            c = path(&rose),
            m = path(&missing)
        ),
    );
    let lines = facepipe(&["compare", "--json", "--pairs", path(&list)])
        .assert_exit(1)
        .json_lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["a"], path(&simm1));
    assert_eq!(lines[0]["b"], path(&simm5));
    assert_eq!(lines[0]["same"], true);
    // The same photos give the same distance as the single comparison.
    assert!((lines[0]["distance"].as_f64().unwrap() - same_d).abs() < 1e-6);
    assert_eq!(lines[1]["same"], false);
    assert!(lines[2]["error"].as_str().unwrap().contains("missing.jpg"));
    assert!(lines[2].get("distance").is_none());
    assert!(lines[3]["error"].as_str().unwrap().contains("tab"));
}

#[test]
fn evaluate_pretrained_on_the_sample_people() {
    let Some(people) = sample_people() else {
        return;
    };
    let tmp = Dir::new();
    let out_dir = tmp.join("eval");
    let r = &evaluate(&people, &out_dir, &[]);
    // 70 photos of 11 people, every one with a detectable face.
    assert_eq!(r["samples"], 70);
    assert_eq!(r["identities"], 11);
    // Every same-person pair (Σ n·(n−1)/2 over the identity folders), every other pair
    // different (2415 in all: fewer than the sampling cap).
    let mut same = 0u64;
    for id in std::fs::read_dir(&people).unwrap() {
        let n = std::fs::read_dir(id.unwrap().path()).unwrap().count() as u64;
        same += n * (n - 1) / 2;
    }
    assert_eq!(r["pairs"]["same"], same);
    assert_eq!(r["pairs"]["different"], 70 * 69 / 2 - same);
    // dlib's network reports 99.38 % on LFW; these photos are easier (frontal, mostly
    // chips): 98 % leaves room for a few borderline pairs, never for a broken port.
    let acc = r["accuracy"]["mean"].as_f64().unwrap();
    assert!(acc >= 0.98, "10-fold accuracy {acc}");
    assert!(r["roc_auc"].as_f64().unwrap() >= 0.99, "{}", r["roc_auc"]);
    assert!(r["identification"]["rank1"].as_f64().unwrap() >= 0.95);
    assert_eq!(r["identification"]["gallery"], 11);
    assert_eq!(r["identification"]["probes"], 59);
    // Face-api's 0.6 and the calibrated threshold (2000+ different pairs: measurable FAR).
    assert!(r["at_model_threshold"]["accuracy"].as_f64().unwrap() >= 0.98);
    assert_eq!(r["calibration"]["method"], "empirical");
    assert!(r["calibration"]["achieved_far"].as_f64().unwrap() <= 1e-3);
    assert_eq!(r["calibration"]["resolvable"], true);
    assert!(r["calibration"]["people_needed"].is_null());
    let t = r["calibration"]["threshold"].as_f64().unwrap();
    assert!(t > 0.4 && t < 0.8, "calibrated threshold {t}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(&saved, r);
    let roc = image::open(out_dir.join("roc.png")).unwrap();
    assert_eq!((roc.width(), roc.height()), (640, 480));
}

#[test]
fn evaluate_with_an_lfw_pairs_file() {
    let Some(people) = sample_people() else {
        return;
    };
    // A small raw dataset in the LFW layout, and a pairs file in LFW's format that also names
    // a photo the dataset lacks.
    let tmp = Dir::new();
    let data = tmp.join("data");
    for (who, n) in [("John_Simm", 3), ("John_Salley", 3), ("Joe_Biden", 2)] {
        for i in 1..=n {
            let f = format!("{who}_{i:04}.jpg");
            tmp.copy(
                people.join(who).join(&f),
                Path::new("data").join(who).join(&f),
            );
        }
    }
    let pairs = tmp.create(
        "pairs.txt",
        "2 3\n\
         John_Simm 1 2\nJohn_Salley 1 3\nJoe_Biden 1 2\n\
         John_Simm 1 John_Salley 1\nJohn_Simm 2 Joe_Biden 1\nJohn_Salley 2 Joe_Biden 2\n\
         John_Simm 2 3\nJohn_Salley 2 3\nJohn_Simm 1 9\n\
         John_Simm 3 John_Salley 3\nJohn_Salley 1 Joe_Biden 1\nJoe_Biden 2 John_Simm 1\n",
    );
    let r = &evaluate(&data, &tmp.join("eval"), &["--pairs", path(&pairs)]);
    assert_eq!(r["samples"], 8);
    assert_eq!(r["pairs"]["source"], "pairs_file");
    assert_eq!(r["pairs"]["same"], 5);
    assert_eq!(r["pairs"]["different"], 6);
    assert_eq!(r["pairs"]["missing"], 1);
    // Two folds, as the header says.
    assert_eq!(r["accuracy"]["folds"], 2);
    assert_eq!(r["roc_auc"], 1.0);
    // 6 different pairs cannot resolve FAR 1e-3: calibrated at 1/6, one false accept.
    let c = &r["calibration"];
    assert_eq!(c["method"], "smallest_resolvable");
    assert_eq!(c["resolvable"], false);
    assert_eq!(c["impostor_pairs"], 6);
    assert!(
        (c["calibrated_far"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-12,
        "{c}"
    );
    assert!(
        (c["achieved_far"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-12,
        "{c}"
    );
    assert!(c["people_needed"].as_u64().unwrap() > 2, "{c}");
}
