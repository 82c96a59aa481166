//! JPEG crops decoded into a buffer the caller keeps: a loader worker decodes thousands of
//! crops per second, and a fresh allocation per crop (and its page faults) costs as much on
//! two threads as the decoding itself.

use std::io::Cursor;

use image::codecs::jpeg::JpegDecoder;
use image::{ColorType, ImageBuffer, ImageDecoder, Rgb};

use crate::error::{Error, Result};

/// Crops larger than this per side are not face crops: refuse instead of allocating.
const MAX_SIDE: u32 = 4096;

/// A decoder with its own reusable RGB buffer.
#[derive(Debug, Default)]
pub struct CropDecoder {
    rgb: Vec<u8>,
    grey: Vec<u8>,
}

impl CropDecoder {
    /// Decode `jpeg` (RGB or greyscale) into the decoder's buffer; the returned image borrows
    /// it until the next call. `key` names the crop in errors.
    pub fn decode(&mut self, jpeg: &[u8], key: &str) -> Result<ImageBuffer<Rgb<u8>, &[u8]>> {
        let bad = |e: image::ImageError| Error::Invalid(format!("crop {key} does not decode: {e}"));
        let (decoder, (w, h)) = open(jpeg, key)?;
        let pixels = w as usize * h as usize;
        self.rgb.resize(pixels * 3, 0);
        match decoder.color_type() {
            ColorType::Rgb8 => decoder.read_image(&mut self.rgb).map_err(bad)?,
            ColorType::L8 => {
                self.grey.resize(pixels, 0);
                decoder.read_image(&mut self.grey).map_err(bad)?;
                for (rgb, &g) in self.rgb.chunks_exact_mut(3).zip(&self.grey) {
                    rgb.fill(g);
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "crop {key} is a {other:?} JPEG; crops are RGB or greyscale"
                )))
            }
        }
        ImageBuffer::from_raw(w, h, &self.rgb[..])
            .ok_or_else(|| Error::Invalid(format!("crop {key}: decoded size mismatch")))
    }
}

/// A JPEG decoder over bytes in memory.
type CropJpeg<'a> = JpegDecoder<Cursor<&'a [u8]>>;

/// A crop's decoder and its checked size, from the JPEG header alone.
fn open<'a>(jpeg: &'a [u8], key: &str) -> Result<(CropJpeg<'a>, (u32, u32))> {
    let decoder = JpegDecoder::new(Cursor::new(jpeg))
        .map_err(|e| Error::Invalid(format!("crop {key} does not decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Invalid(format!(
            "crop {key} is {w}×{h}: not a face crop (at most {MAX_SIDE} px a side)"
        )));
    }
    Ok((decoder, (w, h)))
}

/// A crop's `(width, height)` from its JPEG header, without decoding the pixels.
pub fn dimensions(jpeg: &[u8], key: &str) -> Result<(u32, u32)> {
    open(jpeg, key).map(|(_, size)| size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbImage};

    fn jpeg(img: image::DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_rgb_and_grey_crops_like_the_image_crate() {
        let rgb = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        });
        let grey = GrayImage::from_fn(20, 24, |x, y| image::Luma([(x * 10 + y) as u8]));
        let mut dec = CropDecoder::default();
        for bytes in [
            jpeg(image::DynamicImage::ImageRgb8(rgb)),
            jpeg(image::DynamicImage::ImageLuma8(grey)),
        ] {
            let want = image::load_from_memory(&bytes).unwrap().to_rgb8();
            let got = dec.decode(&bytes, "k").unwrap();
            assert_eq!(got.dimensions(), want.dimensions());
            assert_eq!(*got.as_raw(), &want.as_raw()[..]);
        }
    }

    #[test]
    fn broken_crops_are_named_errors() {
        let mut dec = CropDecoder::default();
        let err = dec
            .decode(b"not a jpeg", "Ann/0001")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Ann/0001"), "{err}");
    }
}
