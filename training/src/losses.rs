//! Classification heads that turn identity labels into a training signal for an embedding.
//!
//! - [`ArcFace`]: L2-normalised class centres, logits `s·cos θ` with an additive angular margin
//!   `m` on the target class (`s·cos(θ + m)`), with the usual care where `θ + m` would pass π.
//! - [`CosFace`]: the additive cosine margin `s·(cos θ − m)`.
//! - [`Softmax`]: a plain linear classifier with cross-entropy, the baseline.
//!
//! All heads return the loss and the top-1 accuracy of the batch (on the logits without
//! margin) so the training loop can log both.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Which head/loss the trainer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Arcface,
    Cosface,
    Softmax,
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "arcface" => Ok(Self::Arcface),
            "cosface" => Ok(Self::Cosface),
            "softmax" => Ok(Self::Softmax),
            other => Err(format!(
                "unknown loss `{other}` (expected arcface, cosface or softmax)"
            )),
        }
    }
}

/// Loss and batch accuracy from one forward pass of a head.
pub struct HeadOutput {
    pub loss: Tensor,
    /// Fraction of the batch whose arg-max class is the label (a 0-d tensor, no grad).
    pub accuracy: Tensor,
}

/// A classification head over embeddings.
pub trait Head: Send {
    /// `embeddings`: N×D (any scale), `labels`: N (int64, class indices).
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> HeadOutput;

    /// The class-centre matrix (C×D) of margin heads, for initialising it from data.
    fn centres(&self) -> Option<&Tensor> {
        None
    }
}

/// Additive angular margin (ArcFace).
#[derive(Debug)]
pub struct ArcFace {
    pub centres: Tensor,
    pub scale: f64,
    pub margin: f64,
    /// Apply the margin only where cos θ > 0 (the "easy margin" variant).
    pub easy_margin: bool,
}

impl ArcFace {
    pub fn new(vs: nn::Path, dim: i64, classes: i64, scale: f64, margin: f64) -> Self {
        let centres = vs.var(
            "centres",
            &[classes, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
        );
        Self {
            centres,
            scale,
            margin,
            easy_margin: false,
        }
    }

    /// Cosine of every embedding with every class centre (N×C).
    pub fn cosines(&self, embeddings: &Tensor) -> Tensor {
        let x = normalise(embeddings);
        let w = normalise(&self.centres);
        x.matmul(&w.tr()).clamp(-1.0, 1.0)
    }

    /// Logits with the margin applied to the target class: `s·cos(θ_y + m)` there, `s·cos θ_j`
    /// elsewhere. Where `θ + m > π` the angle would wrap and make the target *easier*; there the
    /// target logit falls back to the monotonic `cos θ − m·sin m` (so it keeps decreasing in θ).
    pub fn margin_logits(&self, cos: &Tensor, labels: &Tensor) -> Tensor {
        let (cos_m, sin_m) = (self.margin.cos(), self.margin.sin());
        let th = (std::f64::consts::PI - self.margin).cos();
        let mm = (std::f64::consts::PI - self.margin).sin() * self.margin;
        let sin = (cos * cos).neg().g_add_scalar(1.0).clamp(1e-9, 1.0).sqrt();
        let phi = cos * cos_m - sin * sin_m;
        let phi = if self.easy_margin {
            phi.where_self(&cos.gt(0.0), cos)
        } else {
            phi.where_self(&cos.gt(th), &(cos - mm))
        };
        let one_hot = one_hot(labels, cos.size()[1], cos.kind());
        (&one_hot * phi + (1.0 - &one_hot) * cos) * self.scale
    }
}

impl Head for ArcFace {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> HeadOutput {
        let cos = self.cosines(&embeddings.to_kind(Kind::Float));
        let logits = self.margin_logits(&cos, labels);
        HeadOutput {
            loss: logits.cross_entropy_for_logits(labels),
            accuracy: accuracy(&cos, labels),
        }
    }

    fn centres(&self) -> Option<&Tensor> {
        Some(&self.centres)
    }
}

/// Additive cosine margin (CosFace / AM-softmax).
#[derive(Debug)]
pub struct CosFace {
    pub centres: Tensor,
    pub scale: f64,
    pub margin: f64,
}

impl CosFace {
    pub fn new(vs: nn::Path, dim: i64, classes: i64, scale: f64, margin: f64) -> Self {
        let centres = vs.var(
            "centres",
            &[classes, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
        );
        Self {
            centres,
            scale,
            margin,
        }
    }
}

impl Head for CosFace {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> HeadOutput {
        let x = normalise(&embeddings.to_kind(Kind::Float));
        let cos = x.matmul(&normalise(&self.centres).tr());
        let one_hot = one_hot(labels, cos.size()[1], cos.kind());
        let logits = (&cos - one_hot * self.margin) * self.scale;
        HeadOutput {
            loss: logits.cross_entropy_for_logits(labels),
            accuracy: accuracy(&cos, labels),
        }
    }

    fn centres(&self) -> Option<&Tensor> {
        Some(&self.centres)
    }
}

/// Plain softmax: a linear classifier on the raw embedding.
#[derive(Debug)]
pub struct Softmax {
    pub linear: nn::Linear,
}

impl Softmax {
    pub fn new(vs: nn::Path, dim: i64, classes: i64) -> Self {
        Self {
            linear: nn::linear(vs / "fc", dim, classes, Default::default()),
        }
    }
}

impl Head for Softmax {
    fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> HeadOutput {
        let logits = embeddings.to_kind(Kind::Float).apply(&self.linear);
        HeadOutput {
            loss: logits.cross_entropy_for_logits(labels),
            accuracy: accuracy(&logits, labels),
        }
    }
}

/// Build the head `kind` under `vs`.
pub fn build_head(
    kind: LossKind,
    vs: nn::Path,
    dim: i64,
    classes: i64,
    scale: f64,
    margin: f64,
) -> Box<dyn Head> {
    match kind {
        LossKind::Arcface => Box::new(ArcFace::new(vs, dim, classes, scale, margin)),
        LossKind::Cosface => Box::new(CosFace::new(vs, dim, classes, scale, margin)),
        LossKind::Softmax => Box::new(Softmax::new(vs, dim, classes)),
    }
}

fn normalise(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

fn one_hot(labels: &Tensor, classes: i64, kind: Kind) -> Tensor {
    labels.one_hot(classes).to_kind(kind)
}

fn accuracy(logits: &Tensor, labels: &Tensor) -> Tensor {
    tch::no_grad(|| {
        logits
            .argmax(-1, false)
            .eq_tensor(labels)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(margin: f64, scale: f64) -> (nn::VarStore, ArcFace) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let h = ArcFace::new(vs.root(), 4, 3, scale, margin);
        (vs, h)
    }

    #[test]
    fn target_logit_is_scaled_cosine_of_angle_plus_margin() {
        let (_vs, h) = head(0.5, 64.0);
        let cos = Tensor::from_slice(&[0.8f32, 0.1, -0.3, 0.2, 0.6, 0.4]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 1]);
        let logits = h.margin_logits(&cos, &labels);
        let got: Vec<f32> = Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap();
        let target0 = 64.0 * (0.8f64.acos() + 0.5).cos();
        let target1 = 64.0 * (0.6f64.acos() + 0.5).cos();
        assert!(
            (got[0] as f64 - target0).abs() < 1e-3,
            "{} vs {target0}",
            got[0]
        );
        assert!(
            (got[4] as f64 - target1).abs() < 1e-3,
            "{} vs {target1}",
            got[4]
        );
        // Non-target classes keep s·cos θ.
        assert!((got[1] - 6.4).abs() < 1e-4);
        assert!((got[2] + 19.2).abs() < 1e-4);
        assert!((got[3] - 12.8).abs() < 1e-4);
    }

    #[test]
    fn past_pi_the_target_logit_keeps_falling() {
        // θ close to π: θ + m > π, cos(θ + m) would rise again; the fallback must not.
        let (_vs, h) = head(0.5, 1.0);
        let cos = Tensor::from_slice(&[-0.95f32, -0.99]).view([2, 1]);
        let labels = Tensor::from_slice(&[0i64, 0]);
        let got: Vec<f32> =
            Vec::<f32>::try_from(h.margin_logits(&cos, &labels).flatten(0, -1)).unwrap();
        assert!(got[1] < got[0]);
        let mm = (std::f64::consts::PI - 0.5).sin() * 0.5;
        assert!((got[0] as f64 - (-0.95 - mm)).abs() < 1e-5);
    }

    #[test]
    fn margin_raises_the_loss_and_gradients_flow() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let x = Tensor::randn([8, 4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let labels = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        let plain = ArcFace::new(vs.root() / "a", 4, 3, 16.0, 0.0);
        let with_margin = ArcFace {
            centres: plain.centres.shallow_clone(),
            scale: 16.0,
            margin: 0.5,
            easy_margin: false,
        };
        let l0 = plain.forward(&x, &labels).loss.double_value(&[]);
        let out = with_margin.forward(&x, &labels);
        assert!(out.loss.double_value(&[]) > l0);
        out.loss.backward();
        assert!(x.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
