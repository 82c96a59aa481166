//! detect → landmarks → align in one call, with the tight-crop fallback.
//!
//! Photos that are already tight face crops (ORL, pre-aligned chips) leave the detector no
//! context and it finds nothing. With `tight_crop_fallback` the engine then retries on a copy
//! padded with a neutral grey border (boxes mapped back), and as a last resort takes the whole
//! photo as the face box. [`Face::found_by`] records the path.
// CONTRACT (filled in by the face-engine work): signatures below are used by other crates.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::align::Alignment;
use crate::detect::{Detection, Detector, DetectorOptions};
use crate::error::Result;
use crate::geometry::{BBox, Point};
use crate::image_io::DecodeLimits;
use crate::landmarks::LandmarkNet;
use crate::models::ModelDir;

/// Which path found a face: tight crops (ORL, pre-aligned chips) defeat the detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// The detector on the photo as given.
    Detector,
    /// The detector on the photo padded with a border (tight crops).
    PaddedRetry,
    /// No detection: the whole image taken as the face box, landmarks run on it.
    WholeImage,
}

impl std::fmt::Display for FoundBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FoundBy::Detector => "detector",
            FoundBy::PaddedRetry => "padded_retry",
            FoundBy::WholeImage => "whole_image",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineOptions {
    pub detector: DetectorOptions,
    pub alignment: Alignment,
    /// Retry a photo with no detection on a padded copy, then fall back to the whole image.
    pub tight_crop_fallback: bool,
    pub limits: DecodeLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            detector: DetectorOptions::default(),
            alignment: Alignment::default(),
            tight_crop_fallback: true,
            limits: DecodeLimits::default(),
        }
    }
}

/// One face found in a photo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Face {
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub score: f32,
    /// 68 `[x, y]` points in image pixels.
    pub landmarks: Vec<Point>,
    pub found_by: FoundBy,
}

/// Border added on each side for the padded retry, as a fraction of the longer side.
const RETRY_PADDING: f32 = 0.5;
/// The neutral grey of the border.
const RETRY_FILL: Rgb<u8> = Rgb([128, 128, 128]);
/// Longest side of the padded copy. The detectors look at 416 or 512 pixels, so a larger
/// photo is shrunk before padding: the copy costs at most 4096² pixels (48 MiB) whatever
/// the photo's shape (a 20000x2000 photo padded as is would take 2.6 GB).
const RETRY_MAX_SIDE: u32 = 4096;

pub struct FaceEngine {
    options: EngineOptions,
    detector: Detector,
    landmarks: LandmarkNet,
}

impl FaceEngine {
    pub fn load(models: &ModelDir, options: EngineOptions) -> Result<Self> {
        let detector = Detector::load(models, options.detector.clone())?;
        let landmarks = LandmarkNet::load(models)?;
        Ok(FaceEngine {
            options,
            detector,
            landmarks,
        })
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn landmark_net(&self) -> &LandmarkNet {
        &self.landmarks
    }

    /// Every face in the photo, best score first.
    pub fn faces(&self, image: &RgbImage) -> Vec<Face> {
        if image.width() == 0 || image.height() == 0 {
            return Vec::new();
        }
        let found = self.detector.detect(image);
        let faces = self.with_landmarks(image, &found, FoundBy::Detector);
        tracing::trace!(
            width = image.width(),
            height = image.height(),
            detections = found.len(),
            faces = faces.len(),
            "detected"
        );
        if !faces.is_empty() || !self.options.tight_crop_fallback {
            return faces;
        }
        let retry = self.padded_retry(image);
        let faces = self.with_landmarks(image, &retry, FoundBy::PaddedRetry);
        if !faces.is_empty() {
            return faces;
        }
        let whole = Detection {
            bbox: BBox::new(0.0, 0.0, image.width() as f32, image.height() as f32),
            score: 0.0,
        };
        self.with_landmarks(image, &[whole], FoundBy::WholeImage)
    }

    /// The largest face of the photo (by box area): enrolment, comparison and dataset photos
    /// are of one person, and the largest face is the one the photo is of.
    pub fn largest_face(&self, image: &RgbImage) -> Option<Face> {
        let faces = self.faces(image);
        largest(&faces).cloned()
    }

    fn with_landmarks(&self, image: &RgbImage, dets: &[Detection], by: FoundBy) -> Vec<Face> {
        dets.iter()
            .filter_map(|d| {
                let lm = self.landmarks.landmarks(image, d.bbox)?;
                Some(Face {
                    bbox: d.bbox,
                    score: d.score,
                    landmarks: lm.0,
                    found_by: by,
                })
            })
            .collect()
    }

    /// Detections on a grey-bordered copy, mapped back to (and clipped at) the original photo.
    fn padded_retry(&self, image: &RgbImage) -> Vec<Detection> {
        let (w, h) = (image.width(), image.height());
        let (small, scale_x, scale_y) = shrink_for_padding(image);
        let src = small.as_ref().unwrap_or(image);
        let (sw, sh) = src.dimensions();
        let pad = (sw.max(sh) as f32 * RETRY_PADDING).round() as u32;
        let mut padded = RgbImage::from_pixel(sw + 2 * pad, sh + 2 * pad, RETRY_FILL);
        image::imageops::replace(&mut padded, src, i64::from(pad), i64::from(pad));
        let (wf, hf, pf) = (w as f32, h as f32, pad as f32);
        self.detector
            .detect(&padded)
            .into_iter()
            .filter_map(|d| {
                let x0 = ((d.bbox.x - pf) / scale_x).max(0.0);
                let y0 = ((d.bbox.y - pf) / scale_y).max(0.0);
                let x1 = ((d.bbox.right() - pf) / scale_x).min(wf);
                let y1 = ((d.bbox.bottom() - pf) / scale_y).min(hf);
                // Keep boxes that mostly lie on the photo: a "face" in the border is noise.
                let on_photo = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
                let area = d.bbox.area() / (scale_x * scale_y);
                (on_photo >= 0.5 * area).then(|| Detection {
                    bbox: BBox::new(x0, y0, x1 - x0, y1 - y0),
                    score: d.score,
                })
            })
            .collect()
    }

    /// The aligned crop of one face (see [`crate::align::align`]).
    pub fn align(&self, image: &RgbImage, face: &Face) -> RgbImage {
        crate::align::align_with_box(
            image,
            &crate::landmarks::Landmarks68(face.landmarks.clone()),
            Some(face.bbox),
            self.options.alignment,
        )
    }
}

/// The face with the largest box, if any (of equal boxes, the last).
pub fn largest(faces: &[Face]) -> Option<&Face> {
    faces
        .iter()
        .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
}

/// A copy of `image` small enough that padding it by [`RETRY_PADDING`] on each side stays
/// within [`RETRY_MAX_SIDE`], with the x and y scale factors; `None` (scale 1) when the
/// photo already fits.
fn shrink_for_padding(image: &RgbImage) -> (Option<RgbImage>, f32, f32) {
    let (w, h) = image.dimensions();
    let padded_side = u64::from(w.max(h)) * 2;
    if padded_side <= u64::from(RETRY_MAX_SIDE) {
        return (None, 1.0, 1.0);
    }
    let scale = f64::from(RETRY_MAX_SIDE) / padded_side as f64;
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).max(1);
    let (nw, nh) = (side(w), side(h));
    let small = image::imageops::thumbnail(image, nw, nh);
    (Some(small), nw as f32 / w as f32, nh as f32 / h as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(w: f32) -> Face {
        Face {
            bbox: BBox::new(0.0, 0.0, w, w),
            score: 0.5,
            landmarks: Vec::new(),
            found_by: FoundBy::Detector,
        }
    }

    #[test]
    fn the_largest_box_wins_and_the_last_of_equals() {
        assert!(largest(&[]).is_none());
        let faces = [face(10.0), face(30.0), face(20.0), face(30.0)];
        let best = largest(&faces).unwrap();
        assert!(std::ptr::eq(best, &faces[3]));
    }

    #[test]
    fn small_photos_are_padded_as_they_are() {
        let img = RgbImage::new(1000, 2048);
        let (small, sx, sy) = shrink_for_padding(&img);
        assert!(small.is_none());
        assert_eq!((sx, sy), (1.0, 1.0));
    }

    #[test]
    fn elongated_photos_shrink_so_the_padded_copy_stays_bounded() {
        // 20000x2000 padded as is would be 40000x22000 (2.6 GB).
        let img = RgbImage::new(20_000, 2_000);
        let (small, sx, sy) = shrink_for_padding(&img);
        let small = small.unwrap();
        assert_eq!(small.dimensions(), (2048, 205));
        let pad = (small.width().max(small.height()) as f32 * RETRY_PADDING).round() as u32;
        assert!(small.width() + 2 * pad <= RETRY_MAX_SIDE);
        assert!((sx - 2048.0 / 20_000.0).abs() < 1e-6 && (sy - 205.0 / 2_000.0).abs() < 1e-6);
        // A strip keeps at least one pixel across.
        let (strip, _, _) = shrink_for_padding(&RgbImage::new(100_000, 8));
        assert_eq!(strip.unwrap().dimensions(), (2048, 1));
    }
}
