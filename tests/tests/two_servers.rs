//! Two real `facepipe serve` processes on one S3 registry (a real SeaweedFS started here)
//! enroll different people at the same moment: both people end up in CURRENT, both servers
//! come to serve the same latest version and lease it, and `facepipe registry gc` then
//! removes every older version but never the served one.
//!
//! Needs the binary (`cargo build -p facepipe`), `weed` on PATH and the pretrained weights:
//! without them the test skips with a message, and fails when `CI` is set.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use facepipe_pipeline::storage::seaweed::SeaweedFs;
use facepipe_pipeline::test_support::{require, Component};
use facepipe_serving::Registry;
use facepipe_tests::{fixtures, serve_command, setup, Dir, Server, TestCommand};

const BUCKET: &str = "facepipe-two-servers";
const API_KEY: &str = "two-servers-key-91b";

/// A `facepipe serve` of the S3 registry, with the API key.
fn start_server(registry: &str, endpoint: &str, cache: &std::path::Path) -> Server {
    Server::start(
        serve_command(registry)
            .args(["--s3-endpoint", endpoint, "--poll-interval", "0.5"])
            .args(["--api-key", API_KEY])
            .env("FACEPIPE_REGISTRY_CACHE", cache),
    )
}

/// `(deployment, people)` from `GET /v1/people`.
fn served_people(server: &Server, client: &reqwest::blocking::Client) -> (u64, Vec<String>) {
    let answer: serde_json::Value = client
        .get(format!("{}/v1/people", server.url()))
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
    let weed = SeaweedFs::start(BUCKET).unwrap();
    let registry = weed.location("two-servers/registry");
    let endpoint = weed.endpoint();
    let cache = Dir::new();

    setup::deploy_gallery(&registry)
        .args(["--s3-endpoint", &endpoint])
        .env("FACEPIPE_REGISTRY_CACHE", cache.path())
        .stdout();

    let servers = [
        start_server(&registry, &endpoint, cache.path()),
        start_server(&registry, &endpoint, cache.path()),
    ];
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // Both enrolls leave at the same moment, one to each server.
    let go = Arc::new(Barrier::new(2));
    let jobs = [
        (
            servers[0].url().to_string(),
            "Kit_Harington",
            "Kit_Harington_0001.jpg",
        ),
        (
            servers[1].url().to_string(),
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
        let served: Vec<(u64, Vec<String>)> =
            servers.iter().map(|s| served_people(s, &client)).collect();
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
    let stdout = TestCommand::new()
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
        .stdout();
    assert!(
        stdout.contains(&format!("current: v{latest:04}")),
        "{stdout}"
    );
    assert_eq!(reg.versions().unwrap(), [latest as u32]);
    // The servers keep answering from the version they serve.
    for s in &servers {
        assert_eq!(served_people(s, &client).0, latest);
    }
}
