//! Merging: one manifest from every task's status, one record per input; byte-identical
//! inputs in different tasks are marked `duplicate` and their samples removed from the shards.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;

use super::PrepareConfig;
use crate::align::CROP_SIZE;
use crate::dataset::layout::RawDataset;
use crate::dataset::shards::read_all;
use crate::dataset::{
    AlignmentInfo, Identity, JobSummary, Manifest, Outcome, Record, ShardInfo, ShardWriter,
    FORMAT_VERSION,
};
use crate::error::{Error, Result};
use crate::fanout::protocol::TaskStatus;
use crate::storage::{Location, Storage};

/// Build the manifest from every task's status: one record per input, byte-identical
/// inputs in different tasks marked `duplicate` (their samples removed from the shards).
pub(super) async fn merge(
    output: &dyn Storage,
    input: &Location,
    config: &PrepareConfig,
    raw: &RawDataset,
    done: &BTreeMap<u32, TaskStatus>,
) -> Result<Manifest> {
    let mut records: Vec<Record> = Vec::with_capacity(raw.images.len());
    let mut shards: Vec<ShardInfo> = Vec::new();
    for status in done.values() {
        records.extend(status.records.iter().cloned());
        if let Some(s) = &status.shard {
            shards.push(s.clone());
        }
    }
    // Tasks follow the sorted input order, so "first" is the same for any task size.
    let mut first_of: HashMap<String, String> = HashMap::new();
    let mut drop: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &mut records {
        let Some(sha) = r.sha256.clone() else {
            continue;
        };
        match first_of.get(&sha) {
            Some(first) if r.outcome != Outcome::Duplicate => {
                let keys: Vec<String> = r
                    .sample
                    .take()
                    .into_iter()
                    .chain(std::mem::take(&mut r.more_samples))
                    .collect();
                if let Some(shard) = r.shard.take() {
                    drop.entry(shard).or_default().extend(keys);
                }
                r.outcome = Outcome::Duplicate;
                r.reason = Some(format!("same bytes as {first}"));
                r.found_by = None;
                r.faces_found = None;
            }
            Some(_) => {}
            None => {
                first_of.insert(sha, r.source.clone());
            }
        }
    }
    for (shard, keys) in &drop {
        let listed = shards.iter().find(|s| &s.path == shard).map(|s| s.samples);
        let bytes = match output.get(shard).await {
            Ok(bytes) => bytes,
            // An earlier merge of this job deleted it: every sample it held was a duplicate.
            Err(Error::NotFound(_)) if listed.is_some_and(|n| n as usize <= keys.len()) => {
                if let Some(info) = shards.iter_mut().find(|s| &s.path == shard) {
                    info.samples = 0;
                }
                continue;
            }
            Err(Error::NotFound(what)) => {
                return Err(Error::NotFound(format!(
                    "{what}: a finished task's shard is gone; run the job again under \
                     another job id to redo it"
                )))
            }
            Err(e) => return Err(e),
        };
        let mut writer = ShardWriter::new(Vec::new());
        for s in read_all(&bytes, shard)? {
            if !keys.contains(&s.key) {
                writer.write(&s.meta, &s.jpeg)?;
            }
        }
        let kept = writer.samples();
        if kept == 0 {
            output.delete(shard).await?;
        } else {
            output.put(shard, Bytes::from(writer.finish()?)).await?;
        }
        if let Some(info) = shards.iter_mut().find(|s| &s.path == shard) {
            info.samples = kept;
        }
    }
    shards.retain(|s| s.samples > 0);
    records.sort_by(|a, b| a.source.cmp(&b.source));
    if records.len() != raw.images.len() {
        return Err(Error::Worker(format!(
            "the workers reported {} records for {} inputs",
            records.len(),
            raw.images.len()
        )));
    }
    let mut faces: HashMap<&str, u32> = HashMap::new();
    for r in &records {
        if r.outcome == Outcome::Ok {
            *faces.entry(r.identity.as_str()).or_default() += r.sample_count().max(1);
        }
    }
    let identities = raw
        .identities
        .iter()
        .enumerate()
        .map(|(label, (name, images))| Identity {
            name: name.clone(),
            label: u32::try_from(label).unwrap_or(u32::MAX),
            images: *images,
            faces: faces.get(name.as_str()).copied().unwrap_or(0),
        })
        .collect();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        source: input.to_string(),
        detector: config.detector,
        alignment: AlignmentInfo {
            kind: config.alignment,
            crop_size: CROP_SIZE,
        },
        created,
        identities,
        shards,
        records,
        job: JobSummary::default(),
    })
}
