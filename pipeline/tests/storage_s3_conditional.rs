//! Compare-and-swap on a real S3-compatible store (SeaweedFS `weed mini`, started here):
//! many writers holding the same version race to replace one object, round after round,
//! and exactly one wins each round; creating with `If-None-Match: *` has one winner too.
//! And a stalled endpoint (accepts connections, never answers) fails a call within the
//! configured timeouts instead of hanging it.
//!
//! The SeaweedFS test needs `weed` on PATH (`. scripts/env.sh`); without it it skips with a
//! message, and fails when `CI` is set.

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use facepipe_pipeline::storage::seaweed::{set_credentials, SeaweedFs};
use facepipe_pipeline::storage::{self, S3Timeouts, Storage, StorageOptions};
use facepipe_pipeline::test_support::{require, Component};

const BUCKET: &str = "facepipe-conditional";
const WRITERS: usize = 16;
const ROUNDS: usize = 12;

fn weed() -> Option<SeaweedFs> {
    if !require(Component::SeaweedFs) {
        return None;
    }
    Some(SeaweedFs::start(BUCKET).unwrap())
}

/// Every writer tries to replace `key` from the same version; returns the winners' bytes.
async fn race(store: &Arc<dyn Storage>, key: &'static str, round: usize) -> Vec<Bytes> {
    let before = store.get_versioned(key).await.ok().map(|(_, v)| v);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, before) = (store.clone(), before.clone());
            tokio::spawn(async move {
                let data = Bytes::from(format!("round {round} writer {w}"));
                let won = store
                    .put_if_version(key, data.clone(), before.as_ref())
                    .await
                    .unwrap();
                won.then_some(data)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for w in writers {
        winners.extend(w.await.unwrap());
    }
    winners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_writes_have_exactly_one_winner() {
    let Some(weed) = weed() else { return };
    let store = storage::open_str(&weed.location("cas"), &weed.options())
        .await
        .unwrap();
    // Round 0 creates the object (If-None-Match), the others replace it (If-Match).
    for round in 0..ROUNDS {
        let winners = race(&store, "CURRENT", round).await;
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (now, _) = store.get_versioned("CURRENT").await.unwrap();
        assert_eq!(
            now, winners[0],
            "round {round}: the object holds the winner's bytes"
        );
    }
    // A stale version is refused.
    let (_, v) = store.get_versioned("CURRENT").await.unwrap();
    assert!(store
        .put_if_version("CURRENT", Bytes::from_static(b"next"), Some(&v))
        .await
        .unwrap());
    assert!(!store
        .put_if_version("CURRENT", Bytes::from_static(b"stale"), Some(&v))
        .await
        .unwrap());
    assert!(!store
        .put_if_version("CURRENT", Bytes::from_static(b"create"), None)
        .await
        .unwrap());
    assert_eq!(store.get("CURRENT").await.unwrap(), "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_fails_calls_instead_of_hanging() {
    set_credentials();
    // Accepts connections and reads nothing, answers nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut sockets = Vec::new();
        for s in listener.incoming().take(16) {
            match s {
                Ok(s) => sockets.push(s),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(sockets);
    });
    let options = StorageOptions {
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        timeouts: S3Timeouts {
            connect: Duration::from_millis(500),
            read: Duration::from_millis(500),
            operation: Duration::from_secs(2),
            max_attempts: 2,
        },
    };
    let store = storage::open_str("s3://stalled/registry", &options)
        .await
        .unwrap();
    // The guard only catches a hang; the calls themselves must give up on their own.
    let guard = Duration::from_secs(60);
    let get = tokio::time::timeout(guard, store.get("CURRENT")).await;
    let err = get.expect("get hung on a stalled endpoint").unwrap_err();
    assert!(err.to_string().to_lowercase().contains("s3"), "{err}");
    let put = tokio::time::timeout(
        guard,
        store.put_if_version("CURRENT", Bytes::from_static(b"v1"), None),
    )
    .await;
    assert!(put.expect("a conditional put hung").is_err());
    let list = tokio::time::timeout(guard, store.list("deployments/")).await;
    assert!(list.expect("list hung").is_err());
    drop(held);
}
