//! Hostile images generated in the test: decompression bombs in PNG ancillary chunks and
//! image data, headers of every accepted format claiming huge sizes, GIF logical screens and
//! frames, elongated shapes. Shared by `hostile_images` (typed errors, in process) and
//! `hostile_images_rss` (peak memory of the real binary).

#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)] // tests may unwrap

use flate2::{Compress, Compression, FlushCompress};

pub const MIB: u64 = 1 << 20;
/// What each decompression bomb inflates to: 4 GiB from about 4 MB on disk.
pub const BOMB_BYTES: u64 = 4 << 30;

/// A zlib stream that inflates to at least `at_least` zero bytes (a whole number of MiB).
/// Compressing gigabytes would take the test seconds, so one MiB of zeros is compressed
/// after one MiB of zero history and its blocks are repeated: every back-reference in them
/// points at zeros, wherever they land. The Adler-32 is that of the full output.
pub fn zlib_zeros(at_least: u64) -> Vec<u8> {
    let zeros = vec![0u8; MIB as usize];
    let mut c = Compress::new(Compression::best(), true);
    let flushed = |c: &mut Compress, input: &[u8], flush| {
        let mut out = Vec::with_capacity(256 << 10);
        let before = c.total_in();
        c.compress_vec(input, &mut out, flush).unwrap();
        assert_eq!(
            c.total_in() - before,
            input.len() as u64,
            "output buffer too small"
        );
        out
    };
    let first = flushed(&mut c, &zeros, FlushCompress::Sync);
    let repeated = flushed(&mut c, &zeros, FlushCompress::Sync);
    let mut tail = flushed(&mut c, &[], FlushCompress::Finish);
    tail.truncate(tail.len() - 4); // the compressor's Adler-32 covers 2 MiB only
    let chunks = at_least.div_ceil(MIB).max(2);
    let mut stream = first;
    for _ in 1..chunks {
        stream.extend(&repeated);
    }
    stream.extend(tail);
    // Adler-32 of n zeros: a stays 1, b is n (mod 65521).
    let b = (chunks * MIB) % 65521;
    stream.extend((((b << 16) | 1) as u32).to_be_bytes());
    stream
}

pub fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    png.extend((data.len() as u32).to_be_bytes());
    png.extend(kind);
    png.extend(data);
    png.extend(crc.sum().to_be_bytes());
}

/// A PNG of `w × h` 8-bit RGB zeros; `ancillary` chunks go between IHDR and IDAT, and the
/// image data inflates to at least `idat_bytes` (more than the rows need is legal).
pub fn png(w: u32, h: u32, ancillary: &[(&[u8; 4], Vec<u8>)], idat_bytes: u64) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    for (kind, data) in ancillary {
        png_chunk(&mut png, kind, data);
    }
    let rows = u64::from(h) * (1 + 3 * u64::from(w));
    png_chunk(&mut png, b"IDAT", &zlib_zeros(idat_bytes.max(rows)));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A 64×64 PNG with one compressed ancillary chunk of `kind`: its `header` (keyword and
/// flags), then a zlib stream of [`BOMB_BYTES`] zeros.
fn png_with_bomb(kind: &[u8; 4], header: &[u8]) -> Vec<u8> {
    let mut data = header.to_vec();
    data.extend(zlib_zeros(BOMB_BYTES));
    png(64, 64, &[(kind, data)], 0)
}

pub fn iccp_bomb() -> Vec<u8> {
    png_with_bomb(b"iCCP", b"bomb\0\0")
}

pub fn ztxt_bomb() -> Vec<u8> {
    png_with_bomb(b"zTXt", b"Comment\0\0")
}

pub fn itxt_bomb() -> Vec<u8> {
    // keyword, compressed, method 0, empty language and translated keyword.
    png_with_bomb(b"iTXt", b"XML:com.adobe.xmp\0\x01\0\0\0")
}

/// An eXIf chunk is kept (it holds the orientation), so it is charged to the PNG budget.
pub fn exif_over_budget() -> Vec<u8> {
    let mut data = b"MM\0\x2a\0\0\0\x08".to_vec();
    data.resize(20 * MIB as usize, 0);
    png(64, 64, &[(b"eXIf", data)], 0)
}

pub fn idat_bomb_small_header() -> Vec<u8> {
    png(64, 64, &[], BOMB_BYTES)
}

pub fn idat_bomb_large_header() -> Vec<u8> {
    png(6000, 6000, &[], BOMB_BYTES)
}

pub fn gif(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(screen.0.to_le_bytes());
    g.extend(screen.1.to_le_bytes());
    g.extend([0x80, 0, 0]); // global colour table of two entries
    g.extend([0, 0, 0, 255, 255, 255]);
    g.push(0x2c);
    g.extend([0, 0, 0, 0]);
    g.extend(frame.0.to_le_bytes());
    g.extend(frame.1.to_le_bytes());
    g.push(0);
    g.extend([0x02, 0x02, 0x44, 0x01, 0x00]); // one pixel of LZW data
    g.push(0x3b);
    g
}

pub fn webp_vp8l(w: u32, h: u32) -> Vec<u8> {
    let bits = (w - 1) | ((h - 1) << 14);
    let mut chunk = vec![0x2f];
    chunk.extend(bits.to_le_bytes());
    chunk.extend([0u8; 11]);
    riff(&[(b"VP8L", chunk)])
}

pub fn riff(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WEBP".to_vec();
    for (kind, data) in chunks {
        body.extend(*kind);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// A valid 16×16 image of one colour, encoded as `format`.
fn small_image(format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 200]))
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// A lossless WebP whose EXIF chunk, after the image data, claims 2 GB in a file of a few
/// hundred bytes (the RIFF size agrees with the lie).
pub fn webp_lying_exif() -> Vec<u8> {
    let simple = small_image(image::ImageFormat::WebP);
    assert_eq!(&simple[12..16], b"VP8L", "expected a lossless WebP");
    let lie = 0x7fff_0000u32;
    let mut body = b"WEBPVP8X".to_vec();
    body.extend(10u32.to_le_bytes());
    body.extend([0x08, 0, 0, 0]); // EXIF flag
    body.extend(&15u32.to_le_bytes()[..3]);
    body.extend(&15u32.to_le_bytes()[..3]);
    body.extend(&simple[12..]);
    body.extend(b"EXIF");
    body.extend(lie.to_le_bytes());
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32 + lie).to_le_bytes());
    out.extend(body);
    out.extend([0u8; 64]);
    out
}

pub fn bmp(w: i32, h: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    b.extend(1000u32.to_le_bytes());
    b.extend([0; 4]);
    b.extend(54u32.to_le_bytes());
    b.extend(40u32.to_le_bytes());
    b.extend(w.to_le_bytes());
    b.extend(h.to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(24u16.to_le_bytes());
    b.extend([0; 24]);
    b.extend([0; 64]);
    b
}

pub fn pnm(w: u32, h: u32) -> Vec<u8> {
    let mut p = format!("P6\n{w} {h}\n255\n").into_bytes();
    p.extend([0u8; 64]);
    p
}

/// A little-endian baseline TIFF header: one gray strip of `w × h` pixels at offset 8.
pub fn tiff(w: u32, h: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, w),  // ImageWidth
        (257, 4, h),  // ImageLength
        (258, 3, 8),  // BitsPerSample
        (259, 3, 1),  // Compression: none
        (262, 3, 1),  // Photometric: black is zero
        (273, 4, 8),  // StripOffsets
        (277, 3, 1),  // SamplesPerPixel
        (278, 4, h),  // RowsPerStrip
        (279, 4, 64), // StripByteCounts
    ];
    let mut t = b"II*\0".to_vec();
    t.extend(8u32.to_le_bytes());
    t.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        t.extend(tag.to_le_bytes());
        t.extend(kind.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        if kind == 3 {
            t.extend((value as u16).to_le_bytes());
            t.extend([0, 0]);
        } else {
            t.extend(value.to_le_bytes());
        }
    }
    t.extend(0u32.to_le_bytes());
    t.extend([0u8; 64]);
    t
}

/// A real 16×16 JPEG whose frame header is patched to claim `w × h`.
pub fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = small_image(image::ImageFormat::Jpeg);
    let sof = jpg.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}
