//! Turning face crops into the input tensor of an embedding network.
//!
//! The pretrained network was trained on inputs made a particular way, and a one-pixel shift
//! moves descriptors measurably, so this follows the reference exactly: zero-pad the crop to a
//! centred square (the split rounded like JS `Math.round`), resize with TensorFlow's legacy
//! bilinear rule (`alignCorners = false`, `halfPixelCenters = false`), then `(x - mean) / std`
//! per channel. The pad-and-resize is the face engine's own ([`square_input`]), so the
//! detectors, the landmark network and the embedder prepare their inputs one way.

use facepipe_pipeline::nn::square_input;
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
            size: crate::resnet::INPUT_SIZE,
            mean: [122.782, 117.001, 104.298],
            std: [255.0; 3],
        }
    }

    /// MobileFaceNet / ArcFace convention: 112×112, `(x − 127.5) / 128`.
    pub fn mobilefacenet() -> Self {
        InputSpec {
            size: crate::mobilefacenet::INPUT_SIZE,
            mean: [127.5; 3],
            std: [128.0; 3],
        }
    }

    /// Number of `f32` values of one CHW image.
    pub fn chw_len(&self) -> usize {
        3 * (self.size as usize) * (self.size as usize)
    }
}

/// One crop → `size × size × 3` normalised values (HWC), appended to `out`.
pub fn prepare_into(img: &RgbImage, spec: &InputSpec, out: &mut Vec<f32>) -> Result<()> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::EmptyCrop {
            width: img.width(),
            height: img.height(),
        });
    }
    let size = spec.size as usize;
    // A crop already at the input size comes through unchanged (the resize is the identity).
    let x = square_input(img, (0, 0, img.width(), img.height()), size, true);
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
    fn normalises_per_channel_and_pads_centred() {
        // 2 wide, 3 high: diff 1 → 0 columns before, 1 after (Math.round(0.5) = 1), then
        // resized 3 → 3 (identity).
        let img = RgbImage::from_pixel(2, 3, image::Rgb([255, 0, 100]));
        let spec = InputSpec {
            size: 3,
            mean: [255.0, 0.0, 50.0],
            std: [1.0, 1.0, 50.0],
        };
        let mut out = Vec::new();
        prepare_into(&img, &spec, &mut out).unwrap();
        assert_eq!(out.len(), 27);
        // Row 0: two image pixels, then one padding pixel (zeros normalised).
        assert_eq!(&out[0..3], &[0.0, 0.0, 1.0]);
        assert_eq!(&out[3..6], &[0.0, 0.0, 1.0]);
        assert_eq!(&out[6..9], &[-255.0, 0.0, -1.0]);
    }

    #[test]
    fn empty_crop_is_an_error() {
        let img = RgbImage::new(0, 5);
        let mut out = Vec::new();
        assert!(prepare_into(&img, &InputSpec::pretrained_resnet(), &mut out).is_err());
    }

    #[test]
    fn batch_is_nchw() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
        let spec = InputSpec {
            size: 4,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let t = batch_tensor(&[img.clone(), img], &spec, tch::Device::Cpu).unwrap();
        assert_eq!(t.size(), vec![2, 3, 4, 4]);
        assert_eq!(t.double_value(&[1, 2, 3, 3]), 30.0);
    }
}
