//! Face detectors: SSD MobileNetV1 (default, 512 px input) and the tiny detector (416 px).
//!
//! Both return boxes in the original image's pixels with the library's exact arithmetic:
//! the network sees the photo padded to a square (bottom/right) and resized; boxes come back
//! through the *rounded* resized dimensions, SSD boxes are clipped to the image, tiny boxes
//! are not.
// CONTRACT (filled in by the face-engine work): signatures below are used by other crates.

mod ssd;
mod tiny;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::geometry::BBox;
use crate::models::ModelDir;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    #[default]
    Ssd,
    Tiny,
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DetectorKind::Ssd => "ssd",
            DetectorKind::Tiny => "tiny",
        })
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ssd" => Ok(DetectorKind::Ssd),
            "tiny" => Ok(DetectorKind::Tiny),
            other => Err(crate::Error::Invalid(format!(
                "unknown detector {other:?}: use ssd or tiny"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorOptions {
    pub kind: DetectorKind,
    /// Minimum detection score (default 0.5).
    pub min_score: f32,
    /// Faces smaller than this many pixels on their shorter side are dropped.
    pub min_face_size: u32,
    /// Input size of the tiny detector (multiple of 32; default 416).
    pub tiny_input_size: u32,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            kind: DetectorKind::Ssd,
            min_score: 0.5,
            min_face_size: 0,
            tiny_input_size: 416,
        }
    }
}

/// One detected face.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
}

enum Net {
    Ssd(ssd::Ssd),
    Tiny(tiny::Tiny),
}

/// A loaded detector network.
pub struct Detector {
    options: DetectorOptions,
    net: Net,
}

impl Detector {
    pub fn load(models: &ModelDir, options: DetectorOptions) -> Result<Self> {
        let net = match options.kind {
            DetectorKind::Ssd => Net::Ssd(ssd::Ssd::load(models)?),
            DetectorKind::Tiny => {
                let size = options.tiny_input_size;
                if size == 0 || !size.is_multiple_of(32) {
                    return Err(crate::Error::Invalid(format!(
                        "tiny detector input size {size} is not a positive multiple of 32 (e.g. 416)"
                    )));
                }
                Net::Tiny(tiny::Tiny::load(models)?)
            }
        };
        Ok(Detector { options, net })
    }

    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Faces in image pixel coordinates, best score first.
    pub fn detect(&self, image: &RgbImage) -> Vec<Detection> {
        if image.width() == 0 || image.height() == 0 {
            return Vec::new();
        }
        let o = &self.options;
        let (net_size, unit_boxes): (usize, Vec<(f32, [f64; 4])>) = match &self.net {
            Net::Ssd(net) => (
                ssd::INPUT_SIZE,
                net.run(image, o.min_score)
                    .into_iter()
                    .map(|c| {
                        let [y0, x0, y1, x1] = c.yxyx.map(|v| f64::from(v.clamp(0.0, 1.0)));
                        (c.score, [x0, y0, x1 - x0, y1 - y0])
                    })
                    .collect(),
            ),
            Net::Tiny(net) => {
                let size = o.tiny_input_size as usize;
                (
                    size,
                    net.run(image, size, o.min_score)
                        .into_iter()
                        .map(|c| (c.score, c.xywh.map(f64::from)))
                        .collect(),
                )
            }
        };
        let (fx, fy) = unit_to_pixels(image.width(), image.height(), net_size);
        unit_boxes
            .into_iter()
            .map(|(score, [x, y, w, h])| Detection {
                score,
                bbox: BBox::new(
                    (x * fx) as f32,
                    (y * fy) as f32,
                    (w * fx) as f32,
                    (h * fy) as f32,
                ),
            })
            .filter(|d| d.bbox.width.min(d.bbox.height) >= o.min_face_size as f32)
            .collect()
    }
}

/// Factors from the unit square of the padded input to image pixels. The library goes
/// through the resized image's dimensions, which it rounds (JS `Math.round`): replicate it.
fn unit_to_pixels(width: u32, height: u32, net_size: usize) -> (f64, f64) {
    let (w, h, n) = (f64::from(width), f64::from(height), net_size as f64);
    let side = w.max(h);
    let r = n / side;
    let fx = n / crate::nn::js_round(w * r) * w;
    let fy = n / crate::nn::js_round(h * r) * h;
    (fx, fy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_boxes_scale_through_rounded_dimensions() {
        // Square image: exactly its side.
        let (fx, fy) = unit_to_pixels(640, 640, 512);
        assert!((fx - 640.0).abs() < 1e-9 && (fy - 640.0).abs() < 1e-9);
        // 1000x333: height resizes to 170.496 -> 170, so y scales by 512/170*333.
        let (fx, fy) = unit_to_pixels(1000, 333, 512);
        assert!((fx - 1000.0).abs() < 1e-9);
        assert!((fy - 512.0 / 170.0 * 333.0).abs() < 1e-9);
    }
}
