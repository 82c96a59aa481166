//! WebDataset-style tar shards: each sample is `KEY.jpg` (the aligned crop, RGB JPEG) followed
//! by `KEY.json` ([`SampleMeta`]). Entries carry fixed mode and mtime so the same crops always
//! give byte-identical shards. The reader is sequential and streams: training reads shards
//! front to back without seeking, and the tar is readable by any tool that reads tar.

use std::io::{Read, Write};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::align::Alignment;
use crate::engine::FoundBy;
use crate::error::{Error, Result};
use crate::geometry::{BBox, Point};

/// JPEG quality of stored crops: high enough that re-encoding artefacts stay far below the
/// embedding network's sensitivity, small enough for ~6 KB per 150 px crop.
pub const JPEG_QUALITY: u8 = 95;

/// Largest member the reader accepts: a stored crop is ~6 KB and its metadata ~2 KB, so
/// this leaves room for other tools' larger images while bounding what one header can make
/// the reader hold.
pub const MAX_MEMBER_BYTES: u64 = 64 << 20;

/// Largest GNU long-name or pax header member: they hold paths and a few records.
pub const MAX_HEADER_MEMBER_BYTES: u64 = 1 << 20;

/// The metadata stored as `KEY.json` next to each crop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleMeta {
    pub key: String,
    pub identity: String,
    /// Integer class of `identity` (index into the manifest's identities).
    pub label: u32,
    /// Key of the input image relative to the input root.
    pub source: String,
    /// The face box in the source image, `[x, y, width, height]` pixels.
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// 68 landmarks in source-image pixels.
    pub landmarks: Vec<Point>,
    pub score: f32,
    pub found_by: FoundBy,
    pub alignment: Alignment,
}

/// One sample read back from a shard.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub key: String,
    pub meta: SampleMeta,
    /// The encoded crop.
    pub jpeg: Vec<u8>,
}

impl Sample {
    /// Decode the crop to RGB.
    pub fn image(&self) -> Result<RgbImage> {
        image::load_from_memory_with_format(&self.jpeg, image::ImageFormat::Jpeg)
            .map(|img| img.to_rgb8())
            .map_err(|e| Error::Unreadable {
                reason: format!("crop {}: {e}", self.key),
            })
    }
}

/// Encode a crop the way shards store it.
pub fn encode_crop(crop: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 * 1024);
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
    encoder
        .encode_image(crop)
        .map_err(|e| Error::Invalid(format!("encoding a crop as JPEG: {e}")))?;
    Ok(out)
}

/// Is `key` usable as a WebDataset key (non-empty, no dot, no slash, short ASCII)?
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 90
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Writes samples into a tar stream.
pub struct ShardWriter<W: Write> {
    builder: tar::Builder<W>,
    samples: u32,
}

impl<W: Write> ShardWriter<W> {
    pub fn new(inner: W) -> Self {
        let mut builder = tar::Builder::new(inner);
        builder.mode(tar::HeaderMode::Deterministic);
        ShardWriter {
            builder,
            samples: 0,
        }
    }

    /// Append one sample (`KEY.jpg` then `KEY.json`).
    pub fn write(&mut self, meta: &SampleMeta, jpeg: &[u8]) -> Result<()> {
        if !valid_key(&meta.key) {
            return Err(Error::Invalid(format!(
                "sample key {:?} must be 1-90 ASCII letters, digits, '_' or '-'",
                meta.key
            )));
        }
        let json = serde_json::to_vec(meta).map_err(|e| Error::json("sample metadata", e))?;
        self.append(&format!("{}.jpg", meta.key), jpeg)?;
        self.append(&format!("{}.json", meta.key), &json)?;
        self.samples += 1;
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, name, data)
            .map_err(|e| Error::io(name, e))
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// Write the end-of-archive marker and hand back the inner writer.
    pub fn finish(self) -> Result<W> {
        self.builder
            .into_inner()
            .map_err(|e| Error::io("shard end marker", e))
    }
}

/// Reads samples from a tar stream, front to back.
///
/// Entries are grouped by key (the file name up to its first dot); a group needs a `.jpg`
/// and a `.json`. Other members of a group (e.g. `.txt` added by other tools) are ignored.
pub struct ShardReader<R: Read> {
    inner: R,
    name: String,
    pending: Option<(String, String, Vec<u8>)>,
    done: bool,
}

impl<R: Read> ShardReader<R> {
    /// `name` is only used in error messages (e.g. the shard's path).
    pub fn new(inner: R, name: impl Into<String>) -> Self {
        ShardReader {
            inner,
            name: name.into(),
            pending: None,
            done: false,
        }
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::Invalid(format!("shard {} is corrupt: {why}", self.name))
    }

    fn read_exact_or_corrupt(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| Error::io(self.name.clone(), e))
    }

    /// The next regular file in the archive as (path, bytes), or None at the end.
    ///
    /// Every field of a header is outside input: sizes are checked against
    /// [`MAX_MEMBER_BYTES`] (or [`MAX_HEADER_MEMBER_BYTES`] for name-carrying members) and
    /// member data is read as it arrives, never allocated from a declared size up front.
    fn next_file(&mut self) -> Result<Option<(String, Vec<u8>)>> {
        let mut long_name: Option<String> = None;
        loop {
            let mut header = [0u8; 512];
            match self.inner.read(&mut header[..1]) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(Error::io(self.name.clone(), e)),
            }
            self.read_exact_or_corrupt(&mut header[1..])?;
            if header.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let size = parse_size(&header[124..136]).ok_or_else(|| self.corrupt("bad size"))?;
            let typeflag = header[156];
            let limit = match typeflag {
                b'L' | b'x' | b'g' => MAX_HEADER_MEMBER_BYTES,
                _ => MAX_MEMBER_BYTES,
            };
            if size > limit {
                return Err(self.corrupt(format!(
                    "a member declares {size} bytes, over the limit of {limit} bytes for its type"
                )));
            }
            let data = self.read_member(size)?;
            match typeflag {
                // GNU long name: the data is the next member's path.
                b'L' => long_name = Some(cstr(&data)),
                // pax extended header: take its `path` record.
                b'x' => {
                    if let Some(p) = pax_path(&data) {
                        long_name = Some(p);
                    }
                }
                b'0' | 0 => {
                    let path = match long_name.take() {
                        Some(p) => p,
                        None => {
                            let name = cstr(&header[0..100]);
                            let prefix = if &header[257..262] == b"ustar" {
                                cstr(&header[345..500])
                            } else {
                                String::new()
                            };
                            if prefix.is_empty() {
                                name
                            } else {
                                format!("{prefix}/{name}")
                            }
                        }
                    };
                    return Ok(Some((path, data)));
                }
                // Directories, links, global headers: not samples.
                _ => long_name = None,
            }
        }
    }

    /// A member's `size` bytes and its padding to the next 512-byte block. The buffer grows
    /// with the bytes actually read, so a truncated stream that declares a large member
    /// costs only what it holds.
    fn read_member(&mut self, size: u64) -> Result<Vec<u8>> {
        let padded = size.div_ceil(512) * 512;
        let mut data = Vec::new();
        let read = (&mut self.inner)
            .take(padded)
            .read_to_end(&mut data)
            .map_err(|e| Error::io(self.name.clone(), e))?;
        if (read as u64) < padded {
            return Err(self.corrupt(format!(
                "truncated: a member declares {size} bytes but the stream ends after {read}"
            )));
        }
        // `size <= padded == read`, so this cannot fail; stay defensive anyway.
        data.truncate(usize::try_from(size).unwrap_or(read));
        Ok(data)
    }

    fn next_sample(&mut self) -> Result<Option<Sample>> {
        let mut key: Option<String> = None;
        let mut jpeg: Option<Vec<u8>> = None;
        let mut json: Option<Vec<u8>> = None;
        loop {
            let entry = match self.pending.take() {
                Some(e) => Some(e),
                None => self.next_file()?.map(|(path, data)| {
                    let base = path.rsplit('/').next().unwrap_or(&path).to_string();
                    let (k, ext) = match base.split_once('.') {
                        Some((k, ext)) => (k.to_string(), ext.to_ascii_lowercase()),
                        None => (base.clone(), String::new()),
                    };
                    // Keep the directory part so `a/x.jpg` and `b/x.jpg` stay distinct.
                    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    let full = if dir.is_empty() {
                        k
                    } else {
                        format!("{dir}/{k}")
                    };
                    (full, ext, data)
                }),
            };
            let Some((k, ext, data)) = entry else {
                self.done = true;
                break;
            };
            match &key {
                None => key = Some(k.clone()),
                Some(current) if *current != k => {
                    self.pending = Some((k, ext, data));
                    break;
                }
                Some(_) => {}
            }
            match ext.as_str() {
                "jpg" | "jpeg" => jpeg = Some(data),
                "json" => json = Some(data),
                _ => {}
            }
        }
        let Some(key) = key else { return Ok(None) };
        let jpeg = jpeg.ok_or_else(|| self.corrupt(format!("sample {key} has no .jpg")))?;
        let json = json.ok_or_else(|| self.corrupt(format!("sample {key} has no .json")))?;
        let meta: SampleMeta = serde_json::from_slice(&json)
            .map_err(|e| Error::json(format!("{}: {key}.json", self.name), e))?;
        Ok(Some(Sample { key, meta, jpeg }))
    }
}

impl<R: Read> Iterator for ShardReader<R> {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done && self.pending.is_none() {
            return None;
        }
        match self.next_sample() {
            Ok(Some(s)) => Some(Ok(s)),
            Ok(None) => None,
            Err(e) => {
                // A corrupt stream cannot be resynchronised: stop after reporting it.
                self.done = true;
                self.pending = None;
                Some(Err(e))
            }
        }
    }
}

/// Read every sample of an in-memory shard.
pub fn read_all(bytes: &[u8], name: &str) -> Result<Vec<Sample>> {
    ShardReader::new(bytes, name).collect()
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Octal (NUL/space terminated) or GNU base-256 size field.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The `path` record of a pax extended header (`"LEN path=VALUE\n"` records, LEN counting
/// the whole record). A malformed record ends the parse: the member keeps its own name.
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        // The record holds at least its length digits, the space and one byte.
        if len <= space + 1 || len > rest.len() {
            return None;
        }
        let record = rest.get(space + 1..len)?;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = rest.get(len..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, label: u32) -> SampleMeta {
        SampleMeta {
            key: key.to_string(),
            identity: format!("Person {label} Ünïcode"),
            label,
            source: format!("Person {label} Ünïcode/photo_{key}.jpg"),
            bbox: BBox::new(10.5, 20.0, 64.0, 70.25),
            landmarks: (0..68).map(|i| [i as f32, 2.0 * i as f32]).collect(),
            score: 0.97,
            found_by: FoundBy::PaddedRetry,
            alignment: Alignment::DlibChip,
        }
    }

    fn crop(seed: u8) -> RgbImage {
        RgbImage::from_fn(150, 150, |x, y| {
            image::Rgb([(x as u8).wrapping_add(seed), y as u8, seed])
        })
    }

    #[test]
    fn shard_round_trip_keeps_every_sample_in_order() {
        let mut writer = ShardWriter::new(Vec::new());
        let mut written = Vec::new();
        for i in 0..5u8 {
            let m = meta(&format!("{i:06}_sample"), u32::from(i % 2));
            let jpeg = encode_crop(&crop(i * 40)).unwrap();
            writer.write(&m, &jpeg).unwrap();
            written.push((m, jpeg));
        }
        assert_eq!(writer.samples(), 5);
        let bytes = writer.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);

        let samples = read_all(&bytes, "test").unwrap();
        assert_eq!(samples.len(), 5);
        for (sample, (m, jpeg)) in samples.iter().zip(&written) {
            assert_eq!(sample.key, m.key);
            assert_eq!(&sample.meta, m);
            assert_eq!(&sample.jpeg, jpeg);
            let img = sample.image().unwrap();
            assert_eq!(img.dimensions(), (150, 150));
        }
        // The same samples give the same bytes (deterministic headers).
        let mut again = ShardWriter::new(Vec::new());
        for (m, jpeg) in &written {
            again.write(m, jpeg).unwrap();
        }
        assert_eq!(again.finish().unwrap(), bytes);
    }

    #[test]
    fn tar_crate_reads_our_shards() {
        let mut writer = ShardWriter::new(Vec::new());
        let jpeg = encode_crop(&crop(7)).unwrap();
        writer.write(&meta("000001_a", 0), &jpeg).unwrap();
        let bytes = writer.finish().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["000001_a.jpg", "000001_a.json"]);
    }

    #[test]
    fn reads_long_names_from_other_writers() {
        // A shard written by another tool with a path longer than 100 bytes (GNU long name).
        let long_dir = "d".repeat(120);
        let mut builder = tar::Builder::new(Vec::new());
        let m = meta("k1", 3);
        let json = serde_json::to_vec(&m).unwrap();
        for (name, data) in [
            (format!("{long_dir}/k1.jpg"), b"jpegbytes".to_vec()),
            (format!("{long_dir}/k1.json"), json),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            builder.append_data(&mut h, &name, data.as_slice()).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let samples = read_all(&bytes, "long").unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].key, format!("{long_dir}/k1"));
        assert_eq!(samples[0].jpeg, b"jpegbytes");
        assert_eq!(samples[0].meta.label, 3);
    }

    #[test]
    fn truncated_shard_is_an_error_not_a_panic() {
        let mut writer = ShardWriter::new(Vec::new());
        writer
            .write(&meta("000001_a", 0), &encode_crop(&crop(1)).unwrap())
            .unwrap();
        let bytes = writer.finish().unwrap();
        let cut = &bytes[..700];
        let results: Vec<_> = ShardReader::new(cut, "cut").collect();
        assert!(results.iter().any(|r| r.is_err()));
    }

    /// A raw 512-byte tar header with `name`, `size` and `typeflag` (checksum not checked
    /// by the reader, so left blank).
    fn raw_header(name: &str, size: u64, typeflag: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{size:011o}\0");
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = typeflag;
        h
    }

    /// A pax member with `records` as its data, padded, followed by a valid sample.
    fn shard_after_pax(records: &[u8]) -> Vec<u8> {
        let mut bytes = raw_header("pax", records.len() as u64, b'x').to_vec();
        bytes.extend_from_slice(records);
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        let mut writer = ShardWriter::new(Vec::new());
        writer.write(&meta("000001_a", 0), b"jpeg").unwrap();
        bytes.extend(writer.finish().unwrap());
        bytes
    }

    #[test]
    fn malformed_pax_records_are_ignored_not_a_panic() {
        // Lengths shorter than their own digits, past the end, zero, not numbers, no space.
        for records in [
            &b"1 path=a\n"[..],
            b"2 path=a\n",
            b"99 path=a\n",
            b"0 path=a\n",
            b"x path=a\n",
            b"nospace",
            b"\xff\xfe path=\xff\n",
        ] {
            let samples = read_all(&shard_after_pax(records), "pax").unwrap();
            assert_eq!(samples.len(), 1, "{records:?}");
            assert_eq!(samples[0].key, "000001_a");
        }
        // A well-formed record still renames the next member.
        let samples = read_all(&shard_after_pax(b"17 path=d/k1.jpg\n"), "pax");
        let err = samples.unwrap_err().to_string();
        assert!(err.contains("d/k1 has no .json"), "{err}");
    }

    #[test]
    fn a_declared_size_is_never_allocated_up_front() {
        // 60 MiB declared, 512 bytes present: an error about truncation, after reading
        // only what is there.
        let mut bytes = raw_header("000001_a.jpg", 60 << 20, b'0').to_vec();
        bytes.extend_from_slice(&[7u8; 512]);
        let err = read_all(&bytes, "big").unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        // Past the member limit: refused before reading any of it.
        let bytes = raw_header("000001_a.jpg", MAX_MEMBER_BYTES + 1, b'0');
        let err = read_all(&bytes, "huge").unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
        // Base-256 sizes that overflow u64 are a bad size, not a wrap-around.
        let mut h = raw_header("000001_a.jpg", 0, b'0');
        h[124..136].copy_from_slice(&[0xff; 12]);
        let err = read_all(&h, "b256").unwrap_err().to_string();
        assert!(err.contains("bad size"), "{err}");
    }

    #[test]
    fn rejects_keys_with_dots() {
        let mut writer = ShardWriter::new(Vec::new());
        assert!(writer.write(&meta("a.b", 0), b"x").is_err());
    }
}
