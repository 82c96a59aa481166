//! Faults inside inference: a panic in the embedder (injected with the `test-support`
//! feature) is a 500 with a generic body and a request id, does not poison the service, and
//! a run of them makes `/readyz` report not ready until the embedder works again.
//! One test only: the injected panics are shared by everything in this binary.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use facepipe_serving::ServiceConfig;

#[tokio::test]
async fn a_panic_inside_inference_is_a_generic_500_and_the_service_recovers() {
    let (state, _dir) = state_with(ServiceConfig::default());
    let recognizer = state.live().recognizer.clone();
    let photo = fixture("Barack_Obama_0005.jpg");

    recognizer.inject_panics(1);
    let mut req = post_image("/v1/identify", &photo);
    req.headers_mut()
        .insert("x-request-id", "fault-1".parse().unwrap());
    let (status, body) = send(&state, req).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "internal_error");
    assert_eq!(body["request_id"], "fault-1");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("request id"), "{message}");
    for detail in ["panic", "injected", "embedder", "test-support", ".rs"] {
        assert!(
            !message.contains(detail),
            "the body leaks {detail:?}: {message}"
        );
    }

    // The panic happened while the embedder's lock was held: the next request still works.
    let (status, answer) = send(&state, post_image("/v1/identify", &photo)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(names(&answer), [Some("Barack_Obama".to_string())]);
    let ready = || Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(send(&state, ready()).await.0, StatusCode::OK);

    // A broken embedder: every request fails, and readiness says so (without detail).
    recognizer.inject_panics(usize::MAX);
    for _ in 0..3 {
        let (status, body) = send(&state, post_image("/v1/identify", &photo)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    }
    let (status, body) = send(&state, ready()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(!body.to_string().contains("panic"), "{body}");

    // Repaired: the readiness check runs the embedder again and finds it working.
    recognizer.inject_panics(0);
    assert_eq!(send(&state, ready()).await.0, StatusCode::OK);
    let (status, _) = send(&state, post_image("/v1/identify", &photo)).await;
    assert_eq!(status, StatusCode::OK);
}
