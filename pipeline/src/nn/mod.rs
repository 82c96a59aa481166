//! Tensor operations for the pretrained networks (NHWC f32, batch of one).
//!
//! Only what the detectors and the landmark network need: convolutions (k×k through im2col
//! and one GEMM, 1×1 as a plain GEMM), depthwise 3×3 convolutions over channels-last memory,
//! pooling, and the input preparation of the tfjs library (pad to square, legacy bilinear
//! resize). Batch norm is folded into the weights when a network is loaded, so a layer is
//! always `act(conv(x) + bias)`.
//!
//! Speed: the GEMMs go through the `gemm` crate, whose kernels pick AVX2/AVX-512 at run
//! time and handle the skinny shapes of these networks (a million rows, 16–64 columns) far
//! better than a packing-first GEMM. The element-wise loops (depthwise, bias + activation)
//! are compiled twice, for baseline x86-64 and for AVX2+FMA, and chosen once at run time,
//! since release builds target baseline x86-64 and must run on any x86-64 machine.

// `unsafe` here only to call CPU-specific copies of the loops.
#[allow(unsafe_code)]
mod simd;

pub mod input;

use crate::error::{Error, Result};
use crate::models::TfjsWeights;

pub use input::square_input;

/// An activation tensor `h × w × c`, channels last.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(h: usize, w: usize, c: usize) -> Self {
        Tensor {
            h,
            w,
            c,
            data: vec![0.0; h * w * c],
        }
    }

    /// The `c` values of one pixel.
    #[inline]
    pub fn pixel(&self, y: usize, x: usize) -> &[f32] {
        let o = (y * self.w + x) * self.c;
        &self.data[o..o + self.c]
    }

    pub fn map_inplace(&mut self, f: impl Fn(f32) -> f32) {
        for v in &mut self.data {
            *v = f(*v);
        }
    }

    /// Element-wise sum of same-shaped tensors.
    pub fn add(&self, other: &Tensor) -> Tensor {
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a + b)
            .collect();
        Tensor { data, ..*self }
    }
}

/// TF padding modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Output `ceil(n / s)`, the extra row/column of padding at the bottom/right.
    Same,
    /// No padding.
    Valid,
}

/// Output size and leading padding along one axis.
fn out_and_pad(n: usize, k: usize, s: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Same => {
            let out = n.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(n);
            (out, total / 2)
        }
        Padding::Valid => ((n.saturating_sub(k)) / s + 1, 0),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
    /// Leaky ReLU with slope 0.1 (the tiny detector).
    Leaky,
}

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

static GEMM_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many threads one GEMM may use. 1 by default: the callers that process many photos
/// parallelise over photos (one per core), and threads inside each GEMM on top of that would
/// oversubscribe the cores. A service answering one photo at a time on an idle machine sets
/// it to the core count ([`set_gemm_threads`]) to cut latency. `FACEPIPE_GEMM_THREADS`
/// overrides the default.
pub fn gemm_threads() -> usize {
    use std::sync::atomic::Ordering;
    match GEMM_THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::env::var("FACEPIPE_GEMM_THREADS")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or(1);
            GEMM_THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Set the number of threads each GEMM may use (see [`gemm_threads`]); 0 means 1.
pub fn set_gemm_threads(n: usize) {
    GEMM_THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// `a · b` into a new `m × n` vector, without first zeroing it (the product overwrites
/// every element; zeroing large outputs cost ~6 % of a detector's time).
#[allow(unsafe_code)]
pub fn gemm_new(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    if k == 0 {
        return vec![0.0; m * n];
    }
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m × n values; with k > 0 and `read_dst` false the product
    // writes every one of them before `set_len` exposes them, and reads none.
    unsafe {
        gemm_raw(a, b, c.as_mut_ptr(), m, k, n, false);
        c.set_len(m * n);
    }
    c
}

/// # Safety
/// `c` must point to `m * n` writable values (initialised when `read_dst`) that alias
/// neither `a` nor `b`.
#[allow(unsafe_code)]
unsafe fn gemm_raw(
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    read_dst: bool,
) {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "gemm shape mismatch: {m}x{k} · {k}x{n}"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = gemm_threads();
    // Below a few MFLOP a second thread costs more than it saves.
    let parallelism = if threads > 1 && m * k * n >= 1 << 21 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the shapes were checked above, so every index the row-major strides reach
    // lies inside `a`, `b` and the caller's `m * n` values at `c`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `c += a · b` with `a: m × k`, `b: k × n`, all row-major.
#[allow(unsafe_code)]
pub fn gemm_acc(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    // Shapes are built by this module from checked weights: a mismatch is a bug, not input.
    assert!(c.len() == m * n, "gemm output is not {m}x{n}");
    // SAFETY: `c` holds m × n values and is borrowed mutably, so it aliases neither input.
    unsafe { gemm_raw(a, b, c.as_mut_ptr(), m, k, n, true) }
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

/// Max pooling `k × k`, stride `s` (padding with -inf for `Same`).
pub fn max_pool(x: &Tensor, k: usize, s: usize, padding: Padding) -> Tensor {
    let (ho, pt) = out_and_pad(x.h, k, s, padding);
    let (wo, pl) = out_and_pad(x.w, k, s, padding);
    let c = x.c;
    let mut out = vec![f32::NEG_INFINITY; ho * wo * c];
    for oy in 0..ho {
        for ox in 0..wo {
            let dst = &mut out[(oy * wo + ox) * c..(oy * wo + ox + 1) * c];
            for i in 0..k {
                let iy = (oy * s + i) as isize - pt as isize;
                if iy < 0 || iy >= x.h as isize {
                    continue;
                }
                for j in 0..k {
                    let ix = (ox * s + j) as isize - pl as isize;
                    if ix < 0 || ix >= x.w as isize {
                        continue;
                    }
                    for (d, v) in dst.iter_mut().zip(x.pixel(iy as usize, ix as usize)) {
                        *d = d.max(*v);
                    }
                }
            }
        }
    }
    Tensor {
        h: ho,
        w: wo,
        c,
        data: out,
    }
}

/// Average pooling `k × k`, stride `s`, valid padding.
pub fn avg_pool_valid(x: &Tensor, k: usize, s: usize) -> Tensor {
    let (ho, _) = out_and_pad(x.h, k, s, Padding::Valid);
    let (wo, _) = out_and_pad(x.w, k, s, Padding::Valid);
    let c = x.c;
    let mut out = vec![0.0f32; ho * wo * c];
    let norm = 1.0 / (k * k) as f32;
    for oy in 0..ho {
        for ox in 0..wo {
            let dst = &mut out[(oy * wo + ox) * c..(oy * wo + ox + 1) * c];
            for i in 0..k {
                for j in 0..k {
                    for (d, v) in dst.iter_mut().zip(x.pixel(oy * s + i, ox * s + j)) {
                        *d += v;
                    }
                }
            }
            for d in dst.iter_mut() {
                *d *= norm;
            }
        }
    }
    Tensor {
        h: ho,
        w: wo,
        c,
        data: out,
    }
}

#[inline]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// JavaScript's `Math.round`: halves go up.
#[inline]
pub fn js_round(v: f64) -> f64 {
    (v + 0.5).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn input(h: usize, w: usize, c: usize) -> Tensor {
        Tensor {
            h,
            w,
            c,
            data: (0..h * w * c)
                .map(|i| ((i * 13) % 11) as f32 / 10.0)
                .collect(),
        }
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

    #[test]
    fn same_padding_puts_the_extra_row_at_the_end() {
        // 7 -> ceil(7/2) = 4 outputs, total padding 2 for k=3: one before, one after.
        assert_eq!(out_and_pad(7, 3, 2, Padding::Same), (4, 1));
        // 112 -> 56 with k=3, s=2: total padding 1, all at the end.
        assert_eq!(out_and_pad(112, 3, 2, Padding::Same), (56, 0));
        assert_eq!(out_and_pad(416, 3, 1, Padding::Valid), (414, 0));
    }

    #[test]
    fn max_pool_same_and_avg_pool() {
        let x = input(3, 3, 1);
        let m = max_pool(&x, 2, 2, Padding::Same);
        assert_eq!((m.h, m.w), (2, 2));
        assert_eq!(m.data[3], x.data[8]);
        let a = avg_pool_valid(&x, 3, 2);
        let mean = x.data.iter().sum::<f32>() / 9.0;
        assert!((a.data[0] - mean).abs() < 1e-6);
    }

    #[test]
    fn js_round_rounds_halves_up() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(2.4), 2.0);
    }
}
