//! Aligned face crops in, embeddings out.
//!
//! An [`Embedder`] owns one network (the pretrained 128-d ResNet, or a trained artifact), its
//! input geometry and the metric its embeddings are compared with. Inputs of any size are
//! padded to a centred square and resized as the network expects (see [`crate::preprocess`]);
//! batches run under `no_grad` on the chosen `tch::Device`.

use std::path::Path;

use facepipe_pipeline::{DistanceKind, Metric, ModelDir, PRETRAINED_METRIC};
use image::RgbImage;
use tch::nn;

use crate::arch::Arch;
use crate::artifact;
use crate::error::{Error, Result};
use crate::preprocess::{self, InputSpec};
use crate::resnet::{self, FaceResNet};

/// Crops per forward pass: bounds memory on long lists.
const DEFAULT_BATCH: usize = 32;

pub struct Embedder {
    net: Box<dyn nn::ModuleT>,
    // Owns the network's variables (the modules hold shallow handles to them).
    _vs: nn::VarStore,
    device: tch::Device,
    input: InputSpec,
    metric: Metric,
    dim: usize,
    architecture: Arch,
    batch_size: usize,
}

impl Embedder {
    /// The pretrained 128-d network from face-api's weights (Euclidean, threshold 0.6).
    pub fn pretrained(models: &ModelDir, device: tch::Device) -> Result<Self> {
        let weights = models.load(facepipe_pipeline::models::FACE_RECOGNITION)?;
        let vs = nn::VarStore::new(device);
        let net = FaceResNet::pretrained(&vs, &weights)?;
        Ok(Embedder {
            net: Box::new(net),
            _vs: vs,
            device,
            input: InputSpec::pretrained_resnet(),
            metric: PRETRAINED_METRIC,
            dim: resnet::PRETRAINED_DIM as usize,
            architecture: Arch::Resnet128,
            batch_size: DEFAULT_BATCH,
        })
    }

    /// A trained model artifact folder (`model.safetensors` + `model.json`).
    pub fn from_artifact(dir: &Path, device: tch::Device) -> Result<Self> {
        let json = artifact::load_json(dir)?;
        let vs = nn::VarStore::new(device);
        let net =
            json.architecture
                .build_for(&vs.root(), json.embedding_dim as i64, json.input.size)?;
        artifact::load_weights(dir, &vs)?;
        Ok(Embedder {
            net,
            _vs: vs,
            device,
            metric: json.metric(),
            dim: json.embedding_dim,
            input: json.input,
            architecture: json.architecture,
            batch_size: DEFAULT_BATCH,
        })
    }

    /// Wrap a network built elsewhere (e.g. by the trainer, to evaluate mid-run). `vs` must
    /// hold the network's variables.
    pub fn from_parts(
        net: Box<dyn nn::ModuleT>,
        vs: nn::VarStore,
        architecture: Arch,
        input: InputSpec,
        metric: Metric,
        dim: usize,
    ) -> Self {
        let device = vs.device();
        Embedder {
            net,
            _vs: vs,
            device,
            input,
            metric,
            dim,
            architecture,
            batch_size: DEFAULT_BATCH,
        }
    }

    /// Crops per forward pass (default 32).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Embeddings of aligned crops (as produced by `facepipe_pipeline::align`), batched.
    /// Cosine models return L2-normalised vectors.
    pub fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(self.batch_size) {
            let xs = preprocess::batch_tensor(chunk, &self.input, self.device)?;
            let emb = tch::no_grad(|| {
                let e = self.net.forward_t(&xs, false);
                match self.metric.distance {
                    DistanceKind::Cosine => {
                        let norm = e
                            .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                            .clamp_min(1e-12);
                        e / norm
                    }
                    DistanceKind::Euclidean => e,
                }
            });
            let emb = emb
                .to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous();
            let flat = Vec::<f32>::try_from(emb.flatten(0, -1)).map_err(Error::from)?;
            if flat.len() != chunk.len() * self.dim {
                return Err(Error::OutputShape {
                    values: flat.len(),
                    crops: chunk.len(),
                    dim: self.dim,
                });
            }
            out.extend(flat.chunks_exact(self.dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Input size and normalisation the network expects.
    pub fn input_spec(&self) -> &InputSpec {
        &self.input
    }

    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// The network's architecture (as in `model.json`).
    pub fn architecture(&self) -> Arch {
        self.architecture
    }
}
