//! The S3 backend against a real S3-compatible store: SeaweedFS `weed mini`, started by the
//! test on free ports with SigV4 credentials enforced. An object above the multipart
//! threshold goes up in parts, round-trips byte for byte, and is never visible half-written;
//! a small one goes up in a single PUT.
//!
//! Needs `weed` on PATH (`. scripts/env.sh`); skips with a message otherwise.

// Test helpers fail loudly: a panic with the unwrapped error is the test's report.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use facepipe_pipeline::storage::s3::{MULTIPART_THRESHOLD, PART_SIZE};
use facepipe_pipeline::storage::{self, StorageOptions};
use facepipe_pipeline::Error;

const KEY_ID: &str = "facepipe-s3-test-key";
const SECRET: &str = "facepipe-s3-test-secret-0123456789";
const BUCKET: &str = "facepipe-multipart";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `weed mini` in its own process group, ended with the group when dropped.
struct Weed {
    child: Child,
    s3_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Weed {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).status();
        let _ = self.child.wait();
    }
}

impl Weed {
    async fn start() -> Weed {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let s3_port = free_port();
        let mut cmd = Command::new("weed");
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false"])
            .arg(format!("-bucket={BUCKET}"))
            .arg(format!("-s3.port={s3_port}"));
        // Every listener on a free port, so parallel tests never collide.
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "s3.debug.port",
            "metricsPort",
            "s3.metricsPort",
            "s3.port.iceberg",
            "s3.port.lance",
        ] {
            cmd.arg(format!("-{flag}={}", free_port()));
        }
        cmd.env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let weed = Weed {
            child: cmd.spawn().unwrap(),
            s3_port,
            _dir: dir,
        };
        // The S3 port opens before the bucket exists: wait until the bucket answers.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = async {
                let store = storage::open_str(&format!("s3://{BUCKET}"), &weed.options()).await?;
                store.check().await
            };
            match ready.await {
                Ok(()) => return weed,
                Err(e) if Instant::now() > deadline => panic!("weed never served the bucket: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    fn options(&self) -> StorageOptions {
        // The storage layer reads credentials the standard AWS way.
        std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        StorageOptions {
            s3_endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
        }
    }

    /// A plain SDK client, to look at what the store holds (the ETag) from outside.
    async fn raw_client(&self) -> aws_sdk_s3::Client {
        let shared = storage::s3::aws_config(&self.options()).await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
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
    if !on_path("weed") {
        eprintln!("skipping: `weed` is not on PATH (. scripts/env.sh)");
        return;
    }
    let weed = Weed::start().await;
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
    let client = weed.raw_client().await;
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
