//! The web page end to end: the real service on a free port with a real deployment,
//! driven by headless Chromium through playwright-core (tests/web/page.cjs).
//! Needs `scripts/setup.sh --browser` (node, Chromium, playwright-core): skips saying so when
//! one is missing, and fails when `CI` is set.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use facepipe_serving::ServiceConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_names_the_people_in_a_group_photo_and_shows_errors() {
    use facepipe_pipeline::test_support::{require, Component};
    if !(require(Component::Node)
        && require(Component::Chromium)
        && require(Component::PlaywrightCore))
    {
        return;
    }
    let (state, _dir) = state_with(ServiceConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    tokio::spawn(async move {
        axum::serve(listener, facepipe_serving::app(served))
            .await
            .unwrap()
    });

    // What the API says about a non-image: the page must show this message.
    let (_, api_error) = send(
        &state,
        post_image("/v1/identify", b"these are my notes, not a photo"),
    )
    .await;
    let api_message = api_error["error"]["message"].as_str().unwrap().to_string();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = std::env::var_os("FACEPIPE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("facepipe-web"));
    let script = root.join("tests").join("web").join("page.cjs");
    let photo = fixtures().join("obama_and_biden.jpg");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(&url)
            .arg(photo)
            .arg(&shots)
            .output()
            .expect("node is needed for the web page test: run scripts/setup.sh --browser")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "page test failed: {stderr}\n{stdout}"
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    let mut people: Vec<&str> = seen["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["person"].as_str().unwrap())
        .collect();
    people.sort();
    assert_eq!(people, ["Barack_Obama", "Joe_Biden"], "{seen}");
    for b in seen["boxes"].as_array().unwrap() {
        // Each label shows the name and a similarity percentage.
        let label = b["label"].as_str().unwrap();
        assert!(
            label.starts_with(b["person"].as_str().unwrap()) && label.ends_with('%'),
            "{label}"
        );
        assert!(b["width"].as_f64().unwrap() > 10.0 && b["height"].as_f64().unwrap() > 10.0);
    }
    // The photo is scaled to fit, on a desktop and on a phone, and the boxes stay on it.
    assert!(seen["photo"]["width"].as_f64().unwrap() <= 1280.0);
    let phone = seen["phone"].as_f64().unwrap();
    assert!(phone <= 390.0, "{seen}");
    for right in seen["phoneBoxes"].as_array().unwrap() {
        assert!(right.as_f64().unwrap() <= 390.0, "{seen}");
    }
    let error = seen["error"].as_str().unwrap();
    assert!(
        error.contains(&api_message),
        "page shows {error:?}, API said {api_message:?}"
    );
    assert_eq!(seen["resultHidden"], true);
    assert_eq!(
        seen["outside"].as_array().unwrap().len(),
        0,
        "requests left the server: {seen}"
    );
}
