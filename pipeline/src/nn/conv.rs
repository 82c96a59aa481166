//! The convolutions: dense k×k (im2col + one GEMM, 1×1 as a plain GEMM), depthwise over
//! channels-last memory, and the separable pair of tfjs; each loaded from tfjs weights with
//! its shapes checked.

use super::gemm::gemm_new;
use super::simd;
use super::tensor::{out_and_pad, Activation, Padding, Tensor};
use crate::error::{Error, Result};
use crate::models::TfjsWeights;

/// A dense convolution `kh × kw × ci → co` with bias.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub kh: usize,
    pub kw: usize,
    pub ci: usize,
    pub co: usize,
    pub stride: usize,
    pub padding: Padding,
    /// `[kh * kw * ci, co]` row-major (the tfjs HWIO layout flattened).
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

fn bad_shape(name: &str, what: String) -> Error {
    Error::BadModel {
        path: name.into(),
        reason: what,
    }
}

impl Conv2d {
    /// From a tfjs `[kh, kw, ci, co]` filter and a `[co]` bias (or zeros).
    pub fn from_weights(
        w: &TfjsWeights,
        filter: &str,
        bias: Option<&str>,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        let f = w.get(filter)?;
        let shape = f.shape();
        if shape.len() != 4 {
            return Err(bad_shape(
                filter,
                format!("expected 4-d filter, got {shape:?}"),
            ));
        }
        let (kh, kw, ci, co) = (shape[0], shape[1], shape[2], shape[3]);
        let weights: Vec<f32> = f.iter().copied().collect();
        let bias = match bias {
            Some(b) => vector(w, b, co)?,
            None => vec![0.0; co],
        };
        Ok(Conv2d {
            kh,
            kw,
            ci,
            co,
            stride,
            padding,
            weights,
            bias,
        })
    }

    /// Append the output channels of `other` (same geometry): one GEMM computes both.
    pub fn concat_outputs(&self, other: &Conv2d) -> Conv2d {
        let rows = self.kh * self.kw * self.ci;
        let co = self.co + other.co;
        let mut weights = Vec::with_capacity(rows * co);
        for r in 0..rows {
            weights.extend_from_slice(&self.weights[r * self.co..(r + 1) * self.co]);
            weights.extend_from_slice(&other.weights[r * other.co..(r + 1) * other.co]);
        }
        let mut bias = self.bias.clone();
        bias.extend_from_slice(&other.bias);
        Conv2d {
            co,
            weights,
            bias,
            ..*self
        }
    }

    pub fn forward(&self, x: &Tensor, act: Activation) -> Tensor {
        let (ho, pt) = out_and_pad(x.h, self.kh, self.stride, self.padding);
        let (wo, pl) = out_and_pad(x.w, self.kw, self.stride, self.padding);
        let k = self.kh * self.kw * self.ci;
        let m = ho * wo;
        let direct = self.kh == 1 && self.kw == 1 && self.stride == 1;
        let cols;
        let a: &[f32] = if direct {
            &x.data
        } else {
            cols = im2col(x, self, ho, wo, pt, pl);
            &cols
        };
        let mut out = gemm_new(a, &self.weights, m, k, self.co);
        simd::bias_activation(&mut out, &self.bias, act);
        Tensor {
            h: ho,
            w: wo,
            c: self.co,
            data: out,
        }
    }
}

/// Rows of `kh * kw * ci` input values, one per output pixel (zeros outside the image).
fn im2col(x: &Tensor, conv: &Conv2d, ho: usize, wo: usize, pt: usize, pl: usize) -> Vec<f32> {
    let c = x.c;
    let row = conv.kh * conv.kw * c;
    let mut cols = vec![0.0f32; ho * wo * row];
    for oy in 0..ho {
        for ox in 0..wo {
            let dst = &mut cols[(oy * wo + ox) * row..(oy * wo + ox + 1) * row];
            // The kernel's columns that fall inside the image are one contiguous run of the
            // input row (channels last), so each kernel row is a single copy.
            let x0 = (ox * conv.stride) as isize - pl as isize;
            let j0 = (-x0).max(0) as usize;
            let j1 = conv.kw.min((x.w as isize - x0).max(0) as usize);
            if j0 >= j1 {
                continue;
            }
            for i in 0..conv.kh {
                let iy = (oy * conv.stride + i) as isize - pt as isize;
                if iy < 0 || iy >= x.h as isize {
                    continue;
                }
                let src = (iy as usize * x.w + (x0 + j0 as isize) as usize) * c;
                let len = (j1 - j0) * c;
                let o = (i * conv.kw + j0) * c;
                dst[o..o + len].copy_from_slice(&x.data[src..src + len]);
            }
        }
    }
    cols
}

/// A depthwise 3×3 (or k×k) convolution with multiplier 1 and an optional bias.
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    pub k: usize,
    pub c: usize,
    pub stride: usize,
    /// `[k * k, c]`.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl DepthwiseConv {
    pub fn from_weights(w: &TfjsWeights, filter: &str, stride: usize) -> Result<Self> {
        let f = w.get(filter)?;
        let shape = f.shape();
        if shape.len() != 4 || shape[0] != shape[1] || shape[3] != 1 {
            return Err(bad_shape(
                filter,
                format!("expected [k, k, c, 1] depthwise filter, got {shape:?}"),
            ));
        }
        Ok(DepthwiseConv {
            k: shape[0],
            c: shape[2],
            stride,
            weights: f.iter().copied().collect(),
            bias: vec![0.0; shape[2]],
        })
    }

    /// Fold an inference batch norm into the filter and bias:
    /// `(x - mean) / sqrt(var + eps) * gamma + beta`.
    pub fn fold_batch_norm(
        &mut self,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
    ) {
        for ch in 0..self.c {
            let scale = gamma[ch] / (var[ch] + eps).sqrt();
            for t in 0..self.k * self.k {
                self.weights[t * self.c + ch] *= scale;
            }
            self.bias[ch] = beta[ch] - mean[ch] * scale;
        }
    }

    /// Same padding (the only mode the networks use for depthwise layers).
    pub fn forward(&self, x: &Tensor, act: Activation) -> Tensor {
        let (ho, pt) = out_and_pad(x.h, self.k, self.stride, Padding::Same);
        let (wo, pl) = out_and_pad(x.w, self.k, self.stride, Padding::Same);
        let mut out = Vec::with_capacity(ho * wo * self.c);
        simd::depthwise(x, self, simd::OutGeometry { ho, wo, pt, pl }, &mut out);
        simd::bias_activation(&mut out, &[], act);
        Tensor {
            h: ho,
            w: wo,
            c: self.c,
            data: out,
        }
    }
}

/// Depthwise (no bias) then pointwise (with bias): the separable convolution of tfjs.
#[derive(Clone, Debug)]
pub struct SeparableConv {
    pub depthwise: DepthwiseConv,
    pub pointwise: Conv2d,
}

impl SeparableConv {
    /// From `<prefix>/depthwise_filter`, `<prefix>/pointwise_filter` and `<prefix>/bias`.
    pub fn from_weights(w: &TfjsWeights, prefix: &str, stride: usize) -> Result<Self> {
        Ok(SeparableConv {
            depthwise: DepthwiseConv::from_weights(
                w,
                &format!("{prefix}/depthwise_filter"),
                stride,
            )?,
            pointwise: Conv2d::from_weights(
                w,
                &format!("{prefix}/pointwise_filter"),
                Some(&format!("{prefix}/bias")),
                1,
                Padding::Same,
            )?,
        })
    }

    pub fn forward(&self, x: &Tensor, act: Activation) -> Tensor {
        let d = self.depthwise.forward(x, Activation::None);
        self.pointwise.forward(&d, act)
    }
}

/// A `[n]` vector from the weights, checked for length.
pub fn vector(w: &TfjsWeights, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = w.get(name)?;
    if t.len() != n {
        return Err(bad_shape(
            name,
            format!("expected {n} values, got shape {:?}", t.shape()),
        ));
    }
    Ok(t.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::tensor::test_input as input;

    fn conv(kh: usize, ci: usize, co: usize, stride: usize, padding: Padding) -> Conv2d {
        let n = kh * kh * ci * co;
        Conv2d {
            kh,
            kw: kh,
            ci,
            co,
            stride,
            padding,
            weights: (0..n).map(|i| ((i * 7) % 5) as f32 - 2.0).collect(),
            bias: (0..co).map(|i| i as f32 * 0.5).collect(),
        }
    }

    /// Direct definition of a convolution, to check the im2col + GEMM path.
    fn naive(x: &Tensor, cv: &Conv2d) -> Tensor {
        let (ho, pt) = out_and_pad(x.h, cv.kh, cv.stride, cv.padding);
        let (wo, pl) = out_and_pad(x.w, cv.kw, cv.stride, cv.padding);
        let mut out = Tensor::zeros(ho, wo, cv.co);
        for oy in 0..ho {
            for ox in 0..wo {
                for o in 0..cv.co {
                    let mut acc = cv.bias[o];
                    for i in 0..cv.kh {
                        for j in 0..cv.kw {
                            let iy = (oy * cv.stride + i) as isize - pt as isize;
                            let ix = (ox * cv.stride + j) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            for ci in 0..cv.ci {
                                acc += x.pixel(iy as usize, ix as usize)[ci]
                                    * cv.weights[((i * cv.kw + j) * cv.ci + ci) * cv.co + o];
                            }
                        }
                    }
                    out.data[(oy * wo + ox) * cv.co + o] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn conv_matches_direct_definition() {
        for (k, s, p) in [
            (3, 1, Padding::Same),
            (3, 2, Padding::Same),
            (3, 1, Padding::Valid),
            (1, 1, Padding::Same),
        ] {
            let x = input(7, 6, 3);
            let cv = conv(k, 3, 4, s, p);
            let got = cv.forward(&x, Activation::None);
            let want = naive(&x, &cv);
            assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c));
            for (a, b) in got.data.iter().zip(&want.data) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b} for k{k} s{s} {p:?}");
            }
        }
    }

    #[test]
    fn depthwise_matches_direct_definition() {
        // 20 channels: two register blocks of 8 and a remainder of 4; k = 5 takes the
        // per-tap path. Activations are checked on the same outputs.
        for (k, s) in [(3, 1), (3, 2), (5, 1)] {
            let c = 20;
            let x = input(9, 8, c);
            let dw = DepthwiseConv {
                k,
                c,
                stride: s,
                weights: (0..k * k * c)
                    .map(|i| ((i * 5) % 7) as f32 * 0.3 - 1.0)
                    .collect(),
                bias: (0..c).map(|i| i as f32 * 0.25 - 2.0).collect(),
            };
            // The same layer written as a dense convolution with a diagonal filter.
            let mut dense = conv(k, c, c, s, Padding::Same);
            dense.weights = vec![0.0; k * k * c * c];
            for t in 0..k * k {
                for ch in 0..c {
                    dense.weights[(t * c + ch) * c + ch] = dw.weights[t * c + ch];
                }
            }
            dense.bias = dw.bias.clone();
            let want = naive(&x, &dense);
            for act in [Activation::None, Activation::Relu6, Activation::Leaky] {
                let got = dw.forward(&x, act);
                assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c));
                for (a, b) in got.data.iter().zip(&want.data) {
                    let b = match act {
                        Activation::None => *b,
                        Activation::Relu6 => b.clamp(0.0, 6.0),
                        Activation::Leaky => {
                            if *b > 0.0 {
                                *b
                            } else {
                                0.1 * b
                            }
                        }
                        Activation::Relu => b.max(0.0),
                    };
                    assert!((a - b).abs() < 1e-4, "{a} vs {b} for k{k} s{s} {act:?}");
                }
            }
        }
    }
}
