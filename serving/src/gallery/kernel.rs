//! The scoring kernels: the `f32` dot product of the exact scan and rerank, and the int8
//! dot products of stage one with their dispatch.
//!
//! The int8 kernel uses AVX2 intrinsics picked at run time (the build does not set a target
//! CPU), and a portable body LLVM vectorises for baseline x86-64 and other architectures.
//! Rows are padded to whole 16-code blocks, so the AVX2 loop has no tail.

use super::int8::BLOCK;

/// Dot product with 16 independent accumulators so the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out[i] = Σ q[j]·codes[i·stride + j]` for every row `i`.
pub(super) fn dots(q: &[i16], codes: &[i8], stride: usize, out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return avx2(q, codes, stride, out);
    }
    portable(q, codes, stride, out)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn avx2(q: &[i16], codes: &[i8], stride: usize, out: &mut [i32]) {
    use std::arch::x86_64::*;

    /// Sixteen int8 codes sign-extended to i16, times sixteen query values, summed in
    /// pairs into eight i32 lanes (`vpmovsxbw` + `vpmaddwd` on full 256-bit registers).
    #[target_feature(enable = "avx2")]
    fn inner(q: &[i16], codes: &[i8], stride: usize, out: &mut [i32]) {
        let q_blocks: Vec<__m256i> = q[..stride]
            .chunks_exact(BLOCK)
            // SAFETY: each chunk holds exactly 16 i16 = 32 bytes; unaligned load.
            .map(|c| unsafe { _mm256_loadu_si256(c.as_ptr().cast()) })
            .collect();
        for (o, row) in out.iter_mut().zip(codes.chunks_exact(stride)) {
            let mut acc = _mm256_setzero_si256();
            for (block, qb) in row.chunks_exact(BLOCK).zip(&q_blocks) {
                // SAFETY: each chunk holds exactly 16 i8 = 16 bytes; unaligned load.
                let r = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(r), *qb));
            }
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            *o = _mm_cvtsi128_si32(s);
        }
    }
    // SAFETY: only called after `is_x86_feature_detected!("avx2")` returned true.
    unsafe { inner(q, codes, stride, out) }
}

#[inline(always)]
fn portable(q: &[i16], codes: &[i8], stride: usize, out: &mut [i32]) {
    let q = &q[..stride.min(q.len())];
    for (o, row) in out.iter_mut().zip(codes.chunks_exact(stride)) {
        // A plain widening multiply-add reduction: LLVM turns it into `pmaddwd`.
        *o = row
            .iter()
            .zip(q)
            .map(|(&r, &q)| i32::from(r) * i32::from(q))
            .sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes over the whole int8 range (the extremes included), deterministically.
    fn codes(n: usize, seed: u32) -> Vec<i8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) % 255) as i32 - 127)
            .map(|c| c as i8)
            .collect()
    }

    #[test]
    fn the_dispatched_kernel_equals_the_portable_one() {
        let stride = 8 * BLOCK;
        let rows = 37;
        let q: Vec<i16> = codes(stride, 5).into_iter().map(i16::from).collect();
        let table = codes(rows * stride, 11);
        let (mut fast, mut reference) = (vec![0; rows], vec![0; rows]);
        dots(&q, &table, stride, &mut fast);
        portable(&q, &table, stride, &mut reference);
        assert_eq!(fast, reference);
        // The extremes: every product at its largest magnitude.
        let full = vec![-127i8; stride];
        let q = vec![127i16; stride];
        let mut out = [0];
        dots(&q, &full, stride, &mut out);
        assert_eq!(out[0], -127 * 127 * stride as i32);
    }

    #[test]
    fn dot_handles_lengths_that_are_not_a_multiple_of_16() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.25).collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - expected).abs() < 1e-3 * expected.abs().max(1.0));
    }
}
