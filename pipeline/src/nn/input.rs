//! Network input preparation as the tfjs library does it: pad a region to a square with
//! zeros (bottom/right, or centred with JS rounding), then a legacy bilinear resize
//! (`alignCorners = false`, `halfPixelCenters = false`). The padded square is never
//! materialised: samples are read straight from the 8-bit photo.

use image::RgbImage;

use super::{js_round, Tensor};

/// One sampling position along an axis: two source indices (in the padded square) and a weight.
struct Tap {
    i0: usize,
    i1: usize,
    frac: f32,
}

fn taps(side: usize, size: usize) -> Vec<Tap> {
    let scale = side as f64 / size as f64;
    (0..size)
        .map(|o| {
            let pos = o as f64 * scale;
            let i0 = pos.floor() as usize;
            Tap {
                i0,
                i1: (i0 + 1).min(side - 1),
                frac: (pos - i0 as f64) as f32,
            }
        })
        .collect()
}

/// The region `(x0, y0, w, h)` of `img` padded to a square and resized to `size × size`,
/// as f32 RGB values in 0..=255. `center` pads on both sides (landmarks, recognition);
/// otherwise the padding goes to the bottom/right (detectors). The region must lie inside
/// the image and be non-empty.
pub fn square_input(
    img: &RgbImage,
    region: (u32, u32, u32, u32),
    size: usize,
    center: bool,
) -> Tensor {
    let (x0, y0, w, h) = region;
    let (w, h) = (w as usize, h as usize);
    let side = w.max(h);
    let diff = w.abs_diff(h);
    // JS Math.round of the appended part; the rest goes before when centred.
    let append = js_round(diff as f64 * if center { 0.5 } else { 1.0 }) as usize;
    let before = if center { diff - append } else { 0 };
    let (pad_x, pad_y) = if h > w { (before, 0) } else { (0, before) };

    let raw = img.as_raw();
    let stride = img.width() as usize * 3;
    // A pixel of the padded square, zero outside the region.
    let sample = |py: usize, px: usize| -> [f32; 3] {
        let (Some(ry), Some(rx)) = (py.checked_sub(pad_y), px.checked_sub(pad_x)) else {
            return [0.0; 3];
        };
        if ry >= h || rx >= w {
            return [0.0; 3];
        }
        let o = (y0 as usize + ry) * stride + (x0 as usize + rx) * 3;
        [
            f32::from(raw[o]),
            f32::from(raw[o + 1]),
            f32::from(raw[o + 2]),
        ]
    };

    let ys = taps(side, size);
    let xs = taps(side, size);
    let mut out = Tensor::zeros(size, size, 3);
    for (oy, ty) in ys.iter().enumerate() {
        for (ox, tx) in xs.iter().enumerate() {
            let a = sample(ty.i0, tx.i0);
            let b = sample(ty.i0, tx.i1);
            let c = sample(ty.i1, tx.i0);
            let d = sample(ty.i1, tx.i1);
            let o = (oy * size + ox) * 3;
            for ch in 0..3 {
                let top = a[ch] + (b[ch] - a[ch]) * tx.frac;
                let bot = c[ch] + (d[ch] - c[ch]) * tx.frac;
                out.data[o + ch] = top + (bot - top) * ty.frac;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_square_is_the_identity() {
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
        let t = square_input(&img, (0, 0, 4, 4), 4, false);
        assert_eq!(t.pixel(2, 3), &[30.0, 20.0, 7.0]);
    }

    #[test]
    fn centred_padding_rounds_like_javascript() {
        // 3 wide, 6 high: diff 3, appended round(1.5) = 2 columns, 1 before.
        let img = RgbImage::from_pixel(3, 6, image::Rgb([100, 100, 100]));
        let t = square_input(&img, (0, 0, 3, 6), 6, true);
        assert_eq!(t.pixel(0, 0), &[0.0; 3]);
        assert_eq!(t.pixel(0, 1), &[100.0; 3]);
        assert_eq!(t.pixel(0, 3), &[100.0; 3]);
        assert_eq!(t.pixel(0, 4), &[0.0; 3]);
        // Detector style: everything appended at the right.
        let t = square_input(&img, (0, 0, 3, 6), 6, false);
        assert_eq!(t.pixel(0, 0), &[100.0; 3]);
        assert_eq!(t.pixel(0, 3), &[0.0; 3]);
    }
}
