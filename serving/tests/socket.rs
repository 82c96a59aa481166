//! The service on a real socket: HTTP over loopback with reqwest, a deployment swapped in
//! while identify requests keep coming (none may fail), TLS, and clients that open
//! sockets and never finish their headers (they must not lock out a normal client).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use facepipe_serving::server::{spawn_watcher, ConnectionLimits};
use facepipe_serving::{ServeOptions, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve `state` on a free loopback port with the service's own accept loop.
async fn start_with(
    state: Arc<facepipe_serving::AppState>,
    connections: ConnectionLimits,
) -> String {
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        poll_interval: None,
        connections,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        facepipe_serving::server::serve_until(
            state,
            options,
            move |addr, scheme| {
                let _ = tx.send(format!("{scheme}://{addr}"));
            },
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    rx.await.unwrap()
}

async fn start(state: Arc<facepipe_serving::AppState>) -> String {
    start_with(state, ConnectionLimits::default()).await
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
        connections: ConnectionLimits::default(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_finish_their_headers_do_not_lock_out_a_client() {
    let (state, _dir) = state_with(ServiceConfig::default());
    // Fewer connection slots than slow sockets, and a short header timeout.
    let url = start_with(
        state,
        ConnectionLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(1),
        },
    )
    .await;
    let addr = url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /v1/identify HTTP/1.1\r\nHost: facepipe\r\nContent-Ty")
            .await
            .unwrap();
        slow.push(s);
    }
    // A normal client still gets its answer (bounded: the client gives up after 120 s).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let resp = identify(&client, &url, &fixture("Barack_Obama_0005.jpg"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(names(&answer), [Some("Barack_Obama".to_string())]);
    // Every slow socket is closed by the server (EOF or a reset), none left hanging.
    for (i, mut s) in slow.into_iter().enumerate() {
        let mut buf = [0u8; 512];
        let closed = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue, // a 408 answer before the close is fine
                }
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(120), closed)
                .await
                .is_ok(),
            "slow socket #{i} was never closed"
        );
    }
}

/// Headers of an identify upload that declares `length` body bytes (the body follows, or not).
fn upload_headers(length: usize) -> Vec<u8> {
    format!(
        "POST /v1/identify HTTP/1.1\r\nHost: facepipe\r\nContent-Type: image/jpeg\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Everything the server sends on `stream` until it closes it (a reset ends it too).
async fn answer_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    // Bounded: the server answers within its body, discard and request timeouts.
    assert!(
        tokio::time::timeout(Duration::from_secs(120), read_all)
            .await
            .is_ok(),
        "the server never closed a slow upload's connection"
    );
    String::from_utf8_lossy(&seen).into_owned()
}

/// Wait (bounded) until `reached` holds.
async fn eventually(what: &str, mut reached: impl FnMut() -> bool) {
    for _ in 0..600 {
        if reached() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_trickle_hold_no_inference_slot_and_get_408() {
    let config = ServiceConfig {
        body_timeout: Duration::from_secs(1),
        admission: facepipe_serving::AdmissionConfig {
            max_inflight: 2,
            max_queue: 8,
            queue_timeout: Duration::from_secs(10),
            memory_budget: u64::MAX,
        },
        ..ServiceConfig::default()
    };
    let (state, _dir) = state_with(config);
    let url = start(state.clone()).await;
    let addr = url.trim_start_matches("http://").to_string();
    const SLOW: usize = 8;
    const DECLARED: usize = 1_000_000;
    let mut trickles = Vec::new();
    for _ in 0..SLOW {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&upload_headers(DECLARED)).await.unwrap();
        trickles.push(tokio::spawn(async move {
            let (mut reader, mut writer) = s.into_split();
            // A few bytes a second, for at most 30 s or until the server hangs up.
            let trickle = tokio::spawn(async move {
                for _ in 0..150 {
                    if writer.write_all(b"\xff\xd8").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let mut seen = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(120), reader.read_to_end(&mut seen)).await;
            trickle.abort();
            String::from_utf8_lossy(&seen).into_owned()
        }));
    }
    // All eight are receiving their bodies, and none of them holds an inference slot.
    let uploads = state.uploads().clone();
    eventually("the slow uploads reserve their bytes", || {
        uploads.stats().reserved_bytes >= (SLOW * DECLARED) as u64
    })
    .await;
    assert_eq!(state.admission().stats().in_flight, 0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let resp = identify(&client, &url, &fixture("Barack_Obama_0005.jpg"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(names(&answer), [Some("Barack_Obama".to_string())]);
    // Each slow upload is answered 408 and closed (or reset, when a trickled byte was in
    // flight as the server closed: then the answer may be lost, never another status).
    let mut timed_out = 0;
    for (i, t) in trickles.into_iter().enumerate() {
        let answer = t.await.unwrap();
        if !answer.is_empty() {
            assert!(
                answer.starts_with("HTTP/1.1 408"),
                "slow upload #{i}: {answer}"
            );
            assert!(
                answer.contains("body_timeout"),
                "slow upload #{i}: {answer}"
            );
            timed_out += 1;
        }
    }
    eprintln!("{timed_out} of {SLOW} slow uploads read their 408 before the close");
    eventually("the upload budget is free again", || {
        uploads.stats().reserved_bytes == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_upload_budget_get_503_not_memory() {
    // A 16 MiB memory budget gives a 4 MiB upload budget: four 1 MB bodies at once.
    let config = ServiceConfig {
        max_body_bytes: 1 << 20,
        body_timeout: Duration::from_secs(10),
        admission: facepipe_serving::AdmissionConfig {
            max_inflight: 2,
            max_queue: 8,
            queue_timeout: Duration::from_secs(10),
            memory_budget: 16 << 20,
        },
        ..ServiceConfig::default()
    };
    let (state, _dir) = state_with(config);
    let url = start(state.clone()).await;
    let addr = url.trim_start_matches("http://").to_string();
    let uploads = state.uploads().clone();
    let capacity = uploads.stats().capacity_bytes;
    assert_eq!(capacity, 4 << 20);
    // Eight uploads send their headers and then stall: four fit the budget, four do not.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&upload_headers(1_000_000)).await.unwrap();
        stalled.push(tokio::spawn(async move {
            let answer = answer_until_closed(&mut s).await;
            drop(s);
            answer
        }));
    }
    eventually("the upload budget sheds four uploads", || {
        assert!(
            uploads.stats().reserved_bytes <= capacity,
            "over the budget"
        );
        uploads.stats().shed_total >= 4
    })
    .await;
    let mut statuses = Vec::new();
    for t in stalled {
        let answer = t.await.unwrap();
        statuses.push(answer.get(..12).unwrap_or_default().to_string());
        if answer.starts_with("HTTP/1.1 503") {
            let head = answer.to_ascii_lowercase();
            assert!(head.contains("retry-after: "), "{answer}");
            assert!(answer.contains("overloaded"), "{answer}");
        }
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [["HTTP/1.1 408"; 4], ["HTTP/1.1 503"; 4]].concat(),
        "four uploads time out reading, four are refused"
    );
    assert_eq!(uploads.stats().reserved_bytes, 0);
    assert_eq!(state.admission().stats().in_flight, 0);
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("facepipe_uploads_shed_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("facepipe_upload_reserved_bytes 0"),
        "{metrics}"
    );
}
