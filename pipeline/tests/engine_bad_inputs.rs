//! Bad inputs give typed errors, never a panic: empty files, truncated and fake JPEGs, images
//! too small to hold a face, and headers that claim more pixels than the limit.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};

use facepipe_pipeline::image_io::{decode, open, DecodeLimits};
use facepipe_pipeline::Error;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/engine")
        .join(name)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut body = kind.to_vec();
    body.extend(data);
    png.extend((data.len() as u32).to_be_bytes());
    png.extend(&body);
    png.extend(crc32(&body).to_be_bytes());
}

/// A well-formed PNG whose header declares `w × h` RGB pixels, with a tiny (empty) zlib
/// stream as image data: what a decompression-bomb upload looks like.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn empty_input_is_unreadable() {
    let err = decode(&[], &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert!(err.is_bad_input());
}

#[test]
fn truncated_jpeg_is_unreadable() {
    let bytes = std::fs::read(fixture("two_people.jpg")).unwrap();
    let err = decode(&bytes[..bytes.len() / 3], &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
}

#[test]
fn text_named_jpg_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.jpg");
    std::fs::write(&path, "these are not the pixels you are looking for\n").unwrap();
    let err = open(&path, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert!(
        err.to_string().contains("not a recognised image format"),
        "{err}"
    );
}

#[test]
fn one_pixel_image_is_refused() {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 100, 50]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let err = decode(&png, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.is_bad_input());
}

#[test]
fn huge_header_is_refused_before_decoding() {
    let err = decode(&png_header(30_000, 30_000), &DecodeLimits::default()).unwrap_err();
    match err {
        Error::TooLarge {
            width,
            height,
            pixels,
            limit,
        } => {
            assert_eq!((width, height, pixels), (30_000, 30_000, 900_000_000));
            assert_eq!(limit, 40_000_000);
        }
        other => panic!("expected TooLarge, got {other}"),
    }
}

#[test]
fn byte_limit_is_checked_before_reading() {
    let limits = DecodeLimits {
        max_bytes: 1000,
        ..DecodeLimits::default()
    };
    let err = open(&fixture("two_people.jpg"), &limits).unwrap_err();
    assert!(
        matches!(err, Error::TooManyBytes { limit: 1000, .. }),
        "{err}"
    );
}

#[test]
fn good_files_of_every_kind_decode_to_rgb() {
    // Greyscale PGM, RGBA PNG and JPEG: always RGB8 out, dimensions kept.
    let limits = DecodeLimits::default();
    let pgm = open(&fixture("orl/s1_1.pgm"), &limits).unwrap();
    assert_eq!(pgm.dimensions(), (92, 112));
    let p = pgm.get_pixel(40, 50).0;
    assert!(p[0] == p[1] && p[1] == p[2]);
    let rgba = open(&fixture("32bit.png"), &limits).unwrap();
    assert!(rgba.width() > 100);
    // The pixel limit applies to what the header says.
    let small = DecodeLimits {
        max_pixels: 10_000,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        open(&fixture("orl/s1_1.pgm"), &small).unwrap_err(),
        Error::TooLarge {
            width: 92,
            height: 112,
            ..
        }
    ));
}
