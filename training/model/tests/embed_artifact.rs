//! Model artifact round trip: the pretrained network saved as `model.safetensors` +
//! `model.json` and loaded back embeds the same real crops to the same values; a fine-tuned
//! (cosine) artifact returns unit vectors; broken folders fail with a clear error.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a failed test

use std::path::Path;

use facepipe_model::{
    artifact, resnet, Arch, DistanceKind, Embedder, InputSpec, Metric, ModelJson,
};
use facepipe_pipeline::ModelDir;
use tch::nn;

fn crops() -> Vec<image::RgbImage> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/embed");
    [
        "John_Salley_0002.png",
        "orl_s12_3.pgm",
        "kit_harington_wide_crop.png",
    ]
    .iter()
    .map(|f| image::open(dir.join(f)).unwrap().to_rgb8())
    .collect()
}

fn save_pretrained(dir: &Path, metric: Metric) -> ModelJson {
    let models = ModelDir::locate(None).unwrap();
    let weights = models
        .load(facepipe_pipeline::models::FACE_RECOGNITION)
        .unwrap();
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _net = resnet::FaceResNet::pretrained(&vs, &weights).unwrap();
    // A training-only head in the same var store must stay out of the artifact.
    let _head = vs
        .root()
        .sub("head")
        .var("centres", &[10, 128], nn::Init::Const(0.0));
    let mut json = ModelJson::new(Arch::Resnet128, InputSpec::pretrained_resnet(), 128, metric);
    json.training = serde_json::json!({"epochs": 0, "note": "round-trip test"});
    artifact::save(dir, &vs, &json).unwrap();
    json
}

#[test]
fn pretrained_round_trips_through_an_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let metric = Metric {
        distance: DistanceKind::Euclidean,
        threshold: 0.55,
    };
    let json = save_pretrained(&dir, metric);
    assert!(dir.join("model.safetensors").is_file());
    let back = artifact::load_json(&dir).unwrap();
    assert_eq!(back, json);

    let saved = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    assert!(saved.iter().all(|(n, _)| !n.starts_with("head.")));
    // stem + 14 blocks × 2 convs, weight and bias each, plus the embedding layer.
    assert_eq!(saved.len(), 2 + 14 * 4 + 1);

    let loaded = Embedder::from_artifact(&dir, tch::Device::Cpu).unwrap();
    assert_eq!(loaded.metric(), metric);
    assert_eq!(loaded.dim(), 128);
    assert_eq!(loaded.architecture(), Arch::Resnet128);
    let models = ModelDir::locate(None).unwrap();
    let pretrained = Embedder::pretrained(&models, tch::Device::Cpu).unwrap();
    let crops = crops();
    let a = pretrained.embed(&crops).unwrap();
    let b = loaded.embed(&crops).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let d = Metric::distance(&metric, x, y);
        assert!(d < 1e-6, "round trip moved an embedding by {d}");
    }
}

#[test]
fn cosine_artifacts_embed_unit_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let metric = Metric {
        distance: DistanceKind::Cosine,
        threshold: 0.3,
    };
    save_pretrained(&dir, metric);
    let e = Embedder::from_artifact(&dir, tch::Device::Cpu).unwrap();
    let v = e.embed(&crops()).unwrap();
    for x in &v {
        let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    // Different people: cosine distance well above zero.
    assert!(e.metric().distance(&v[0], &v[1]) > 0.1);
}

#[test]
fn broken_artifacts_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Embedder::from_artifact(tmp.path(), tch::Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.json"), "{err}");

    let dir = tmp.path().join("model");
    save_pretrained(
        &dir,
        Metric {
            distance: DistanceKind::Euclidean,
            threshold: 0.6,
        },
    );
    let text = std::fs::read_to_string(dir.join("model.json")).unwrap();
    assert!(text.contains("\"architecture\": \"resnet128\""), "{text}");
    // Artifacts written before the name was unified still load.
    std::fs::write(
        dir.join("model.json"),
        text.replace("\"resnet128\"", "\"faceapi_resnet\""),
    )
    .unwrap();
    let old = Embedder::from_artifact(&dir, tch::Device::Cpu).unwrap();
    assert_eq!(old.architecture(), Arch::Resnet128);
    // An unknown architecture name.
    std::fs::write(
        dir.join("model.json"),
        text.replace("\"resnet128\"", "\"no_such_net\""),
    )
    .unwrap();
    let err = Embedder::from_artifact(&dir, tch::Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no_such_net"), "{err}");
    // Weights of another width than model.json says.
    std::fs::write(
        dir.join("model.json"),
        text.replace("\"embedding_dim\": 128", "\"embedding_dim\": 64"),
    )
    .unwrap();
    let err = Embedder::from_artifact(&dir, tch::Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fc.weight"), "{err}");
}
