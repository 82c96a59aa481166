//! Builds small prepared datasets from the ORL face database (92×112 greyscale face crops of
//! 40 people, assets/sample/orl/sN/K.pgm): each crop resized to 150×150 RGB and written
//! as a real manifest + tar shard with the pipeline's `ShardWriter`, so tests and the ORL
//! experiment exercise the same loader path as a dataset written by `facepipe prepare`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use facepipe_pipeline::align::Alignment;
use facepipe_pipeline::dataset::{
    encode_crop, AlignmentInfo, Identity, JobSummary, Manifest, Outcome, Record, SampleMeta,
    ShardInfo, ShardWriter, FORMAT_VERSION, MANIFEST_FILE,
};
use facepipe_pipeline::detect::DetectorKind;
use facepipe_pipeline::engine::FoundBy;
use facepipe_pipeline::geometry::BBox;

/// The sample data committed with the project (`assets/sample`), or `$FACEPIPE_SAMPLE_DATA`.
pub fn sample_data() -> PathBuf {
    std::env::var_os("FACEPIPE_SAMPLE_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("assets")
                .join("sample")
        })
}

/// Write ORL people `people` (e.g. 1..=30 for s1–s30), `images` photos each (1..=10), as a
/// prepared dataset in `out`.
pub fn write_orl_dataset(
    out: &Path,
    people: impl IntoIterator<Item = usize>,
    images: usize,
) -> anyhow::Result<Manifest> {
    let orl = sample_data().join("orl");
    // The ORL photos are committed: without them the test fails (in CI and elsewhere).
    anyhow::ensure!(
        orl.is_dir(),
        "no ORL sample data at {}: restore assets/sample/orl from the repository or point \
         FACEPIPE_SAMPLE_DATA at a folder holding orl/",
        orl.display()
    );
    std::fs::create_dir_all(out.join("shards"))?;
    let shard_rel = "shards/shard-00000.tar".to_string();
    let mut writer = ShardWriter::new(std::fs::File::create(out.join(&shard_rel))?);
    let mut identities = Vec::new();
    let mut records = Vec::new();
    let mut count = 0u32;
    for (label, person) in people.into_iter().enumerate() {
        let name = format!("s{person}");
        for k in 1..=images {
            let source = format!("{name}/{k}.pgm");
            let img = image::open(orl.join(&source))?.to_rgb8();
            let crop =
                image::imageops::resize(&img, 150, 150, image::imageops::FilterType::CatmullRom);
            let key = format!("{name}_{k:02}");
            let meta = SampleMeta {
                key: key.clone(),
                identity: name.clone(),
                label: label as u32,
                source: source.clone(),
                bbox: BBox::new(0.0, 0.0, img.width() as f32, img.height() as f32),
                landmarks: Vec::new(),
                score: 1.0,
                found_by: FoundBy::WholeImage,
                alignment: Alignment::FaceApi,
            };
            writer.write(&meta, &encode_crop(&crop)?)?;
            records.push(Record {
                source,
                identity: name.clone(),
                outcome: Outcome::Ok,
                reason: None,
                sha256: None,
                sample: Some(key),
                shard: Some(shard_rel.clone()),
                found_by: Some(FoundBy::WholeImage),
                faces_found: Some(1),
                more_samples: Vec::new(),
            });
            count += 1;
        }
        identities.push(Identity {
            name,
            label: label as u32,
            images: images as u32,
            faces: images as u32,
        });
    }
    writer.finish()?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        source: orl.display().to_string(),
        detector: DetectorKind::Ssd,
        alignment: AlignmentInfo {
            kind: Alignment::FaceApi,
            crop_size: 150,
        },
        created: "2026-01-01T00:00:00Z".into(),
        identities,
        shards: vec![ShardInfo {
            path: shard_rel,
            samples: count,
        }],
        records,
        job: JobSummary::default(),
    };
    std::fs::write(out.join(MANIFEST_FILE), manifest.to_json()?)?;
    Ok(manifest)
}

/// Every tensor of a safetensors file, by name.
fn weights(path: &Path) -> Result<HashMap<String, tch::Tensor>, tch::TchError> {
    Ok(tch::Tensor::read_safetensors(path)?.into_iter().collect())
}

/// Largest |a − b| over every tensor of two safetensors files with the same names (how far
/// apart two checkpoints are).
pub fn max_abs_diff(a: &Path, b: &Path) -> Result<f64, tch::TchError> {
    let (a, b) = (weights(a)?, weights(b)?);
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for (name, t) in &a {
        let u = &b[name];
        assert_eq!(t.size(), u.size(), "{name}");
        let d = (t.to_kind(tch::Kind::Double) - u.to_kind(tch::Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        worst = worst.max(d);
    }
    Ok(worst)
}
