//! The HTTP API through `tower::ServiceExt::oneshot` (no socket), on real photos: identify,
//! verify, enroll/delete and metrics with the real networks; bad uploads, API keys, body
//! limits, admission and deadlines on the fake recognizer (`fake_state_with`), which needs
//! no weights.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use facepipe_serving::ServiceConfig;

#[tokio::test]
async fn identifies_a_known_person_from_another_photo() {
    let (state, _dir) = state_with(ServiceConfig::default());
    // Barack_Obama_0005 is not one of the gallery photos.
    let (status, answer) = send(
        &state,
        post_image("/v1/identify", &fixture("Barack_Obama_0005.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        names(&answer),
        [Some("Barack_Obama".to_string())],
        "{answer}"
    );
    let face = &answer["faces"][0];
    let threshold = answer["threshold"].as_f64().unwrap();
    assert!(face["distance"].as_f64().unwrap() < threshold);
    assert!(face["similarity"].as_f64().unwrap() > 0.5);
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 68);
    let b = face["box"].as_array().unwrap();
    // The box lies inside the 320x240 photo.
    assert!(
        b[0].as_f64().unwrap() >= -1.0 && b[0].as_f64().unwrap() + b[2].as_f64().unwrap() <= 321.0
    );
    assert_eq!(answer["width"], 320);
    assert_eq!(answer["deployment"], 1);
    // Default top_k is 3 but the gallery only has 2 people.
    assert_eq!(face["top"].as_array().unwrap().len(), 2);
    assert_eq!(face["top"][1]["person"], "Joe_Biden");
}

#[tokio::test]
async fn a_stranger_is_unknown_and_a_raw_body_works_too() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let req = Request::post("/v1/identify?top_k=1")
        .header("content-type", "image/jpeg")
        .body(Body::from(fixture("Anthony_Hopkins_0001.jpg")))
        .unwrap();
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(names(&answer), [None::<String>], "{answer}");
    let face = &answer["faces"][0];
    assert!(face["distance"].as_f64().unwrap() >= answer["threshold"].as_f64().unwrap());
    assert_eq!(face["top"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn names_both_people_in_a_group_photo() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let (status, answer) = send(
        &state,
        post_image("/v1/identify", &fixture("obama_and_biden.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut found: Vec<String> = names(&answer).into_iter().flatten().collect();
    found.sort();
    assert_eq!(found, ["Barack_Obama", "Joe_Biden"], "{answer}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(&body);
    png.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A well-formed PNG whose header declares `w`×`h` but whose pixel data is a few bytes:
/// decoding it would allocate w×h×3 bytes, so it must be refused from the header.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a single zero byte.
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Only the PNG signature and IHDR: a cut-off file.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}

#[tokio::test]
async fn bad_uploads_get_4xx_json_errors() {
    let (state, _dir) = fake_state_with(ServiceConfig::default(), Duration::ZERO);
    let jpeg = fixture("Barack_Obama_0005.jpg");
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty", Vec::new(), StatusCode::BAD_REQUEST, "bad_image"),
        (
            "text",
            b"hello, I am not a photo".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_image",
        ),
        (
            "truncated jpeg",
            jpeg[..jpeg.len() / 3].to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_image",
        ),
        (
            "30000x30000 png header",
            png_header(30_000, 30_000),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "png cut after its header",
            png_header_only(640, 480),
            StatusCode::BAD_REQUEST,
            "bad_image",
        ),
    ];
    for (what, bytes, want_status, want_code) in cases {
        let (status, answer) = send(&state, post_image("/v1/identify", &bytes)).await;
        assert_eq!(status, want_status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], want_code, "{what}: {answer}");
        assert!(
            !answer["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }
    // Bad parameters, unknown routes and wrong methods answer JSON too.
    let (status, answer) = send(&state, post_image("/v1/identify?top_k=lots", &jpeg)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_request");
    let (status, answer) = send(&state, post_image("/v1/identify?top_k=0", &jpeg)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = send(
        &state,
        Request::get("/v1/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "not_found");
    let (status, answer) = send(
        &state,
        Request::get("/v1/identify").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer["error"]["code"], "method_not_allowed");
    let bad_form = Request::post("/v1/identify")
        .header("content-type", "multipart/form-data; boundary=nope")
        .body(Body::from("garbage"))
        .unwrap();
    let (status, answer) = send(&state, bad_form).await;
    assert!(status.is_client_error(), "{status} {answer}");
    assert!(answer["error"]["code"].is_string(), "{answer}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_before_decoding() {
    let config = ServiceConfig {
        max_body_bytes: 64 * 1024,
        ..ServiceConfig::default()
    };
    let (state, _dir) = fake_state_with(config, Duration::ZERO);
    // 560 kB, over the 64 kB limit: both upload styles get 413 with a JSON body.
    let big = fixture("obama_and_biden.jpg");
    let (status, answer) = send(&state, post_image("/v1/identify", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");
    let raw = Request::post("/v1/identify").body(Body::from(big)).unwrap();
    let (status, answer) = send(&state, raw).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");
}

#[tokio::test]
async fn enroll_and_delete_need_the_right_key() {
    let (state, _dir) = fake_state_with(keyed_config(), Duration::ZERO);
    let photo = fixture("Kit_Harington_0001.jpg");
    let (status, answer) = send(&state, post_image("/v1/people/Kit_Harington/faces", &photo)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized");
    let mut wrong = post_image("/v1/people/Kit_Harington/faces", &photo);
    wrong
        .headers_mut()
        .insert("authorization", "Bearer not-the-key".parse().unwrap());
    let (status, answer) = send(&state, wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let del = Request::delete("/v1/people/Joe_Biden")
        .body(Body::empty())
        .unwrap();
    let (status, _) = send(&state, del).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing changed.
    assert_eq!(state.live().info.version, 1);
    assert_eq!(state.registry().current_version().unwrap(), Some(1));

    // Without a configured key, enrolment is off altogether.
    let (open_state, _dir2) = fake_state_with(ServiceConfig::default(), Duration::ZERO);
    let mut req = post_image("/v1/people/Kit_Harington/faces", &photo);
    req.headers_mut()
        .insert("authorization", "Bearer anything".parse().unwrap());
    let (status, answer) = send(&open_state, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--api-key"));
}

#[tokio::test]
async fn key_for_everything_when_asked() {
    let config = ServiceConfig {
        require_key_for_all: true,
        ..keyed_config()
    };
    let (state, _dir) = fake_state_with(config, Duration::ZERO);
    let photo = fixture("Barack_Obama_0005.jpg");
    let (status, _) = send(&state, post_image("/v1/identify", &photo)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut req = post_image("/v1/identify", &photo);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Health stays open for probes.
    let (status, _) = send(
        &state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn enroll_then_identify_then_delete() {
    let (state, _dir) = state_with(keyed_config());
    let auth = format!("Bearer {API_KEY}");
    // Before: Kit is nobody.
    let (_, answer) = send(
        &state,
        post_image("/v1/identify", &fixture("Kit_Harington_0002.jpg")),
    )
    .await;
    assert_eq!(names(&answer), [None::<String>], "{answer}");

    let mut req = post_image(
        "/v1/people/Kit_Harington/faces",
        &fixture("Kit_Harington_0001.jpg"),
    );
    req.headers_mut()
        .insert("authorization", auth.parse().unwrap());
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["deployment"], 2);
    assert_eq!(answer["faces"], 1);
    // Persisted as a new version and made current.
    assert_eq!(state.registry().current_version().unwrap(), Some(2));
    let stored = state.registry().load(2).unwrap();
    assert_eq!(stored.info.parent, Some(1));
    assert!(stored.gallery.person_index("Kit_Harington").is_some());

    let (_, answer) = send(
        &state,
        post_image("/v1/identify", &fixture("Kit_Harington_0002.jpg")),
    )
    .await;
    assert_eq!(
        names(&answer),
        [Some("Kit_Harington".to_string())],
        "{answer}"
    );
    assert_eq!(answer["deployment"], 2);

    let (status, people) = send(
        &state,
        Request::get("/v1/people").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = people["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["Barack_Obama", "Joe_Biden", "Kit_Harington"]);

    let del = Request::delete("/v1/people/Kit_Harington")
        .header("authorization", &auth)
        .body(Body::empty())
        .unwrap();
    let (status, answer) = send(&state, del).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["deployment"], 3);
    assert_eq!(answer["faces"], 1);
    let (_, answer) = send(
        &state,
        post_image("/v1/identify", &fixture("Kit_Harington_0002.jpg")),
    )
    .await;
    assert_eq!(names(&answer), [None::<String>], "{answer}");
    let again = Request::delete("/v1/people/Kit_Harington")
        .header("authorization", &auth)
        .body(Body::empty())
        .unwrap();
    let (status, answer) = send(&state, again).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    // A photo with no face cannot be enrolled.
    let mut req = post_image("/v1/people/Nobody/faces", &png_header(4, 4));
    req.headers_mut()
        .insert("authorization", auth.parse().unwrap());
    let (status, answer) = send(&state, req).await;
    assert!(status.is_client_error(), "{status} {answer}");
}

#[tokio::test]
async fn verify_compares_two_photos_or_a_photo_and_a_person() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let obama = fixture("Barack_Obama_0005.jpg");
    let kit = fixture("Kit_Harington_0001.jpg");
    let (ct, body) = multipart(&[("image", &obama)], &[("person", "Barack_Obama")]);
    let req = Request::post("/v1/verify")
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["same"], true, "{answer}");
    assert_eq!(answer["compared_with"], "Barack_Obama");

    let req = post_image("/v1/verify?person=Joe_Biden", &obama);
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["same"], false, "{answer}");

    let (ct, body) = multipart(&[("image", &obama), ("image2", &kit)], &[]);
    let req = Request::post("/v1/verify")
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["same"], false, "{answer}");
    assert!(answer["distance"].as_f64().unwrap() > answer["threshold"].as_f64().unwrap());

    let req = post_image("/v1/verify?person=Nobody", &obama);
    let (status, _) = send(&state, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_page_and_openapi() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let (status, _) = send(
        &state,
        post_image("/v1/identify", &fixture("obama_and_biden.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &state,
        post_image("/v1/identify", &fixture("Anthony_Hopkins_0001.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&state, post_image("/v1/identify", b"nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, text) = send(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("facepipe_http_requests_total{route=\"/v1/identify\",status=\"200\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("facepipe_http_requests_total{route=\"/v1/identify\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("facepipe_http_request_duration_seconds_count{route=\"/v1/identify\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("facepipe_faces_per_request_count 2"),
        "{text}"
    );
    // Two known faces and one stranger.
    assert!(
        text.contains("facepipe_faces_total{result=\"known\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("facepipe_faces_total{result=\"unknown\"} 1"),
        "{text}"
    );
    assert!(text.contains("facepipe_deployment_version 1"), "{text}");

    let (status, doc) = send(
        &state,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/identify"]["post"].is_object());
    let (status, page) = send(&state, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("<script src=\"/app.js\">"));
    let (status, ready) = send(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["people"], 2);
}

/// A service with `slots` inference slots and room for `queue` waiting requests.
fn admission_config(slots: usize, queue: usize, wait: std::time::Duration) -> ServiceConfig {
    ServiceConfig {
        admission: facepipe_serving::AdmissionConfig {
            max_inflight: slots,
            max_queue: queue,
            queue_timeout: wait,
            memory_budget: u64::MAX,
        },
        ..ServiceConfig::default()
    }
}

async fn send_full(
    state: &std::sync::Arc<facepipe_serving::AppState>,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = facepipe_serving::app(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, value)
}

#[tokio::test]
async fn past_the_slots_and_the_queue_requests_get_503_with_retry_after() {
    let (state, _dir) = fake_state_with(
        admission_config(1, 0, std::time::Duration::from_secs(5)),
        Duration::ZERO,
    );
    // Someone holds the only slot; there is no queue.
    let far = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let held = state.admission().admit(far).await.unwrap();
    let mut req = post_image("/v1/identify", &fixture("Barack_Obama_0005.jpg"));
    req.headers_mut()
        .insert("x-request-id", "load-test-42".parse().unwrap());
    let (status, headers, body) = send_full(&state, req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(body["retry_after_s"], retry);
    assert_eq!(body["request_id"], "load-test-42");
    assert_eq!(headers["x-request-id"], "load-test-42");
    // Listing people needs no inference slot.
    let (status, _) = send(
        &state,
        Request::get("/v1/people").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Once the slot is free, the same request is answered.
    drop(held);
    let (status, answer) = send(
        &state,
        post_image("/v1/identify", &fixture("Barack_Obama_0005.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, text) = send(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = text.as_str().unwrap();
    assert!(text.contains("facepipe_requests_shed_total 1"), "{text}");
    assert!(text.contains("facepipe_inference_slots 1"), "{text}");
}

#[tokio::test]
async fn a_request_waiting_longer_than_the_queue_timeout_gets_503() {
    let (state, _dir) = fake_state_with(
        admission_config(1, 4, std::time::Duration::from_millis(50)),
        Duration::ZERO,
    );
    let far = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let _held = state.admission().admit(far).await.unwrap();
    let (status, headers, body) = send_full(
        &state,
        post_image("/v1/identify", &fixture("Barack_Obama_0005.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    // The id was made up by the service, and shown both ways.
    let id = body["request_id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert_eq!(headers["x-request-id"], id);
    assert_eq!(state.admission().stats().waiting, 0);
}

#[tokio::test]
async fn a_request_past_its_deadline_stops_and_frees_its_slot() {
    let config = ServiceConfig {
        request_timeout: std::time::Duration::from_millis(1),
        ..admission_config(1, 0, std::time::Duration::from_secs(5))
    };
    // Each photo takes a second to recognise: far past the 1 ms deadline.
    let (state, _dir) = fake_state_with(config, Duration::from_secs(1));
    let (status, _, body) = send_full(
        &state,
        post_image("/v1/identify", &fixture("obama_and_biden.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    // The job saw the deadline at its next check and gave the slot back (bounded wait).
    for _ in 0..600 {
        if state.admission().stats().in_flight == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state.admission().stats().in_flight, 0);
    // Inference itself refuses to go on once the token fired.
    let cancel = facepipe_serving::request::Cancel::with_budget(std::time::Duration::ZERO);
    let live = state.live();
    let limits = state.config().limits.clone();
    let out = live.identify_bytes_within(&fixture("obama_and_biden.jpg"), &limits, 3, 10, &cancel);
    assert!(
        matches!(out, Err(facepipe_serving::Error::Timeout(_))),
        "{out:?}"
    );
}

#[tokio::test]
async fn only_the_largest_faces_are_identified_and_the_answer_says_so() {
    let config = ServiceConfig {
        max_faces: 1,
        ..ServiceConfig::default()
    };
    let (state, _dir) = state_with(config);
    let (status, capped) = send(
        &state,
        post_image("/v1/identify", &fixture("obama_and_biden.jpg")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{capped}");
    assert_eq!(capped["faces"].as_array().unwrap().len(), 1, "{capped}");
    assert_eq!(capped["faces_found"], 2, "{capped}");
    assert_eq!(capped["faces_truncated"], true, "{capped}");
    let (state, _dir2) = state_with(ServiceConfig::default());
    let (_, all) = send(
        &state,
        post_image("/v1/identify", &fixture("obama_and_biden.jpg")),
    )
    .await;
    assert_eq!(all["faces_found"], 2, "{all}");
    assert_eq!(all["faces_truncated"], false, "{all}");
    // The face kept is the larger of the two.
    let area =
        |f: &serde_json::Value| f["box"][2].as_f64().unwrap() * f["box"][3].as_f64().unwrap();
    let largest = all["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(area)
        .fold(0.0, f64::max);
    assert_eq!(area(&capped["faces"][0]), largest);
}

#[tokio::test]
async fn readyz_names_the_model_without_paths() {
    let (state, dir) = state_with(ServiceConfig::default());
    let (status, ready) = send(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let text = ready.to_string();
    let registry = dir.path().to_str().unwrap();
    assert!(!text.contains(registry), "{text}");
    let models = facepipe_pipeline::ModelDir::locate(None).unwrap();
    assert!(!text.contains(models.root().to_str().unwrap()), "{text}");
    assert!(ready["inference_slots"].as_u64().unwrap() >= 1, "{ready}");
}

#[tokio::test]
async fn review_routes_need_the_key_and_say_how_to_hold_a_review() {
    let (state, _dir) = fake_state_with(keyed_config(), Duration::ZERO);
    let get = |key: Option<&str>| {
        let mut req = Request::get("/v1/review");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        req.body(Body::empty()).unwrap()
    };
    let (status, _) = send(&state, get(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&state, get(Some("wrong"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = send(&state, get(Some(API_KEY))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "no_review");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--review OUT"),
        "{answer}"
    );
    let req = Request::post("/v1/review/name")
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(Body::from(r#"{"group": "g", "name": "Ann"}"#))
        .unwrap();
    let (status, answer) = send(&state, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "no_review");
}
