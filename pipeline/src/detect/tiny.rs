//! The tiny face detector: a YOLOv2-style grid with five anchors, separable convolutions
//! and leaky ReLU (input 416 px by default, any multiple of 32).

use image::RgbImage;

use crate::error::Result;
use crate::models::{ModelDir, TINY_FACE_DETECTOR};
use crate::nn::{max_pool, sigmoid, square_input, Activation, Conv2d, Padding, SeparableConv};

const ANCHORS: [(f32, f32); 5] = [
    (1.603_231, 2.094_468),
    (6.041_143, 7.080_126),
    (2.882_459, 3.518_061),
    (4.266_906, 5.178_857),
    (9.041_765, 10.663_08),
];
const MEAN_RGB: [f32; 3] = [117.001, 114.697, 97.404];
const IOU_THRESHOLD: f32 = 0.4;

pub(crate) struct Tiny {
    conv0: Conv2d,
    blocks: Vec<SeparableConv>,
    conv8: Conv2d,
}

/// A candidate: unit-square box `[x, y, w, h]` and score.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub score: f32,
    pub xywh: [f32; 4],
}

impl Tiny {
    pub fn load(models: &ModelDir) -> Result<Self> {
        let w = models.load(TINY_FACE_DETECTOR)?;
        let conv0 =
            Conv2d::from_weights(&w, "conv0/filters", Some("conv0/bias"), 1, Padding::Valid)?;
        let blocks = (1..=5)
            .map(|i| SeparableConv::from_weights(&w, &format!("conv{i}"), 1))
            .collect::<Result<Vec<_>>>()?;
        let conv8 =
            Conv2d::from_weights(&w, "conv8/filters", Some("conv8/bias"), 1, Padding::Valid)?;
        Ok(Tiny {
            conv0,
            blocks,
            conv8,
        })
    }

    pub fn run(&self, image: &RgbImage, input_size: usize, min_score: f32) -> Vec<Candidate> {
        let mut x = square_input(
            image,
            (0, 0, image.width(), image.height()),
            input_size,
            false,
        );
        for px in x.data.chunks_exact_mut(3) {
            for (v, m) in px.iter_mut().zip(MEAN_RGB) {
                *v = (*v - m) / 255.0;
            }
        }
        let mut out = self.conv0.forward(&x, Activation::Leaky);
        out = max_pool(&out, 2, 2, Padding::Same);
        for (i, block) in self.blocks.iter().enumerate() {
            out = block.forward(&out, Activation::Leaky);
            out = max_pool(&out, 2, if i < 4 { 2 } else { 1 }, Padding::Same);
        }
        let out = self.conv8.forward(&out, Activation::None);
        let n = out.h as f32;
        let mut candidates = Vec::new();
        for r in 0..out.h {
            for c in 0..out.w {
                let cell = out.pixel(r, c);
                for (k, (ax, ay)) in ANCHORS.iter().enumerate() {
                    let v = &cell[k * 5..k * 5 + 5];
                    let score = sigmoid(v[4]);
                    if score > min_score {
                        let cx = (c as f32 + sigmoid(v[0])) / n;
                        let cy = (r as f32 + sigmoid(v[1])) / n;
                        let bw = v[2].exp() * ax / n;
                        let bh = v[3].exp() * ay / n;
                        candidates.push(Candidate {
                            score,
                            xywh: [cx - bw / 2.0, cy - bh / 2.0, bw, bh],
                        });
                    }
                }
            }
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut keep: Vec<Candidate> = Vec::new();
        for c in candidates {
            if keep
                .iter()
                .all(|k| iou_xywh(&c.xywh, &k.xywh) <= IOU_THRESHOLD)
            {
                keep.push(c);
            }
        }
        keep
    }
}

fn iou_xywh(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}
