//! The CPU path: one image at a time, in one pass over its output pixels.

use std::ops::Deref;

use image::{ImageBuffer, Rgb, RgbImage};
use rand::Rng;

use super::{AugmentConfig, Draw, InputSpec};

/// Write `src` augmented by `draw` and normalised by `spec` into `out` (CHW, `spec.chw_len()`).
/// `src` may borrow its pixels (a loader worker's reused decode buffer).
///
/// # Panics
/// If `out.len() != spec.chw_len()` (a programming error, not an input error).
pub fn render<C: Deref<Target = [u8]>>(
    src: &ImageBuffer<Rgb<u8>, C>,
    spec: &InputSpec,
    draw: &Draw,
    out: &mut [f32],
) {
    assert_eq!(out.len(), spec.chw_len(), "output buffer size");
    let s = spec.size as usize;
    let plane = s * s;
    let (sw, sh) = (src.width() as f32, src.height() as f32);
    if sw < 1.0 || sh < 1.0 {
        out.fill(0.0);
        return;
    }
    // Output pixel centre (u, v) maps to source (x, y): centre, undo zoom, shift, resize.
    let step_x = sw / (s as f32 * draw.zoom);
    let step_y = sh / (s as f32 * draw.zoom);
    let cx = sw / 2.0 - draw.shift.0 * sw;
    let cy = sh / 2.0 - draw.shift.1 * sh;
    let half = s as f32 / 2.0;
    let raw: &[u8] = src.as_raw();
    let w = src.width() as usize;
    let (max_x, max_y) = (sw - 1.0, sh - 1.0);
    // Every row samples the same columns: their source positions and weights, once per image.
    let columns: Vec<(usize, usize, f32)> = (0..s)
        .map(|u| {
            let uu = if draw.flip { s - 1 - u } else { u };
            let x = (cx + (uu as f32 + 0.5 - half) * step_x - 0.5).clamp(0.0, max_x);
            let x0 = x as usize; // x ≥ 0, so truncation is floor
            let x1 = (x0 + 1).min(max_x as usize);
            (x0 * 3, x1 * 3, x - x0 as f32)
        })
        .collect();
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let mut sum_grey = 0.0f64;
    for v in 0..s {
        let y = (cy + (v as f32 + 0.5 - half) * step_y - 0.5).clamp(0.0, max_y);
        let y0 = y as usize;
        let y1 = (y0 + 1).min(max_y as usize);
        let fy = y - y0 as f32;
        let top_row = &raw[y0 * w * 3..(y0 + 1) * w * 3];
        let bot_row = &raw[y1 * w * 3..(y1 + 1) * w * 3];
        let row = v * s..(v + 1) * s;
        let mut row_grey = 0.0f32;
        for ((&(x0, x1, fx), r), (g, b)) in columns
            .iter()
            .zip(&mut r_plane[row.clone()])
            .zip(g_plane[row.clone()].iter_mut().zip(&mut b_plane[row]))
        {
            let mut px = [0f32; 3];
            for (c, p) in px.iter_mut().enumerate() {
                let a = f32::from(top_row[x0 + c]);
                let b = f32::from(top_row[x1 + c]);
                let d = f32::from(bot_row[x0 + c]);
                let e = f32::from(bot_row[x1 + c]);
                let top = a + (b - a) * fx;
                let bot = d + (e - d) * fx;
                *p = (top + (bot - top) * fy) * draw.brightness;
            }
            let grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
            row_grey += grey;
            let sat = if draw.grey { 0.0 } else { draw.saturation };
            *r = grey + (px[0] - grey) * sat;
            *g = grey + (px[1] - grey) * sat;
            *b = grey + (px[2] - grey) * sat;
        }
        sum_grey += f64::from(row_grey);
    }
    // Contrast blends towards the image's mean grey level; then clamp and normalise.
    let mean = (sum_grey / plane as f64) as f32;
    for (c, channel) in out.chunks_exact_mut(plane).enumerate() {
        let (m, inv_sd) = (spec.mean[c], 1.0 / spec.std[c]);
        for x in channel {
            let val = (mean + (*x - mean) * draw.contrast).clamp(0.0, 255.0);
            *x = (val - m) * inv_sd;
        }
    }
}

/// Convenience: draw from `cfg` and render into a fresh buffer.
pub fn augment<R: Rng + ?Sized>(
    src: &RgbImage,
    spec: &InputSpec,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Vec<f32> {
    let draw = Draw::sample(cfg, rng);
    let mut out = vec![0f32; spec.chw_len()];
    render(src, spec, &draw, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 200])
        })
    }

    #[test]
    fn identity_draw_at_same_size_reproduces_the_pixels() {
        let img = gradient(112, 112);
        let spec = InputSpec {
            size: 112,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut out = vec![0f32; spec.chw_len()];
        render(&img, &spec, &Draw::identity(), &mut out);
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                assert!((out[c * 112 * 112 + i] - p[c] as f32).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn flip_mirrors_columns() {
        let img = gradient(64, 64);
        let spec = InputSpec {
            size: 64,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut plain = vec![0f32; spec.chw_len()];
        let mut flipped = vec![0f32; spec.chw_len()];
        render(&img, &spec, &Draw::identity(), &mut plain);
        let draw = Draw {
            flip: true,
            ..Draw::identity()
        };
        render(&img, &spec, &draw, &mut flipped);
        for v in 0..64 {
            for u in 0..64 {
                assert_eq!(plain[v * 64 + u], flipped[v * 64 + 63 - u]);
            }
        }
    }

    #[test]
    fn greyscale_makes_channels_equal() {
        let img = gradient(150, 150);
        let spec = InputSpec::mobilefacenet();
        let mut out = vec![0f32; spec.chw_len()];
        let draw = Draw {
            grey: true,
            ..Draw::identity()
        };
        render(&img, &spec, &draw, &mut out);
        let plane = 112 * 112;
        for i in 0..plane {
            assert_eq!(out[i], out[plane + i]);
            assert_eq!(out[i], out[2 * plane + i]);
        }
    }
}
