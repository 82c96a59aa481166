//! Decoding photos safely: by content (not extension), with every size checked before it is
//! paid for, EXIF orientation applied, always RGB8 out.
//!
//! Hostile files are bounded three ways: the encoded size (`max_bytes`), the declared
//! shape (`max_pixels`, `max_aspect_ratio`, read from the header before any pixel is
//! decoded), and the memory one decode may take (`max_alloc_bytes`, passed to the decoders
//! as `image::Limits`). PNG is decoded through the `png` crate directly so that colour
//! profiles and text chunks, which can inflate to gigabytes from a few megabytes, are
//! skipped unread; WebP chunk sizes are checked against the file before the decoder
//! trusts them. Animated formats give their first frame.
// CONTRACT (filled in by the face-engine work): signatures below are used by other crates.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Limits applied before and while decoding.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DecodeLimits {
    /// Largest accepted width × height (default 40 MP).
    pub max_pixels: u64,
    /// Largest accepted encoded size in bytes (default 64 MiB).
    pub max_bytes: u64,
    /// Most memory one decode may allocate: the decoded pixels, their RGB8 copy, the
    /// decoder's working buffers and metadata (default 512 MiB; a 40 MP 16-bit RGBA decode
    /// and its RGB8 copy take 440 MB).
    pub max_alloc_bytes: u64,
    /// Largest accepted ratio of the longer side to the shorter (default 32: panoramas are
    /// at most about 10:1; beyond that a shape is a strip, not a photo).
    pub max_aspect_ratio: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 40_000_000,
            max_bytes: 64 * 1024 * 1024,
            max_alloc_bytes: 512 * 1024 * 1024,
            max_aspect_ratio: 32,
        }
    }
}

impl DecodeLimits {
    /// The longest side any accepted shape can have: `max_pixels` at `max_aspect_ratio`.
    /// Given to the decoders as their width and height limit.
    pub fn max_side(&self) -> u32 {
        let ratio = u64::from(self.max_aspect_ratio.max(1));
        let side = (self.max_pixels.saturating_mul(ratio) as f64).sqrt().ceil();
        if side >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            side as u32
        }
    }
}

/// Smallest accepted width and height: below this no face can be found or aligned.
pub const MIN_SIDE: u32 = 8;

/// Memory the PNG decoder may spend on what it keeps besides the pixels (an EXIF chunk, the
/// palette, row buffers). Colour profiles and text are skipped unread, so real files need
/// a few kilobytes here.
const PNG_ANCILLARY_BUDGET: usize = 16 * 1024 * 1024;

/// Largest EXIF block read for the orientation (real ones are under 64 KiB).
const MAX_EXIF_BYTES: u64 = 16 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

fn unreadable(reason: impl std::fmt::Display) -> Error {
    Error::Unreadable {
        reason: reason.to_string(),
    }
}

/// The memory budget refused an allocation the decoder asked for.
fn over_budget(what: impl Into<String>, limits: &DecodeLimits) -> Error {
    Error::LimitExceeded {
        what: what.into(),
        limit: format!("{} MiB of decoder memory", limits.max_alloc_bytes / MIB),
        hint: "re-encode the image at a smaller size, without oversized metadata".into(),
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
    let format = image::guess_format(bytes).map_err(|_| {
        unreadable(
            "not a recognised image format (expected JPEG, PNG, GIF, BMP, WebP, TIFF or PNM)",
        )
    })?;
    let (img, orientation) = match format {
        ImageFormat::Png => decode_png(bytes, limits)?,
        ImageFormat::Jpeg
        | ImageFormat::Gif
        | ImageFormat::WebP
        | ImageFormat::Bmp
        | ImageFormat::Pnm
        | ImageFormat::Tiff => decode_with_image(bytes, format, limits)?,
        other => {
            return Err(unreadable(format!(
                "{other:?} images are not accepted: send JPEG, PNG, GIF, BMP, WebP, TIFF or PNM"
            )))
        }
    };
    let mut img = DynamicImage::ImageRgb8(img);
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.into_rgb8())
}

/// Refuse shapes before their pixels are paid for: the pixel limit, the smallest face-sized
/// side, the aspect ratio, and the memory the decoded pixels (plus their RGB8 copy) need.
fn check_shape(
    format: ImageFormat,
    (width, height): (u32, u32),
    bytes_per_pixel: u64,
    limits: &DecodeLimits,
) -> Result<()> {
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
    let (long, short) = (width.max(height), width.min(height));
    let ratio = u64::from(limits.max_aspect_ratio.max(1));
    if u64::from(long) > u64::from(short) * ratio {
        return Err(Error::LimitExceeded {
            what: format!(
                "the aspect ratio of {width}x{height} pixels ({:.0}:1)",
                f64::from(long) / f64::from(short)
            ),
            limit: format!("{ratio}:1 (the longer side at most {ratio} times the shorter)"),
            hint: "crop the image to the part that shows the faces".into(),
        });
    }
    let rgb_copy = if bytes_per_pixel == 3 { 0 } else { 3 };
    let needed = pixels.saturating_mul(bytes_per_pixel + rgb_copy);
    if needed > limits.max_alloc_bytes {
        return Err(over_budget(
            format!(
                "decoding {width}x{height} {format:?} pixels at {bytes_per_pixel} bytes each \
                 ({} MiB)",
                needed.div_ceil(MIB)
            ),
            limits,
        ));
    }
    Ok(())
}

/// PNG through the `png` crate: iCCP, tEXt, zTXt and iTXt are skipped without being
/// inflated (we apply no colour profile and read no text), everything else kept is charged
/// to [`PNG_ANCILLARY_BUDGET`], and only the first frame of an APNG is decoded.
fn decode_png(bytes: &[u8], limits: &DecodeLimits) -> Result<(RgbImage, Option<Orientation>)> {
    let budget =
        PNG_ANCILLARY_BUDGET.min(usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX));
    let mut decoder =
        png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: budget });
    decoder.set_ignore_iccp_chunk(true);
    decoder.set_ignore_text_chunk(true);
    decoder.set_transformations(png::Transformations::EXPAND);
    let header = decoder.read_header_info().map_err(png_error)?;
    let dims = (header.width, header.height);
    // Worst case after EXPAND: 16-bit RGBA.
    let widest = if header.bit_depth == png::BitDepth::Sixteen {
        8
    } else {
        4
    };
    check_shape(ImageFormat::Png, dims, widest, limits)?;
    let mut reader = decoder.read_info().map_err(png_error)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| over_budget("the PNG pixel buffer", limits))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(png_error)?;
    buf.truncate(frame.buffer_size());
    let orientation = reader
        .info()
        .exif_metadata
        .as_deref()
        .and_then(Orientation::from_exif_chunk);
    let channels = frame.color_type.samples();
    let sixteen = frame.bit_depth == png::BitDepth::Sixteen;
    let img = png_to_rgb8(buf, frame.width, frame.height, channels, sixteen)
        .ok_or_else(|| unreadable("PNG: the decoded frame does not match its header"))?;
    Ok((img, orientation))
}

/// RGB8 from the decoder's samples (gray replicated, alpha dropped, 16-bit rounded to 8 as
/// `image` does), reusing the buffer when it already is RGB8.
fn png_to_rgb8(
    buf: Vec<u8>,
    width: u32,
    height: u32,
    channels: usize,
    sixteen: bool,
) -> Option<RgbImage> {
    if channels == 3 && !sixteen {
        return RgbImage::from_raw(width, height, buf);
    }
    let sample_bytes = if sixteen { 2 } else { 1 };
    let pixel_bytes = channels * sample_bytes;
    let pixels = width as usize * height as usize;
    if buf.len() < pixels * pixel_bytes {
        return None;
    }
    let sample = |px: &[u8], i: usize| -> u8 {
        if sixteen {
            let v = u32::from(u16::from_be_bytes([px[2 * i], px[2 * i + 1]]));
            ((v + 128) / 257) as u8
        } else {
            px[i]
        }
    };
    let mut out = Vec::with_capacity(pixels * 3);
    for px in buf.chunks_exact(pixel_bytes).take(pixels) {
        if channels >= 3 {
            out.extend([sample(px, 0), sample(px, 1), sample(px, 2)]);
        } else {
            let g = sample(px, 0);
            out.extend([g, g, g]);
        }
    }
    RgbImage::from_raw(width, height, out)
}

fn png_error(e: png::DecodingError) -> Error {
    match e {
        png::DecodingError::LimitsExceeded => Error::LimitExceeded {
            what: "the PNG's ancillary data (EXIF, palette, row buffers)".into(),
            limit: format!("{} MiB", PNG_ANCILLARY_BUDGET as u64 / MIB),
            hint: "re-encode the image without oversized metadata".into(),
        },
        other => unreadable(format!("Png: {other}")),
    }
}

/// Every other format through `image`, under `image::Limits` from the first byte on: the
/// header is read with the memory budget set, the shape checked, then the width and height
/// limits added before any pixel is decoded. `from_decoder` reads the first frame only.
fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> Result<(RgbImage, Option<Orientation>)> {
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(unreadable(
            "truncated JPEG: the last scan has no end-of-image marker",
        ));
    }
    if format == ImageFormat::WebP {
        check_webp_chunks(bytes)?;
    }
    let mut budget = image::Limits::default();
    budget.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(budget.clone());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, format, limits))?;
    let bytes_per_pixel = u64::from(decoder.color_type().bytes_per_pixel());
    check_shape(format, decoder.dimensions(), bytes_per_pixel, limits)?;
    budget.max_image_width = Some(limits.max_side());
    budget.max_image_height = Some(limits.max_side());
    decoder
        .set_limits(budget)
        .map_err(|e| map_image_error(e, format, limits))?;
    let orientation = decoder.orientation().ok();
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, format, limits))?;
    Ok((img.into_rgb8(), orientation))
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

/// The WebP decoder allocates a metadata chunk at the size its header declares: refuse
/// top-level chunks that claim more bytes than the file holds, and EXIF beyond its budget.
fn check_webp_chunks(bytes: &[u8]) -> Result<()> {
    let u32_at = |at: usize| -> Option<u64> {
        let b = bytes.get(at..at + 4)?;
        Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let file_len = bytes.len() as u64;
    let riff_end = u32_at(4).map_or(file_len, |n| (n + 8).min(file_len));
    let mut at = 12u64;
    while at + 8 <= riff_end {
        let Some(size) = u32_at(at as usize + 4) else {
            break;
        };
        let fourcc = &bytes[at as usize..at as usize + 4];
        let end = at + 8 + size;
        if end > file_len {
            return Err(unreadable(format!(
                "truncated WebP: the {} chunk declares {size} bytes but the file ends {} bytes in",
                String::from_utf8_lossy(fourcc),
                file_len - at - 8
            )));
        }
        if fourcc == b"EXIF" && size > MAX_EXIF_BYTES {
            return Err(Error::LimitExceeded {
                what: format!("the WebP EXIF chunk of {size} bytes"),
                limit: format!("{} MiB", MAX_EXIF_BYTES / MIB),
                hint: "re-encode the image without oversized metadata".into(),
            });
        }
        at = end + (size & 1);
    }
    Ok(())
}

fn map_image_error(e: ImageError, format: ImageFormat, limits: &DecodeLimits) -> Error {
    match e {
        ImageError::Limits(l) => {
            over_budget(format!("decoding this {format:?} image ({l})"), limits)
        }
        other => unreadable(format!("{format:?}: {other}")),
    }
}

/// Read and decode a file.
pub fn open(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let bytes = read_file(path, limits)?;
    decode(&bytes, limits)
}

/// The bytes of a file of at most `max_bytes`, refused from its size before reading. The
/// read itself stops one byte past the limit: a device or a file that grows (`/dev/zero`,
/// a pipe) reports no useful size.
pub fn read_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.len() > limits.max_bytes {
        return Err(Error::TooManyBytes {
            bytes: meta.len(),
            limit: limits.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limits.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::TooManyBytes {
            bytes: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_every_accepted_shape_within_the_side_limit() {
        let limits = DecodeLimits::default();
        // 40 MP at 32:1 is about 35 777 x 1 118.
        assert_eq!(limits.max_side(), 35_778);
        assert!(check_shape(ImageFormat::Png, (35_776, 1_118), 4, &limits).is_ok());
        assert!(check_shape(ImageFormat::Png, (35_777, 1_118), 4, &limits).is_err());
    }

    #[test]
    fn old_configs_without_the_new_limits_still_parse() {
        let limits: DecodeLimits =
            serde_json::from_str(r#"{"max_pixels": 1000000, "max_bytes": 1000}"#).unwrap();
        assert_eq!(limits.max_pixels, 1_000_000);
        assert_eq!(
            limits.max_alloc_bytes,
            DecodeLimits::default().max_alloc_bytes
        );
        assert_eq!(limits.max_aspect_ratio, 32);
    }

    #[test]
    fn elongated_shapes_name_the_ratio_and_the_limit() {
        let err = check_shape(
            ImageFormat::Png,
            (5_000_000, 8),
            3,
            &DecodeLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("5000000x8"), "{err}");
        assert!(err.contains("32:1"), "{err}");
    }

    #[test]
    fn the_memory_budget_counts_the_rgb_copy() {
        let limits = DecodeLimits {
            max_alloc_bytes: 100 * MIB,
            ..DecodeLimits::default()
        };
        // 4000 x 4000 RGBA16 is 128 MB + 48 MB for the RGB8 copy; RGB8 alone is 48 MB.
        let refused = check_shape(ImageFormat::Tiff, (4000, 4000), 8, &limits);
        assert!(
            matches!(refused, Err(Error::LimitExceeded { .. })),
            "{refused:?}"
        );
        assert!(check_shape(ImageFormat::Tiff, (4000, 4000), 3, &limits).is_ok());
    }

    #[test]
    fn a_device_without_a_size_is_read_only_up_to_the_limit() {
        let limits = DecodeLimits {
            max_bytes: 4096,
            ..DecodeLimits::default()
        };
        let err = read_file(Path::new("/dev/zero"), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyBytes {
                    bytes: 4097,
                    limit: 4096
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn sixteen_bit_gray_rounds_like_image() {
        let buf = [0x12, 0x34, 0xff, 0xff, 0x00, 0x80];
        let img = png_to_rgb8(buf.to_vec(), 3, 1, 1, true).unwrap().into_raw();
        let round = |v: u32| ((v + 128) / 257) as u8;
        assert_eq!(
            img,
            vec![
                round(0x1234),
                round(0x1234),
                round(0x1234),
                255,
                255,
                255,
                round(0x80),
                round(0x80),
                round(0x80)
            ]
        );
    }
}
