//! The 68-point landmark network (112 px input).
//!
//! Library semantics: the crop is the detection box clipped at the image borders with x, y,
//! width and height floored; it is padded to a centred square and resized to 112; the points
//! come back in crop pixels and are shifted by the *unfloored, unclipped* detection box.
// CONTRACT (filled in by the face-engine work): signatures below are used by other crates.

use image::RgbImage;

use crate::error::Result;
use crate::geometry::{BBox, Point};
use crate::models::{ModelDir, FACE_LANDMARK_68};
use crate::nn::{
    avg_pool_valid, gemm_acc, square_input, vector, Activation, Conv2d, Padding, SeparableConv,
    Tensor,
};

const INPUT_SIZE: usize = 112;
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// 68 landmarks in image pixels, in the iBUG 300-W order (jaw 0–16, brows 17–26, nose 27–35,
/// eyes 36–47, mouth 48–67).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Landmarks68(pub Vec<Point>);

impl Landmarks68 {
    /// Mean of the points `range` (e.g. 36..42 for the left eye).
    pub fn centroid(&self, range: std::ops::Range<usize>) -> Point {
        let pts = &self.0[range.start.min(self.0.len())..range.end.min(self.0.len())];
        let n = pts.len().max(1) as f32;
        let (sx, sy) = pts
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
        [sx / n, sy / n]
    }
}

/// `Box.clipAtImageBorders` of the library: the box clipped to the image, each of x, y,
/// width and height floored. None when nothing of the box lies inside the image.
pub fn clip_box(b: BBox, width: u32, height: u32) -> Option<(u32, u32, u32, u32)> {
    let (x, y, w, h) = (
        f64::from(b.x),
        f64::from(b.y),
        f64::from(b.width),
        f64::from(b.height),
    );
    let cx = x.max(0.0);
    let cy = y.max(0.0);
    let cw = (x + w - cx).min(f64::from(width) - cx).floor();
    let ch = (y + h - cy).min(f64::from(height) - cy).floor();
    if !(cw >= 1.0 && ch >= 1.0) {
        return None;
    }
    Some((cx.floor() as u32, cy.floor() as u32, cw as u32, ch as u32))
}

/// One densely connected block: a strided first convolution, then three separable ones
/// whose inputs are the running sums of the previous outputs.
struct DenseBlock {
    first: First,
    rest: [SeparableConv; 3],
}

enum First {
    Conv(Conv2d),
    Separable(SeparableConv),
}

impl DenseBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let o1 = match &self.first {
            First::Conv(c) => c.forward(x, Activation::Relu),
            First::Separable(c) => c.forward(x, Activation::Relu),
        };
        let o2 = self.rest[0].forward(&o1, Activation::None);
        let mut s12 = o1.add(&o2);
        let o3 = {
            let mut r = s12.clone();
            r.map_inplace(|v| v.max(0.0));
            self.rest[1].forward(&r, Activation::None)
        };
        s12 = s12.add(&o3);
        let o4 = {
            let mut r = s12.clone();
            r.map_inplace(|v| v.max(0.0));
            self.rest[2].forward(&r, Activation::None)
        };
        let mut out = s12.add(&o4);
        out.map_inplace(|v| v.max(0.0));
        out
    }
}

pub struct LandmarkNet {
    blocks: Vec<DenseBlock>,
    fc_weights: Vec<f32>,
    fc_bias: Vec<f32>,
}

impl LandmarkNet {
    pub fn load(models: &ModelDir) -> Result<Self> {
        let w = models.load(FACE_LANDMARK_68)?;
        let mut blocks = Vec::with_capacity(4);
        for i in 0..4 {
            let p = format!("dense{i}");
            let first = if i == 0 {
                First::Conv(Conv2d::from_weights(
                    &w,
                    &format!("{p}/conv0/filters"),
                    Some(&format!("{p}/conv0/bias")),
                    2,
                    Padding::Same,
                )?)
            } else {
                First::Separable(SeparableConv::from_weights(&w, &format!("{p}/conv0"), 2)?)
            };
            let sep = |j: usize| SeparableConv::from_weights(&w, &format!("{p}/conv{j}"), 1);
            blocks.push(DenseBlock {
                first,
                rest: [sep(1)?, sep(2)?, sep(3)?],
            });
        }
        Ok(LandmarkNet {
            blocks,
            fc_weights: vector(&w, "fc/weights", 256 * 136)?,
            fc_bias: vector(&w, "fc/bias", 136)?,
        })
    }

    /// Landmarks of the face inside `detection_box` (image pixels); None for an empty crop.
    pub fn landmarks(&self, image: &RgbImage, detection_box: BBox) -> Option<Landmarks68> {
        let region = clip_box(detection_box, image.width(), image.height())?;
        let (_, _, cw, ch) = region;
        let mut x = square_input(image, region, INPUT_SIZE, true);
        for px in x.data.chunks_exact_mut(3) {
            for (v, m) in px.iter_mut().zip(MEAN_RGB) {
                *v = (*v - m) / 255.0;
            }
        }
        for block in &self.blocks {
            x = block.forward(&x);
        }
        let pooled = avg_pool_valid(&x, 7, 2);
        let mut out = self.fc_bias.clone();
        gemm_acc(&pooled.data, &self.fc_weights, &mut out, 1, 256, 136);

        // Undo the centred padding: outputs are relative to the padded 112 square.
        let (w, h) = (f64::from(cw), f64::from(ch));
        let scale = INPUT_SIZE as f64 / w.max(h);
        let (sw, sh) = (w * scale, h * scale);
        let pad_x = if sw < sh { (sw - sh).abs() / 2.0 } else { 0.0 };
        let pad_y = if sh < sw { (sw - sh).abs() / 2.0 } else { 0.0 };
        let (dx, dy) = (f64::from(detection_box.x), f64::from(detection_box.y));
        let points = out
            .chunks_exact(2)
            .map(|p| {
                let px = (f64::from(p[0]) * INPUT_SIZE as f64 - pad_x) / sw * w;
                let py = (f64::from(p[1]) * INPUT_SIZE as f64 - pad_y) / sh * h;
                [(px + dx) as f32, (py + dy) as f32]
            })
            .collect();
        Some(Landmarks68(points))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_box_floors_and_clips() {
        assert_eq!(
            clip_box(BBox::new(-3.5, 2.7, 20.9, 10.2), 15, 100),
            Some((0, 2, 15, 10))
        );
        assert_eq!(clip_box(BBox::new(200.0, 0.0, 10.0, 10.0), 100, 100), None);
    }
}
