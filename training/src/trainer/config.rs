//! The training run's settings: everything `facepipe train` accepts, serialised into the
//! checkpoint (so resuming can refuse a different run) and into `model.json`.

use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::SplitConfig;
use crate::error::{Error, Result};
use crate::losses::LossKind;

pub use facepipe_model::Arch;

/// Where the weights start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    Pretrained,
    Scratch,
}

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretrained" => Ok(Self::Pretrained),
            "scratch" => Ok(Self::Scratch),
            other => Err(format!(
                "unknown init `{other}` (expected pretrained or scratch)"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adamw,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adamw" => Ok(Self::Adamw),
            other => Err(format!(
                "unknown optimizer `{other}` (expected sgd or adamw)"
            )),
        }
    }
}

/// Arithmetic of the forward and backward passes on CUDA (weights and optimiser state stay
/// f32 in every case; CPU runs are always f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 autocast: f32's exponent range, so no loss scaling is needed.
    #[default]
    Bf16,
    /// fp16 autocast with a dynamic loss scale (for GPUs without bf16).
    Fp16,
    /// Full f32.
    F32,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "fp16" | "f16" | "half" => Ok(Self::Fp16),
            "f32" | "fp32" | "float" => Ok(Self::F32),
            other => Err(format!(
                "unknown precision `{other}` (expected bf16, fp16 or f32)"
            )),
        }
    }
}

impl Precision {
    /// The autocast dtype on `device`, or `None` for plain f32 (always on CPU).
    pub fn autocast_kind(self, device: tch::Device) -> Option<tch::Kind> {
        match self {
            _ if !device.is_cuda() => None,
            Precision::Bf16 => Some(tch::Kind::BFloat16),
            Precision::Fp16 => Some(tch::Kind::Half),
            Precision::F32 => None,
        }
    }

    /// What a run on `device` actually computes in (for logs and benchmark reports).
    pub fn effective(self, device: tch::Device) -> Precision {
        if device.is_cuda() {
            self
        } else {
            Precision::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
            Precision::F32 => "f32",
        }
    }
}

/// Every setting of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub arch: Arch,
    pub init: Init,
    pub loss: LossKind,
    /// Embedding width (the pretrained ResNet is always 128).
    pub embedding_dim: i64,
    /// ArcFace/CosFace scale `s`.
    pub scale: f64,
    /// ArcFace/CosFace margin `m` (radians for ArcFace).
    pub margin: f64,
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate of the head (and of a from-scratch backbone).
    pub lr: f64,
    /// A pretrained backbone learns at `lr × backbone_lr_mult`.
    pub backbone_lr_mult: f64,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Linear warm-up length before the cosine decay, in epochs (fractions allowed).
    pub warmup_epochs: f64,
    pub seed: u64,
    pub split: SplitConfig,
    /// Stop after this many epochs without a better validation score (0: never).
    pub patience: usize,
    /// Freeze the first N stages of the backbone (stem counts as one).
    pub freeze_stages: usize,
    /// Identity-balanced batches with this many images per person.
    pub balanced: Option<usize>,
    pub augment: AugmentConfig,
    /// False-accept rate the shipped threshold is calibrated at (on validation people).
    pub target_far: f64,
    /// Cap on optimiser steps per epoch (quick runs and benchmarks).
    pub max_steps_per_epoch: Option<usize>,
    /// Mixed precision on CUDA: bf16 (default), fp16 with loss scaling, or f32. (Checkpoints
    /// from before this setting existed read as bf16.)
    #[serde(default)]
    pub precision: Precision,
    /// Start a margin head's class centres at each training person's mean embedding from the
    /// initial backbone ("weight imprinting"; useful with a pretrained backbone).
    #[serde(default)]
    pub imprint: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet128,
            init: Init::Pretrained,
            loss: LossKind::Arcface,
            embedding_dim: 128,
            scale: 30.0,
            margin: 0.3,
            epochs: 10,
            batch: 64,
            lr: 0.01,
            backbone_lr_mult: 0.1,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 1.0,
            seed: 0,
            split: SplitConfig::default(),
            patience: 5,
            freeze_stages: 0,
            balanced: None,
            augment: AugmentConfig::default(),
            target_far: 1e-3,
            max_steps_per_epoch: None,
            precision: Precision::Bf16,
            imprint: true,
        }
    }
}

impl TrainConfig {
    /// Refuse combinations that cannot work, naming the setting to change
    /// ([`Error::BadSetting`]).
    pub fn check(&self) -> Result<()> {
        let bad = |setting, reason: String| Err(Error::bad_setting(setting, reason));
        // Every number is also written into state.json and model.json, which hold no ±∞/NaN.
        for (setting, v) in [
            ("scale", self.scale),
            ("margin", self.margin),
            ("lr", self.lr),
            ("backbone_lr_mult", self.backbone_lr_mult),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("warmup_epochs", self.warmup_epochs),
            ("target_far", self.target_far),
            ("split.val", self.split.val),
            ("split.test", self.split.test),
        ] {
            if !v.is_finite() {
                return bad(setting, format!("must be a finite number, not {v}"));
            }
        }
        if !self.arch.has_pretrained() && self.init == Init::Pretrained {
            return bad(
                "init",
                format!(
                    "must be scratch: there are no pretrained {} weights",
                    self.arch.name()
                ),
            );
        }
        if self.arch == Arch::Resnet128
            && self.init == Init::Pretrained
            && self.embedding_dim != 128
        {
            return bad(
                "embedding_dim",
                format!(
                    "must be 128: the pretrained ResNet embeds in 128 dimensions, not {}",
                    self.embedding_dim
                ),
            );
        }
        if self.epochs == 0 {
            return bad("epochs", "must be ≥ 1".into());
        }
        if self.batch < 2 {
            return bad("batch", format!("must be ≥ 2, not {}", self.batch));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("must be a positive number, not {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.target_far) || self.target_far == 0.0 {
            return bad(
                "target_far",
                format!("must be in (0, 1), not {}", self.target_far),
            );
        }
        if !(0.0..std::f64::consts::FRAC_PI_2).contains(&self.margin) {
            return bad(
                "margin",
                format!("must be in [0, π/2), not {}", self.margin),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = TrainConfig::default();
        c.check().unwrap();
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let no_weights = TrainConfig {
            arch: Arch::Mobilefacenet,
            ..TrainConfig::default()
        }
        .check()
        .unwrap_err();
        assert!(
            matches!(
                no_weights,
                Error::BadSetting {
                    setting: "init",
                    ..
                }
            ),
            "{no_weights:?}"
        );
        let infinite = TrainConfig {
            scale: f64::INFINITY,
            ..TrainConfig::default()
        }
        .check()
        .unwrap_err();
        match &infinite {
            Error::BadSetting { setting, reason } => {
                assert_eq!(*setting, "scale");
                assert_eq!(reason, "must be a finite number, not inf");
            }
            other => panic!("{other:?}"),
        }
        // The library names the setting, never a command-line flag.
        assert_eq!(
            infinite.to_string(),
            "scale must be a finite number, not inf"
        );
        let no_epochs = TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        }
        .check()
        .unwrap_err();
        assert!(
            matches!(
                no_epochs,
                Error::BadSetting {
                    setting: "epochs",
                    ..
                }
            ),
            "{no_epochs:?}"
        );
    }

    #[test]
    fn precision_parses_and_is_f32_on_cpu() {
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("fp16".parse::<Precision>(), Ok(Precision::Fp16));
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert!("int8".parse::<Precision>().is_err());
        let cuda = tch::Device::Cuda(0);
        assert_eq!(
            Precision::Bf16.autocast_kind(cuda),
            Some(tch::Kind::BFloat16)
        );
        assert_eq!(Precision::Fp16.autocast_kind(cuda), Some(tch::Kind::Half));
        assert_eq!(Precision::F32.autocast_kind(cuda), None);
        assert_eq!(Precision::Bf16.autocast_kind(tch::Device::Cpu), None);
        assert_eq!(Precision::Fp16.effective(tch::Device::Cpu), Precision::F32);
    }
}
