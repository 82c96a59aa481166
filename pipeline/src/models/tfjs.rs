//! Reader for tfjs weight manifests: a JSON list of tensors (name, shape, dtype, optional
//! uint8/uint16 quantisation `q * scale + min`) and `.bin` files with the tensors packed back
//! to back in manifest order.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    quantization: Option<Quantization>,
}

#[derive(Deserialize)]
struct Quantization {
    dtype: String,
    scale: f64,
    min: f64,
}

/// All tensors of one network, dequantised to f32, by name.
#[derive(Debug, Clone, Default)]
pub struct TfjsWeights {
    tensors: HashMap<String, ArrayD<f32>>,
}

impl TfjsWeights {
    /// Read `<dir>/<name>-weights_manifest.json` and the `.bin` files it lists.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let manifest_path = dir.join(format!("{name}-weights_manifest.json"));
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let groups: Vec<Group> = serde_json::from_str(&text)
            .map_err(|e| Error::json(manifest_path.display().to_string(), e))?;
        let bad = |reason: String| Error::BadModel {
            path: manifest_path.clone(),
            reason,
        };
        let mut tensors = HashMap::new();
        for group in groups {
            let mut buf = Vec::new();
            for p in &group.paths {
                let path = dir.join(p);
                buf.extend(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
            }
            let mut off = 0usize;
            for w in group.weights {
                let n: usize = w.shape.iter().product();
                let values: Vec<f32> = match &w.quantization {
                    Some(q) => {
                        let width = match q.dtype.as_str() {
                            "uint8" => 1,
                            "uint16" => 2,
                            other => return Err(bad(format!("{}: quantisation {other}", w.name))),
                        };
                        let bytes = buf
                            .get(off..off + n * width)
                            .ok_or_else(|| bad(format!("{}: .bin too short", w.name)))?;
                        off += n * width;
                        bytes
                            .chunks_exact(width)
                            .map(|c| {
                                let q_val = if width == 1 {
                                    f64::from(c[0])
                                } else {
                                    f64::from(u16::from_le_bytes([c[0], c[1]]))
                                };
                                (q_val * q.scale + q.min) as f32
                            })
                            .collect()
                    }
                    None => {
                        if w.dtype != "float32" && w.dtype != "int32" {
                            return Err(bad(format!("{}: dtype {}", w.name, w.dtype)));
                        }
                        let bytes = buf
                            .get(off..off + n * 4)
                            .ok_or_else(|| bad(format!("{}: .bin too short", w.name)))?;
                        off += n * 4;
                        bytes
                            .chunks_exact(4)
                            .map(|c| {
                                let raw = [c[0], c[1], c[2], c[3]];
                                if w.dtype == "int32" {
                                    i32::from_le_bytes(raw) as f32
                                } else {
                                    f32::from_le_bytes(raw)
                                }
                            })
                            .collect()
                    }
                };
                let arr = ArrayD::from_shape_vec(IxDyn(&w.shape), values)
                    .map_err(|e| bad(format!("{}: {e}", w.name)))?;
                tensors.insert(w.name, arr);
            }
            if off != buf.len() {
                return Err(bad(format!(
                    "manifest covers {off} bytes but the .bin files hold {}",
                    buf.len()
                )));
            }
        }
        Ok(TfjsWeights { tensors })
    }

    /// A tensor by name, or a clear error naming the missing tensor.
    pub fn get(&self, name: &str) -> Result<&ArrayD<f32>> {
        self.tensors.get(name).ok_or_else(|| Error::BadModel {
            path: name.into(),
            reason: format!("tensor {name} not in the weight manifest"),
        })
    }

    /// Take a tensor out (avoids a copy when building a network).
    pub fn take(&mut self, name: &str) -> Result<ArrayD<f32>> {
        self.tensors.remove(name).ok_or_else(|| Error::BadModel {
            path: name.into(),
            reason: format!("tensor {name} not in the weight manifest"),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}
