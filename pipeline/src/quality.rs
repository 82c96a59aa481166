//! How usable an aligned face crop is for telling people apart, independent of who it shows.
//! Grouping unlabelled faces keeps blurred crops out: a blurred face sits near every other
//! blurred face in embedding space and would chain unrelated people together.

use image::RgbImage;

/// Sharpness of a crop: the variance of its 4-neighbour Laplacian on the luma plane, in
/// squared 8-bit grey levels. In-focus 150 px face crops score in the hundreds; a crop
/// blurred by a few pixels, or upscaled from a tiny face, scores in the tens. 0 for crops
/// smaller than 3×3, which have no interior pixel.
pub fn sharpness(crop: &RgbImage) -> f32 {
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    // BT.601 luma, as the JPEG crops were encoded from.
    let luma: Vec<f32> = crop
        .pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let (mut sum, mut sum_sq) = (0f64, 0f64);
    for y in 1..h - 1 {
        let row = y * w;
        for x in 1..w - 1 {
            let i = row + x;
            let lap = luma[i - w] + luma[i + w] + luma[i - 1] + luma[i + 1] - 4.0 * luma[i];
            sum += f64::from(lap);
            sum_sq += f64::from(lap) * f64::from(lap);
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn checkerboard(size: u32, cell: u32) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| {
            if (x / cell + y / cell).is_multiple_of(2) {
                Rgb([230, 230, 230])
            } else {
                Rgb([20, 20, 20])
            }
        })
    }

    #[test]
    fn flat_is_zero_and_blur_lowers_sharpness() {
        let flat = RgbImage::from_pixel(64, 64, Rgb([128, 90, 40]));
        assert_eq!(sharpness(&flat), 0.0);
        let sharp = checkerboard(64, 4);
        let blurred = image::imageops::blur(&sharp, 3.0);
        let (s, b) = (sharpness(&sharp), sharpness(&blurred));
        assert!(s > 10.0 * b, "sharp {s} vs blurred {b}");
        assert!(b > 0.0);
        assert_eq!(sharpness(&RgbImage::new(2, 40)), 0.0);
    }
}
