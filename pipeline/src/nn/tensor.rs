//! The activation tensor and the vocabulary every layer shares: TF padding modes (and the
//! output size they give), activations, and the scalar helpers of the tfjs decoders.

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
pub(super) fn out_and_pad(n: usize, k: usize, s: usize, padding: Padding) -> (usize, usize) {
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

#[inline]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// JavaScript's `Math.round`: halves go up.
#[inline]
pub fn js_round(v: f64) -> f64 {
    (v + 0.5).floor()
}

/// A tensor of small, varied values for the layer tests.
#[cfg(test)]
pub(super) fn test_input(h: usize, w: usize, c: usize) -> Tensor {
    Tensor {
        h,
        w,
        c,
        data: (0..h * w * c)
            .map(|i| ((i * 13) % 11) as f32 / 10.0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_extra_row_at_the_end() {
        // 7 -> ceil(7/2) = 4 outputs, total padding 2 for k=3: one before, one after.
        assert_eq!(out_and_pad(7, 3, 2, Padding::Same), (4, 1));
        // 112 -> 56 with k=3, s=2: total padding 1, all at the end.
        assert_eq!(out_and_pad(112, 3, 2, Padding::Same), (56, 0));
        assert_eq!(out_and_pad(416, 3, 1, Padding::Valid), (414, 0));
    }

    #[test]
    fn js_round_rounds_halves_up() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(2.4), 2.0);
    }
}
