//! Two real `facepipe serve` processes on one S3 registry (a real SeaweedFS started here)
//! enroll different people at the same moment: both people end up in CURRENT, both servers
//! come to serve the same latest version and lease it, and `facepipe registry gc` then
//! removes every older version but never the served one.
//!
//! Needs the binary (`cargo build -p facepipe`), `weed` on PATH and the pretrained weights:
//! without them the test skips with a message, and fails when `CI` is set.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use facepipe_pipeline::storage::seaweed::SeaweedFs;
use facepipe_pipeline::test_support::{require, Component};
use facepipe_serving::Registry;
use facepipe_tests::{facepipe_bin, fixtures};

const BUCKET: &str = "facepipe-two-servers";
const API_KEY: &str = "two-servers-key-91b";

/// A running `facepipe serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(registry: &str, endpoint: &str, cache: &std::path::Path) -> Server {
        let mut child = Command::new(facepipe_bin())
            .args(["serve", "--registry", registry, "--s3-endpoint", endpoint])
            .args(["--listen", "127.0.0.1:0", "--poll-interval", "0.5"])
            .args(["--api-key", API_KEY])
            .env("FACEPIPE_REGISTRY_CACHE", cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read the address it prints, then keep draining its output.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("web page and API at ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('/');
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
        };
        server.url = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the server did not start");
        server
    }

    /// `(deployment, people)` from `GET /v1/people`.
    fn people(&self, client: &reqwest::blocking::Client) -> (u64, Vec<String>) {
        let answer: serde_json::Value = client
            .get(format!("{}/v1/people", self.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let people = answer["people"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        (answer["deployment"].as_u64().unwrap(), people)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enroll(client: &reqwest::blocking::Client, server: &str, person: &str, photo: &str) -> u64 {
    let bytes = std::fs::read(fixtures().join("serving").join(photo)).unwrap();
    let form = reqwest::blocking::multipart::Form::new().part(
        "image",
        reqwest::blocking::multipart::Part::bytes(bytes).file_name(photo.to_string()),
    );
    let resp = client
        .post(format!("{server}/v1/people/{person}/faces"))
        .bearer_auth(API_KEY)
        .multipart(form)
        .send()
        .unwrap();
    let status = resp.status();
    let answer: serde_json::Value = resp.json().unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
    answer["deployment"].as_u64().unwrap()
}

#[test]
fn two_servers_enrolling_at_once_both_land_in_current() {
    if !require(Component::SeaweedFs) || !require(Component::ModelWeights) {
        return;
    }
    assert!(
        facepipe_bin().is_file(),
        "{} is missing: run `cargo build -p facepipe` first",
        facepipe_bin().display()
    );
    let weed = SeaweedFs::start(BUCKET).unwrap();
    let registry = weed.location("two-servers/registry");
    let endpoint = weed.endpoint();
    let cache = tempfile::tempdir().unwrap();

    let out = Command::new(facepipe_bin())
        .args([
            "-q",
            "deploy",
            "--no-serve",
            "--model",
            "pretrained",
            "--gallery",
        ])
        .arg(fixtures().join("serving").join("gallery"))
        .args(["--registry", &registry, "--s3-endpoint", &endpoint])
        .env("FACEPIPE_REGISTRY_CACHE", cache.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let servers = [
        Server::start(&registry, &endpoint, cache.path()),
        Server::start(&registry, &endpoint, cache.path()),
    ];
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // Both enrolls leave at the same moment, one to each server.
    let go = Arc::new(Barrier::new(2));
    let jobs = [
        (
            servers[0].url.clone(),
            "Kit_Harington",
            "Kit_Harington_0001.jpg",
        ),
        (
            servers[1].url.clone(),
            "Anthony_Hopkins",
            "Anthony_Hopkins_0001.jpg",
        ),
    ];
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(url, person, photo)| {
            let (go, client) = (go.clone(), client.clone());
            std::thread::spawn(move || {
                go.wait();
                enroll(&client, &url, person, photo)
            })
        })
        .collect();
    let accepted: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(accepted[0], accepted[1], "two edits, two versions");

    let reg = Registry::open_with(&registry, &weed.options()).unwrap();
    let current = reg.load_current().unwrap();
    let mut people = current.gallery.people().to_vec();
    people.sort();
    assert_eq!(
        people,
        [
            "Anthony_Hopkins",
            "Barack_Obama",
            "Joe_Biden",
            "Kit_Harington"
        ],
        "both enrolls are in CURRENT"
    );
    let latest = u64::from(current.info.version);
    assert_eq!(latest, *accepted.iter().max().unwrap());

    // Both servers come to serve CURRENT, and lease it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let served: Vec<(u64, Vec<String>)> = servers.iter().map(|s| s.people(&client)).collect();
        let leases = reg.leases().unwrap();
        let leased_latest = leases
            .iter()
            .filter(|l| u64::from(l.version) == latest)
            .count();
        if served.iter().all(|(v, p)| *v == latest && p.len() == 4) && leased_latest == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "servers never converged on v{latest}: {served:?}, leases {leases:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Retention: keep only the newest version; the servers' leases are on it too.
    let out = Command::new(facepipe_bin())
        .args([
            "-q",
            "registry",
            "gc",
            "--registry",
            &registry,
            "--keep",
            "1",
        ])
        .args(["--s3-endpoint", &endpoint])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("current: v{latest:04}")),
        "{stdout}"
    );
    assert_eq!(reg.versions().unwrap(), [latest as u32]);
    // The servers keep answering from the version they serve.
    for s in &servers {
        assert_eq!(s.people(&client).0, latest);
    }
}
