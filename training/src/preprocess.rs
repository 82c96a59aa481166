//! Turning face crops into the input tensor of an embedding network.
//!
//! The pretrained network was trained on inputs made a particular way, and a one-pixel shift
//! moves descriptors measurably, so this follows the reference exactly: zero-pad the crop to a
//! centred square (the split rounded like JS `Math.round`), resize with TensorFlow's legacy
//! bilinear rule (`alignCorners = false`, `halfPixelCenters = false`) in f32 with f64
//! interpolation weights, then `(x - mean) / std` per channel.

use image::RgbImage;

use crate::error::{Error, Result};

/// Input geometry and per-channel normalisation of a network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputSpec {
    /// Side of the square input, in pixels.
    pub size: u32,
    /// Subtracted from each RGB channel (0–255 scale).
    pub mean: [f32; 3],
    /// Each channel is divided by this after the mean is subtracted.
    pub std: [f32; 3],
}

impl InputSpec {
    /// The pretrained 128-d ResNet: 150 px, face-api's channel means, divided by 255.
    pub fn pretrained_resnet() -> Self {
        InputSpec {
            size: 150,
            mean: [122.782, 117.001, 104.298],
            std: [255.0; 3],
        }
    }
}

/// An HWC f32 image.
#[derive(Clone, Debug)]
pub struct ImageF32 {
    pub height: usize,
    pub width: usize,
    /// `height * width * 3` values, row-major, RGB interleaved.
    pub data: Vec<f32>,
}

impl ImageF32 {
    pub fn from_rgb(img: &RgbImage) -> Self {
        ImageF32 {
            height: img.height() as usize,
            width: img.width() as usize,
            data: img.as_raw().iter().map(|&v| f32::from(v)).collect(),
        }
    }
}

/// JS `Math.round` for the non-negative halves we meet here (round half up).
fn js_round_half(x: f64) -> usize {
    (x + 0.5).floor() as usize
}

/// Zero-pad to a square, the original centred (the extra pixel of an odd difference goes
/// after the image, as the reference does).
pub fn pad_to_square(img: &ImageF32) -> ImageF32 {
    let (h, w) = (img.height, img.width);
    if h == w {
        return img.clone();
    }
    let diff = h.abs_diff(w);
    let after = js_round_half(diff as f64 * 0.5);
    let before = diff - after;
    let side = h.max(w);
    let (top, left) = if h > w { (0, before) } else { (before, 0) };
    let mut data = vec![0f32; side * side * 3];
    for y in 0..h {
        let src = &img.data[y * w * 3..(y + 1) * w * 3];
        let dst_start = ((y + top) * side + left) * 3;
        data[dst_start..dst_start + w * 3].copy_from_slice(src);
    }
    ImageF32 {
        height: side,
        width: side,
        data,
    }
}

/// TensorFlow's legacy bilinear resize to `out × out` (`alignCorners = false`,
/// `halfPixelCenters = false`): source coordinate `i * in / out`, clamped neighbours.
pub fn resize_bilinear_tf(img: &ImageF32, out: usize) -> ImageF32 {
    let (h, w) = (img.height, img.width);
    let axis = |n: usize| -> Vec<(usize, usize, f64)> {
        let step = n as f64 / out as f64;
        (0..out)
            .map(|i| {
                let s = i as f64 * step;
                let i0 = (s.floor() as usize).min(n - 1);
                let i1 = (i0 + 1).min(n - 1);
                (i0, i1, s - i0 as f64)
            })
            .collect()
    };
    let ys = axis(h);
    let xs = axis(w);
    let px = |y: usize, x: usize, c: usize| f64::from(img.data[(y * w + x) * 3 + c]);
    let mut data = Vec::with_capacity(out * out * 3);
    for &(y0, y1, dy) in &ys {
        for &(x0, x1, dx) in &xs {
            for c in 0..3 {
                let (a, b) = (px(y0, x0, c), px(y0, x1, c));
                let (cc, d) = (px(y1, x0, c), px(y1, x1, c));
                let top = a + (b - a) * dx;
                let bot = cc + (d - cc) * dx;
                data.push((top + (bot - top) * dy) as f32);
            }
        }
    }
    ImageF32 {
        height: out,
        width: out,
        data,
    }
}

/// One crop → `size × size × 3` normalised values (HWC), appended to `out`.
pub fn prepare_into(img: &RgbImage, spec: &InputSpec, out: &mut Vec<f32>) -> Result<()> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Invalid(format!(
            "empty face crop ({}x{})",
            img.width(),
            img.height()
        )));
    }
    let size = spec.size as usize;
    let mut x = pad_to_square(&ImageF32::from_rgb(img));
    if x.height != size {
        x = resize_bilinear_tf(&x, size);
    }
    out.reserve(x.data.len());
    for px in x.data.chunks_exact(3) {
        for ((v, m), s) in px.iter().zip(&spec.mean).zip(&spec.std) {
            out.push((v - m) / s);
        }
    }
    Ok(())
}

/// A batch of crops → an `N × 3 × size × size` tensor on `device`.
pub fn batch_tensor(
    faces: &[RgbImage],
    spec: &InputSpec,
    device: tch::Device,
) -> Result<tch::Tensor> {
    let size = i64::from(spec.size);
    let mut buf = Vec::with_capacity(faces.len() * (size * size * 3) as usize);
    for f in faces {
        prepare_into(f, spec, &mut buf)?;
    }
    let t = tch::Tensor::from_slice(&buf)
        .view([faces.len() as i64, size, size, 3])
        .permute([0, 3, 1, 2])
        .contiguous()
        .to_device(device);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_centred_with_the_extra_pixel_after() {
        // 2 wide, 5 high: diff 3 → 1 column before, 2 after (Math.round(1.5) = 2).
        let img = ImageF32 {
            height: 5,
            width: 2,
            data: vec![1.0; 5 * 2 * 3],
        };
        let sq = pad_to_square(&img);
        assert_eq!((sq.height, sq.width), (5, 5));
        let col = |x: usize| sq.data[x * 3];
        assert_eq!(
            [col(0), col(1), col(2), col(3), col(4)],
            [0.0, 1.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn legacy_resize_samples_at_i_times_scale() {
        // 4 → 2: samples source pixels 0 and 2 exactly (no half-pixel offset).
        let data: Vec<f32> = (0..16).flat_map(|v| [v as f32; 3]).collect();
        let img = ImageF32 {
            height: 4,
            width: 4,
            data,
        };
        let r = resize_bilinear_tf(&img, 2);
        let vals: Vec<f32> = r.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(vals, vec![0.0, 2.0, 8.0, 10.0]);
        // 2 → 4: 0, 0.5, 1, 1 (last neighbour clamped).
        let img = ImageF32 {
            height: 1,
            width: 2,
            data: vec![0.0, 0.0, 0.0, 4.0, 4.0, 4.0],
        };
        let sq = pad_to_square(&img);
        let r = resize_bilinear_tf(&sq, 4);
        let row0: Vec<f32> = r.data[..12].chunks(3).map(|p| p[0]).collect();
        assert_eq!(row0, vec![0.0, 2.0, 4.0, 4.0]);
    }
}
