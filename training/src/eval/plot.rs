//! PNG plots without fonts: the ROC curve and training curves, drawn with imageproc lines on
//! a white canvas with a light 10 % grid (axes run 0–1 for ROC; curves are scaled to fit).

use std::path::Path;

use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;

use crate::error::{Error, Result};

const W: u32 = 640;
const H: u32 = 480;
const MARGIN: f32 = 40.0;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const DIAGONAL: Rgb<u8> = Rgb([170, 170, 170]);
/// Colours for successive curves (blue, orange, green, red).
const PALETTE: [Rgb<u8>; 4] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
];

struct Canvas {
    img: RgbImage,
    x: (f64, f64),
    y: (f64, f64),
}

impl Canvas {
    fn new(x: (f64, f64), y: (f64, f64)) -> Self {
        let mut img = RgbImage::from_pixel(W, H, WHITE);
        let (x0, y0, x1, y1) = (MARGIN, MARGIN, W as f32 - MARGIN, H as f32 - MARGIN);
        for i in 0..=10 {
            let f = i as f32 / 10.0;
            let gx = x0 + f * (x1 - x0);
            let gy = y0 + f * (y1 - y0);
            draw_line_segment_mut(&mut img, (gx, y0), (gx, y1), GRID);
            draw_line_segment_mut(&mut img, (x0, gy), (x1, gy), GRID);
        }
        draw_line_segment_mut(&mut img, (x0, y1), (x1, y1), AXIS);
        draw_line_segment_mut(&mut img, (x0, y0), (x0, y1), AXIS);
        Canvas { img, x, y }
    }

    fn to_px(&self, (x, y): (f64, f64)) -> (f32, f32) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0).max(1e-12);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0).max(1e-12);
        let w = W as f32 - 2.0 * MARGIN;
        let h = H as f32 - 2.0 * MARGIN;
        (MARGIN + fx as f32 * w, H as f32 - MARGIN - fy as f32 * h)
    }

    /// A polyline two pixels thick.
    fn curve(&mut self, points: &[(f64, f64)], colour: Rgb<u8>) {
        for w in points.windows(2) {
            let (a, b) = (self.to_px(w[0]), self.to_px(w[1]));
            for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
                draw_line_segment_mut(
                    &mut self.img,
                    (a.0 + dx, a.1 + dy),
                    (b.0 + dx, b.1 + dy),
                    colour,
                );
            }
        }
        if let [p] = points {
            let (x, y) = self.to_px(*p);
            draw_filled_rect_mut(
                &mut self.img,
                Rect::at(x as i32 - 2, y as i32 - 2).of_size(5, 5),
                colour,
            );
        }
    }

    fn save(&self, path: &Path, what: &str) -> Result<()> {
        self.img.save(path).map_err(|e| Error::Plot {
            what: format!("{what} to {}", path.display()),
            reason: e.to_string(),
        })
    }
}

/// ROC curve (x: FAR, y: TAR, both 0–1) with the chance diagonal, to a PNG.
pub fn plot_roc(points: &[(f64, f64)], path: &Path) -> Result<()> {
    let mut c = Canvas::new((0.0, 1.0), (0.0, 1.0));
    let diag = [(0.0, 0.0), (1.0, 1.0)];
    let (a, b) = (c.to_px(diag[0]), c.to_px(diag[1]));
    draw_line_segment_mut(&mut c.img, a, b, DIAGONAL);
    c.curve(points, PALETTE[0]);
    c.save(path, "ROC curve")
}

/// Several `(x, y)` series on shared axes scaled to fit (y from 0 when all values are
/// positive), colours in order blue, orange, green, red.
pub fn plot_curves(series: &[&[(f64, f64)]], path: &Path) -> Result<()> {
    let all = series
        .iter()
        .flat_map(|s| s.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return Err(Error::Plot {
            what: path.display().to_string(),
            reason: "no finite points to draw".into(),
        });
    }
    if y0 > 0.0 {
        y0 = 0.0;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let mut c = Canvas::new((x0, x1), (y0, y1 * 1.05));
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        c.curve(&pts, PALETTE[i % PALETTE.len()]);
    }
    c.save(path, "curve")
}

/// The training-loss curve: `(step or epoch, loss)` points to a PNG.
pub fn plot_loss(points: &[(f64, f64)], path: &Path) -> Result<()> {
    plot_curves(&[points], path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_roc_and_loss_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let roc = dir.path().join("roc.png");
        plot_roc(&[(0.0, 0.0), (0.0, 0.9), (0.1, 1.0), (1.0, 1.0)], &roc).unwrap();
        let img = image::open(&roc).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (W, H));
        // The curve's vertical leg at FAR 0 is blue at mid height.
        let (x, y) = (MARGIN as u32, H / 2);
        assert_eq!(*img.get_pixel(x, y), PALETTE[0]);
        let loss = dir.path().join("loss.png");
        let pts: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64, 5.0 / (1.0 + i as f64)))
            .collect();
        plot_loss(&pts, &loss).unwrap();
        let img = image::open(&loss).unwrap().to_rgb8();
        assert!(img.pixels().filter(|p| **p == PALETTE[0]).count() > 200);
        assert!(plot_loss(&[], &loss).is_err());
    }
}
