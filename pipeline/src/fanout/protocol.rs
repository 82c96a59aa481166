//! The objects client and workers exchange through the OUTPUT location:
//!
//! ```text
//! jobs/<job>/job.json                   what the job is (input, options, listing digest)
//! jobs/<job>/tasks/<task>.json          TaskDescriptor: the images of one task
//! jobs/<job>/results/<task>/status.json TaskStatus: written last by the worker
//! jobs/<job>/results/<task>/images/<i>/ one image run alone after its task kept failing:
//!                                       started.json, status.json, shard.tar
//! shards/<job>/<task>.tar               the task's samples
//! models/                               the weights, for workers without a local copy
//! manifest.json                         written by the client after the merge
//! ```
//!
//! Every object has a fixed key, so a retried task overwrites exactly what an earlier
//! attempt may have written: tasks are idempotent.

use serde::{Deserialize, Serialize};

use crate::align::Alignment;
use crate::dataset::layout::{InputImage, Layout};
use crate::dataset::{Record, ShardInfo};
use crate::detect::DetectorKind;
use crate::storage::StorageOptions;

/// What to do with a photo holding several faces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeveralFaces {
    /// Keep the largest face (by box area).
    #[default]
    Largest,
    /// Store nothing; the record says `several_faces`.
    Skip,
    /// Store every face as its own sample, keyed [`face_sample_key`]`(sample key, i)`, in
    /// [`face_order`] (largest box first). Only for [`Layout::Unlabelled`]: in a labelled
    /// folder it would give strangers in a group photo the folder's name.
    All,
}

impl SeveralFaces {
    pub fn as_str(self) -> &'static str {
        match self {
            SeveralFaces::Largest => "largest",
            SeveralFaces::Skip => "skip",
            SeveralFaces::All => "all",
        }
    }
}

impl std::fmt::Display for SeveralFaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SeveralFaces {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "largest" => Ok(SeveralFaces::Largest),
            "skip" => Ok(SeveralFaces::Skip),
            "all" => Ok(SeveralFaces::All),
            other => Err(crate::Error::Invalid(format!(
                "unknown several-faces policy {other:?}: use largest, skip or all"
            ))),
        }
    }
}

/// Settings every task of a job shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub input: String,
    /// How the input is laid out. Absent in jobs recorded before layouts existed, and never
    /// written when labelled, so a labelled job's spec (and the job id derived from it) is
    /// what it always was.
    #[serde(default, skip_serializing_if = "Layout::is_labelled")]
    pub layout: Layout,
    pub detector: DetectorKind,
    pub alignment: Alignment,
    pub several_faces: SeveralFaces,
    pub min_images_per_identity: u32,
    pub task_size: u32,
    /// sha256 over the listed keys and sizes: a changed input is a different job.
    pub listing_sha256: String,
}

/// `jobs/<job>/job.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFile {
    pub job: String,
    pub spec: JobSpec,
    pub tasks: u32,
    pub images: u32,
}

/// One image of a task, with the sample key its crop gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskImage {
    #[serde(flatten)]
    pub input: InputImage,
    pub sample_key: String,
}

/// `jobs/<job>/tasks/<task>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDescriptor {
    pub job: String,
    pub task: u32,
    /// The input location the image keys are relative to.
    pub input: String,
    pub detector: DetectorKind,
    pub alignment: Alignment,
    pub several_faces: SeveralFaces,
    /// Where the worker writes the shard, relative to the output location.
    pub shard: String,
    pub images: Vec<TaskImage>,
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Done,
    /// The worker could not finish (storage or model trouble); the client retries.
    Failed,
}

/// `jobs/<job>/results/<task>/status.json`, the last object a worker writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub job: String,
    pub task: u32,
    pub attempt: u32,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `local:<host>:<pid>` or `lambda:<request id>`.
    pub worker: String,
    /// Seconds from the worker picking the task up to writing this status.
    pub seconds: f64,
    /// Seconds of that spent loading (or fetching) the networks; 0 when already warm.
    pub engine_load_s: f64,
    /// The worker process's peak resident memory in MiB, when the OS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// One record per image of the task, in task order.
    pub records: Vec<Record>,
    /// The shard written (absent when the task produced no sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Every attempt at the whole task failed, so the client ran its images one at a time
    /// and assembled this status from theirs (an image that killed its worker each time is
    /// a `failed` record).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
}

/// What a worker is asked to do: a reference to a task, never image bytes. This is the
/// Lambda payload and the `facepipe worker` arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The output location holding `jobs/<job>/…`.
    pub output: String,
    pub job: String,
    pub task: u32,
    pub attempt: u32,
    #[serde(default)]
    pub storage: StorageOptions,
    /// Where to fetch the weights from when the worker has no local copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    /// Run only this image of the task (its index in the descriptor), alone, writing under
    /// [`image_prefix`]: how the client finds the image that kills every attempt of a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<u32>,
}

impl WorkerRequest {
    /// Where the worker writes this request's status object.
    pub fn status_key(&self) -> String {
        match self.image {
            None => status_key(&self.job, self.task),
            Some(i) => format!("{}/status.json", image_prefix(&self.job, self.task, i)),
        }
    }

    /// `task 3 attempt 2`, or `task 3 image 1 attempt 2`, for messages.
    pub fn describe(&self) -> String {
        match self.image {
            None => format!("task {} attempt {}", self.task, self.attempt),
            Some(i) => format!("task {} image {i} attempt {}", self.task, self.attempt),
        }
    }
}

/// What a warm local worker (`facepipe worker --serve`) answers on stdout, one JSON line per
/// [`WorkerRequest`] line on stdin. Only a hint for the executor (keep the process or not,
/// what to log): the client still trusts nothing but the task's status object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReply {
    pub task: u32,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<u32>,
    pub state: TaskState,
    /// Why the task failed (absent when done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl WorkerReply {
    /// The answer for a task that could not run at all.
    pub fn failed(request: &WorkerRequest, message: String) -> Self {
        WorkerReply {
            task: request.task,
            attempt: request.attempt,
            image: request.image,
            state: TaskState::Failed,
            message: Some(message),
        }
    }

    /// Whether this answers `request` (and not an earlier one).
    pub fn answers(&self, request: &WorkerRequest) -> bool {
        self.task == request.task && self.attempt == request.attempt && self.image == request.image
    }
}

/// Key of the job file.
pub fn job_key(job: &str) -> String {
    format!("jobs/{job}/job.json")
}

/// Key of a task descriptor.
pub fn task_key(job: &str, task: u32) -> String {
    format!("jobs/{job}/tasks/{task:05}.json")
}

/// Key of a task's status object.
pub fn status_key(job: &str, task: u32) -> String {
    format!("jobs/{job}/results/{task:05}/status.json")
}

/// Key of a task's shard.
pub fn shard_key(job: &str, task: u32) -> String {
    format!("shards/{job}/{task:05}.tar")
}

/// Folder of the objects of image `image` of a task run alone (see [`WorkerRequest::image`]).
pub fn image_prefix(job: &str, task: u32, image: u32) -> String {
    format!("jobs/{job}/results/{task:05}/images/{image:05}")
}

/// Written by a worker running one image alone just before it fetches and decodes it: a
/// run that then leaves no status died on that image, not before reaching it.
pub fn image_started_key(job: &str, task: u32, image: u32) -> String {
    format!("{}/started.json", image_prefix(job, task, image))
}

/// The shard of one image run alone; the client folds it into the task's shard.
pub fn image_shard_key(job: &str, task: u32, image: u32) -> String {
    format!("{}/shard.tar", image_prefix(job, task, image))
}

/// A WebDataset key for input number `index`: the index keeps keys unique and ordered,
/// the ASCII-folded identity keeps them readable.
pub fn sample_key(index: usize, identity: &str) -> String {
    let mut name: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    format!("{index:06}_{name}")
}

/// The sample key of input number `index` of a job laid out as `layout`. Labelled: exactly
/// [`sample_key`] of the identity, as before layouts. Unlabelled: [`sample_key`] of the
/// photo's relative path without its extension (its last 60 characters, where file names
/// differ), so `2019/party/IMG 1.jpg` at index 7 is `000007_2019_party_IMG_1`. The index
/// keeps keys unique whatever the path; the folding keeps them free of `/` and `.`, so they
/// are safe tar member names.
pub fn input_sample_key(index: usize, input: &InputImage, layout: Layout) -> String {
    match layout {
        Layout::Labelled => sample_key(index, &input.identity),
        Layout::Unlabelled => {
            let key = input.key.as_str();
            let file_start = key.rfind('/').map_or(0, |i| i + 1);
            let stem = match key[file_start..].rfind('.') {
                Some(dot) if dot > 0 => &key[..file_start + dot],
                _ => key,
            };
            let chars: Vec<char> = stem.chars().collect();
            let tail: String = chars[chars.len().saturating_sub(60)..].iter().collect();
            sample_key(index, &tail)
        }
    }
}

/// The key of face `face` (in [`face_order`]) of a photo whose sample key is `sample_key`,
/// under [`SeveralFaces::All`]: `000007_party_f0`, `000007_party_f1`, … No two photos share
/// a sample key prefix up to its first `_` (the index), so face keys are unique too.
pub fn face_sample_key(sample_key: &str, face: usize) -> String {
    format!("{sample_key}_f{face}")
}

/// The order [`SeveralFaces::All`] stores a photo's faces in, so the same photo always
/// gives the same keys: box area descending (the first is the largest face, the one
/// [`SeveralFaces::Largest`] keeps), then score descending, then top to bottom, left to
/// right.
pub fn face_order(a: &crate::engine::Face, b: &crate::engine::Face) -> std::cmp::Ordering {
    b.bbox
        .area()
        .total_cmp(&a.bbox.area())
        .then(b.score.total_cmp(&a.score))
        .then(a.bbox.y.total_cmp(&b.bbox.y))
        .then(a.bbox.x.total_cmp(&b.bbox.x))
}

/// A job id must be usable as a key segment.
pub fn valid_job_id(job: &str) -> bool {
    !job.is_empty()
        && job.len() <= 64
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !job.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keys_are_valid_webdataset_keys() {
        let k = sample_key(42, "Zoë Saldaña-Nazario");
        assert_eq!(k, "000042_Zo__Salda_a-Nazario");
        assert!(crate::dataset::shards::valid_key(&k));
        assert!(valid_job_id("j-2026.1"));
        assert!(!valid_job_id("../x"));
        assert!(!valid_job_id("a/b"));
    }

    fn input(key: &str, identity: &str) -> InputImage {
        InputImage {
            key: key.into(),
            identity: identity.into(),
            label: 0,
            size: 1,
        }
    }

    #[test]
    fn unlabelled_sample_keys_are_unique_tar_safe_names_of_nested_paths() {
        use crate::dataset::shards::valid_key;
        // Labelled keys are what they always were.
        let labelled = input("Zoë Saldaña-Nazario/1.jpg", "Zoë Saldaña-Nazario");
        assert_eq!(
            input_sample_key(42, &labelled, Layout::Labelled),
            sample_key(42, "Zoë Saldaña-Nazario")
        );

        let deep = "a/".repeat(40) + "IMG 0001.tar.jpg";
        let keys: Vec<String> = [
            "2019/party/IMG 1.jpg",
            "2019/party/IMG 1.png",
            "2019.party/IMG 1.jpg",
            "../x/y.jpg",
            "no_extension",
            "Zoë's/ñ.d/x.jpeg",
            deep.as_str(),
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| input_sample_key(i, &input(k, ""), Layout::Unlabelled))
        .collect();
        assert_eq!(keys[0], "000000_2019_party_IMG_1");
        assert_eq!(keys[2], "000002_2019_party_IMG_1");
        assert_eq!(keys[3], "000003____x_y");
        assert_eq!(keys[4], "000004_no_extension");
        assert_eq!(keys[5], "000005_Zo__s___d_x");
        // A long path keeps its end, where the file name is.
        assert!(keys[6].ends_with("_a_a_IMG_0001_tar"), "{}", keys[6]);
        assert_eq!(keys[6].len(), 7 + 60);
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        for k in &keys {
            assert!(valid_key(k), "{k}");
            // Every face of the photo too, even a photo's ten-thousandth face of a
            // ten-millionth photo.
            assert!(valid_key(&face_sample_key(k, 0)), "{k}");
        }
        let big = input_sample_key(12_345_678, &input(&deep, ""), Layout::Unlabelled);
        assert!(valid_key(&face_sample_key(&big, 9_999)), "{big}");
        assert_eq!(face_sample_key("000007_party", 1), "000007_party_f1");
    }

    #[test]
    fn faces_are_kept_largest_first_in_a_stable_order() {
        use crate::engine::{Face, FoundBy};
        use crate::geometry::BBox;
        let face = |x: f32, y: f32, side: f32, score: f32| Face {
            bbox: BBox::new(x, y, side, side),
            score,
            landmarks: Vec::new(),
            found_by: FoundBy::Detector,
        };
        let mut faces = vec![
            face(50.0, 0.0, 10.0, 0.9),
            face(0.0, 0.0, 30.0, 0.6),
            face(0.0, 40.0, 10.0, 0.9),
            face(0.0, 0.0, 10.0, 0.95),
            face(9.0, 40.0, 10.0, 0.9),
        ];
        faces.sort_by(face_order);
        let order: Vec<(f32, f32, f32)> = faces
            .iter()
            .map(|f| (f.bbox.x, f.bbox.y, f.bbox.width))
            .collect();
        assert_eq!(
            order,
            [
                (0.0, 0.0, 30.0),
                (0.0, 0.0, 10.0),
                (50.0, 0.0, 10.0),
                (0.0, 40.0, 10.0),
                (9.0, 40.0, 10.0)
            ]
        );
        assert_eq!(
            crate::engine::largest(&faces).map(|f| f.bbox),
            Some(faces[0].bbox)
        );
    }

    #[test]
    fn several_faces_all_parses_and_job_specs_without_a_layout_still_read() {
        assert_eq!("all".parse::<SeveralFaces>().unwrap(), SeveralFaces::All);
        let e = "every".parse::<SeveralFaces>().unwrap_err().to_string();
        assert!(e.contains("largest, skip or all"), "{e}");
        assert_eq!(
            serde_json::to_value(SeveralFaces::All).unwrap(),
            serde_json::json!("all")
        );

        // A job.json written before layouts existed.
        let old = serde_json::json!({
            "job": "job-1",
            "spec": {
                "input": "/photos",
                "detector": "ssd",
                "alignment": "dlib_chip",
                "several_faces": "largest",
                "min_images_per_identity": 1,
                "task_size": 16,
                "listing_sha256": "ab"
            },
            "tasks": 1,
            "images": 3
        });
        let file: JobFile = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(file.spec.layout, Layout::Labelled);
        // A labelled spec is written as before, so the job id derived from it is the same
        // and a rerun of an old command resumes its old job.
        assert_eq!(serde_json::to_value(&file).unwrap(), old);
        let unlabelled = JobSpec {
            layout: Layout::Unlabelled,
            several_faces: SeveralFaces::All,
            ..file.spec.clone()
        };
        let json = serde_json::to_value(&unlabelled).unwrap();
        assert_eq!(json["layout"], "unlabelled");
        assert_eq!(json["several_faces"], "all");
        assert_eq!(serde_json::from_value::<JobSpec>(json).unwrap(), unlabelled);
    }

    #[test]
    fn worker_request_round_trips_as_lambda_payload() {
        let req = WorkerRequest {
            output: "s3://b/out".into(),
            job: "j1".into(),
            task: 3,
            attempt: 2,
            storage: StorageOptions {
                s3_endpoint: Some("http://127.0.0.1:8333".into()),
                region: None,
                ..StorageOptions::default()
            },
            models: Some("s3://b/out/models".into()),
            image: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert!(!json.contains("image"), "{json}");
        assert_eq!(serde_json::from_str::<WorkerRequest>(&json).unwrap(), req);
        assert_eq!(status_key("j1", 3), "jobs/j1/results/00003/status.json");
        assert_eq!(req.status_key(), status_key("j1", 3));

        let alone = WorkerRequest {
            image: Some(1),
            ..req
        };
        let json = serde_json::to_string(&alone).unwrap();
        assert_eq!(serde_json::from_str::<WorkerRequest>(&json).unwrap(), alone);
        assert_eq!(
            alone.status_key(),
            "jobs/j1/results/00003/images/00001/status.json"
        );
        assert_eq!(alone.describe(), "task 3 image 1 attempt 2");
    }
}
