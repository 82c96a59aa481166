//! The device path: a whole batch of decoded crops augmented and normalised with tensor ops
//! where the batch already is (the GPU, on CUDA runs).
//!
//! The geometric part is one affine map per image, in the normalised coordinates of
//! `affine_grid` (`align_corners = false`): an output pixel's centre at `b ∈ (−1, 1)` reads
//! the source at `±b / zoom − 2·shift` (sign `−` when flipped), which is exactly the host
//! path's pixel-centre map; `border` padding is its clamp to the edge. The colour part then
//! follows the host path step by step: brightness, greyscale or saturation around the pixel's
//! grey level, contrast around the image's mean grey, clamp to 0–255, normalise.

use tch::{Kind, Tensor};

use super::{Draw, InputSpec};

/// ITU-R BT.601 luma weights, as the host path uses.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// The draws of a batch as an `N×8` tensor of `[flip sign, zoom, shift x, shift y,
/// brightness, contrast, saturation, grey]`.
fn draw_table(draws: &[Draw]) -> Vec<f32> {
    draws
        .iter()
        .flat_map(|d| {
            [
                if d.flip { -1.0 } else { 1.0 },
                d.zoom,
                d.shift.0,
                d.shift.1,
                d.brightness,
                d.contrast,
                d.saturation,
                if d.grey { 1.0 } else { 0.0 },
            ]
        })
        .collect()
}

/// Augment `pixels` (`N×H×W×3` `u8`, as decoded, on any device) by one [`Draw`] per image and
/// normalise by `spec`; returns `N×3×S×S` `f32` on the same device.
///
/// # Errors
/// When the shapes disagree (`draws.len() != N`, or `pixels` is not `N×H×W×3`).
pub fn augment_batch(
    pixels: &Tensor,
    draws: &[Draw],
    spec: &InputSpec,
) -> Result<Tensor, tch::TchError> {
    let size = pixels.size();
    let n = draws.len() as i64;
    if size.len() != 4 || size[0] != n || size[3] != 3 {
        return Err(tch::TchError::Shape(format!(
            "augment_batch wants N×H×W×3 pixels for {n} draws, got {size:?}"
        )));
    }
    let device = pixels.device();
    let s = i64::from(spec.size);
    let p = Tensor::f_from_slice(&draw_table(draws))?
        .f_view([n, 8])?
        .f_to(device)?;
    let col = |i: i64| p.narrow(1, i, 1);
    let zero = Tensor::zeros([n, 1], (Kind::Float, device));
    // Row x: [sign/zoom, 0, −2·shift_x]; row y: [0, 1/zoom, −2·shift_y].
    let inv_zoom = col(1).reciprocal();
    let theta = Tensor::f_cat(
        &[
            &col(0) * &inv_zoom,
            zero.shallow_clone(),
            col(2) * -2.0,
            zero,
            inv_zoom,
            col(3) * -2.0,
        ],
        1,
    )?
    .f_view([n, 2, 3])?;
    let grid = Tensor::f_affine_grid_generator(&theta, [n, 3, s, s], false)?;
    let src = pixels.f_permute([0, 3, 1, 2])?.f_to_kind(Kind::Float)?;
    // Bilinear (mode 0), border padding (1), align_corners = false.
    let x = Tensor::f_grid_sampler(&src, &grid, 0, 1, false)?;

    let per_image = |i: i64| col(i).view([n, 1, 1, 1]);
    let x = x * per_image(4);
    let luma = Tensor::f_from_slice(&LUMA)?
        .f_view([1, 3, 1, 1])?
        .f_to(device)?;
    let grey = (&x * &luma).f_sum_dim_intlist(1, true, Kind::Float)?;
    // Greyscale is saturation 0: blend towards grey by saturation × (1 − grey flag).
    let keep = per_image(6) * (1.0 - per_image(7));
    let x = &grey + (x - &grey) * keep;
    let mean = grey.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
    let x: Tensor = &mean + (x - &mean) * per_image(5);
    let x = x.f_clamp(0.0, 255.0)?;
    let m = Tensor::f_from_slice(&spec.mean)?
        .f_view([1, 3, 1, 1])?
        .f_to(device)?;
    let sd = Tensor::f_from_slice(&spec.std)?
        .f_view([1, 3, 1, 1])?
        .f_to(device)?;
    Ok((x - m) / sd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{render, AugmentConfig};
    use image::RgbImage;
    use rand::SeedableRng;

    /// A crop with structure in every channel and both axes (so a wrong flip, shift or
    /// channel order shows), at `w×h`.
    fn crop(w: u32, h: u32, salt: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = |k: u32| {
                ((x * (3 + k) + y * (5 + 2 * k) + salt * 17 + (x * y) % (7 + k)) % 256) as u8
            };
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    fn as_batch(imgs: &[RgbImage]) -> Tensor {
        let (w, h) = (i64::from(imgs[0].width()), i64::from(imgs[0].height()));
        let raw: Vec<u8> = imgs
            .iter()
            .flat_map(|i| i.as_raw().iter().copied())
            .collect();
        Tensor::from_slice(&raw).view([imgs.len() as i64, h, w, 3])
    }

    fn host(imgs: &[RgbImage], draws: &[Draw], spec: &InputSpec) -> Tensor {
        let len = spec.chw_len();
        let mut out = vec![0f32; imgs.len() * len];
        for ((img, d), o) in imgs.iter().zip(draws).zip(out.chunks_mut(len)) {
            render(img, spec, d, o);
        }
        let s = i64::from(spec.size);
        Tensor::from_slice(&out).view([imgs.len() as i64, 3, s, s])
    }

    fn draws(n: usize, cfg: &AugmentConfig, seed: u64) -> Vec<Draw> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| Draw::sample(cfg, &mut rng)).collect()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn identical_draws_give_the_host_pixels() {
        // Every augmentation on, strengthened so each one moves pixels a lot.
        let cfg = AugmentConfig {
            flip: 0.5,
            scale: 0.2,
            translate: 0.15,
            brightness: 0.5,
            contrast: 0.5,
            saturation: 0.5,
            greyscale: 0.3,
        };
        for (spec, (w, h)) in [
            (InputSpec::mobilefacenet(), (150, 150)),
            (InputSpec::pretrained_resnet(), (150, 150)),
            // Non-square sources and upsampling go through the same map.
            (InputSpec::mobilefacenet(), (90, 120)),
        ] {
            let imgs: Vec<RgbImage> = (0..24).map(|i| crop(w, h, i)).collect();
            let d = draws(imgs.len(), &cfg, 3);
            assert!(d.iter().any(|d| d.flip) && d.iter().any(|d| d.grey));
            let want = host(&imgs, &d, &spec);
            let got = augment_batch(&as_batch(&imgs), &d, &spec).unwrap();
            assert_eq!(got.size(), want.size());
            // Tolerance: f32 rounding of the two orders of arithmetic, about 1e-3 grey
            // levels, is ~1e-5 after dividing by 128 or 255; 1e-3 leaves room and is still
            // a thousandth of one grey level's step (1/128), far below any real mismatch (a
            // half-pixel shift moves these crops by whole grey levels).
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff < 1e-3,
                "{w}×{h} → {}: max |device − host| = {diff}",
                spec.size
            );
        }
    }

    #[test]
    fn the_identity_draw_resizes_and_normalises_only() {
        let spec = InputSpec::mobilefacenet();
        let imgs: Vec<RgbImage> = (0..3).map(|i| crop(112, 112, i)).collect();
        let d = vec![Draw::identity(); 3];
        let got = augment_batch(&as_batch(&imgs), &d, &spec).unwrap();
        let plain = as_batch(&imgs).permute([0, 3, 1, 2]).to_kind(Kind::Float);
        let want = (plain - 127.5) / 128.0;
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }

    #[test]
    fn a_sampled_batch_has_the_host_paths_statistics() {
        // Statistics of a fixed batch under independently sampled draws on each side: the
        // two paths must agree in distribution, not only pixel by pixel on shared draws.
        let spec = InputSpec::mobilefacenet();
        let cfg = AugmentConfig::default();
        let imgs: Vec<RgbImage> = (0..64).map(|i| crop(150, 150, i % 8)).collect();
        let host_out = host(&imgs, &draws(64, &cfg, 11), &spec);
        let dev_out = augment_batch(&as_batch(&imgs), &draws(64, &cfg, 12), &spec).unwrap();
        for c in 0..3 {
            let h = host_out.select(1, c);
            let d = dev_out.select(1, c);
            let (hm, dm) = (
                h.mean(Kind::Float).double_value(&[]),
                d.mean(Kind::Float).double_value(&[]),
            );
            let (hs, ds) = (h.std(true).double_value(&[]), d.std(true).double_value(&[]));
            // 64 images of 8 distinct crops: per-image jitter (brightness ±25 %) moves the
            // batch mean by a few hundredths; a systematic error (no normalisation, a
            // channel swap, a missing clamp) moves it by tenths.
            assert!(
                (hm - dm).abs() < 0.05,
                "channel {c} mean: host {hm} device {dm}"
            );
            assert!(
                (hs / ds - 1.0).abs() < 0.1,
                "channel {c} std: host {hs} device {ds}"
            );
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let spec = InputSpec::mobilefacenet();
        let px = Tensor::zeros([2, 8, 8, 3], (Kind::Uint8, tch::Device::Cpu));
        assert!(augment_batch(&px, &[Draw::identity()], &spec).is_err());
        let chw = Tensor::zeros([1, 3, 8, 8], (Kind::Uint8, tch::Device::Cpu));
        assert!(augment_batch(&chw, &[Draw::identity()], &spec).is_err());
    }
}
