//! The element-wise loops of the networks, written once and compiled twice: for baseline
//! x86-64 (SSE2) and for AVX2, picked at run time. Each output lane is computed with the same
//! operations in the same order in both versions (no fused multiply-add), so results do not
//! depend on the machine.

use super::{Activation, DepthwiseConv, Tensor};

/// Output size and leading padding of a depthwise layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutGeometry {
    pub ho: usize,
    pub wo: usize,
    pub pt: usize,
    pub pl: usize,
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2"))
}

/// Calls `$body` through an AVX2 copy when the CPU has it.
macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU was just checked for AVX2.
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch!(bias_activation, bias_activation_body, (out: &mut [f32], bias: &[f32], act: Activation));
dispatch!(depthwise, depthwise_body, (x: &Tensor, conv: &DepthwiseConv, g: OutGeometry, out: &mut Vec<f32>));

/// `out[p, c] = act(out[p, c] + bias[c])`; an empty `bias` adds nothing.
#[inline(always)]
fn bias_activation_body(out: &mut [f32], bias: &[f32], act: Activation) {
    fn run(out: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32) {
        if bias.is_empty() {
            for v in out.iter_mut() {
                *v = f(*v);
            }
        } else {
            for row in out.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = f(*v + b);
                }
            }
        }
    }
    // One monomorphic loop per activation, so each vectorises.
    match act {
        Activation::None if bias.is_empty() => {}
        Activation::None => run(out, bias, |v| v),
        Activation::Relu => run(out, bias, |v| v.max(0.0)),
        Activation::Relu6 => run(out, bias, |v| v.clamp(0.0, 6.0)),
        Activation::Leaky => run(out, bias, |v| if v > 0.0 { v } else { 0.1 * v }),
    }
}

/// Channels per accumulator block: one AVX2 register, two SSE2 registers.
const LANES: usize = 8;
/// Channels of a wide block.
const WIDE: usize = 4 * LANES;
/// Kernel taps handled by the register-blocked path (k ≤ 4).
const MAX_TAPS: usize = 16;

/// Depthwise `k × k` convolution with same padding, bias included, no activation, appended
/// to `out` pixel by pixel (so the output is never zeroed first).
///
/// Per output pixel, the taps that fall inside the image are listed once; then each block
/// of `LANES` channels is accumulated in registers over those taps and stored once, instead
/// of reading and writing the output for every tap. Per channel the sum runs in the same
/// order (bias, then taps row by row), so every path gives the same bits.
#[inline(always)]
fn depthwise_body(x: &Tensor, conv: &DepthwiseConv, g: OutGeometry, out: &mut Vec<f32>) {
    let c = conv.c;
    let k = conv.k;
    let s = conv.stride;
    let blocked = c - c % LANES;
    let mut src_at = [0usize; MAX_TAPS];
    let mut w_at = [0usize; MAX_TAPS];
    for oy in 0..g.ho {
        // Kernel rows inside the image.
        let y0 = (oy * s) as isize - g.pt as isize;
        let i0 = (-y0).max(0) as usize;
        let i1 = k.min((x.h as isize - y0).max(0) as usize);
        for ox in 0..g.wo {
            let x0 = (ox * s) as isize - g.pl as isize;
            let j0 = (-x0).max(0) as usize;
            let j1 = k.min((x.w as isize - x0).max(0) as usize);
            if k * k > MAX_TAPS {
                let start = out.len();
                out.extend_from_slice(&conv.bias);
                depthwise_pixel_plain(x, conv, (y0, i0, i1), (x0, j0, j1), &mut out[start..]);
                continue;
            }
            let mut taps = 0;
            for i in i0..i1 {
                let iy = (y0 + i as isize) as usize;
                for j in j0..j1 {
                    let ix = (x0 + j as isize) as usize;
                    src_at[taps] = (iy * x.w + ix) * c;
                    w_at[taps] = (i * k + j) * c;
                    taps += 1;
                }
            }
            // Wide blocks first: four independent registers hide the add latency that a
            // single accumulator chained over the taps would expose.
            let mut ch = 0;
            while ch + WIDE <= blocked {
                depthwise_block::<WIDE>(x, conv, &src_at[..taps], &w_at[..taps], ch, out);
                ch += WIDE;
            }
            while ch < blocked {
                depthwise_block::<LANES>(x, conv, &src_at[..taps], &w_at[..taps], ch, out);
                ch += LANES;
            }
            for ch in blocked..c {
                let mut acc = conv.bias[ch];
                for t in 0..taps {
                    acc += x.data[src_at[t] + ch] * conv.weights[w_at[t] + ch];
                }
                out.push(acc);
            }
        }
    }
}

/// Channels `ch..ch + N` of one output pixel: bias plus every listed tap, summed in registers.
#[inline(always)]
fn depthwise_block<const N: usize>(
    x: &Tensor,
    conv: &DepthwiseConv,
    src_at: &[usize],
    w_at: &[usize],
    ch: usize,
    out: &mut Vec<f32>,
) {
    let mut acc = [0.0f32; N];
    acc.copy_from_slice(&conv.bias[ch..ch + N]);
    for (&s, &w) in src_at.iter().zip(w_at) {
        let v = &x.data[s + ch..s + ch + N];
        let w = &conv.weights[w + ch..w + ch + N];
        for l in 0..N {
            acc[l] += v[l] * w[l];
        }
    }
    out.extend_from_slice(&acc);
}

/// One output pixel (`dst` starts as the bias), tap by tap over all channels (kernels
/// larger than 4 × 4).
#[inline(always)]
fn depthwise_pixel_plain(
    x: &Tensor,
    conv: &DepthwiseConv,
    (y0, i0, i1): (isize, usize, usize),
    (x0, j0, j1): (isize, usize, usize),
    dst: &mut [f32],
) {
    let (c, k) = (conv.c, conv.k);
    for i in i0..i1 {
        let iy = (y0 + i as isize) as usize;
        for j in j0..j1 {
            let ix = (x0 + j as isize) as usize;
            let src = &x.data[(iy * x.w + ix) * c..(iy * x.w + ix + 1) * c];
            let wt = &conv.weights[(i * k + j) * c..(i * k + j + 1) * c];
            for ((d, v), w) in dst.iter_mut().zip(src).zip(wt) {
                *d += v * w;
            }
        }
    }
}
