//! Property tests: the shard reader and the manifest reader take any bytes (random, or a
//! valid shard / manifest flipped, truncated or spliced) and answer `Ok` or `Err`, never a
//! panic, and never allocate more than a small multiple of the input they were given: a
//! header that declares gigabytes costs nothing until the bytes are really there.

// A test fails loudly: a panic with the unwrapped error is its report.
#![allow(clippy::unwrap_used)]
// The counting allocator below is the only way to see every allocation the readers make.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use facepipe_pipeline::dataset::shards::read_all;
use facepipe_pipeline::dataset::{
    encode_crop, AlignmentInfo, Identity, JobSummary, Manifest, Outcome, Record, SampleMeta,
    ShardInfo, ShardWriter, FORMAT_VERSION,
};
use facepipe_pipeline::geometry::BBox;
use facepipe_pipeline::{Alignment, DetectorKind, FoundBy};
use proptest::prelude::*;

/// The system allocator, noting the largest single request made by the thread while it
/// is watching (proptest runs each case on the test's own thread).
struct LargestAllocation;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    let _ = WATCHING.try_with(|w| {
        if w.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only reads sizes.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `alloc`; `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Run `f` and return its result with the largest single allocation it made.
fn largest_allocation_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    WATCHING.with(|w| w.set(true));
    let out = f();
    WATCHING.with(|w| w.set(false));
    (out, LARGEST.with(Cell::get))
}

/// What a reader may allocate for `input` bytes: its own copies of what it read (a
/// growing buffer may double), plus a fixed amount for headers and decoded metadata.
fn allowance(input: usize) -> usize {
    4 * input + (256 << 10)
}

fn meta(key: &str, label: u32) -> SampleMeta {
    SampleMeta {
        key: key.to_string(),
        identity: format!("Persön {label}"),
        label,
        source: format!("Persön {label}/{key}.jpg"),
        bbox: BBox::new(1.0, 2.0, 30.0, 40.0),
        landmarks: vec![[3.0, 4.0]; 68],
        score: 0.9,
        found_by: FoundBy::Detector,
        alignment: Alignment::DlibChip,
    }
}

/// A valid three-sample shard, as the workers write it.
fn valid_shard() -> Vec<u8> {
    let crop = image::RgbImage::from_pixel(150, 150, image::Rgb([10, 200, 30]));
    let jpeg = encode_crop(&crop).unwrap();
    let mut writer = ShardWriter::new(Vec::new());
    for i in 0..3 {
        writer.write(&meta(&format!("{i:06}_p"), i), &jpeg).unwrap();
    }
    writer.finish().unwrap()
}

/// A valid manifest with one record of each outcome, as JSON.
fn valid_manifest() -> Vec<u8> {
    let records = Outcome::ALL
        .iter()
        .enumerate()
        .map(|(i, outcome)| Record {
            source: format!("P/{i}.jpg"),
            identity: "P".into(),
            outcome: *outcome,
            reason: (*outcome != Outcome::Ok).then(|| "why".to_string()),
            sha256: Some("ab".repeat(32)),
            sample: None,
            more_samples: Vec::new(),
            shard: None,
            found_by: None,
            faces_found: Some(1),
        })
        .collect();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        source: "/in".into(),
        detector: DetectorKind::Ssd,
        alignment: AlignmentInfo {
            kind: Alignment::DlibChip,
            crop_size: 150,
        },
        created: "2026-01-01T00:00:00Z".into(),
        identities: vec![Identity {
            name: "P".into(),
            label: 0,
            images: 6,
            faces: 1,
        }],
        shards: vec![ShardInfo {
            path: "shards/j/00000.tar".into(),
            samples: 1,
        }],
        records,
        job: JobSummary::default(),
    };
    manifest.to_json().unwrap()
}

/// Ways to damage a valid file.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR the byte at (position mod length) with a non-zero mask.
    Flip(usize, u8),
    /// Overwrite 12 bytes at a position with a chosen pattern (a size or length field).
    Stamp(usize, [u8; 12]),
    /// Keep only the first (position mod length) bytes.
    Truncate(usize),
    /// Replace bytes [a, b) with bytes [c, d) of the same file (mod length).
    Splice(usize, usize, usize, usize),
    /// Insert random bytes at a position.
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(p, m)| Mutation::Flip(p, m)),
        (
            any::<usize>(),
            prop_oneof![
                // Declared sizes: 16 MiB and 1 GiB (both over what the stream holds), 8 GiB
                // (over the member limit); 0xff (base-256 overflow); spaces.
                Just(*b"00100000000\0"),
                Just(*b"07777777777\0"),
                Just(*b"77777777777\0"),
                Just([0xff; 12]),
                Just(*b"           \0"),
                any::<[u8; 12]>(),
            ]
        )
            .prop_map(|(p, b)| Mutation::Stamp(p, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            any::<usize>(),
            any::<usize>(),
            any::<usize>()
        )
            .prop_map(|(a, b, c, d)| Mutation::Splice(a, b, c, d)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::Flip(p, mask) => bytes[p % n] ^= mask,
        Mutation::Stamp(p, pattern) => {
            let at = p % n;
            let end = (at + pattern.len()).min(n);
            bytes[at..end].copy_from_slice(&pattern[..end - at]);
        }
        Mutation::Truncate(p) => bytes.truncate(p % n),
        Mutation::Splice(a, b, c, d) => {
            let (a, b) = ((a % n).min(b % n), (a % n).max(b % n));
            let (c, d) = ((c % n).min(d % n), (c % n).max(d % n));
            let piece = bytes[c..d].to_vec();
            bytes.splice(a..b, piece);
        }
        Mutation::Insert(p, v) => {
            let at = p % n;
            bytes.splice(at..at, v.iter().copied());
        }
    }
}

/// Which header field a stamp lands on matters: aim half of them at the first few headers'
/// size and typeflag fields.
fn header_field_position() -> impl Strategy<Value = usize> {
    (
        0usize..4,
        prop_oneof![Just(124usize), Just(156), Just(512usize + 124), 0usize..512],
    )
        .prop_map(|(block, offset)| block * 1536 + offset)
}

fn check_shard(bytes: &[u8]) {
    let (result, largest) = largest_allocation_of(|| read_all(bytes, "fuzzed").map(|v| v.len()));
    // Ok or Err are both fine; reaching here means no panic.
    drop(result);
    assert!(
        largest <= allowance(bytes.len()),
        "reading {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
}

fn check_manifest(bytes: &[u8]) {
    let (result, largest) = largest_allocation_of(|| Manifest::from_slice(bytes, "fuzzed"));
    drop(result);
    assert!(
        largest <= allowance(bytes.len()),
        "parsing {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
}

proptest! {
    // Moderate: the whole file runs in a few seconds in a debug build.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn shard_reader_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_shard(&bytes);
    }

    #[test]
    fn shard_reader_survives_a_damaged_shard(
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = valid_shard();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_shard(&bytes);
    }

    #[test]
    fn shard_reader_survives_damaged_header_fields(
        at in header_field_position(),
        pattern in prop_oneof![
            Just(*b"00100000000\0"),
            Just(*b"07777777777\0"),
            Just(*b"77777777777\0"),
            Just([0xff; 12]),
            any::<[u8; 12]>(),
        ],
        typeflag in prop_oneof![Just(b'x'), Just(b'L'), Just(b'g'), Just(b'5'), any::<u8>()],
    ) {
        let mut bytes = valid_shard();
        apply(&mut bytes, &Mutation::Stamp(at, pattern));
        if let Some(t) = bytes.get_mut(156) {
            *t = typeflag;
        }
        check_shard(&bytes);
    }

    #[test]
    fn shard_reader_survives_hostile_pax_records(records in prop::collection::vec(
        prop_oneof![
            // Length fields that lie: zero, shorter than themselves, past the end, huge.
            (0usize..40, "[a-z]{0,8}=[^\n]{0,16}").prop_map(|(n, kv)| format!("{n} {kv}\n").into_bytes()),
            Just(b"18446744073709551616 path=x\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
        0..6,
    )) {
        let data: Vec<u8> = records.concat();
        let mut bytes = vec![0u8; 512];
        bytes[..3].copy_from_slice(b"pax");
        bytes[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        bytes[156] = b'x';
        bytes.extend_from_slice(&data);
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        bytes.extend(valid_shard());
        check_shard(&bytes);
    }

    #[test]
    fn manifest_reader_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_manifest(&bytes);
    }

    #[test]
    fn manifest_reader_survives_a_damaged_manifest(
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = valid_manifest();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_manifest(&bytes);
    }
}

/// A header declaring 16 MiB (under the member limit) in front of a few kilobytes: the
/// reader says the shard is truncated after holding only what is there; 1 GiB is refused
/// outright.
#[test]
fn a_declared_size_costs_only_the_bytes_present() {
    for (size, says) in [
        (b"00100000000\0", "truncated"),
        (b"07777777777\0", "over the limit"),
    ] {
        let mut bytes = valid_shard();
        bytes[124..136].copy_from_slice(size);
        let (result, largest) = largest_allocation_of(|| read_all(&bytes, "declared"));
        let err = result.unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        assert!(
            largest <= allowance(bytes.len()),
            "allocated {largest} bytes"
        );
    }
}

/// The unmutated inputs read back: the damaged cases start from real files.
#[test]
fn the_valid_inputs_read_back() {
    assert_eq!(read_all(&valid_shard(), "valid").unwrap().len(), 3);
    let m = Manifest::from_slice(&valid_manifest(), "valid").unwrap();
    assert_eq!(m.records.len(), Outcome::ALL.len());
}
