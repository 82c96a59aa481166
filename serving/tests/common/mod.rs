//! Shared set-up for the service tests: the real networks, a real gallery built from the
//! photos in tests/fixtures/serving/gallery (Barack Obama, Joe Biden), and a fresh registry
//! per test. The networks and the gallery are built once per test binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use facepipe_pipeline::{EngineOptions, FaceEngine, ModelDir};
use facepipe_serving::enroll::{gallery_from_photos, new_bundle};
use facepipe_serving::model::fake::{FakeRecognizer, FAKE_DIM};
use facepipe_serving::model::Recognize;
use facepipe_serving::{
    AppState, Bundle, Gallery, Live, LoadOptions, LoadedModel, ModelRef, Registry, ServiceConfig,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const API_KEY: &str = "test-key-5f1c";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
        .join("serving")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

struct Shared {
    recognizer: Arc<LoadedModel>,
    bundle: Bundle,
    load: LoadOptions,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let models = ModelDir::locate(None).expect("pretrained models: run scripts/setup.sh");
        let load = LoadOptions::new(models.clone());
        let model = ModelRef::pretrained();
        let recognizer =
            LoadedModel::load(&models, &model, None, load.engine.clone(), load.device).unwrap();
        let engine = FaceEngine::load(&models, EngineOptions::default()).unwrap();
        let built = gallery_from_photos(&fixtures().join("gallery"), &engine, &recognizer, &|_| {})
            .unwrap();
        assert!(
            built.skipped.is_empty(),
            "gallery photos without a face: {:?}",
            built.skipped
        );
        let metric = recognizer.metric();
        let bundle = new_bundle(
            built.gallery,
            model,
            metric,
            "tests/fixtures/serving/gallery",
            None,
        );
        Shared {
            recognizer: Arc::new(recognizer),
            bundle,
            load,
        }
    })
}

/// A service over a fresh registry holding one published deployment (v1).
pub fn state_with(config: ServiceConfig) -> (Arc<AppState>, tempfile::TempDir) {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let info = registry.publish(s.bundle.clone()).unwrap();
    let live = Live {
        info,
        gallery: s.bundle.gallery.clone(),
        recognizer: s.recognizer.clone(),
    };
    (
        AppState::with_live(live, registry, s.load.clone(), config),
        dir,
    )
}

/// A service like [`state_with`]'s on [`FakeRecognizer`]: no weights are loaded, so the
/// tests of the HTTP contract (auth, limits, admission, deadlines) run anywhere. Each photo
/// takes `work` to "recognise". The gallery holds the two gallery people under their fake
/// embeddings.
pub fn fake_state_with(
    config: ServiceConfig,
    work: std::time::Duration,
) -> (Arc<AppState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let model = ModelRef::pretrained();
    let fake = FakeRecognizer::new(work);
    let mut gallery = Gallery::empty(fake.metric().distance, FAKE_DIM);
    for person in ["Barack_Obama", "Joe_Biden"] {
        for photo in std::fs::read_dir(fixtures().join("gallery").join(person)).unwrap() {
            let photo = image::open(photo.unwrap().path()).unwrap().to_rgb8();
            let e = FakeRecognizer::embedding(&photo);
            gallery.add(person, &[e], "fake").unwrap();
        }
    }
    let bundle = new_bundle(gallery, model.clone(), fake.metric(), "fake", None);
    let info = registry.publish(bundle.clone()).unwrap();
    let live = Live {
        info,
        gallery: bundle.gallery,
        recognizer: Arc::new(LoadedModel::new(model, Box::new(fake))),
    };
    // Manifests without weights: a real network loaded from here would fail, loudly.
    let no_weights = dir.path().join("no-weights");
    std::fs::create_dir(&no_weights).unwrap();
    for name in facepipe_pipeline::models::ALL_MODELS {
        std::fs::write(
            no_weights.join(format!("{name}-weights_manifest.json")),
            "[]",
        )
        .unwrap();
    }
    let load = LoadOptions::new(ModelDir::open(&no_weights).unwrap());
    (AppState::with_live(live, registry, load, config), dir)
}

pub fn keyed_config() -> ServiceConfig {
    ServiceConfig {
        api_key: Some(API_KEY.into()),
        ..ServiceConfig::default()
    }
}

/// The shared gallery bundle (for tests that publish variations of it).
pub fn base_bundle() -> Bundle {
    shared().bundle.clone()
}

/// A multipart body with one file field per `(field, bytes)`.
pub fn multipart(parts: &[(&str, &[u8])], text: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "facepipe-test-boundary-7d1";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.jpg\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    for (name, value) in text {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Send one request through the router (no socket) and return status + JSON (or text).
pub async fn send(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = facepipe_serving::app(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (status, value)
}

pub fn post_image(uri: &str, bytes: &[u8]) -> Request<Body> {
    let (ct, body) = multipart(&[("image", bytes)], &[]);
    Request::post(uri)
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap()
}

/// The names given to the faces of an identify answer (`None` for unknown).
pub fn names(answer: &serde_json::Value) -> Vec<Option<String>> {
    answer["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["person"].as_str().map(str::to_string))
        .collect()
}
