//! Planning: list the input, derive the job id, split the images into tasks and record the
//! job, so that a rerun with the same input and options finds the same job and tasks.

use sha2::{Digest, Sha256};

use super::PrepareConfig;
use crate::dataset::layout::{self, RawDataset};
use crate::error::{Error, Result};
use crate::fanout::protocol::{
    input_sample_key, job_key, shard_key, valid_job_id, JobFile, JobSpec, TaskDescriptor, TaskImage,
};
use crate::storage::{self, Location, Storage};

/// What a job is: its id, its options, the listed input and the tasks it splits into.
pub(super) struct JobPlan {
    pub job: String,
    pub spec: JobSpec,
    pub raw: RawDataset,
    /// In input order; a task's id is its index.
    pub tasks: Vec<TaskDescriptor>,
}

impl JobPlan {
    pub fn task_count(&self) -> u32 {
        u32::try_from(self.tasks.len()).unwrap_or(u32::MAX)
    }

    pub fn image_count(&self) -> u32 {
        u32::try_from(self.raw.images.len()).unwrap_or(u32::MAX)
    }

    pub fn task(&self, task: u32) -> Option<&TaskDescriptor> {
        usize::try_from(task).ok().and_then(|i| self.tasks.get(i))
    }

    /// Images in `task` (0 for an unknown task).
    pub fn task_images(&self, task: u32) -> u32 {
        self.task(task)
            .map_or(0, |t| u32::try_from(t.images.len()).unwrap_or(u32::MAX))
    }
}

/// List the input and plan the job: the spec, the job id (given or derived) and the tasks.
pub(super) async fn plan_job(
    input: &dyn Storage,
    input_loc: &Location,
    config: &PrepareConfig,
) -> Result<JobPlan> {
    let raw = layout::list_layout(input, config.layout, config.min_images_per_identity).await?;
    let spec = JobSpec {
        input: input_loc.to_string(),
        layout: config.layout,
        detector: config.detector,
        alignment: config.alignment,
        several_faces: config.several_faces,
        min_images_per_identity: config.min_images_per_identity,
        task_size: config.task_size,
        listing_sha256: listing_digest(&raw),
    };
    let job = match &config.job {
        Some(j) if valid_job_id(j) => j.clone(),
        Some(j) => {
            return Err(Error::Invalid(format!(
                "job id {j:?}: use up to 64 letters, digits, '-', '_' or '.'"
            )))
        }
        None => default_job_id(&spec)?,
    };
    let tasks = partition(&job, &spec, &raw);
    Ok(JobPlan {
        job,
        spec,
        raw,
        tasks,
    })
}

fn listing_digest(raw: &RawDataset) -> String {
    let mut h = Sha256::new();
    for img in &raw.images {
        h.update(img.key.as_bytes());
        h.update([0]);
        h.update(img.size.to_le_bytes());
    }
    hex::encode(h.finalize())
}

fn default_job_id(spec: &JobSpec) -> Result<String> {
    let json = serde_json::to_vec(spec).map_err(|e| Error::json("job spec", e))?;
    Ok(format!("job-{}", &hex::encode(Sha256::digest(json))[..12]))
}

/// Split the sorted inputs into tasks of `task_size`, in order.
fn partition(job: &str, spec: &JobSpec, raw: &RawDataset) -> Vec<TaskDescriptor> {
    let size = spec.task_size.max(1) as usize;
    raw.images
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let task = u32::try_from(i).unwrap_or(u32::MAX);
            TaskDescriptor {
                job: job.to_string(),
                task,
                input: spec.input.clone(),
                detector: spec.detector,
                alignment: spec.alignment,
                several_faces: spec.several_faces,
                shard: shard_key(job, task),
                images: chunk
                    .iter()
                    .enumerate()
                    .map(|(j, img)| TaskImage {
                        input: img.clone(),
                        sample_key: input_sample_key(i * size + j, img, spec.layout),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Record the job, or check that an existing job of that id is the same job.
pub(super) async fn write_job(output: &dyn Storage, plan: &JobPlan) -> Result<()> {
    let (job, spec) = (plan.job.as_str(), &plan.spec);
    let key = job_key(job);
    match output.get(&key).await {
        Ok(bytes) => {
            let existing: JobFile = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(output.location().display_key(&key), e))?;
            if existing.spec != *spec {
                return Err(Error::Invalid(format!(
                    "job {job} already exists in {} with a different input or options: \
                     pick another job id (or none, to have one derived from the input)",
                    output.location()
                )));
            }
            Ok(())
        }
        Err(Error::NotFound(_)) => {
            let file = JobFile {
                job: job.to_string(),
                spec: spec.clone(),
                tasks: plan.task_count(),
                images: plan.image_count(),
            };
            storage::put_json(output, &key, &file).await
        }
        Err(e) => Err(e),
    }
}
