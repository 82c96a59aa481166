//! The pretrained embedding network against the numpy reference: three real crops (a 150 px
//! chip, a tall greyscale crop and a wide colour crop), descriptor L2 difference < 1e-3.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a failed test

use std::path::{Path, PathBuf};

use facepipe_model::{DistanceKind, Embedder};
use facepipe_pipeline::ModelDir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/embed")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

const FILES: [&str; 3] = [
    "John_Salley_0002.png",
    "orl_s12_3.pgm",
    "kit_harington_wide_crop.png",
];

#[test]
fn pretrained_descriptors_match_the_reference() {
    let models = ModelDir::locate(None).unwrap();
    let embedder = Embedder::pretrained(&models, tch::Device::Cpu).unwrap();
    assert_eq!(embedder.dim(), 128);
    assert_eq!(embedder.metric().distance, DistanceKind::Euclidean);
    assert!((embedder.metric().threshold - 0.6).abs() < 1e-6);

    let expected = expected();
    let crops: Vec<_> = FILES
        .iter()
        .map(|f| image::open(fixtures().join(f)).unwrap().to_rgb8())
        .collect();
    // One batch with all three sizes mixed, and each alone: batching must not change a value.
    let batched = embedder.embed(&crops).unwrap();
    for (i, f) in FILES.iter().enumerate() {
        let want: Vec<f32> = expected[f]["descriptor"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(want.len(), 128);
        let size = &expected[f]["size"];
        assert_eq!(u64::from(crops[i].width()), size[0].as_u64().unwrap());
        assert_eq!(u64::from(crops[i].height()), size[1].as_u64().unwrap());

        let alone = embedder.embed(std::slice::from_ref(&crops[i])).unwrap();
        let d_batched = l2(&batched[i], &want);
        let d_alone = l2(&alone[0], &want);
        eprintln!("{f}: L2 to reference {d_batched:.2e} (batched), {d_alone:.2e} (alone)");
        assert!(d_batched < 1e-3, "{f}: L2 difference {d_batched}");
        assert!(d_alone < 1e-3, "{f}: L2 difference {d_alone}");
    }
    // Different people are far apart under face-api's 0.6 rule.
    let m = embedder.metric();
    assert!(!m.same(&batched[0], &batched[1]));
    assert!(!m.same(&batched[0], &batched[2]));
}
