//! The S3 backend against a real S3-compatible store: SeaweedFS `weed mini`, started by the
//! test on free ports with SigV4 credentials enforced. An object above the multipart
//! threshold goes up in parts, round-trips byte for byte, and is never visible half-written;
//! a small one goes up in a single PUT.
//!
//! Needs `weed` on PATH (`. scripts/env.sh`); skips with a message otherwise, and fails when
//! `CI` is set.

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use facepipe_pipeline::storage;
use facepipe_pipeline::storage::s3::{MULTIPART_THRESHOLD, PART_SIZE};
use facepipe_pipeline::storage::seaweed::SeaweedFs;
use facepipe_pipeline::Error;

const BUCKET: &str = "facepipe-multipart";

/// A plain SDK client, to look at what the store holds (the ETag) from outside.
async fn raw_client(weed: &SeaweedFs) -> aws_sdk_s3::Client {
    let shared = storage::s3::aws_config(&weed.options()).await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .endpoint_url(weed.endpoint())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Deterministic bytes that no store can compress or deduplicate into a false pass.
fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_in_parts_and_round_trip() {
    if !facepipe_pipeline::test_support::require(
        facepipe_pipeline::test_support::Component::SeaweedFs,
    ) {
        return;
    }
    let weed = SeaweedFs::start(BUCKET).unwrap();
    let opts = weed.options();
    let store = storage::open_str(&format!("s3://{BUCKET}/multipart test"), &opts)
        .await
        .unwrap();

    // Three parts: two full ones and a short last one.
    let big = payload(MULTIPART_THRESHOLD + PART_SIZE / 2 + 17, 7);
    let parts = big.len().div_ceil(PART_SIZE);
    assert_eq!(parts, 3);
    let small = payload(1000, 11);

    // While the large upload runs, a reader sees no object or the whole object, never part.
    let key = "shards/big.tar";
    let writer = {
        let store = std::sync::Arc::clone(&store);
        let big = big.clone();
        tokio::spawn(async move { store.put(key, big).await })
    };
    let mut polls = 0;
    while !writer.is_finished() {
        match store.get(key).await {
            Ok(seen) => assert_eq!(seen, big, "a reader saw a partial object"),
            Err(Error::NotFound(_)) => {}
            Err(e) => panic!("reading during the upload: {e}"),
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap().unwrap();
    assert!(polls > 0);
    store.put("small.json", small.clone()).await.unwrap();

    let got = store.get(key).await.unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the large object came back different");
    assert_eq!(store.get("small.json").await.unwrap(), small);
    let listed = store.list("").await.unwrap();
    let sizes: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(
        sizes,
        vec![(key, big.len() as u64), ("small.json", small.len() as u64)]
    );

    // S3 gives a multipart object an ETag ending in "-<parts>"; a single PUT gets a plain MD5.
    let client = raw_client(&weed).await;
    let etag = |k: &str| {
        let client = client.clone();
        let full = format!("multipart test/{k}");
        async move {
            let head = client
                .head_object()
                .bucket(BUCKET)
                .key(full)
                .send()
                .await
                .unwrap();
            head.e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string()
        }
    };
    let big_etag = etag(key).await;
    assert!(big_etag.ends_with(&format!("-{parts}")), "{big_etag}");
    let small_etag = etag("small.json").await;
    assert!(!small_etag.contains('-'), "{small_etag}");

    // No upload is left open behind the finished one.
    let open = client
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(open.uploads().is_empty(), "{:?}", open.uploads());

    // Overwriting a large object in parts replaces it whole.
    let big2 = payload(big.len() + PART_SIZE, 13);
    store.put(key, big2.clone()).await.unwrap();
    assert!(store.get(key).await.unwrap() == big2);
    store.delete(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
}
