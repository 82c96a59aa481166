//! The service on a real socket: HTTP over loopback with reqwest, and a deployment swapped
//! in while identify requests keep coming (none may fail).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use facepipe_serving::server::spawn_watcher;
use facepipe_serving::ServiceConfig;

async fn start(state: Arc<facepipe_serving::AppState>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, facepipe_serving::app(state))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn identify(
    client: &reqwest::Client,
    url: &str,
    photo: &[u8],
) -> reqwest::Result<reqwest::Response> {
    let part = reqwest::multipart::Part::bytes(photo.to_vec()).file_name("photo.jpg");
    client
        .post(format!("{url}/v1/identify"))
        .multipart(reqwest::multipart::Form::new().part("image", part))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_http_on_loopback() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let url = start(state).await;
    let client = reqwest::Client::new();
    let health: serde_json::Value = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let resp = identify(&client, &url, &fixture("Barack_Obama_0005.jpg"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(names(&answer), [Some("Barack_Obama".to_string())]);
    let resp = identify(&client, &url, b"not an image").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "bad_image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_deployment_is_swapped_in_without_failed_requests() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let url = start(state.clone()).await;
    spawn_watcher(state.clone(), Duration::from_millis(50));
    let photo = Arc::new(fixture("Barack_Obama_0005.jpg"));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served_new = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (url, photo, stop, failures, served_new) = (
            url.clone(),
            photo.clone(),
            stop.clone(),
            failures.clone(),
            served_new.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut done = 0usize;
            while !stop.load(Ordering::SeqCst) {
                match identify(&client, &url, &photo).await {
                    Ok(r) if r.status() == 200 => {
                        let answer: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(names(&answer), [Some("Barack_Obama".to_string())]);
                        if answer["deployment"] == 2 {
                            served_new.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(r) => {
                        eprintln!("failed request: {}", r.status());
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("failed request: {e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done += 1;
            }
            done
        }));
    }
    // Let the clients run against v1, then publish v2 (Joe Biden removed) from "another
    // process": straight into the registry, as `facepipe deploy --no-serve` would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = base_bundle().gallery.without("Joe_Biden").unwrap();
    next.add("Joe_Biden_again", &[vec![0.0; next.dim()]], "test")
        .unwrap();
    let mut bundle = base_bundle();
    bundle.gallery = next;
    let registry = state.registry().clone();
    let info = tokio::task::spawn_blocking(move || registry.publish(bundle).unwrap())
        .await
        .unwrap();
    assert_eq!(info.version, 2);
    // Keep the clients going until several answers came from v2.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while served_new.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {total} requests");
    assert!(
        served_new.load(Ordering::SeqCst) >= 3,
        "v2 was never served ({total} requests)"
    );
    assert_eq!(state.live().info.version, 2);
    assert!(state
        .live()
        .gallery
        .person_index("Joe_Biden_again")
        .is_some());
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("facepipe_deployment_version 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("facepipe_deployment_swaps_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_a_certificate_and_key() {
    // A throwaway self-signed certificate from the system's openssl.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make a test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let (state, _reg) = state_with(ServiceConfig::default());
    let options = facepipe_serving::ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some((cert, key)),
        poll_interval: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        facepipe_serving::serve(state, options, move |addr, scheme| {
            let _ = tx.send(format!("{scheme}://{addr}"));
        })
        .await
        .unwrap();
    });
    let url = rx.await.unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let resp = identify(&client, &url, &fixture("Barack_Obama_0005.jpg"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(names(&answer), [Some("Barack_Obama".to_string())]);
    // Plain HTTP to the TLS port does not get an answer.
    let plain = reqwest::get(url.replace("https://", "http://") + "/healthz").await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}
