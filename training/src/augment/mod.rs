//! Training-time augmentation and input normalisation of aligned face crops.
//!
//! One recipe, two places to run it:
//! - [`host`]: per image on the CPU, one pass (an inverse affine map — flip, scale and
//!   translation jitter, resize to the network's input — sampled bilinearly, then colour
//!   jitter, optional greyscale and the architecture's normalisation) into a CHW `f32` buffer.
//!   CPU runs use it.
//! - [`device`]: the same maps on a whole batch of decoded `u8` crops as tensor ops
//!   (`affine_grid` + `grid_sample`, then the colour ops), on the training device. CUDA runs
//!   use it, so the CPU side only decodes JPEG and the copy to the device is 4× smaller.
//!
//! Both take the same per-image [`Draw`]s, sampled from a caller-seeded RNG, so a
//! (seed, epoch, sample) triple gives the same pixels wherever and on whichever thread it runs.

pub mod device;
pub mod host;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use facepipe_model::InputSpec;

/// Random augmentations and their strengths. `AugmentConfig::none()` leaves the crop as is
/// (only resized and normalised): that is what validation and evaluation use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub flip: f32,
    /// Zoom factor drawn uniformly in `[1 − scale, 1 + scale]`.
    pub scale: f32,
    /// Shift drawn uniformly in `[−translate, translate]` of the side, per axis.
    pub translate: f32,
    /// Brightness factor drawn in `[1 − b, 1 + b]`.
    pub brightness: f32,
    /// Contrast factor drawn in `[1 − c, 1 + c]` (blend with the mean grey level).
    pub contrast: f32,
    /// Saturation factor drawn in `[1 − s, 1 + s]` (blend with the pixel's grey level).
    pub saturation: f32,
    /// Probability of turning the image grey.
    pub greyscale: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip: 0.5,
            scale: 0.08,
            translate: 0.06,
            brightness: 0.25,
            contrast: 0.25,
            saturation: 0.25,
            greyscale: 0.1,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        Self {
            flip: 0.0,
            scale: 0.0,
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            greyscale: 0.0,
        }
    }
}

/// The random draws for one image, kept apart so tests can pin them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub flip: bool,
    pub zoom: f32,
    pub shift: (f32, f32),
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub grey: bool,
}

impl Draw {
    /// The identity draw (no change).
    pub fn identity() -> Self {
        Self {
            flip: false,
            zoom: 1.0,
            shift: (0.0, 0.0),
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            grey: false,
        }
    }

    /// Draw every parameter from `cfg` with `rng`.
    pub fn sample<R: Rng + ?Sized>(cfg: &AugmentConfig, rng: &mut R) -> Self {
        let mut sym = |r: f32| {
            if r > 0.0 {
                rng.random_range(-r..=r)
            } else {
                0.0
            }
        };
        let zoom = 1.0 + sym(cfg.scale);
        let shift = (sym(cfg.translate), sym(cfg.translate));
        let brightness = 1.0 + sym(cfg.brightness);
        let contrast = 1.0 + sym(cfg.contrast);
        let saturation = 1.0 + sym(cfg.saturation);
        let flip = cfg.flip > 0.0 && rng.random::<f32>() < cfg.flip;
        let grey = cfg.greyscale > 0.0 && rng.random::<f32>() < cfg.greyscale;
        Self {
            flip,
            zoom,
            shift,
            brightness,
            contrast,
            saturation,
            grey,
        }
    }
}

pub use device::augment_batch;
pub use host::{augment, render};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn seeded_draws_repeat() {
        let cfg = AugmentConfig::default();
        let a = Draw::sample(&cfg, &mut rand::rngs::StdRng::seed_from_u64(7));
        let b = Draw::sample(&cfg, &mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(a, b);
    }
}
