//! Datasets on both sides of `facepipe prepare`: the raw layouts it reads (LFW-style
//! `root/Identity/*.jpg`, or an unlabelled pile) and the prepared dataset it writes
//! (`manifest.json` plus WebDataset-style tar shards of aligned crops).
//!
//! Reading a prepared dataset from local disk:
//!
//! ```no_run
//! use facepipe_pipeline::dataset::{Manifest, Sample};
//! let dir = std::path::Path::new("prepared");
//! let manifest = Manifest::load(dir)?;
//! for sample in manifest.samples(dir) {
//!     let Sample { key, meta, jpeg } = sample?;
//!     println!("{key}: {} (label {}) {} bytes", meta.identity, meta.label, jpeg.len());
//! }
//! # Ok::<(), facepipe_pipeline::Error>(())
//! ```

pub mod layout;
pub mod manifest;
pub mod shards;

pub use layout::{Layout, UNLABELLED_IDENTITY};
pub use manifest::{
    iter_samples, AlignmentInfo, DatasetSamples, Identity, JobSummary, Manifest, Outcome, Record,
    ShardInfo, FORMAT_VERSION, MANIFEST_FILE,
};
pub use shards::{encode_crop, Sample, SampleMeta, ShardReader, ShardWriter};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::{Alignment, CROP_SIZE};
    use crate::detect::DetectorKind;
    use crate::engine::FoundBy;
    use crate::geometry::BBox;

    /// A manifest and its shard written to disk are read back by `Manifest::load` and
    /// `Manifest::samples` exactly as written.
    #[test]
    fn prepared_dataset_round_trip_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("shards")).unwrap();
        let crop = image::RgbImage::from_pixel(CROP_SIZE, CROP_SIZE, image::Rgb([90, 120, 200]));
        let jpeg = encode_crop(&crop).unwrap();
        let meta = SampleMeta {
            key: "000000_Zoë_Saldaña".replace(['ë', 'ñ'], "_"),
            identity: "Zoë Saldaña".into(),
            label: 0,
            source: "Zoë Saldaña/zoe 1.jpg".into(),
            bbox: BBox::new(1.0, 2.0, 3.0, 4.0),
            landmarks: vec![[0.5, 0.5]; 68],
            score: 0.9,
            found_by: FoundBy::Detector,
            alignment: Alignment::DlibChip,
        };
        let mut w = ShardWriter::new(
            std::fs::File::create(dir.path().join("shards/shard-00000.tar")).unwrap(),
        );
        w.write(&meta, &jpeg).unwrap();
        w.finish().unwrap();

        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            source: "/data/in".into(),
            detector: DetectorKind::Ssd,
            alignment: AlignmentInfo {
                kind: Alignment::DlibChip,
                crop_size: CROP_SIZE,
            },
            created: "2026-01-01T00:00:00Z".into(),
            identities: vec![Identity {
                name: "Zoë Saldaña".into(),
                label: 0,
                images: 2,
                faces: 1,
            }],
            shards: vec![ShardInfo {
                path: "shards/shard-00000.tar".into(),
                samples: 1,
            }],
            records: vec![
                Record {
                    source: "Zoë Saldaña/zoe 1.jpg".into(),
                    identity: "Zoë Saldaña".into(),
                    outcome: Outcome::Ok,
                    reason: None,
                    sha256: Some("ab".repeat(32)),
                    sample: Some(meta.key.clone()),
                    more_samples: Vec::new(),
                    shard: Some("shards/shard-00000.tar".into()),
                    found_by: Some(FoundBy::Detector),
                    faces_found: Some(1),
                },
                Record {
                    source: "Zoë Saldaña/zoe 2.txt".into(),
                    identity: "Zoë Saldaña".into(),
                    outcome: Outcome::Unreadable,
                    reason: Some("not an image".into()),
                    sha256: Some("cd".repeat(32)),
                    sample: None,
                    more_samples: Vec::new(),
                    shard: None,
                    found_by: None,
                    faces_found: None,
                },
            ],
            job: JobSummary {
                job_id: "j1".into(),
                executor: "local".into(),
                workers: 2,
                ..Default::default()
            },
        };
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_json().unwrap()).unwrap();

        let back = Manifest::load(dir.path()).unwrap();
        assert_eq!(back, manifest);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap())
                .unwrap();
        assert_eq!(json["records"][1]["outcome"], "unreadable");
        assert_eq!(json["alignment"]["kind"], "dlib_chip");
        assert_eq!(back.outcome_counts()[&Outcome::Unreadable], 1);
        assert_eq!(back.label_names(), ["Zoë Saldaña"]);

        let samples: Vec<Sample> = iter_samples(dir.path())
            .unwrap()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].meta, meta);
        assert_eq!(samples[0].jpeg, jpeg);
    }

    #[test]
    fn records_list_every_sample_and_old_records_still_read() {
        // A record as written before several samples per photo existed.
        let old = serde_json::json!({
            "source": "Ada/1.jpg",
            "identity": "Ada",
            "outcome": "ok",
            "sha256": "ab",
            "sample": "000000_Ada",
            "shard": "shards/j/00000.tar",
            "found_by": "detector",
            "faces_found": 1
        });
        let r: Record = serde_json::from_value(old.clone()).unwrap();
        assert!(r.more_samples.is_empty());
        assert_eq!(r.sample_keys().collect::<Vec<_>>(), ["000000_Ada"]);
        assert_eq!(r.sample_count(), 1);
        // Written back unchanged: one-sample records have no `more_samples` key.
        assert_eq!(serde_json::to_value(&r).unwrap(), old);

        let group = Record {
            source: "2019/party.jpg".into(),
            identity: String::new(),
            sample: Some("000000_2019_party_f0".into()),
            more_samples: vec!["000000_2019_party_f1".into()],
            faces_found: Some(2),
            ..r.clone()
        };
        let json = serde_json::to_value(&group).unwrap();
        assert_eq!(json["sample"], "000000_2019_party_f0");
        assert_eq!(
            json["more_samples"],
            serde_json::json!(["000000_2019_party_f1"])
        );
        assert_eq!(serde_json::from_value::<Record>(json).unwrap(), group);
        assert_eq!(
            group.sample_keys().collect::<Vec<_>>(),
            ["000000_2019_party_f0", "000000_2019_party_f1"]
        );
        let none = Record::without_sample("x.txt", "", Outcome::Unreadable, "not an image");
        assert_eq!((none.sample_keys().count(), none.sample_count()), (0, 0));
    }

    #[test]
    fn missing_manifest_says_to_run_prepare() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("facepipe prepare"), "{err}");
    }
}
