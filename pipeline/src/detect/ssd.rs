//! SSD MobileNetV1 (512 px input): MobileNetV1 backbone, six box-predictor heads and
//! 5,118 anchors read from the weights (`Output/extra_dim`).

use image::RgbImage;

use crate::error::{Error, Result};
use crate::models::{ModelDir, TfjsWeights, SSD_MOBILENETV1};
use crate::nn::{sigmoid, square_input, Activation, Conv2d, DepthwiseConv, Padding, Tensor};

pub const INPUT_SIZE: usize = 512;
// TF's batch-norm epsilon (0.001 in f32, i.e. 0.0010000000474974513).
const BN_EPS: f32 = 0.001;
const IOU_THRESHOLD: f32 = 0.5;
const MAX_RESULTS: usize = 100;

pub(crate) struct Ssd {
    conv0: Conv2d,
    blocks: Vec<(DepthwiseConv, Conv2d)>,
    prediction: Vec<Conv2d>,
    /// Box encoding and class logits of each feature map, fused into one 1×1 convolution.
    heads: Vec<(Conv2d, usize)>,
    /// `[ymin, xmin, ymax, xmax]` in the unit square.
    anchors: Vec<[f32; 4]>,
}

/// A candidate before NMS: unit-square box `[ymin, xmin, ymax, xmax]` and score.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub score: f32,
    pub yxyx: [f32; 4],
}

impl Ssd {
    pub fn load(models: &ModelDir) -> Result<Self> {
        let w = models.load(SSD_MOBILENETV1)?;
        let pointwise = |prefix: &str, stride: usize| {
            Conv2d::from_weights(
                &w,
                &format!("{prefix}/weights"),
                Some(&format!("{prefix}/convolution_bn_offset")),
                stride,
                Padding::Same,
            )
        };
        let conv0 = pointwise("MobilenetV1/Conv2d_0_pointwise", 2)?;
        let mut blocks = Vec::with_capacity(13);
        for i in 1..=13 {
            let stride = if matches!(i, 2 | 4 | 6 | 12) { 2 } else { 1 };
            let p = format!("MobilenetV1/Conv2d_{i}_depthwise");
            let mut dw =
                DepthwiseConv::from_weights(&w, &format!("{p}/depthwise_weights"), stride)?;
            let n = dw.c;
            let v = |s: &str| crate::nn::vector(&w, &format!("{p}/BatchNorm/{s}"), n);
            dw.fold_batch_norm(
                &v("gamma")?,
                &v("beta")?,
                &v("moving_mean")?,
                &v("moving_variance")?,
                BN_EPS,
            );
            blocks.push((
                dw,
                pointwise(&format!("MobilenetV1/Conv2d_{i}_pointwise"), 1)?,
            ));
        }
        let prediction = (0..8)
            .map(|i| pointwise(&format!("Prediction/Conv2d_{i}_pointwise"), 1 + i % 2))
            .collect::<Result<Vec<_>>>()?;
        let heads = (0..6)
            .map(|i| {
                let p = format!("Prediction/BoxPredictor_{i}");
                let boxes = Conv2d::from_weights(
                    &w,
                    &format!("{p}/BoxEncodingPredictor/weights"),
                    Some(&format!("{p}/BoxEncodingPredictor/biases")),
                    1,
                    Padding::Same,
                )?;
                let classes = Conv2d::from_weights(
                    &w,
                    &format!("{p}/ClassPredictor/weights"),
                    Some(&format!("{p}/ClassPredictor/biases")),
                    1,
                    Padding::Same,
                )?;
                Ok((boxes.concat_outputs(&classes), boxes.co / 4))
            })
            .collect::<Result<Vec<_>>>()?;
        let anchors = read_anchors(&w)?;
        let total: usize = [32 * 32, 16 * 16, 8 * 8, 4 * 4, 2 * 2, 1]
            .iter()
            .zip(&heads)
            .map(|(cells, (_, per))| cells * per)
            .sum();
        if total != anchors.len() {
            return Err(Error::BadModel {
                path: models.root().join(SSD_MOBILENETV1),
                reason: format!(
                    "{} anchors but the heads predict {total} boxes",
                    anchors.len()
                ),
            });
        }
        Ok(Ssd {
            conv0,
            blocks,
            prediction,
            heads,
            anchors,
        })
    }

    /// Scored, decoded boxes after NMS, best first (unit square of the padded input).
    pub fn run(&self, image: &RgbImage, min_score: f32) -> Vec<Candidate> {
        let mut x = square_input(
            image,
            (0, 0, image.width(), image.height()),
            INPUT_SIZE,
            false,
        );
        x.map_inplace(|v| v / 127.5 - 1.0);
        let relu6 = Activation::Relu6;
        let mut out = self.conv0.forward(&x, relu6);
        let mut conv11 = None;
        for (i, (dw, pw)) in self.blocks.iter().enumerate() {
            out = pw.forward(&dw.forward(&out, relu6), relu6);
            if i + 1 == 11 {
                conv11 = Some(out.clone());
            }
        }
        let Some(conv11) = conv11 else {
            return Vec::new();
        };
        let p = &self.prediction;
        let c0 = p[0].forward(&out, relu6);
        let c1 = p[1].forward(&c0, relu6);
        let c3 = p[3].forward(&p[2].forward(&c1, relu6), relu6);
        let c5 = p[5].forward(&p[4].forward(&c3, relu6), relu6);
        let c7 = p[7].forward(&p[6].forward(&c5, relu6), relu6);
        let maps: [&Tensor; 6] = [&conv11, &out, &c1, &c3, &c5, &c7];

        let mut candidates = Vec::new();
        let mut anchor = 0usize;
        for (map, (head, per_cell)) in maps.iter().zip(&self.heads) {
            let o = head.forward(map, Activation::None);
            for cell in o.data.chunks_exact(o.c) {
                let (boxes, classes) = cell.split_at(per_cell * 4);
                for k in 0..*per_cell {
                    let score = sigmoid(classes[k * 3 + 1]);
                    if score > min_score {
                        if let Some(a) = self.anchors.get(anchor + k) {
                            candidates.push(Candidate {
                                score,
                                yxyx: decode(&boxes[k * 4..k * 4 + 4], a),
                            });
                        }
                    }
                }
                anchor += per_cell;
            }
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut keep: Vec<Candidate> = Vec::new();
        for c in candidates {
            if keep.len() >= MAX_RESULTS {
                break;
            }
            if keep
                .iter()
                .all(|k| iou_yxyx(&c.yxyx, &k.yxyx) <= IOU_THRESHOLD)
            {
                keep.push(c);
            }
        }
        keep
    }
}

fn read_anchors(w: &TfjsWeights) -> Result<Vec<[f32; 4]>> {
    let t = w.get("Output/extra_dim")?;
    let flat: Vec<f32> = t.iter().copied().collect();
    if !flat.len().is_multiple_of(4) || flat.is_empty() {
        return Err(Error::BadModel {
            path: "Output/extra_dim".into(),
            reason: format!("anchor tensor of shape {:?}", t.shape()),
        });
    }
    Ok(flat
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}

/// Centre-size box decoding with the TF object-detection scales (10, 10, 5, 5).
fn decode(t: &[f32], a: &[f32; 4]) -> [f32; 4] {
    let ah = a[2] - a[0];
    let aw = a[3] - a[1];
    let acy = a[0] + ah / 2.0;
    let acx = a[1] + aw / 2.0;
    let cy = t[0] / 10.0 * ah + acy;
    let cx = t[1] / 10.0 * aw + acx;
    let hh = (t[2] / 5.0).exp() * ah / 2.0;
    let hw = (t[3] / 5.0).exp() * aw / 2.0;
    [cy - hh, cx - hw, cy + hh, cx + hw]
}

fn iou_yxyx(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ih = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iw = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ih * iw;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}
