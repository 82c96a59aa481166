//! Max and average pooling over channels-last tensors.

use super::tensor::{out_and_pad, Padding, Tensor};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::tensor::test_input as input;

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
}
