//! The int8 copy of the gallery rows that stage one scans: symmetric per-row quantisation
//! `r ≈ s·c`, codes padded to whole [`BLOCK`]s, and the per-row terms of the error bound.

/// Width of an int8 block: rows are padded with zeros to a multiple of it.
pub(super) const BLOCK: usize = 16;

/// The int8 copy of the rows for the first stage.
#[derive(Clone, Debug, Default)]
pub(super) struct Quantized {
    /// `dim` rounded up to [`BLOCK`].
    pub(super) stride: usize,
    /// `rows × stride` codes, `c = round(r / s)` in −127..=127, zero padded.
    pub(super) codes: Vec<i8>,
    /// Per row `s = max|r| / 127`.
    pub(super) scale: Vec<f32>,
    /// Per row `s · ‖c‖₁`, for the error bound.
    pub(super) scaled_l1: Vec<f32>,
}

impl Quantized {
    pub(super) fn new(dim: usize) -> Self {
        Quantized {
            stride: dim.div_ceil(BLOCK) * BLOCK,
            ..Default::default()
        }
    }

    pub(super) fn push(&mut self, row: &[f32]) {
        let (scale, codes) = quantize(row, self.stride);
        let l1: i32 = codes.iter().map(|&c| i32::from(c).abs()).sum();
        self.codes.extend_from_slice(&codes);
        self.scale.push(scale);
        self.scaled_l1.push(scale * l1 as f32);
    }

    pub(super) fn truncate(&mut self, rows: usize) {
        self.codes.truncate(rows * self.stride);
        self.scale.truncate(rows);
        self.scaled_l1.truncate(rows);
    }

    pub(super) fn copy_row(&mut self, from: &Quantized, row: usize) {
        let s = self.stride;
        self.codes
            .extend_from_slice(&from.codes[row * s..(row + 1) * s]);
        self.scale.push(from.scale[row]);
        self.scaled_l1.push(from.scaled_l1[row]);
    }

    pub(super) fn bytes(&self) -> usize {
        self.codes.len() + (self.scale.len() + self.scaled_l1.len()) * 4
    }
}

/// Per-vector symmetric int8 quantisation, padded to `stride` codes.
pub(super) fn quantize(v: &[f32], stride: usize) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    // An all-zero (or non-finite) vector: codes 0 and scale 0 make the bound exact.
    let scale = if max > 0.0 && max.is_finite() {
        max / 127.0
    } else {
        0.0
    };
    let mut codes = vec![0i8; stride];
    if scale > 0.0 {
        for (c, x) in codes.iter_mut().zip(v) {
            *c = (x / scale).round().clamp(-127.0, 127.0) as i8;
        }
    }
    (scale, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_within_half_a_step_and_zero_padded() {
        let v = [0.5f32, -1.0, 0.25, 0.0, 0.999];
        let (scale, codes) = quantize(&v, BLOCK);
        assert_eq!(codes.len(), BLOCK);
        assert_eq!(codes[1], -127, "the largest magnitude takes the full range");
        for (x, &c) in v.iter().zip(&codes) {
            assert!(
                (x - scale * f32::from(c)).abs() <= 0.5 * scale + 1e-7,
                "{x} vs {c}"
            );
        }
        assert!(codes[v.len()..].iter().all(|&c| c == 0));
    }

    #[test]
    fn zero_and_non_finite_vectors_get_scale_zero() {
        for v in [[0f32; 4], [1.0, f32::INFINITY, 0.0, 0.0]] {
            let (scale, codes) = quantize(&v, BLOCK);
            assert_eq!(scale, 0.0);
            assert!(codes.iter().all(|&c| c == 0));
        }
    }

    #[test]
    fn rows_keep_their_stride_through_push_copy_and_truncate() {
        let mut q = Quantized::new(20);
        assert_eq!(q.stride, 2 * BLOCK);
        q.push(&[1.0; 20]);
        q.push(&[-2.0; 20]);
        let mut copy = Quantized::new(20);
        copy.copy_row(&q, 1);
        assert_eq!(copy.codes, q.codes[q.stride..]);
        assert_eq!(
            (copy.scale[0], copy.scaled_l1[0]),
            (q.scale[1], q.scaled_l1[1])
        );
        q.truncate(1);
        assert_eq!((q.codes.len(), q.scale.len()), (q.stride, 1));
        assert_eq!(q.bytes(), q.stride + 8);
    }
}
