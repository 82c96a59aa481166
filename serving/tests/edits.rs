//! Enroll and delete never lose an accepted change: edits are derived from the registry's
//! CURRENT (not from a server's memory), published with a compare-and-swap, run to their
//! end even when the request that started them is dropped, and the served version only
//! moves forward. Real networks, real photos, real HTTP handlers (through the router).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{fixture, keyed_config, post_image, send, state_with, API_KEY};
use facepipe_serving::{AppState, Bundle, Live, LoadOptions, Registry};

/// Photos with one face each, enrolled under made-up names.
const PHOTOS: [&str; 4] = [
    "Kit_Harington_0001.jpg",
    "Kit_Harington_0002.jpg",
    "Anthony_Hopkins_0001.jpg",
    "Barack_Obama_0005.jpg",
];

fn load_options() -> LoadOptions {
    LoadOptions::new(facepipe_pipeline::ModelDir::locate(None).unwrap())
}

/// A second server on the registry of `state`, holding the same (possibly stale) gallery.
fn replica(state: &Arc<AppState>, registry_dir: &std::path::Path) -> Arc<AppState> {
    let served = state.live();
    let live = Live {
        info: served.info.clone(),
        gallery: served.gallery.clone(),
        recognizer: served.recognizer.clone(),
    };
    let registry = Registry::open(registry_dir.to_str().unwrap()).unwrap();
    AppState::with_live(live, registry, load_options(), keyed_config())
}

async fn enroll(
    state: &Arc<AppState>,
    person: &str,
    photo: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = post_image(&format!("/v1/people/{person}/faces"), &fixture(photo));
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    send(state, req).await
}

fn current(state: &AppState) -> Bundle {
    state.registry().load_current().unwrap()
}

fn sorted_people(bundle: &Bundle) -> Vec<String> {
    let mut people = bundle.gallery.people().to_vec();
    people.sort();
    people
}

/// Wait (bounded) until `state` has no edit pending or running.
async fn settle(state: &AppState) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while state.edit_queue().pending() > 0 {
        assert!(Instant::now() < deadline, "an edit never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_enrolling_at_once_lose_nobody() {
    let (a, dir) = state_with(keyed_config());
    let b = replica(&a, dir.path());
    let requests: Vec<_> = PHOTOS
        .iter()
        .enumerate()
        .map(|(i, photo)| {
            let server = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { enroll(&server, &format!("Person_{i}"), photo).await })
        })
        .collect();
    for r in requests {
        let (status, answer) = r.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let now = current(&a);
    assert_eq!(
        sorted_people(&now),
        [
            "Barack_Obama",
            "Joe_Biden",
            "Person_0",
            "Person_1",
            "Person_2",
            "Person_3"
        ],
        "every accepted enroll is in CURRENT"
    );
    assert_eq!(now.info.version, 1 + PHOTOS.len() as u32);
    // Both servers end up serving CURRENT (the one that did not publish last catches up
    // at its watcher's next look).
    for server in [&a, &b] {
        server.reload_if_changed().unwrap();
        assert_eq!(server.live().info.version, now.info.version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enroll_keeps_a_deploy_published_meanwhile() {
    let (state, dir) = state_with(keyed_config());
    // `facepipe deploy` (another process) publishes a new gallery without Joe Biden while
    // this server still serves v1 in memory.
    let base = current(&state);
    let mut deployed = base.clone();
    deployed.gallery = base.gallery.without("Joe_Biden").unwrap();
    deployed.info.reason = "deploy".into();
    let deployer = Registry::open(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(deployer.publish(deployed).unwrap().version, 2);
    assert_eq!(state.live().info.version, 1);

    let (status, answer) = enroll(&state, "Kit_Harington", PHOTOS[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["deployment"], 3);
    let now = current(&state);
    assert_eq!(
        now.info.parent,
        Some(2),
        "derived from the deploy, not from memory"
    );
    assert_eq!(sorted_people(&now), ["Barack_Obama", "Kit_Harington"]);
    assert_eq!(state.live().info.version, 3);

    // Deleting someone the deploy already removed is refused, and publishes nothing.
    let del = axum::http::Request::delete("/v1/people/Joe_Biden")
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, answer) = send(&state, del).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(state.registry().current_version().unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_racing_deploys_all_land_in_the_chain_of_current() {
    let (state, dir) = state_with(keyed_config());
    let location = dir.path().to_str().unwrap().to_string();
    let template = current(&state);
    // Three deploys from another process, each a whole new gallery with a marker person.
    let deployer = std::thread::spawn(move || {
        let registry = Registry::open(&location).unwrap();
        (0..3)
            .map(|i| {
                let mut b = template.clone();
                b.gallery
                    .add(
                        &format!("Deployed_{i}"),
                        &[template.gallery.data()[..template.gallery.dim()].to_vec()],
                        "deploy",
                    )
                    .unwrap();
                b.info.reason = format!("deploy {i}");
                std::thread::sleep(Duration::from_millis(30));
                registry.publish(b).unwrap().version
            })
            .collect::<Vec<u32>>()
    });
    let mut accepted = Vec::new();
    for (i, photo) in PHOTOS.iter().take(3).enumerate() {
        let (status, answer) = enroll(&state, &format!("Person_{i}"), photo).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        accepted.push(answer["deployment"].as_u64().unwrap() as u32);
    }
    accepted.extend(deployer.join().unwrap());
    accepted.sort_unstable();

    // Walk CURRENT back to v1: every accepted publish is there, in order, and each enroll
    // kept everything of the version it was derived from.
    let registry = state.registry();
    let mut chain = Vec::new();
    let mut next = registry.current_version().unwrap();
    while let Some(v) = next {
        let b = registry.load(v).unwrap();
        next = b.info.parent;
        chain.push(b);
    }
    let mut versions: Vec<u32> = chain.iter().map(|b| b.info.version).collect();
    versions.reverse();
    assert_eq!(versions[0], 1);
    assert_eq!(
        versions[1..],
        accepted[..],
        "every accepted publish is in the chain"
    );
    for pair in chain.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        if let Some(person) = newer.info.reason.strip_prefix("enroll ") {
            let mut expected = sorted_people(older);
            expected.push(person.to_string());
            expected.sort();
            assert_eq!(sorted_people(newer), expected, "v{}", newer.info.version);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_requests_still_publish_and_lose_nothing() {
    let (state, dir) = state_with(keyed_config());
    // Hold the registry's publish lock so both edits are stuck in their publish when their
    // requests are dropped (as a request timeout or a client hanging up drops them).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(".publish.lock"))
        .unwrap();
    lock.lock().unwrap();
    for (i, photo) in PHOTOS.iter().take(2).enumerate() {
        let server = state.clone();
        let person = format!("Person_{i}");
        let request = tokio::spawn(async move { enroll(&server, &person, photo).await });
        let deadline = Instant::now() + Duration::from_secs(300);
        while state.edit_queue().pending() < i + 1 {
            assert!(
                Instant::now() < deadline,
                "the enroll never reached its publish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
    }
    assert_eq!(state.registry().current_version().unwrap(), Some(1));
    lock.unlock().unwrap();
    settle(&state).await;

    let now = current(&state);
    assert_eq!(
        sorted_people(&now),
        ["Barack_Obama", "Joe_Biden", "Person_0", "Person_1"],
        "both edits published, neither overwrote the other"
    );
    assert_eq!(now.info.version, 3);
    assert_eq!(
        state.live().info.version,
        3,
        "and the server serves the result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_outlives_the_request_timeout_is_answered_with_its_outcome() {
    let timeout = Duration::from_secs(10);
    let config = facepipe_serving::ServiceConfig {
        request_timeout: timeout,
        ..keyed_config()
    };
    let (state, dir) = state_with(config);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(".publish.lock"))
        .unwrap();
    lock.lock().unwrap();
    let sent = Instant::now();
    let server = state.clone();
    let request = tokio::spawn(async move { enroll(&server, "Kit_Harington", PHOTOS[0]).await });
    let deadline = Instant::now() + Duration::from_secs(300);
    while state.edit_queue().pending() == 0 {
        assert!(
            Instant::now() < deadline,
            "the enroll never reached its publish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Keep the publish stuck until the request's time is over, then let it finish.
    tokio::time::sleep(
        (sent + timeout + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    )
    .await;
    lock.unlock().unwrap();
    let (status, answer) = request.await.unwrap();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the answer is the outcome, not a timeout: {answer}"
    );
    assert_eq!(answer["deployment"], 2);
    assert!(current(&state)
        .gallery
        .person_index("Kit_Harington")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_version_never_moves_backwards() {
    let (state, dir) = state_with(keyed_config());
    let (status, answer) = enroll(&state, "Kit_Harington", PHOTOS[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(state.live().info.version, 2);

    // Something (an old tool, a hand edit) points CURRENT back at v1.
    std::fs::write(dir.path().join("CURRENT"), "v0001\n").unwrap();
    assert_eq!(state.reload_if_changed().unwrap(), None);
    assert_eq!(state.live().info.version, 2);
    // A late swap of an older version is refused too.
    let older = state.registry().load(1).unwrap();
    assert!(!state.swap_bundle(older).unwrap());
    let served = state.live();
    let stale = Live {
        info: state.registry().load(1).unwrap().info,
        gallery: served.gallery.clone(),
        recognizer: served.recognizer.clone(),
    };
    assert!(!state.swap(stale));
    assert_eq!(state.live().info.version, 2);

    // The next edit derives from what CURRENT names (v1: the hand edit chose that gallery)
    // and gets a number above everything, so the served version moves forward again.
    let (status, answer) = enroll(&state, "Anthony_Hopkins", PHOTOS[2]).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["deployment"], 3);
    assert_eq!(state.live().info.version, 3);
}
