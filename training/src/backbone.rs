//! The one interface every embedding network implements, and the constructor that builds a
//! network from its architecture name (as recorded in `model.json`).

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::error::{Error, Result};
use crate::resnet;

/// A network from an `N × 3 × S × S` normalised batch to `N × D` embeddings (not normalised:
/// the [`crate::Embedder`] L2-normalises when the metric is cosine).
pub trait EmbeddingNet: Send {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;
}

/// What a constructor needs besides the var-store path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackboneConfig {
    /// Width of the embedding.
    pub embedding_dim: i64,
    /// Side of the square input in pixels.
    pub input_size: u32,
    /// Architecture-specific settings (free-form; each arm reads what it knows).
    #[serde(default)]
    pub options: serde_json::Value,
}

/// Build the network called `arch`, its variables created under `vs`.
pub fn build(arch: &str, vs: &nn::Path, cfg: &BackboneConfig) -> Result<Box<dyn EmbeddingNet>> {
    match arch {
        resnet::ARCH => {
            if cfg.input_size != resnet::INPUT_SIZE {
                return Err(Error::Invalid(format!(
                    "{arch} takes {} px inputs, not {}",
                    resnet::INPUT_SIZE,
                    cfg.input_size
                )));
            }
            Ok(Box::new(resnet::FaceResNet::new(vs, cfg.embedding_dim)))
        }
        crate::mobilefacenet::ARCH => {
            if cfg.input_size != crate::mobilefacenet::INPUT_SIZE {
                return Err(Error::Invalid(format!(
                    "{arch} takes {} px inputs, not {}",
                    crate::mobilefacenet::INPUT_SIZE,
                    cfg.input_size
                )));
            }
            Ok(Box::new(crate::mobilefacenet::MobileFaceNet::new(
                vs,
                cfg.embedding_dim,
            )))
        }
        other => Err(Error::UnknownArch(other.to_string())),
    }
}
