//! The embedding networks facepipe knows: one [`Arch`] per network, owning its name (as the
//! CLI takes it and `model.json` records it), its input, its builder and its stages.
//! Adding a backbone is one variant here and one module beside this one.

use serde::{Deserialize, Serialize};
use tch::nn;

use crate::error::{Error, Result};
use crate::preprocess::InputSpec;
use crate::{mobilefacenet, resnet};

/// An embedding network: an `N × 3 × S × S` normalised batch in, `N × D` embeddings out
/// (not normalised: the [`crate::Embedder`] L2-normalises when the metric is cosine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// The 128-d ResNet of face-api (a port of dlib's), 150 px; pretrained weights exist.
    // Artifacts written before the name was unified say `faceapi_resnet`.
    #[serde(alias = "faceapi_resnet")]
    Resnet128,
    /// MobileFaceNet, 112 px, trained from scratch.
    Mobilefacenet,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Resnet128, Arch::Mobilefacenet];

    /// The name the CLI takes and `model.json` records.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet128 => "resnet128",
            Arch::Mobilefacenet => "mobilefacenet",
        }
    }

    /// Every architecture's name, for messages.
    pub fn names() -> Vec<&'static str> {
        Arch::ALL.iter().map(|a| a.name()).collect()
    }

    /// Input geometry and normalisation.
    pub fn input(self) -> InputSpec {
        match self {
            Arch::Resnet128 => InputSpec::pretrained_resnet(),
            Arch::Mobilefacenet => InputSpec::mobilefacenet(),
        }
    }

    /// Side of the square input in pixels.
    pub fn input_size(self) -> u32 {
        self.input().size
    }

    /// Whether pretrained weights exist (only the ResNet's, from face-api).
    pub fn has_pretrained(self) -> bool {
        matches!(self, Arch::Resnet128)
    }

    /// A fresh (randomly initialised) network with `embedding_dim` outputs, its variables
    /// created under `vs`.
    pub fn build(self, vs: &nn::Path, embedding_dim: i64) -> Box<dyn nn::ModuleT> {
        match self {
            Arch::Resnet128 => Box::new(resnet::FaceResNet::new(vs, embedding_dim)),
            Arch::Mobilefacenet => Box::new(mobilefacenet::MobileFaceNet::new(vs, embedding_dim)),
        }
    }

    /// [`Arch::build`] for inputs of `input_size` px, which must be the network's own.
    pub fn build_for(
        self,
        vs: &nn::Path,
        embedding_dim: i64,
        input_size: u32,
    ) -> Result<Box<dyn nn::ModuleT>> {
        if input_size != self.input_size() {
            return Err(Error::InputSize {
                arch: self,
                expected: self.input_size(),
                got: input_size,
            });
        }
        Ok(self.build(vs, embedding_dim))
    }

    /// Var-store name prefixes of the network's stages, input side first (freezing the
    /// first `k` stages keeps the low-level features of a pretrained start).
    pub fn stage_prefixes(self) -> Vec<Vec<String>> {
        match self {
            Arch::Resnet128 => vec![
                vec!["conv32_down.".into()],
                vec!["conv32_".into()],
                vec!["conv64_".into()],
                vec!["conv128_".into()],
                vec!["conv256_".into()],
            ],
            Arch::Mobilefacenet => vec![
                vec!["stem.".into(), "stem_dw.".into()],
                (0..5).map(|i| format!("stages.{i}.")).collect(),
                (5..12).map(|i| format!("stages.{i}.")).collect(),
                (12..15).map(|i| format!("stages.{i}.")).collect(),
            ],
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "resnet128" | "resnet" | "faceapi_resnet" => Ok(Arch::Resnet128),
            "mobilefacenet" => Ok(Arch::Mobilefacenet),
            _ => Err(Error::UnknownArch(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_print_and_serialise_as_one() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
            assert_eq!(arch.to_string(), arch.name());
            let json = serde_json::to_string(&arch).unwrap();
            assert_eq!(json, format!("\"{}\"", arch.name()));
            assert_eq!(arch.input().size, arch.input_size());
        }
        // The name older artifacts recorded still reads.
        let old: Arch = serde_json::from_str("\"faceapi_resnet\"").unwrap();
        assert_eq!(old, Arch::Resnet128);
        let e = "vgg".parse::<Arch>().unwrap_err().to_string();
        assert!(
            e.contains("vgg") && e.contains("resnet128, mobilefacenet"),
            "{e}"
        );
    }

    #[test]
    fn build_for_refuses_a_foreign_input_size() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let e = Arch::Mobilefacenet
            .build_for(&vs.root(), 64, 150)
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                Error::InputSize {
                    expected: 112,
                    got: 150,
                    ..
                }
            ),
            "{e}"
        );
        assert!(Arch::Resnet128.build_for(&vs.root(), 64, 150).is_ok());
    }
}
