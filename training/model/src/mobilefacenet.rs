//! MobileFaceNet (Chen et al., 2018): a from-scratch face-embedding backbone at 112×112,
//! ~1 M parameters and ~0.22 GFLOPs, cheap enough to train on a CPU for small sets.
//!
//! Layout: 3×3/2 conv 64 → 3×3 depthwise 64 → inverted-residual bottlenecks
//! (t, c, n, s) = (2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)
//! → 1×1 conv 512 → 7×7 global depthwise conv (linear) → 1×1 conv to the embedding → BN.
//! Every conv is followed by batch norm; non-linear ones by PReLU.

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Input side in pixels.
pub const INPUT_SIZE: u32 = 112;

/// conv → BN → optional PReLU.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    prelu: Option<Tensor>,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        vs: &nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        groups: i64,
        act: bool,
    ) -> Self {
        let conv = nn::conv2d(
            vs / "conv",
            cin,
            cout,
            k,
            nn::ConvConfig {
                stride,
                padding: if k == 7 { 0 } else { k / 2 },
                groups,
                bias: false,
                ..Default::default()
            },
        );
        let bn = nn::batch_norm2d(vs / "bn", cout, Default::default());
        let prelu = act.then(|| vs.var("prelu", &[cout], nn::Init::Const(0.25)));
        Self { conv, bn, prelu }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = xs.apply(&self.conv).apply_t(&self.bn, train);
        match &self.prelu {
            Some(w) => x.prelu(w),
            None => x,
        }
    }
}

/// Inverted residual: 1×1 expand → 3×3 depthwise (stride) → 1×1 linear project (+ skip).
#[derive(Debug)]
struct Bottleneck {
    expand: ConvBn,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl Bottleneck {
    fn new(vs: &nn::Path, cin: i64, cout: i64, stride: i64, t: i64) -> Self {
        let hidden = cin * t;
        Self {
            expand: ConvBn::new(&(vs / "expand"), cin, hidden, 1, 1, 1, true),
            depthwise: ConvBn::new(&(vs / "dw"), hidden, hidden, 3, stride, hidden, true),
            project: ConvBn::new(&(vs / "project"), hidden, cout, 1, 1, 1, false),
            residual: stride == 1 && cin == cout,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = self.expand.forward_t(xs, train);
        let y = self.depthwise.forward_t(&y, train);
        let y = self.project.forward_t(&y, train);
        if self.residual {
            y + xs
        } else {
            y
        }
    }
}

/// The network; variables live under the given path (`stem.conv.weight`, `stages.3.dw.bn…`).
#[derive(Debug)]
pub struct MobileFaceNet {
    stem: ConvBn,
    stem_dw: ConvBn,
    blocks: Vec<Bottleneck>,
    conv_512: ConvBn,
    gdc: ConvBn,
    embed: nn::Conv2D,
    embed_bn: nn::BatchNorm,
    dim: i64,
}

/// (expansion t, out channels c, repeats n, first stride s).
const SETTINGS: [(i64, i64, usize, i64); 5] = [
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
];

impl MobileFaceNet {
    /// A randomly initialised network with a `dim`-wide embedding (128 or 512).
    pub fn new(vs: &nn::Path, dim: i64) -> Self {
        let stem = ConvBn::new(&(vs / "stem"), 3, 64, 3, 2, 1, true);
        let stem_dw = ConvBn::new(&(vs / "stem_dw"), 64, 64, 3, 1, 64, true);
        let mut blocks = Vec::new();
        let mut cin = 64;
        let stages = vs / "stages";
        for (t, c, n, s) in SETTINGS {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(Bottleneck::new(
                    &(&stages / blocks.len()),
                    cin,
                    c,
                    stride,
                    t,
                ));
                cin = c;
            }
        }
        let conv_512 = ConvBn::new(&(vs / "conv_512"), cin, 512, 1, 1, 1, true);
        let gdc = ConvBn::new(&(vs / "gdc"), 512, 512, 7, 1, 512, false);
        let embed = nn::conv2d(
            vs / "embed",
            512,
            dim,
            1,
            nn::ConvConfig {
                bias: false,
                ..Default::default()
            },
        );
        let embed_bn = nn::batch_norm1d(vs / "embed_bn", dim, Default::default());
        Self {
            stem,
            stem_dw,
            blocks,
            conv_512,
            gdc,
            embed,
            embed_bn,
            dim,
        }
    }

    /// Embedding width.
    pub fn dim(&self) -> i64 {
        self.dim
    }
}

impl ModuleT for MobileFaceNet {
    /// N×3×112×112 normalised input → N×dim embedding (not L2-normalised).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.stem.forward_t(xs, train);
        x = self.stem_dw.forward_t(&x, train);
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        x = self.conv_512.forward_t(&x, train);
        x = self.gdc.forward_t(&x, train);
        let x = x.apply(&self.embed).flatten(1, -1);
        self.embed_bn.forward_t(&x, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_count() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = MobileFaceNet::new(&vs.root(), 128);
        let x = Tensor::randn([2, 3, 112, 112], (tch::Kind::Float, tch::Device::Cpu));
        let y = net.forward_t(&x, true);
        assert_eq!(y.size(), [2, 128]);
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // The paper's MobileFaceNet has just under one million parameters.
        assert!((900_000..1_100_000).contains(&params), "{params}");
        let y = tch::no_grad(|| net.forward_t(&x, false));
        assert_eq!(y.size(), [2, 128]);
    }
}
