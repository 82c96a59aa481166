//! The pretrained 128-d face ResNet (face-api's port of dlib's metric-learning ResNet) in tch.
//!
//! Layout (input 150×150, NCHW inside tch): 7×7/2 conv (valid) → 3×3/2 max-pool (valid) →
//! 3 residual blocks at 32 channels → down to 64 + 3 blocks → down to 128 + 2 blocks → down to
//! 256 + 2 blocks → a last down block → global mean → 256×128 linear, no bias.
//! Every conv is followed by a per-channel scale layer in the weights; we fold it into the
//! conv (`w·s`, `b·s + β`), which is exact up to f32 rounding and gives one trainable conv.
//! A "down" block's main path is a 3×3/2 valid conv; its shortcut is a 2×2 average pool whose
//! missing channels are zeros, and when the shapes disagree the main path is zero-padded at
//! the bottom/right, as the reference does.

use facepipe_pipeline::models::TfjsWeights;
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use crate::error::{Error, Result};

/// Input side in pixels.
pub const INPUT_SIZE: u32 = 150;
/// Width of the pooled features feeding the embedding layer.
pub const FEATURES: i64 = 256;
/// Embedding width of the pretrained weights.
pub const PRETRAINED_DIM: i64 = 128;

/// What each block is called in the weights, and its kind.
const BLOCKS: [(&str, bool); 14] = [
    ("conv32_1", false),
    ("conv32_2", false),
    ("conv32_3", false),
    ("conv64_down", true),
    ("conv64_1", false),
    ("conv64_2", false),
    ("conv64_3", false),
    ("conv128_down", true),
    ("conv128_1", false),
    ("conv128_2", false),
    ("conv256_down", true),
    ("conv256_1", false),
    ("conv256_2", false),
    ("conv256_down_out", true),
];

fn channels(name: &str) -> (i64, i64) {
    // (in, out) channels of a block, from its name.
    match name {
        "conv64_down" => (32, 64),
        "conv128_down" => (64, 128),
        "conv256_down" => (128, 256),
        "conv256_down_out" => (256, 256),
        n if n.starts_with("conv32") => (32, 32),
        n if n.starts_with("conv64") => (64, 64),
        n if n.starts_with("conv128") => (128, 128),
        _ => (256, 256),
    }
}

#[derive(Debug)]
struct Block {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    down: bool,
}

impl Block {
    fn new(vs: &nn::Path, cin: i64, cout: i64, down: bool) -> Self {
        let c1 = nn::ConvConfig {
            stride: if down { 2 } else { 1 },
            padding: if down { 0 } else { 1 },
            ..Default::default()
        };
        let c2 = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Block {
            conv1: nn::conv2d(vs / "conv1", cin, cout, 3, c1),
            conv2: nn::conv2d(vs / "conv2", cout, cout, 3, c2),
            down,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let main = self.conv2.forward(&self.conv1.forward(x).relu());
        if !self.down {
            return (main + x).relu();
        }
        let mut pooled = x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
        let mut main = main;
        let (ph, mh) = (pooled.size()[2], main.size()[2]);
        if ph != mh {
            // 3×3/2 valid loses one row/column against the 2×2 pool on even sides.
            main = main.constant_pad_nd([0, pooled.size()[3] - main.size()[3], 0, ph - mh]);
        }
        let (pc, mc) = (pooled.size()[1], main.size()[1]);
        if pc != mc {
            pooled = Tensor::cat(&[&pooled, &pooled.zeros_like()], 1);
        }
        (pooled + main).relu()
    }
}

/// The network. Variables live under the given path as `conv32_down.weight`,
/// `conv64_1.conv1.weight`, …, `fc.weight`.
#[derive(Debug)]
pub struct FaceResNet {
    stem: nn::Conv2D,
    blocks: Vec<Block>,
    fc: nn::Linear,
}

impl FaceResNet {
    /// Fresh (randomly initialised) network with an `embedding_dim`-wide output.
    pub fn new(vs: &nn::Path, embedding_dim: i64) -> Self {
        let stem = nn::conv2d(
            vs / "conv32_down",
            3,
            32,
            7,
            nn::ConvConfig {
                stride: 2,
                ..Default::default()
            },
        );
        let blocks = BLOCKS
            .iter()
            .map(|&(name, down)| {
                let (cin, cout) = channels(name);
                Block::new(&(vs / name), cin, cout, down)
            })
            .collect();
        let fc = nn::linear(
            vs / "fc",
            FEATURES,
            embedding_dim,
            nn::LinearConfig {
                bias: false,
                ..Default::default()
            },
        );
        FaceResNet { stem, blocks, fc }
    }

    /// The 256-d pooled features before the embedding layer (for new heads).
    pub fn features(&self, xs: &Tensor) -> Tensor {
        let mut x = self
            .stem
            .forward(xs)
            .relu()
            .max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        for b in &self.blocks {
            x = b.forward(&x);
        }
        x.mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float)
    }

    /// The network with face-api's pretrained weights copied into `vs` (which must be the
    /// var store `path` belongs to).
    pub fn pretrained(vs: &nn::VarStore, weights: &TfjsWeights) -> Result<Self> {
        let net = FaceResNet::new(&vs.root(), PRETRAINED_DIM);
        load_tfjs(vs, weights)?;
        Ok(net)
    }
}

impl ModuleT for FaceResNet {
    // No batch norm or dropout: training and inference are the same pass.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.fc.forward(&self.features(xs))
    }
}

fn tensor(weights: &TfjsWeights, name: &str) -> Result<(Vec<f32>, Vec<i64>)> {
    let a = weights.get(name)?;
    let shape = a.shape().iter().map(|&d| d as i64).collect();
    Ok((a.iter().copied().collect(), shape))
}

/// A conv + scale pair of the weights, folded: (OIHW weight, bias).
fn folded_conv(weights: &TfjsWeights, prefix: &str) -> Result<(Tensor, Tensor)> {
    let (f, fshape) = tensor(weights, &format!("{prefix}conv/filters"))?;
    let (b, _) = tensor(weights, &format!("{prefix}conv/bias"))?;
    let (s, _) = tensor(weights, &format!("{prefix}scale/weights"))?;
    let (sb, _) = tensor(weights, &format!("{prefix}scale/biases"))?;
    let cout = *fshape.last().unwrap_or(&0) as usize;
    if fshape.len() != 4 || b.len() != cout || s.len() != cout || sb.len() != cout {
        return Err(Error::WeightsMismatch(format!(
            "{prefix}: filter shape {fshape:?} does not match bias/scale of {}",
            b.len()
        )));
    }
    // HWIO with O fastest: scale each output channel.
    let scaled: Vec<f32> = f.iter().enumerate().map(|(i, v)| v * s[i % cout]).collect();
    let bias: Vec<f32> = (0..cout).map(|o| b[o] * s[o] + sb[o]).collect();
    let w = Tensor::from_slice(&scaled)
        .view(fshape.as_slice())
        .permute([3, 2, 0, 1])
        .contiguous();
    Ok((w, Tensor::from_slice(&bias)))
}

/// Every variable of the pretrained network by its var-store name.
fn pretrained_tensors(weights: &TfjsWeights) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    let (w, b) = folded_conv(weights, "conv32_down/")?;
    out.push(("conv32_down.weight".to_string(), w));
    out.push(("conv32_down.bias".to_string(), b));
    for (name, _) in BLOCKS {
        for conv in ["conv1", "conv2"] {
            let (w, b) = folded_conv(weights, &format!("{name}/{conv}/"))?;
            out.push((format!("{name}.{conv}.weight"), w));
            out.push((format!("{name}.{conv}.bias"), b));
        }
    }
    let (fc, shape) = tensor(weights, "fc")?;
    let fc = Tensor::from_slice(&fc)
        .view(shape.as_slice())
        .transpose(0, 1)
        .contiguous();
    out.push(("fc.weight".to_string(), fc));
    Ok(out)
}

/// Copy face-api's weights into a var store holding a [`FaceResNet`] with a 128-d output.
pub fn load_tfjs(vs: &nn::VarStore, weights: &TfjsWeights) -> Result<()> {
    let vars = vs.variables();
    let device = vs.device();
    tch::no_grad(|| -> Result<()> {
        for (name, value) in pretrained_tensors(weights)? {
            let mut var = vars
                .get(&name)
                .ok_or_else(|| {
                    Error::WeightsMismatch(format!("no variable {name} in the var store"))
                })?
                .shallow_clone();
            if var.size() != value.size() {
                return Err(Error::WeightsMismatch(format!(
                    "{name}: var store has {:?}, weights have {:?}",
                    var.size(),
                    value.size()
                )));
            }
            var.f_copy_(&value.to_device(device))?;
        }
        Ok(())
    })
}
