//! The registry on a local folder and on S3 (a real SeaweedFS started here): publishing,
//! loading, model artifacts, the watcher swapping in a new CURRENT, publishers in two
//! processes at once each landing in the chain of CURRENT, concurrent edits derived from
//! CURRENT losing nothing, and garbage collection that spares CURRENT and leased versions.
//!
//! The S3 tests need `weed` on PATH (`. scripts/env.sh`; CI installs it) and skip with a
//! message without it, or fail when `CI` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use facepipe_pipeline::storage::seaweed::SeaweedFs;
use facepipe_pipeline::storage::StorageOptions;
use facepipe_serving::registry::Lease;
use facepipe_serving::test_fixtures::bundle;
use facepipe_serving::{AppState, Bundle, Live, ModelRef, Registry, ServiceConfig};

const BUCKET: &str = "facepipe-registry";
/// Set in child processes: publish `PUBLISHES` versions to this registry and exit.
const CHILD_REGISTRY: &str = "FACEPIPE_TEST_CHILD_REGISTRY";
const CHILD_TAG: &str = "FACEPIPE_TEST_CHILD_TAG";
const CHILD_ENDPOINT: &str = "FACEPIPE_TEST_CHILD_ENDPOINT";
/// A file the children wait for, so both start publishing at the same moment.
const CHILD_GO: &str = "FACEPIPE_TEST_CHILD_GO";
const PUBLISHES: usize = 4;

/// A running SeaweedFS, or `None` (the test skips) when `weed` is missing outside CI; in CI
/// a missing `weed` fails the test.
fn weed_or_skip() -> Option<SeaweedFs> {
    if !facepipe_pipeline::test_support::require(
        facepipe_pipeline::test_support::Component::SeaweedFs,
    ) {
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
        ..StorageOptions::default()
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

/// The versions from CURRENT back along `parent` links, newest first.
fn chain(registry: &Registry) -> Vec<Bundle> {
    let mut out = Vec::new();
    let mut next = registry.current_version().unwrap();
    while let Some(v) = next {
        let b = registry.load(v).unwrap();
        assert_eq!(b.info.version, v);
        next = b.info.parent;
        out.push(b);
    }
    out
}

/// Run `PUBLISHES` publishes from each of two processes at once; check every publish
/// survives as its own version in the chain of CURRENT (each one derived from the one
/// before), and, when `consecutive`, that the numbers run 1.. without gaps (a local
/// registry's lock makes publishers take turns; on S3 a publisher that loses the race
/// withdraws its number).
fn two_processes_publish(location: &str, endpoint: Option<String>, consecutive: bool) {
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
        ..StorageOptions::default()
    };
    let registry = Registry::open_with(location, &options).unwrap();
    let n = 2 * PUBLISHES;
    let published = registry.versions().unwrap();
    assert_eq!(published.len(), n, "{published:?}");
    if consecutive {
        assert_eq!(published, (1..=n as u32).collect::<Vec<_>>());
    }
    let chain = chain(&registry);
    assert_eq!(
        chain
            .iter()
            .map(|b| b.info.version)
            .rev()
            .collect::<Vec<_>>(),
        published,
        "every published version is in the chain of CURRENT"
    );
    let mut names: Vec<String> = chain
        .iter()
        .map(|b| b.gallery.people()[0].clone())
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
    assert_eq!(
        registry.current_version().unwrap(),
        published.last().copied()
    );
}

#[test]
fn local_publishers_in_two_processes_get_consecutive_versions() {
    let dir = tempfile::tempdir().unwrap();
    two_processes_publish(dir.path().to_str().unwrap(), None, true);
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
    assert_eq!(reg.load(2).unwrap().info.parent, Some(1));
    // Going back is a new version with the old content: CURRENT only moves forward.
    let back = reg.roll_back_to(1).unwrap();
    assert_eq!((back.version, back.parent), (3, Some(2)));
    assert_eq!(back.reason, "roll back to v0001");
    assert_eq!(reg.load_current().unwrap().gallery.people(), ["a"]);
    assert!(reg.roll_back_to(9).is_err());
    // A claimed number whose publisher died before deployment.json is skipped, not reused.
    std::fs::create_dir_all(dir.path().join("deployments/v0004")).unwrap();
    std::fs::write(dir.path().join("deployments/v0004/CLAIM"), "{}").unwrap();
    assert_eq!(reg.versions().unwrap(), [1, 2, 3]);
    assert_eq!(reg.publish(bundle("c")).unwrap().version, 5);
    assert_eq!(reg.current_version().unwrap(), Some(5));
    // The layout older versions of facepipe read.
    assert!(dir
        .path()
        .join("deployments/v0005/deployment.json")
        .is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("CURRENT")).unwrap(),
        "v0005\n"
    );
    // No temporary or lock files show as objects, and none is left in a version folder.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("deployments/v0005"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn s3_registry_publishes_loads_and_stores_models() {
    let Some(weed) = weed_or_skip() else { return };
    let cache = tempfile::tempdir().unwrap();
    let location = weed.location("round-trip/registry");
    let reg = Registry::open_with(&location, &weed.options())
        .unwrap()
        .with_model_cache(cache.path());
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
    let other = Registry::open_with(&location, &weed.options())
        .unwrap()
        .with_model_cache(cache.path());
    assert_eq!(other.versions().unwrap(), [1, 2]);
    assert_eq!(other.current_version().unwrap(), Some(2));
    assert_eq!(other.load_current().unwrap().gallery.people(), ["bob"]);
    std::fs::remove_dir_all(cache.path()).unwrap();
    let v1 = other.load(1).unwrap();
    assert_eq!(v1.info.model, model);
    let cached = other.model_dir(sha256);
    assert!(cached.starts_with(cache.path()), "{}", cached.display());
    assert_eq!(
        std::fs::read(cached.join("model.safetensors")).unwrap(),
        b"not really weights"
    );
    assert!(cached.join("config.json").is_file());
    assert_eq!(other.roll_back_to(1).unwrap().version, 3);
    assert_eq!(reg.current_version().unwrap(), Some(3));
    assert_eq!(reg.load_current().unwrap().gallery.people(), ["ada"]);
    assert!(other.roll_back_to(7).is_err());
}

#[test]
fn s3_publishers_in_two_processes_all_land_in_the_chain_of_current() {
    let Some(weed) = weed_or_skip() else { return };
    two_processes_publish(
        &weed.location("race/registry"),
        Some(weed.endpoint()),
        false,
    );
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

/// `EDITORS` handles (as separate servers would have) each add `EDITS` people at once with
/// `publish_edit`; every one of them must be in CURRENT, and every publish in its chain.
fn concurrent_edits_lose_nothing(location: &str, options: &StorageOptions) {
    const EDITORS: usize = 3;
    const EDITS: usize = 3;
    let first = Registry::open_with(location, options).unwrap();
    first.publish(bundle("base")).unwrap();
    let editors: Vec<_> = (0..EDITORS)
        .map(|e| {
            let reg = Registry::open_with(location, options).unwrap();
            std::thread::spawn(move || {
                (0..EDITS)
                    .map(|i| {
                        let person = format!("editor{e}-{i}");
                        let published = reg
                            .publish_edit(|base| {
                                let mut next = base.unwrap().clone();
                                next.gallery.add(&person, &[vec![0.0, 1.0]], "t")?;
                                Ok(next)
                            })
                            .unwrap();
                        assert!(published.gallery.person_index(&person).is_some());
                        published.info.version
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut accepted: Vec<u32> = editors
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    accepted.sort_unstable();
    let current = first.load_current().unwrap();
    let mut people = current.gallery.people().to_vec();
    people.sort();
    let mut expected: Vec<String> = (0..EDITORS)
        .flat_map(|e| (0..EDITS).map(move |i| format!("editor{e}-{i}")))
        .chain(["base".to_string()])
        .collect();
    expected.sort();
    assert_eq!(people, expected, "an accepted edit is missing from CURRENT");
    // The chain from CURRENT holds every accepted version, each one person bigger.
    let chain = chain(&first);
    let mut in_chain: Vec<u32> = chain.iter().map(|b| b.info.version).collect();
    in_chain.sort_unstable();
    assert_eq!(in_chain[1..], accepted[..]);
    for pair in chain.windows(2) {
        assert_eq!(
            pair[0].gallery.people().len(),
            pair[1].gallery.people().len() + 1
        );
    }
}

#[test]
fn concurrent_local_edits_all_land_in_current() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_edits_lose_nothing(dir.path().to_str().unwrap(), &StorageOptions::default());
}

#[test]
fn concurrent_s3_edits_all_land_in_current() {
    let Some(weed) = weed_or_skip() else { return };
    concurrent_edits_lose_nothing(&weed.location("edits/registry"), &weed.options());
}

#[test]
fn an_edit_that_fails_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
    // Nothing to edit in an empty registry: the edit says so and nothing is written.
    let empty = reg.publish_edit(|base| {
        base.cloned()
            .ok_or_else(|| facepipe_serving::Error::NotReady("empty".into()))
    });
    assert!(matches!(empty, Err(facepipe_serving::Error::NotReady(_))));
    assert!(reg.versions().unwrap().is_empty());
    reg.publish(bundle("a")).unwrap();
    let err = reg
        .publish_edit(|_| Err(facepipe_serving::Error::NotFound("nobody".into())))
        .unwrap_err();
    assert!(matches!(err, facepipe_serving::Error::NotFound(_)));
    assert_eq!(reg.versions().unwrap(), [1]);
    assert_eq!(reg.current_version().unwrap(), Some(1));
}

/// The registry's storage seen directly, to plant and inspect objects.
struct RawStore {
    rt: tokio::runtime::Runtime,
    store: std::sync::Arc<dyn facepipe_pipeline::storage::Storage>,
}

impl RawStore {
    fn open(location: &str, options: &StorageOptions) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = rt
            .block_on(facepipe_pipeline::storage::open_str(location, options))
            .unwrap();
        RawStore { rt, store }
    }

    fn put(&self, key: &str, data: Vec<u8>) {
        self.rt.block_on(self.store.put(key, data.into())).unwrap();
    }

    fn exists(&self, key: &str) -> bool {
        self.rt.block_on(self.store.exists(key)).unwrap()
    }
}

/// Publish six versions, lease some, and collect: CURRENT, the newest `keep`, fresh leases
/// and anything newer than CURRENT (a publish in flight) survive; the rest goes.
fn gc_spares_current_leases_and_publishes_in_flight(location: &str, options: &StorageOptions) {
    let reg = Registry::open_with(location, options).unwrap();
    for i in 1..=6 {
        reg.publish(bundle(&format!("p{i}"))).unwrap();
    }
    // A server serving v2 (fresh lease) and a dead one that served v3 long ago.
    reg.renew_lease("server-fresh", 2).unwrap();
    reg.renew_lease("server-dead", 3).unwrap();
    let stale = Lease {
        server: "server-dead".into(),
        version: 3,
        renewed_unix: 1_000,
        pid: 1,
    };
    let dead_key = "leases/server-dead.json";
    let raw = RawStore::open(location, options);
    raw.put(dead_key, serde_json::to_vec(&stale).unwrap());
    // A publish in flight above CURRENT: claimed, no deployment.json yet.
    raw.put("deployments/v0007/CLAIM", b"{}".to_vec());

    let ttl = Duration::from_secs(600);
    let dry = reg.gc(2, ttl, true).unwrap();
    assert_eq!(dry.current, Some(6));
    assert_eq!(dry.kept, [5, 6]);
    assert_eq!(dry.leased, [2]);
    assert_eq!(dry.removed, [1, 3, 4]);
    assert_eq!(
        reg.versions().unwrap(),
        [1, 2, 3, 4, 5, 6],
        "a dry run removes nothing"
    );

    let done = reg.gc(2, ttl, false).unwrap();
    assert_eq!(done.removed, [1, 3, 4]);
    assert_eq!(reg.versions().unwrap(), [2, 5, 6]);
    assert!(raw.exists("deployments/v0007/CLAIM"));
    assert!(!raw.exists("deployments/v0001/CLAIM"));
    assert!(!raw.exists("deployments/v0003/gallery.safetensors"));
    assert!(!raw.exists(dead_key), "expired leases are removed");
    if let Some(root) = location.strip_prefix('/') {
        let root = std::path::Path::new("/").join(root);
        assert!(
            !root.join("deployments/v0001").exists(),
            "no empty folders are left"
        );
        assert!(root.join("deployments/v0002").is_dir());
    }
    let leases: Vec<String> = reg
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| l.server)
        .collect();
    assert_eq!(leases, ["server-fresh"]);
    // What stays still loads, and a new publish numbers above everything.
    assert_eq!(reg.load(2).unwrap().gallery.people(), ["p2"]);
    assert_eq!(reg.publish(bundle("p8")).unwrap().version, 8);
    assert!(reg.gc(0, ttl, true).is_err(), "--keep 0 is refused");
}

#[test]
fn local_gc_spares_current_leases_and_publishes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    gc_spares_current_leases_and_publishes_in_flight(
        dir.path().to_str().unwrap(),
        &StorageOptions::default(),
    );
}

#[test]
fn s3_gc_spares_current_leases_and_publishes_in_flight() {
    let Some(weed) = weed_or_skip() else { return };
    gc_spares_current_leases_and_publishes_in_flight(
        &weed.location("gc/registry"),
        &weed.options(),
    );
}
