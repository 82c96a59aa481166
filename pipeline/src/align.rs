//! Landmark-driven face crops for the embedding network.
//!
//! Two alignments:
//! - [`Alignment::DlibChip`]: the least-squares similarity transform (rotation, scale,
//!   translation) from dlib's mean face to the 68 landmarks, a 150×150 chip with 25 % padding,
//!   bilinear sampling, and an image pyramid when the face is more than twice the chip size
//!   (as dlib's `get_face_chip_details` + `extract_image_chip`).
//! - [`Alignment::FaceApi`]: the library's axis-aligned square around the eye and mouth
//!   centres, including its crop-size quirk; the embedding network pads and resizes it.
// CONTRACT (filled in by the face-engine work): signatures below are used by other crates.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::geometry::BBox;
use crate::landmarks::{clip_box, Landmarks68};

/// Size of the aligned crops stored in prepared datasets and fed to the embedding network.
pub const CROP_SIZE: u32 = 150;

/// Padding of the dlib chip around the template, as a fraction of the template size.
pub const CHIP_PADDING: f64 = 0.25;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alignment {
    /// Rotation-corrected dlib-style chip: similarity transform to a canonical template, 25 % padding.
    #[default]
    DlibChip,
    /// face-api's axis-aligned square around eyes and mouth (no rotation).
    FaceApi,
}

impl std::fmt::Display for Alignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Alignment::DlibChip => "dlib_chip",
            Alignment::FaceApi => "face_api",
        })
    }
}

impl std::str::FromStr for Alignment {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "dlib_chip" | "dlib-chip" | "dlib" => Ok(Alignment::DlibChip),
            "face_api" | "face-api" | "faceapi" => Ok(Alignment::FaceApi),
            other => Err(crate::Error::Invalid(format!(
                "unknown alignment {other:?}: use dlib_chip or face_api"
            ))),
        }
    }
}

/// The aligned crop of one face. For [`Alignment::DlibChip`] it is CROP_SIZE × CROP_SIZE;
/// for [`Alignment::FaceApi`] it is the library's square slice (any size): the embedding
/// network pads and resizes it exactly as face-api does.
pub fn align(image: &RgbImage, landmarks: &Landmarks68, alignment: Alignment) -> RgbImage {
    align_with_box(image, landmarks, None, alignment)
}

/// [`align`] with the detection box the landmarks came from: the library bounds its
/// square's size by the landmark crop's size ([`Alignment::FaceApi`] only); without a box
/// the whole image stands for that crop.
pub fn align_with_box(
    image: &RgbImage,
    landmarks: &Landmarks68,
    detection_box: Option<BBox>,
    alignment: Alignment,
) -> RgbImage {
    match alignment {
        Alignment::DlibChip => {
            let chip = chip_details(landmarks, CROP_SIZE, CHIP_PADDING);
            extract_chip(image, &chip, CROP_SIZE)
        }
        Alignment::FaceApi => {
            let (cw, ch) = detection_box
                .and_then(|b| clip_box(b, image.width(), image.height()))
                .map_or((image.width(), image.height()), |(_, _, w, h)| (w, h));
            let rect = faceapi_rect(landmarks, cw, ch);
            match clip_box(rect, image.width(), image.height()) {
                Some((x, y, w, h)) => image::imageops::crop_imm(image, x, y, w, h).to_image(),
                // A degenerate square (landmarks outside the photo): keep the whole photo
                // rather than hand the embedding network an empty image.
                None => image.clone(),
            }
        }
    }
}

/// The library's `alignDlib` square (x, y, w, h integers): size from the mean eye-to-mouth
/// distance, anchored at the centroid of the eye and mouth centres, shifted into the image,
/// and bounded by the landmark crop size plus its offset (a quirk kept for fidelity).
pub fn faceapi_rect(landmarks: &Landmarks68, crop_w: u32, crop_h: u32) -> BBox {
    let le = landmarks.centroid(36..42);
    let re = landmarks.centroid(42..48);
    let mo = landmarks.centroid(48..68);
    let dist = |a: [f32; 2], b: [f32; 2]| (f64::from(a[0] - b[0])).hypot(f64::from(a[1] - b[1]));
    let d = (dist(mo, le) + dist(mo, re)) / 2.0;
    let size = (d / 0.45).floor();
    let rx = (f64::from(le[0]) + f64::from(re[0]) + f64::from(mo[0])) / 3.0;
    let ry = (f64::from(le[1]) + f64::from(re[1]) + f64::from(mo[1])) / 3.0;
    let x = (rx - 0.5 * size).max(0.0).floor();
    let y = (ry - 0.43 * size).max(0.0).floor();
    BBox::new(
        x as f32,
        y as f32,
        size.min(f64::from(crop_w) + x) as f32,
        size.min(f64::from(crop_h) + y) as f32,
    )
}

// dlib's mean face shape (`get_face_chip_details`), points 17..67 in the unit square.
const MEAN_X: [f64; 51] = [
    0.000213256,
    0.0752622,
    0.18113,
    0.29077,
    0.393397,
    0.586856,
    0.689483,
    0.799124,
    0.904991,
    0.98004,
    0.490127,
    0.490127,
    0.490127,
    0.490127,
    0.36688,
    0.426036,
    0.490127,
    0.554217,
    0.613373,
    0.121737,
    0.187122,
    0.265825,
    0.334606,
    0.260918,
    0.182743,
    0.645647,
    0.714428,
    0.793132,
    0.858516,
    0.79751,
    0.719335,
    0.254149,
    0.340985,
    0.428858,
    0.490127,
    0.551395,
    0.639268,
    0.726104,
    0.642159,
    0.556721,
    0.490127,
    0.423532,
    0.338094,
    0.290379,
    0.428096,
    0.490127,
    0.552157,
    0.689874,
    0.553364,
    0.490127,
    0.42689,
];
const MEAN_Y: [f64; 51] = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345,
    0.587326, 0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852,
    0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388,
    0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746,
    0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182,
];

/// The landmarks dlib fits: nose, eyes and the outer mouth's upper part plus the inner lip
/// corners (27..=54 and 60..=64); jaw, brows and the lower lip are left out.
fn template_indices() -> impl Iterator<Item = usize> {
    (27..=54).chain(60..=64)
}

/// The extraction rectangle of a chip: centre, side in image pixels, and rotation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChipDetails {
    pub cx: f64,
    pub cy: f64,
    pub side: f64,
    pub angle: f64,
}

/// Least-squares similarity transform `dst ≈ s·R·src + t` (Umeyama; in 2-D it has a closed
/// form). Returns `(a, b, tx, ty)` with `s·R = [[a, -b], [b, a]]`.
pub fn similarity_transform(src: &[[f64; 2]], dst: &[[f64; 2]]) -> (f64, f64, f64, f64) {
    let n = src.len().min(dst.len()).max(1) as f64;
    let mean = |v: &[[f64; 2]]| {
        let (x, y) = v.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
        [x / n, y / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut dot, mut cross, mut var) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    if var <= 0.0 {
        return (1.0, 0.0, md[0] - ms[0], md[1] - ms[1]);
    }
    let (a, b) = (dot / var, cross / var);
    (
        a,
        b,
        md[0] - (a * ms[0] - b * ms[1]),
        md[1] - (b * ms[0] + a * ms[1]),
    )
}

/// dlib's `get_face_chip_details(shape, size, padding)`.
pub fn chip_details(landmarks: &Landmarks68, size: u32, padding: f64) -> ChipDetails {
    let size_f = f64::from(size);
    let mut from = Vec::new();
    let mut to = Vec::new();
    for i in template_indices() {
        let Some(p) = landmarks.0.get(i) else {
            continue;
        };
        let tx = (padding + MEAN_X[i - 17]) / (2.0 * padding + 1.0) * size_f;
        let ty = (padding + MEAN_Y[i - 17]) / (2.0 * padding + 1.0) * size_f;
        from.push([tx, ty]);
        to.push([f64::from(p[0]), f64::from(p[1])]);
    }
    let (a, b, tx, ty) = similarity_transform(&from, &to);
    let half = size_f / 2.0;
    ChipDetails {
        cx: a * half - b * half + tx,
        cy: b * half + a * half + ty,
        side: size_f * a.hypot(b),
        angle: b.atan2(a),
    }
}

/// How far the landmarks are from a similarity transform of dlib's mean face: the RMS
/// distance between the fitted template and the landmarks, as a fraction of the chip side.
/// Small for real faces; large for a shape no face makes.
pub fn template_fit_error(landmarks: &Landmarks68) -> f64 {
    let size = f64::from(CROP_SIZE);
    let mut from = Vec::new();
    let mut to = Vec::new();
    for i in template_indices() {
        let Some(p) = landmarks.0.get(i) else {
            continue;
        };
        from.push([
            (CHIP_PADDING + MEAN_X[i - 17]) / (2.0 * CHIP_PADDING + 1.0) * size,
            (CHIP_PADDING + MEAN_Y[i - 17]) / (2.0 * CHIP_PADDING + 1.0) * size,
        ]);
        to.push([f64::from(p[0]), f64::from(p[1])]);
    }
    let (a, b, tx, ty) = similarity_transform(&from, &to);
    let side = size * a.hypot(b);
    if from.is_empty() || side <= 0.0 {
        return f64::INFINITY;
    }
    let sq: f64 = from
        .iter()
        .zip(&to)
        .map(|(f, t)| {
            let x = a * f[0] - b * f[1] + tx;
            let y = b * f[0] + a * f[1] + ty;
            (x - t[0]).powi(2) + (y - t[1]).powi(2)
        })
        .sum();
    (sq / from.len() as f64).sqrt() / side
}

/// A float RGB image (working buffer for the pyramid and the sampling).
struct FloatImage {
    w: usize,
    h: usize,
    data: Vec<[f64; 3]>,
}

impl FloatImage {
    /// One pyramid level: separable [1 4 6 4 1]/16 blur with edge replication, even pixels kept.
    fn down(&self) -> FloatImage {
        pyramid_down(self.w, self.h, |x, y| self.data[y * self.w + x])
    }

    /// Bilinear sample; samples whose 2×2 neighbourhood leaves the image are black (dlib).
    fn sample(&self, x: f64, y: f64) -> [f64; 3] {
        let (x0, y0) = (x.floor(), y.floor());
        if x0 < 0.0 || y0 < 0.0 || x0 + 1.0 >= self.w as f64 || y0 + 1.0 >= self.h as f64 {
            return [0.0; 3];
        }
        let (fx, fy) = (x - x0, y - y0);
        let (xi, yi) = (x0 as usize, y0 as usize);
        let a = self.data[yi * self.w + xi];
        let b = self.data[yi * self.w + xi + 1];
        let c = self.data[(yi + 1) * self.w + xi];
        let d = self.data[(yi + 1) * self.w + xi + 1];
        let mut out = [0.0; 3];
        for k in 0..3 {
            out[k] =
                (1.0 - fy) * ((1.0 - fx) * a[k] + fx * b[k]) + fy * ((1.0 - fx) * c[k] + fx * d[k]);
        }
        out
    }
}

/// One pyramid level of a `w × h` source read through `pixel(x, y)`: the vertical pass of
/// the blur is needed only on the even rows that are kept, so only those are computed, one
/// row at a time. A level then costs its output (a quarter of its input) plus one row,
/// which is what keeps a chip of a face that fills a 40 MP photo within bounded memory;
/// the arithmetic, and so every value, is that of the full two-pass blur.
fn pyramid_down(w: usize, h: usize, pixel: impl Fn(usize, usize) -> [f64; 3]) -> FloatImage {
    const K: [f64; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    let (nw, nh) = (w.div_ceil(2), h.div_ceil(2));
    let mut vert = vec![[0.0; 3]; w];
    let mut out = Vec::with_capacity(nw * nh);
    for ny in 0..nh {
        let y = ny * 2;
        for (x, v) in vert.iter_mut().enumerate() {
            let mut acc = [0.0; 3];
            for (t, k) in K.iter().enumerate() {
                let p = pixel(x, clamp(y as isize + t as isize - 2, h));
                for c in 0..3 {
                    acc[c] += k * p[c];
                }
            }
            *v = acc;
        }
        for nx in 0..nw {
            let x = nx * 2;
            let mut acc = [0.0; 3];
            for (t, k) in K.iter().enumerate() {
                let p = vert[clamp(x as isize + t as isize - 2, w)];
                for c in 0..3 {
                    acc[c] += k * p[c];
                }
            }
            out.push(acc);
        }
    }
    FloatImage {
        w: nw,
        h: nh,
        data: out,
    }
}

/// dlib's `extract_image_chip`: chip corners map onto the rotated rectangle's corners.
pub fn extract_chip(image: &RgbImage, chip: &ChipDetails, size: u32) -> RgbImage {
    let n = size as usize;
    let mut out = RgbImage::new(size, size);
    if !(chip.cx.is_finite() && chip.cy.is_finite() && chip.side.is_finite() && chip.side > 0.0) {
        return out;
    }
    let (iw, ih) = (f64::from(image.width()), f64::from(image.height()));
    // Only the neighbourhood of the rotated rectangle matters (plus room for the blur).
    let r = 0.5 * chip.side.hypot(chip.side) + 8.0 + 4.0 * chip.side / f64::from(size);
    let x0 = (chip.cx - r).floor().max(0.0).min(iw);
    let y0 = (chip.cy - r).floor().max(0.0).min(ih);
    let x1 = ((chip.cx + r).ceil() + 1.0).min(iw).max(0.0);
    let y1 = ((chip.cy + r).ceil() + 1.0).min(ih).max(0.0);
    if x1 <= x0 || y1 <= y0 {
        return out;
    }
    let (sx, sy, sw, sh) = (x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32);
    let photo = |x: usize, y: usize| {
        let p = image.get_pixel(sx + x as u32, sy + y as u32).0;
        [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]
    };
    let area = (n * n) as f64;
    let needs_level = |level: f64| (chip.side / (2.0 * level)) * (chip.side / (2.0 * level)) > area;
    // The first level is read straight from the photo: a float copy of a large region at
    // full size would cost 24 bytes a pixel (and its blur as much again).
    let (mut src, mut level) = if needs_level(1.0) {
        (pyramid_down(sw as usize, sh as usize, photo), 2.0)
    } else {
        let mut data = Vec::with_capacity(sw as usize * sh as usize);
        for y in 0..sh as usize {
            for x in 0..sw as usize {
                data.push(photo(x, y));
            }
        }
        let src = FloatImage {
            w: sw as usize,
            h: sh as usize,
            data,
        };
        (src, 1.0)
    };
    while needs_level(level) {
        src = src.down();
        level *= 2.0;
    }
    let cx = (chip.cx - x0) / level;
    let cy = (chip.cy - y0) / level;
    let side = chip.side / level;
    let (ca, sa) = (chip.angle.cos(), chip.angle.sin());
    let step = side / (n as f64 - 1.0);
    for row in 0..n {
        let v = row as f64 * step - side / 2.0;
        for col in 0..n {
            let u = col as f64 * step - side / 2.0;
            let p = src.sample(cx + ca * u - sa * v, cy + sa * u + ca * v);
            let px = p.map(|c| c.round_ties_even().clamp(0.0, 255.0) as u8);
            out.put_pixel(col as u32, row as u32, Rgb(px));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let src = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]];
        let (s, th, tx, ty) = (2.5f64, 0.3f64, 10.0, -4.0);
        let dst: Vec<[f64; 2]> = src
            .iter()
            .map(|p| {
                [
                    s * (th.cos() * p[0] - th.sin() * p[1]) + tx,
                    s * (th.sin() * p[0] + th.cos() * p[1]) + ty,
                ]
            })
            .collect();
        let (a, b, ttx, tty) = similarity_transform(&src, &dst);
        assert!((a.hypot(b) - s).abs() < 1e-9);
        assert!((b.atan2(a) - th).abs() < 1e-9);
        assert!((ttx - tx).abs() < 1e-9 && (tty - ty).abs() < 1e-9);
    }

    #[test]
    fn chip_of_the_template_itself_is_upright() {
        // Landmarks placed exactly on the chip template: identity transform, 150 px side.
        let mut pts = vec![[0.0f32; 2]; 68];
        for i in 17..68 {
            pts[i] = [
                ((CHIP_PADDING + MEAN_X[i - 17]) / 1.5 * 150.0) as f32,
                ((CHIP_PADDING + MEAN_Y[i - 17]) / 1.5 * 150.0) as f32,
            ];
        }
        let d = chip_details(&Landmarks68(pts), 150, CHIP_PADDING);
        assert!((d.side - 150.0).abs() < 1e-3, "{d:?}");
        assert!(d.angle.abs() < 1e-6 && (d.cx - 75.0).abs() < 1e-3, "{d:?}");
    }

    /// The full two-pass blur (vertical on every row, then horizontal on the even ones),
    /// as the pyramid computed it before it kept only the rows it uses.
    fn two_pass_down(img: &FloatImage) -> Vec<[f64; 3]> {
        const K: [f64; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
        let (w, h) = (img.w, img.h);
        let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
        let mut vert = vec![[0.0; 3]; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0; 3];
                for (t, k) in K.iter().enumerate() {
                    let p = img.data[clamp(y as isize + t as isize - 2, h) * w + x];
                    for c in 0..3 {
                        acc[c] += k * p[c];
                    }
                }
                vert[y * w + x] = acc;
            }
        }
        let mut out = Vec::new();
        for ny in 0..h.div_ceil(2) {
            for nx in 0..w.div_ceil(2) {
                let mut acc = [0.0; 3];
                for (t, k) in K.iter().enumerate() {
                    let p = vert[ny * 2 * w + clamp(nx as isize * 2 + t as isize - 2, w)];
                    for c in 0..3 {
                        acc[c] += k * p[c];
                    }
                }
                out.push(acc);
            }
        }
        out
    }

    #[test]
    fn row_at_a_time_pyramid_gives_the_same_values_as_the_two_pass_blur() {
        let (w, h) = (37, 23);
        let data = (0..w * h)
            .map(|i| {
                [
                    (i * 37 % 251) as f64,
                    (i * 11 % 256) as f64,
                    (i % 7) as f64 * 30.0,
                ]
            })
            .collect();
        let img = FloatImage { w, h, data };
        let level = img.down();
        assert_eq!((level.w, level.h), (19, 12));
        assert!(level.data == two_pass_down(&img), "values differ");
    }
}
