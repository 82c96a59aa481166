//! Hostile images give typed errors, in every format the engine accepts, and cost bounded
//! memory and time in process (every input generated in `hostile/`, no large fixtures).
//! `hostile_images_rss` runs the real binary on the same inputs and bounds its peak RSS.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod hostile;

use std::fs::File;

use facepipe_pipeline::image_io::{decode, open, DecodeLimits};
use facepipe_pipeline::Error;
use hostile::*;

fn decoded(bytes: &[u8]) -> Result<(u32, u32), Error> {
    decode(bytes, &DecodeLimits::default()).map(|img| img.dimensions())
}

#[test]
fn zero_stream_generator_inflates_to_what_it_says() {
    use std::io::Read;
    let stream = zlib_zeros(3 * MIB);
    let mut out = Vec::new();
    // ZlibDecoder checks the Adler-32 at the end.
    flate2::read::ZlibDecoder::new(&stream[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out.len() as u64, 3 * MIB);
    assert!(out.iter().all(|&b| b == 0));
    // A 4 GiB bomb is a few MB on disk.
    let bomb = zlib_zeros(BOMB_BYTES);
    assert!(bomb.len() < 8 * MIB as usize, "{} bytes", bomb.len());
}

#[test]
fn compressed_ancillary_chunks_are_skipped_unread() {
    // The pixels decode; the colour profile and text are never inflated.
    for (name, bomb) in [
        ("iCCP", iccp_bomb()),
        ("zTXt", ztxt_bomb()),
        ("iTXt", itxt_bomb()),
    ] {
        assert!(
            bomb.len() < 8 * MIB as usize,
            "{name}: {} bytes",
            bomb.len()
        );
        assert_eq!(decoded(&bomb).unwrap(), (64, 64), "{name}");
    }
}

#[test]
fn an_exif_chunk_beyond_the_png_budget_is_refused() {
    let err = decoded(&exif_over_budget()).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(err.is_too_large() && err.is_bad_input(), "{err}");
    assert!(err.to_string().contains("ancillary"), "{err}");
}

#[test]
fn image_data_beyond_the_rows_is_not_inflated() {
    assert_eq!(decoded(&idat_bomb_small_header()).unwrap(), (64, 64));
}

#[test]
fn huge_gif_logical_screen_is_refused_by_the_pixel_limit() {
    let err = decoded(&gif((65535, 65535), (1, 1))).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                width: 65535,
                height: 65535,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn gif_frame_larger_than_its_screen_is_refused_within_budget() {
    let err = decoded(&gif((64, 64), (65535, 65535))).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
}

#[test]
fn headers_claiming_huge_sizes_are_refused_in_every_format() {
    let cases: Vec<(&str, Vec<u8>, (u32, u32))> = vec![
        ("webp", webp_vp8l(16000, 16000), (16000, 16000)),
        ("bmp", bmp(60000, 60000), (60000, 60000)),
        ("pnm", pnm(60000, 60000), (60000, 60000)),
        ("tiff", tiff(60000, 60000), (60000, 60000)),
        ("jpeg", jpeg_claiming(65000, 65000), (65000, 65000)),
    ];
    for (name, bytes, dims) in cases {
        let err = decoded(&bytes).unwrap_err();
        match err {
            Error::TooLarge { width, height, .. } => {
                assert_eq!((width, height), dims, "{name}")
            }
            other => panic!("{name}: expected TooLarge, got {other}"),
        }
    }
}

#[test]
fn webp_chunk_claiming_more_than_the_file_is_refused() {
    let err = decoded(&webp_lying_exif()).unwrap_err();
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("EXIF chunk declares"), "{err}");
}

#[test]
fn elongated_shapes_beyond_the_aspect_limit_are_refused_with_the_limit() {
    let strip = png(5_000_000, 8, &[], 0);
    let err = decoded(&strip).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(err.is_too_large(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("5000000x8") && msg.contains("32:1"), "{msg}");
}

#[test]
fn wide_photo_within_the_aspect_limit_decodes() {
    // 10:1 and exactly 40 MP: accepted (the engine's padding is what must stay bounded).
    assert_eq!(
        decoded(&png(20_000, 2_000, &[], 0)).unwrap(),
        (20_000, 2_000)
    );
}

#[test]
fn oversized_files_are_refused_before_reading() {
    let dir = facepipe_tests::Dir::new();
    let path = dir.join("huge.png");
    let limits = DecodeLimits::default();
    File::create(&path)
        .unwrap()
        .set_len(limits.max_bytes + 1)
        .unwrap();
    let err = open(&path, &limits).unwrap_err();
    assert!(matches!(err, Error::TooManyBytes { .. }), "{err}");
    assert!(err.is_too_large());
}

#[test]
fn limit_errors_map_to_client_errors_in_the_service() {
    let err = decoded(&png(5_000_000, 8, &[], 0)).unwrap_err();
    let served = facepipe_serving::error::Error::from(err);
    assert_eq!(served.status().as_u16(), 413, "{served}");
    assert_eq!(served.code(), "too_large");
}

// ---------------------------------------------------------------- the PNG path decodes like `image`

/// What `image` itself decodes (RGB8, alpha dropped, 16-bit rounded): the reference the PNG
/// path, which bypasses `image`, must match pixel for pixel.
fn reference_rgb8(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().into_rgb8()
}

fn encode(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn png_path_matches_image_for_every_colour_type_and_depth() {
    use image::DynamicImage as D;
    let rgba16 = image::ImageBuffer::from_fn(37, 23, |x, y| {
        image::Rgba([
            (x * 1771) as u16,
            (y * 2851) as u16,
            ((x + y) * 997) as u16,
            (x * y * 113) as u16,
        ])
    });
    let base = D::ImageRgba16(rgba16);
    let variants = [
        ("L8", D::ImageLuma8(base.to_luma8())),
        ("La8", D::ImageLumaA8(base.to_luma_alpha8())),
        ("Rgb8", D::ImageRgb8(base.to_rgb8())),
        ("Rgba8", D::ImageRgba8(base.to_rgba8())),
        ("L16", D::ImageLuma16(base.to_luma16())),
        ("La16", D::ImageLumaA16(base.to_luma_alpha16())),
        ("Rgb16", D::ImageRgb16(base.to_rgb16())),
        ("Rgba16", base.clone()),
    ];
    for (name, img) in variants {
        let bytes = encode(img);
        let got = decode(&bytes, &DecodeLimits::default()).unwrap();
        assert!(
            got == reference_rgb8(&bytes),
            "{name} differs from image's decode"
        );
    }
    // Palette with transparency, 4 bits a pixel.
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, 16, 9);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Four);
        enc.set_palette(
            (0..16u8)
                .flat_map(|i| [i * 16, 255 - i * 16, i * 7])
                .collect::<Vec<_>>(),
        );
        enc.set_trns(vec![255u8, 128, 0]);
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..9 * 8).map(|i| (i * 37 % 256) as u8).collect();
        w.write_image_data(&data).unwrap();
        w.finish().unwrap();
    }
    let got = decode(&bytes, &DecodeLimits::default()).unwrap();
    assert!(got == reference_rgb8(&bytes), "palette PNG differs");
}

#[test]
fn committed_png_fixtures_decode_as_before() {
    let root = facepipe_tests::workspace_root();
    let files = [
        "tests/fixtures/engine/32bit.png",
        "tests/fixtures/embed/John_Salley_0002.png",
        "assets/sample/people/Alex_Lacamoire/Alex_Lacamoire_0002.png",
    ];
    for f in files {
        let bytes = std::fs::read(root.join(f)).unwrap();
        let got = decode(&bytes, &DecodeLimits::default()).unwrap();
        assert!(
            got == reference_rgb8(&bytes),
            "{f} differs from image's decode"
        );
    }
}

#[test]
fn png_exif_orientation_is_still_applied() {
    // Big-endian TIFF header, one IFD entry: Orientation (0x0112) = 6, rotate 90° clockwise.
    let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
    exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    exif.extend([0, 0, 0, 0]);
    let bytes = png(32, 16, &[(b"eXIf", exif)], 0);
    assert_eq!(decoded(&bytes).unwrap(), (16, 32));
}

// ---------------------------------------------------------------- the engine's padded retry

#[test]
fn padded_retry_on_a_large_tight_crop_maps_boxes_back_to_the_photo() {
    use facepipe_pipeline::{EngineOptions, FaceEngine, FoundBy, ModelDir};
    let engine =
        FaceEngine::load(&ModelDir::locate(None).unwrap(), EngineOptions::default()).unwrap();
    let orl = facepipe_tests::fixtures().join("engine/orl/s1_1.pgm");
    let small = open(&orl, &DecodeLimits::default()).unwrap();
    let at_size = engine.faces(&small);
    assert_eq!(at_size[0].found_by, FoundBy::PaddedRetry);
    // The same tight crop 25 times larger is shrunk before padding (its padded copy would
    // be 5600 pixels a side): the face is still found, and its box lands on the same part
    // of the photo.
    let k = 25;
    let large = image::imageops::resize(
        &small,
        small.width() * k,
        small.height() * k,
        image::imageops::FilterType::Triangle,
    );
    let scaled = engine.faces(&large);
    assert_eq!(scaled.len(), 1, "{scaled:?}");
    assert_eq!(scaled[0].found_by, FoundBy::PaddedRetry);
    let (a, b) = (at_size[0].bbox, scaled[0].bbox);
    let kf = k as f32;
    for (x, y) in [
        (a.x, b.x),
        (a.y, b.y),
        (a.right(), b.right()),
        (a.bottom(), b.bottom()),
    ] {
        assert!(
            (x * kf - y).abs() < 0.1 * a.width.max(a.height) * kf,
            "box {b:?} is not {a:?} scaled by {k}"
        );
    }
}
