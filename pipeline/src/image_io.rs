//! Decoding photos safely: by content (not extension), with size limits checked from the
//! header before any pixel is decoded, EXIF orientation applied, always RGB8 out.
// CONTRACT (filled in by the face-engine work): signatures below are used by other crates.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Limits applied before decoding.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecodeLimits {
    /// Largest accepted width × height (default 40 MP).
    pub max_pixels: u64,
    /// Largest accepted encoded size in bytes (default 64 MiB).
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 40_000_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Smallest accepted width and height: below this no face can be found or aligned.
pub const MIN_SIDE: u32 = 8;

fn unreadable(reason: impl std::fmt::Display) -> Error {
    Error::Unreadable {
        reason: reason.to_string(),
    }
}

/// Decode an encoded image held in memory.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(Error::TooManyBytes {
            bytes: len,
            limit: limits.max_bytes,
        });
    }
    if bytes.is_empty() {
        return Err(unreadable("empty input (0 bytes)"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(unreadable)?;
    let Some(format) = reader.format() else {
        return Err(unreadable(
            "not a recognised image format (expected JPEG, PNG, GIF, BMP, WebP, TIFF or PNM)",
        ));
    };
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(unreadable(
            "truncated JPEG: the last scan has no end-of-image marker",
        ));
    }
    // Read the header without limits: the pixel limit below is the check that says why.
    let mut reader = reader;
    reader.no_limits();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, format))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(Error::Invalid(format!(
            "{format:?} image of {width}x{height} pixels is too small to hold a face \
             (at least {MIN_SIDE}x{MIN_SIDE})"
        )));
    }
    // Second guard: the decoder itself refuses allocations beyond what the pixel limit
    // allows (16-bit RGBA is 8 bytes a pixel), whatever the header said.
    let mut guard = image::Limits::default();
    guard.max_image_width = Some(width);
    guard.max_image_height = Some(height);
    guard.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    decoder
        .set_limits(guard)
        .map_err(|e| map_image_error(e, format))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, format))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.into_rgb8())
}

/// A JPEG whose last start-of-scan marker is followed by an end-of-image marker. Inside
/// entropy-coded data 0xFF is always stuffed (0xFF00), so marker pairs cannot appear by
/// chance; an embedded EXIF thumbnail has its own scan and EOI earlier in the file.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(pos) => bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn map_image_error(e: ImageError, format: image::ImageFormat) -> Error {
    match e {
        ImageError::Limits(l) => {
            unreadable(format!("{format:?} image exceeds decoding limits: {l}"))
        }
        other => unreadable(format!("{format:?}: {other}")),
    }
}

/// Read and decode a file.
pub fn open(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > limits.max_bytes {
        return Err(Error::TooManyBytes {
            bytes: meta.len(),
            limit: limits.max_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, limits)
}
