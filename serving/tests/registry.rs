//! The registry on a local folder and on S3 (a real SeaweedFS started here): publishing,
//! loading, model artifacts, the watcher swapping in a new CURRENT, and publishers in two
//! processes at once getting distinct consecutive versions.
//!
//! The S3 tests need `weed` on PATH (`. scripts/env.sh`; CI installs it) and skip with a
//! message without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use facepipe_pipeline::storage::seaweed::SeaweedFs;
use facepipe_pipeline::storage::StorageOptions;
use facepipe_serving::deployment::{now_rfc3339, pretrained_metric};
use facepipe_serving::{
    AppState, Bundle, DeploymentInfo, Gallery, Live, ModelRef, Registry, ServiceConfig,
};
use facepipe_training::DistanceKind;

const BUCKET: &str = "facepipe-registry";
/// Set in child processes: publish `PUBLISHES` versions to this registry and exit.
const CHILD_REGISTRY: &str = "FACEPIPE_TEST_CHILD_REGISTRY";
const CHILD_TAG: &str = "FACEPIPE_TEST_CHILD_TAG";
const CHILD_ENDPOINT: &str = "FACEPIPE_TEST_CHILD_ENDPOINT";
/// A file the children wait for, so both start publishing at the same moment.
const CHILD_GO: &str = "FACEPIPE_TEST_CHILD_GO";
const PUBLISHES: usize = 4;

fn bundle(name: &str) -> Bundle {
    let mut gallery = Gallery::empty(DistanceKind::Euclidean, 2);
    gallery.add(name, &[vec![1.0, 0.0]], "x").unwrap();
    Bundle {
        info: DeploymentInfo {
            version: 0,
            name: None,
            created: now_rfc3339(),
            model: ModelRef::pretrained(),
            metric: pretrained_metric(),
            embedding_dim: 2,
            people: 1,
            embeddings: 1,
            gallery_source: "test".into(),
            parent: None,
            reason: "deploy".into(),
        },
        gallery,
    }
}

fn weed_or_skip() -> Option<SeaweedFs> {
    if !SeaweedFs::available() {
        eprintln!(
            "skipping: `weed` (SeaweedFS) is not on PATH; run `. scripts/env.sh` (scripts/setup.sh installs it)"
        );
        return None;
    }
    Some(SeaweedFs::start(BUCKET).unwrap())
}

/// Not a test on its own: the body of the child processes of the two-publisher tests.
#[test]
fn publisher_child() {
    let Ok(location) = std::env::var(CHILD_REGISTRY) else {
        return;
    };
    let tag = std::env::var(CHILD_TAG).unwrap();
    let options = StorageOptions {
        s3_endpoint: std::env::var(CHILD_ENDPOINT).ok(),
        region: Some("us-east-1".into()),
    };
    let registry = Registry::open_with(&location, &options).unwrap();
    let go = std::path::PathBuf::from(std::env::var(CHILD_GO).unwrap());
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    for i in 0..PUBLISHES {
        registry.publish(bundle(&format!("{tag}-{i}"))).unwrap();
    }
}

/// Run `PUBLISHES` publishes from each of two processes at once; check every publish got
/// its own version, numbered 1.. without gaps, and CURRENT ends on the newest.
fn two_processes_publish(location: &str, endpoint: Option<String>) {
    let exe = std::env::current_exe().unwrap();
    let barrier = tempfile::tempdir().unwrap();
    let go = barrier.path().join("go");
    let children: Vec<Child> = ["a", "b"]
        .iter()
        .map(|tag| {
            let mut cmd = Command::new(&exe);
            cmd.args(["--exact", "publisher_child", "--nocapture"])
                .env(CHILD_REGISTRY, location)
                .env(CHILD_TAG, tag)
                .env(CHILD_GO, &go);
            if let Some(e) = &endpoint {
                cmd.env(CHILD_ENDPOINT, e);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    // Let both connect first (S3 clients take a moment), then release them together.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&go, b"").unwrap();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a publisher failed");
    }
    let options = StorageOptions {
        s3_endpoint: endpoint,
        region: Some("us-east-1".into()),
    };
    let registry = Registry::open_with(location, &options).unwrap();
    let n = 2 * PUBLISHES as u32;
    assert_eq!(registry.versions().unwrap(), (1..=n).collect::<Vec<_>>());
    let mut names: Vec<String> = (1..=n)
        .map(|v| {
            let b = registry.load(v).unwrap();
            assert_eq!(b.info.version, v);
            b.gallery.people()[0].clone()
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|t| (0..PUBLISHES).map(move |i| format!("{t}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "every publish must survive as its own version"
    );
    assert_eq!(registry.current_version().unwrap(), Some(n));
}

#[test]
fn local_publishers_in_two_processes_get_consecutive_versions() {
    let dir = tempfile::tempdir().unwrap();
    two_processes_publish(dir.path().to_str().unwrap(), None);
}

#[test]
fn local_registry_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(reg.current_version().unwrap(), None);
    assert!(reg.load_current().is_err());
    assert_eq!(reg.publish(bundle("a")).unwrap().version, 1);
    assert_eq!(reg.publish(bundle("b")).unwrap().version, 2);
    assert_eq!(reg.versions().unwrap(), [1, 2]);
    assert_eq!(reg.load_current().unwrap().gallery.people(), ["b"]);
    reg.set_current(1).unwrap();
    assert_eq!(reg.load_current().unwrap().gallery.people(), ["a"]);
    assert!(reg.set_current(9).is_err());
    // A claimed number whose publisher died before deployment.json is skipped, not reused.
    std::fs::create_dir_all(dir.path().join("deployments/v0003")).unwrap();
    std::fs::write(dir.path().join("deployments/v0003/CLAIM"), "{}").unwrap();
    assert_eq!(reg.versions().unwrap(), [1, 2]);
    assert_eq!(reg.publish(bundle("c")).unwrap().version, 4);
    assert_eq!(reg.current_version().unwrap(), Some(4));
    // The layout older versions of facepipe read.
    assert!(dir
        .path()
        .join("deployments/v0004/deployment.json")
        .is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("CURRENT")).unwrap(),
        "v0004\n"
    );
}

#[test]
fn s3_registry_publishes_loads_and_stores_models() {
    let Some(weed) = weed_or_skip() else { return };
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("FACEPIPE_REGISTRY_CACHE", cache.path());
    let location = weed.location("round-trip/registry");
    let reg = Registry::open_with(&location, &weed.options()).unwrap();
    assert_eq!(reg.current_version().unwrap(), None);
    let err = reg.load_current().unwrap_err().to_string();
    assert!(err.contains("facepipe deploy"), "{err}");

    // A model artifact goes up once, content-addressed, and comes back into the cache.
    let artifact = tempfile::tempdir().unwrap();
    std::fs::write(
        artifact.path().join("model.safetensors"),
        b"not really weights",
    )
    .unwrap();
    std::fs::write(artifact.path().join("config.json"), b"{}").unwrap();
    let model = reg.store_model(artifact.path()).unwrap();
    let ModelRef::Artifact { sha256, .. } = &model else {
        panic!("{model:?}")
    };
    let mut b = bundle("ada");
    b.info.model = model.clone();
    assert_eq!(reg.publish(b).unwrap().version, 1);
    assert_eq!(reg.publish(bundle("bob")).unwrap().version, 2);
    assert_eq!(
        reg.version_location(2),
        format!("{location}/deployments/v0002")
    );

    // A second client (another machine) sees the same registry.
    let other = Registry::open_with(&location, &weed.options()).unwrap();
    assert_eq!(other.versions().unwrap(), [1, 2]);
    assert_eq!(other.current_version().unwrap(), Some(2));
    assert_eq!(other.load_current().unwrap().gallery.people(), ["bob"]);
    std::fs::remove_dir_all(cache.path()).unwrap();
    let v1 = other.load(1).unwrap();
    assert_eq!(v1.info.model, model);
    let cached = other.model_dir(sha256);
    assert_eq!(
        std::fs::read(cached.join("model.safetensors")).unwrap(),
        b"not really weights"
    );
    assert!(cached.join("config.json").is_file());
    other.set_current(1).unwrap();
    assert_eq!(reg.current_version().unwrap(), Some(1));
    assert!(other.set_current(7).is_err());
}

#[test]
fn s3_publishers_in_two_processes_get_consecutive_versions() {
    let Some(weed) = weed_or_skip() else { return };
    two_processes_publish(&weed.location("race/registry"), Some(weed.endpoint()));
}

#[test]
fn the_watcher_swaps_in_a_new_current_published_to_s3() {
    let Some(weed) = weed_or_skip() else { return };
    let location = weed.location("watch/registry");
    let base = common::base_bundle();
    let reg = Registry::open_with(&location, &weed.options()).unwrap();
    let info = reg.publish(base.clone()).unwrap();
    let (template, _dir) = common::state_with(ServiceConfig::default());
    let live = Live {
        info,
        gallery: base.gallery.clone(),
        recognizer: template.live().recognizer.clone(),
    };
    let load =
        facepipe_serving::LoadOptions::new(facepipe_pipeline::ModelDir::locate(None).unwrap());
    let state = AppState::with_live(live, reg, load, ServiceConfig::default());

    // Another process (here: another client) publishes a gallery without one person.
    let gone = base.gallery.people()[0].clone();
    let mut next = base.clone();
    next.gallery = base.gallery.without(&gone).unwrap();
    let publisher = Registry::open_with(&location, &weed.options()).unwrap();
    assert_eq!(publisher.publish(next).unwrap().version, 2);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let watcher =
            facepipe_serving::server::spawn_watcher(state.clone(), Duration::from_millis(100));
        let deadline = Instant::now() + Duration::from_secs(30);
        while state.live().info.version != 2 {
            assert!(Instant::now() < deadline, "the watcher never swapped in v2");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        watcher.abort();
    });
    assert!(state.live().gallery.person_index(&gone).is_none());
}
