//! The model artifact: a folder with `model.safetensors` (the weights) and `model.json`
//! (everything needed to use them: architecture, input size and normalisation, embedding
//! width, distance, calibrated threshold, the training configuration and metrics).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn;

use facepipe_pipeline::{DistanceKind, Metric};

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::preprocess::InputSpec;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const MODEL_JSON: &str = "model.json";
/// Variables under this var-store prefix (classifier heads, margins' class centres) are
/// training-only and are not saved in the artifact.
pub const HEAD_PREFIX: &str = "head.";
/// Version of the `model.json` layout.
pub const FORMAT_VERSION: u32 = 1;

/// The contents of `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelJson {
    pub format_version: u32,
    /// The network (`resnet128`, `mobilefacenet`; older artifacts say `faceapi_resnet`).
    pub architecture: Arch,
    /// Input size and per-channel normalisation.
    pub input: InputSpec,
    pub embedding_dim: usize,
    /// Distance used to compare embeddings (cosine embeddings are L2-normalised).
    pub distance: DistanceKind,
    /// Distance under which two faces are the same person (calibrated on data).
    pub threshold: f32,
    /// Architecture-specific settings (none of today's networks has any; kept so that
    /// artifacts that carry them still read).
    #[serde(default)]
    pub backbone_options: serde_json::Value,
    /// The training run's configuration (free-form).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Evaluation results (free-form; usually an `EvaluationReport`).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created: Option<String>,
}

impl ModelJson {
    /// A description with the given architecture and empty training/metrics sections.
    pub fn new(architecture: Arch, input: InputSpec, embedding_dim: usize, metric: Metric) -> Self {
        ModelJson {
            format_version: FORMAT_VERSION,
            architecture,
            input,
            embedding_dim,
            distance: metric.distance,
            threshold: metric.threshold,
            backbone_options: serde_json::Value::Null,
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            created: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
        }
    }

    pub fn metric(&self) -> Metric {
        Metric {
            distance: self.distance,
            threshold: self.threshold,
        }
    }
}

fn bad(dir: &Path, reason: impl Into<String>) -> Error {
    Error::BadArtifact {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// Write `dir/model.safetensors` (every variable of `vs` except those under [`HEAD_PREFIX`])
/// and `dir/model.json`. Creates `dir`.
pub fn save(dir: &Path, vs: &nn::VarStore, json: &ModelJson) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut named: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !name.starts_with(HEAD_PREFIX))
        .map(|(name, t)| (name, t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    if named.is_empty() {
        return Err(Error::NothingToSave);
    }
    let weights = dir.join(WEIGHTS_FILE);
    tch::Tensor::write_safetensors(&named, &weights)?;
    let text = crate::json::to_string_pretty(json).map_err(|e| Error::json(MODEL_JSON, e))?;
    let path = dir.join(MODEL_JSON);
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    Ok(())
}

/// Read `dir/model.json` and check that the weights file is there.
pub fn load_json(dir: &Path) -> Result<ModelJson> {
    let path = dir.join(MODEL_JSON);
    if !path.is_file() {
        return Err(bad(
            dir,
            format!("no {MODEL_JSON} (is this a folder written by `facepipe train`?)"),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let json: ModelJson =
        serde_json::from_str(&text).map_err(|e| Error::json(path.display().to_string(), e))?;
    if json.format_version > FORMAT_VERSION {
        return Err(bad(
            dir,
            format!(
                "{MODEL_JSON} format {} is newer than this facepipe understands ({FORMAT_VERSION})",
                json.format_version
            ),
        ));
    }
    if !dir.join(WEIGHTS_FILE).is_file() {
        return Err(bad(dir, format!("no {WEIGHTS_FILE}")));
    }
    Ok(json)
}

/// Copy the saved weights into `vs`: every variable of `vs` must be in the file with the
/// same shape (variables under [`HEAD_PREFIX`] excepted).
pub fn load_weights(dir: &Path, vs: &nn::VarStore) -> Result<()> {
    let path: PathBuf = dir.join(WEIGHTS_FILE);
    let saved: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(&path)?.into_iter().collect();
    let device = vs.device();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vs.variables() {
            if name.starts_with(HEAD_PREFIX) {
                continue;
            }
            let value = saved
                .get(&name)
                .ok_or_else(|| bad(dir, format!("{WEIGHTS_FILE} lacks variable {name}")))?;
            if value.size() != var.size() {
                return Err(bad(
                    dir,
                    format!(
                        "{name}: saved shape {:?}, architecture expects {:?}",
                        value.size(),
                        var.size()
                    ),
                ));
            }
            let mut var = var;
            var.f_copy_(&value.to_device(device))?;
        }
        Ok(())
    })
}
