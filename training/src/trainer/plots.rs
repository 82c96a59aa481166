//! `loss.png`: the training loss per epoch (blue, left scale) and, when there are validation
//! people, the validation verification accuracy (orange, 0.5–1 scale), on a light grid.

use std::path::Path;

use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;

use super::EpochLog;
use crate::error::{Error, Result};

const W: u32 = 640;
const H: u32 = 400;
const PAD: f32 = 40.0;

fn polyline(img: &mut RgbImage, points: &[(f32, f32)], colour: Rgb<u8>) {
    for w in points.windows(2) {
        for d in [-1.0f32, 0.0, 1.0] {
            draw_line_segment_mut(img, (w[0].0, w[0].1 + d), (w[1].0, w[1].1 + d), colour);
        }
    }
    for &(x, y) in points {
        draw_filled_rect_mut(
            img,
            Rect::at(x as i32 - 3, y as i32 - 3).of_size(7, 7),
            colour,
        );
    }
}

/// Draw the curves of `history` into a PNG at `path`.
pub fn loss_png(path: &Path, history: &[EpochLog]) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let grid = Rgb([225, 225, 225]);
    let (x0, x1, y0, y1) = (PAD, W as f32 - PAD, PAD, H as f32 - PAD);
    for k in 0..=10 {
        let y = y0 + (y1 - y0) * k as f32 / 10.0;
        draw_line_segment_mut(&mut img, (x0, y), (x1, y), grid);
    }
    draw_line_segment_mut(&mut img, (x0, y1), (x1, y1), Rgb([0, 0, 0]));
    draw_line_segment_mut(&mut img, (x0, y0), (x0, y1), Rgb([0, 0, 0]));
    let n = history.len().max(2) - 1;
    let x_at = |i: usize| x0 + (x1 - x0) * i as f32 / n as f32;
    let max_loss = history
        .iter()
        .map(|h| h.train_loss)
        .filter(|l| l.is_finite())
        .fold(1e-6f64, f64::max) as f32;
    let loss: Vec<(f32, f32)> = history
        .iter()
        .enumerate()
        .filter(|(_, h)| h.train_loss.is_finite())
        .map(|(i, h)| (x_at(i), y1 - (y1 - y0) * (h.train_loss as f32 / max_loss)))
        .collect();
    polyline(&mut img, &loss, Rgb([31, 119, 180]));
    let acc: Vec<(f32, f32)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.val.map(|v| (i, v.best_balanced_accuracy as f32)))
        .map(|(i, a)| (x_at(i), y1 - (y1 - y0) * ((a - 0.5) / 0.5).clamp(0.0, 1.0)))
        .collect();
    polyline(&mut img, &acc, Rgb([255, 127, 14]));
    img.save(path).map_err(|e| Error::Plot {
        what: path.display().to_string(),
        reason: e.to_string(),
    })
}
