//! The review API of `facepipe serve --review OUT` against the real binary: naming enrolls
//! each face once, names never merge, "not this person" and "ignore" take enrolled faces
//! back out of the gallery, each action is in decisions.json, and enrolling picks the face
//! of a group photo by its box. Needs the binary (`cargo build -p facepipe`).
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::HashMap;

use facepipe_tests::{person_photos, sample_data, serve_command, setup, Dir, Server, TestCommand};
use reqwest::blocking::{multipart, Client};
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "review-api-key";

struct Api<'a> {
    client: Client,
    url: &'a str,
}

impl Api<'_> {
    fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .unwrap();
        (r.status(), r.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .unwrap();
        (r.status(), r.json().unwrap())
    }

    fn people(&self) -> HashMap<String, u64> {
        let (_, p) = self.get("/v1/people");
        p["people"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().into(),
                    p["faces"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn identify(&self, photo: &[u8]) -> Value {
        let form = multipart::Form::new().part(
            "image",
            multipart::Part::bytes(photo.to_vec()).file_name("p.jpg"),
        );
        let r = self
            .client
            .post(format!("{}/v1/identify", self.url))
            .multipart(form)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().unwrap()
    }

    fn enroll(&self, name: &str, photos: &[&[u8]], at: Option<&str>) -> (StatusCode, Value) {
        let mut form = multipart::Form::new();
        for p in photos {
            form = form.part(
                "image",
                multipart::Part::bytes(p.to_vec()).file_name("p.jpg"),
            );
        }
        if let Some(b) = at {
            form = form.text("box", b.to_string());
        }
        let r = self
            .client
            .post(format!("{}/v1/people/{name}/faces", self.url))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .unwrap();
        (r.status(), r.json().unwrap())
    }
}

/// The group (key) holding most faces of `photos`.
fn group_with(review: &Value, photos: &[String]) -> Value {
    review["groups"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| photos.iter().any(|p| m["photo"] == p.as_str()))
                .count()
        })
        .unwrap()
        .clone()
}

#[test]
fn review_actions_publish_and_record_and_enroll_picks_a_face_by_its_box() {
    let dir = Dir::new();
    let registry = dir.join("registry");
    setup::deploy_gallery(&registry).stdout();
    let mut photos_of: HashMap<&str, Vec<String>> = HashMap::new();
    let mut n = 0;
    for person in ["John_Salley", "John_Schneider"] {
        let photos = person_photos(person);
        for p in photos.into_iter().take(6) {
            n += 1;
            let key = format!("{n:03}.jpg");
            dir.copy(&p, format!("pile/{key}"));
            photos_of.entry(person).or_default().push(key);
        }
    }
    dir.copy(
        sample_data().join("scenes").join("obama_and_biden.jpg"),
        "pile/obama_and_biden.jpg",
    );
    let out = dir.join("out");
    TestCommand::new()
        .args(["-q", "cluster", "--workers", "2", "--deployment"])
        .arg(&registry)
        .arg(dir.join("pile"))
        .arg(&out)
        .stdout();

    // The review shows the collection's faces: refused without a key.
    let no_key = TestCommand::new()
        .args(["serve", "--listen", "127.0.0.1:0", "--registry"])
        .arg(&registry)
        .arg("--review")
        .arg(&out)
        .env_remove("FACEPIPE_API_KEY")
        .assert_err();
    assert!(
        no_key.stderr.contains("needs an API key"),
        "{}",
        no_key.stderr
    );

    let key_file = dir.create("key", KEY);
    let mut cmd = serve_command(&registry);
    cmd.arg("--review")
        .arg(&out)
        .arg("--api-key-file")
        .arg(&key_file);
    let server = Server::start(&mut cmd);
    let api = Api {
        client: Client::new(),
        url: server.url(),
    };
    let anonymous = api
        .client
        .get(format!("{}/v1/review", server.url()))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let (status, review) = api.get("/v1/review");
    assert_eq!(status, StatusCode::OK, "{review}");
    assert_eq!(review["deployment"], 1);
    let salley = group_with(&review, &photos_of["John_Salley"]);
    let key = salley["key"].as_str().unwrap().to_string();
    let size = salley["size"].as_u64().unwrap();
    assert!(size >= 5, "{salley}");
    let crop = api
        .client
        .get(format!("{}/v1/review/faces/{key}", server.url()))
        .bearer_auth(KEY)
        .send()
        .unwrap();
    assert_eq!(crop.status(), StatusCode::OK);
    assert_eq!(crop.headers()["content-type"], "image/jpeg");
    let crop = image::load_from_memory(&crop.bytes().unwrap()).unwrap();
    assert!(crop.width() >= 64 && crop.width() == crop.height());
    let (status, _) = api.get("/v1/review/faces/no_such_face");
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Naming enrolls every face once, however often it is named.
    let (status, named) = api.post(
        "/v1/review/name",
        json!({"group": key, "name": "John_Salley"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{named}");
    assert_eq!(
        (named["faces"].as_u64(), named["deployment"].as_u64()),
        (Some(size), Some(2))
    );
    let (status, again) = api.post(
        "/v1/review/name",
        json!({"group": key, "name": "John_Salley"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(
        (again["faces"].as_u64(), again["deployment"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(api.people()["John_Salley"], size);
    let (status, other) = api.post(
        "/v1/review/name",
        json!({"group": key, "name": "Someone_Else"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{other}");
    let (_, review) = api.get("/v1/review");
    let named_group = group_with(&review, &photos_of["John_Salley"]);
    assert_eq!(named_group["name"], "John_Salley");
    assert_eq!(named_group["enrolled"].as_u64(), Some(size));

    // Two names never merge.
    let obama = review["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Barack_Obama")
        .unwrap()["key"]
        .clone();
    let (status, refused) = api.post("/v1/review/merge", json!({"groups": [key, obama]}));
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (status, _) = api.post("/v1/review/merge", json!({"groups": [key]}));
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // "Not this person" takes the face's embedding out of the gallery.
    let wrong = named_group["members"].as_array().unwrap().last().unwrap()["face"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, removed) = api.post("/v1/review/remove", json!({"group": key, "face": wrong}));
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["deployment"], 3);
    assert_eq!(api.people()["John_Salley"], size - 1);
    let (_, review) = api.get("/v1/review");
    let out_face = review["unclustered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["face"] == wrong.as_str())
        .unwrap();
    assert_eq!(out_face["reason"], "removed");
    let (status, _) = api.post("/v1/review/remove", json!({"group": key, "face": wrong}));
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The other group is named, then ignored: its person leaves the gallery.
    let schneider = group_with(&review, &photos_of["John_Schneider"]);
    let other_key = schneider["key"].as_str().unwrap();
    let (status, _) = api.post(
        "/v1/review/name",
        json!({"group": other_key, "name": "Mistake"}),
    );
    assert_eq!(status, StatusCode::CREATED);
    assert!(api.people().contains_key("Mistake"));
    let (status, ignored) = api.post("/v1/review/ignore", json!({"group": other_key}));
    assert_eq!(status, StatusCode::OK, "{ignored}");
    assert_eq!(ignored["deployment"], 5);
    assert!(!api.people().contains_key("Mistake"));
    let (_, review) = api.get("/v1/review");
    assert!(review["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["key"] != other_key));

    // Bad requests say what is wrong.
    let (status, bad) = api.post("/v1/review/ignore", json!({"groop": other_key}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, _) = api.post("/v1/review/ignore", json!({"group": "nobody"}));
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every action is in decisions.json, for the next run.
    let decisions: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("decisions.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = decisions["named"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"John_Salley") && names.contains(&"Mistake"),
        "{decisions}"
    );
    assert_eq!(decisions["removed"][0]["face"], wrong.as_str());
    assert_eq!(decisions["removed"][0]["from"]["name"], "John_Salley");
    assert_eq!(
        decisions["ignored"].as_array().unwrap().len() as u64,
        schneider["size"].as_u64().unwrap()
    );

    // Enroll one face of a group photo by the box identify gave it.
    let photo = std::fs::read(sample_data().join("scenes").join("kit_with_rose.jpg")).unwrap();
    let seen = api.identify(&photo);
    let faces = seen["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2, "{seen}");
    let b: Vec<String> = faces[1]["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let (status, enrolled) = api.enroll("Second_Face", &[&photo], Some(&b.join(",")));
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    let seen = api.identify(&photo);
    let named: Vec<Option<&str>> = seen["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["person"].as_str())
        .collect();
    assert_eq!(
        named.iter().filter(|p| **p == Some("Second_Face")).count(),
        1,
        "{seen}"
    );
    assert_eq!(seen["faces"][1]["person"], "Second_Face", "{seen}");
    let (status, far) = api.enroll("Nobody", &[&photo], Some("0,0,4,4"));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{far}");
    let (status, bad) = api.enroll("Nobody", &[&photo], Some("1,2,three"));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, two) = api.enroll("Nobody", &[&photo, &photo], Some(&b.join(",")));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{two}");
    assert!(!api.people().contains_key("Nobody"));
}
