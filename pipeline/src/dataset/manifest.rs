//! The prepared-dataset manifest (`manifest.json`): where the photos came from, how the
//! faces were found and aligned, the identities and their integer labels, the shard list,
//! one record per input image with its outcome, and the timing of the job that made it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::align::Alignment;
use crate::detect::DetectorKind;
use crate::engine::FoundBy;
use crate::error::{Error, Result};

use super::shards::{Sample, ShardReader};

/// The manifest format this code writes; readers refuse newer major versions.
pub const FORMAT_VERSION: u32 = 1;

/// The file name of the manifest inside a prepared dataset.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A prepared dataset's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The input location as given (`/path`, `file://…` or `s3://bucket/prefix`).
    pub source: String,
    pub detector: DetectorKind,
    pub alignment: AlignmentInfo,
    /// RFC 3339 UTC time the manifest was written.
    pub created: String,
    /// Identities sorted by name; `label` is the integer class used in shards.
    pub identities: Vec<Identity>,
    /// Shard files, relative to the dataset root, in label-independent input order.
    pub shards: Vec<ShardInfo>,
    /// Exactly one record per input image, sorted by source key.
    pub records: Vec<Record>,
    /// How the job that wrote this dataset ran.
    pub job: JobSummary,
}

/// How crops were aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlignmentInfo {
    pub kind: Alignment,
    /// Width and height of the stored crops in pixels.
    pub crop_size: u32,
}

/// One identity (a folder of the input).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub label: u32,
    /// Input images listed for this identity.
    pub images: u32,
    /// Aligned faces stored for this identity: one per record with outcome `ok`, or every
    /// face of it when all faces were kept.
    pub faces: u32,
}

/// One shard file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Relative to the dataset root, e.g. `shards/shard-00003.tar`.
    pub path: String,
    pub samples: u32,
}

/// What happened to one input image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A face stored in a shard (every face, with `--several-faces all`).
    Ok,
    /// No face found, not even by the tight-crop fallback.
    NoFace,
    /// Several faces and `--several-faces skip`.
    SeveralFaces,
    /// Not a decodable image.
    Unreadable,
    /// Refused before decoding: too many pixels or bytes.
    TooLarge,
    /// Byte-identical to an earlier input (by sha256, in source-key order).
    Duplicate,
    /// The worker died or hung on this image every time it ran it alone (a decoder crash,
    /// an abort, the OOM killer); the reason says how.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::NoFace,
        Outcome::SeveralFaces,
        Outcome::Unreadable,
        Outcome::TooLarge,
        Outcome::Duplicate,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NoFace => "no_face",
            Outcome::SeveralFaces => "several_faces",
            Outcome::Unreadable => "unreadable",
            Outcome::TooLarge => "too_large",
            Outcome::Duplicate => "duplicate",
            Outcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one input image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Key of the image relative to the input root, e.g. `Barack_Obama/obama_0001.jpg`.
    pub source: String,
    pub identity: String,
    pub outcome: Outcome,
    /// Why, for every outcome other than a plain `ok` (e.g. the decoder's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Hex sha256 of the input bytes (absent when the bytes could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The sample key in its shard (outcome `ok` only); with several faces kept (see
    /// `more_samples`), the first of them, the largest face.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
    /// The keys of the photo's other samples, in the same shard, when every face was kept
    /// (`--several-faces all`): faces 2.. in the order they were stored. Empty, and absent
    /// from the JSON, when the photo has one sample or none, so one-face records read and
    /// write as they always did. All keys: [`Record::sample_keys`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_samples: Vec<String>,
    /// The shard path relative to the dataset root (outcome `ok` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Which detection path found the face (outcome `ok` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<FoundBy>,
    /// Faces the engine found (absent when the image was never run through it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces_found: Option<u32>,
}

impl Record {
    /// The record of an input that got no sample, with why.
    pub fn without_sample(
        source: &str,
        identity: &str,
        outcome: Outcome,
        reason: impl Into<String>,
    ) -> Self {
        Record {
            source: source.to_string(),
            identity: identity.to_string(),
            outcome,
            reason: Some(reason.into()),
            sha256: None,
            sample: None,
            more_samples: Vec::new(),
            shard: None,
            found_by: None,
            faces_found: None,
        }
    }

    /// Every sample key of this record, the first face first: `sample`, then
    /// `more_samples`. Empty when nothing was stored.
    pub fn sample_keys(&self) -> impl Iterator<Item = &str> {
        self.sample
            .iter()
            .chain(self.more_samples.iter())
            .map(String::as_str)
    }

    /// Samples stored for this record (0, 1, or every face kept).
    pub fn sample_count(&self) -> u32 {
        u32::try_from(self.sample_keys().count()).unwrap_or(u32::MAX)
    }
}

/// Timing and shape of the job that wrote the dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    /// `local` or `lambda`.
    pub executor: String,
    pub workers: u32,
    pub task_size: u32,
    pub tasks: u32,
    /// Tasks that were already finished by an earlier run of the same job (not redone).
    pub tasks_reused: u32,
    /// Tasks whose every attempt failed and whose images were then run one at a time.
    #[serde(default)]
    pub tasks_isolated: u32,
    /// Worker invocations, retries included.
    pub attempts: u32,
    /// Client wall time from listing to manifest, seconds.
    pub wall_s: f64,
    /// Time the workers spent inside tasks, summed, seconds (what one worker would need).
    pub task_seconds_total: f64,
    pub task_p50_s: f64,
    pub task_p95_s: f64,
}

impl Manifest {
    /// Parse a manifest from JSON bytes, refusing unknown format versions.
    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::json(what.to_string(), e))?;
        if manifest.format_version > FORMAT_VERSION {
            return Err(Error::Invalid(format!(
                "{what} has format version {} but this facepipe reads up to {FORMAT_VERSION}: upgrade facepipe",
                manifest.format_version
            )));
        }
        Ok(manifest)
    }

    /// Read `DIR/manifest.json` of a prepared dataset on local disk.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!(
                    "{} (is {} a prepared dataset? run `facepipe prepare` first)",
                    path.display(),
                    dir.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        Self::from_slice(&bytes, &path.display().to_string())
    }

    /// Pretty JSON for `manifest.json`.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::json("manifest", e))
    }

    /// Number of records with each outcome (every outcome present, zero included).
    pub fn outcome_counts(&self) -> BTreeMap<Outcome, u32> {
        let mut counts: BTreeMap<Outcome, u32> = Outcome::ALL.iter().map(|o| (*o, 0)).collect();
        for r in &self.records {
            *counts.entry(r.outcome).or_default() += 1;
        }
        counts
    }

    /// Total samples across the shards.
    pub fn sample_count(&self) -> u64 {
        self.shards.iter().map(|s| u64::from(s.samples)).sum()
    }

    /// Identity names indexed by label.
    pub fn label_names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.identities.len()];
        for id in &self.identities {
            if let Some(slot) = names.get_mut(id.label as usize) {
                slot.clone_from(&id.name);
            }
        }
        names
    }

    /// Every sample of the prepared dataset at `dir` (local disk), shard after shard.
    pub fn samples(&self, dir: &Path) -> DatasetSamples {
        DatasetSamples {
            root: dir.to_path_buf(),
            shards: self.shards.iter().map(|s| s.path.clone()).collect(),
            next_shard: 0,
            current: None,
        }
    }
}

/// Load the manifest at `dir` and iterate every sample of the dataset.
pub fn iter_samples(dir: &Path) -> Result<DatasetSamples> {
    Ok(Manifest::load(dir)?.samples(dir))
}

/// Iterator over every sample of a prepared dataset on local disk (see [`Manifest::samples`]).
pub struct DatasetSamples {
    root: PathBuf,
    shards: Vec<String>,
    next_shard: usize,
    current: Option<ShardReader<std::io::BufReader<std::fs::File>>>,
}

impl Iterator for DatasetSamples {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(reader) = self.current.as_mut() {
                match reader.next() {
                    Some(item) => return Some(item),
                    None => self.current = None,
                }
            }
            let rel = self.shards.get(self.next_shard)?;
            self.next_shard += 1;
            let path = self.root.join(rel);
            match std::fs::File::open(&path) {
                Ok(f) => {
                    self.current = Some(ShardReader::new(std::io::BufReader::new(f), rel.clone()))
                }
                Err(e) => return Some(Err(Error::io(path, e))),
            }
        }
    }
}
