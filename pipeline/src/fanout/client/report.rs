//! The report of a job: counts, outcomes and timings, for the caller (and `--json`) and, in
//! short, for the manifest's job summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dispatch::Outcomes;
use super::plan::JobPlan;
use super::PrepareConfig;
use crate::dataset::layout::Layout;
use crate::dataset::{JobSummary, Manifest, Outcome};
use crate::storage::Location;

/// The final report of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrepareReport {
    pub job: String,
    pub output: String,
    pub executor: String,
    pub workers: usize,
    pub task_size: u32,
    pub tasks: u32,
    /// Tasks finished by an earlier run of this job and not redone.
    pub tasks_reused: u32,
    /// Tasks whose every attempt failed and whose images were then run one at a time
    /// (in this run or the earlier one that finished them).
    pub tasks_isolated: u32,
    /// `source: reason` of every image that killed its worker each time it ran alone
    /// (outcome `failed`).
    pub failed_images: Vec<String>,
    /// Worker invocations in this run, retries included.
    pub attempts: u32,
    pub retries: u32,
    /// How the input was laid out (absent from the JSON when labelled).
    #[serde(default, skip_serializing_if = "Layout::is_labelled")]
    pub layout: Layout,
    /// Input images (every one has an outcome).
    pub images: u32,
    /// Images processed by workers in this run.
    pub images_this_run: u32,
    /// Aligned faces stored.
    pub faces: u32,
    /// Records per outcome (`ok`, `no_face`, …).
    pub outcomes: BTreeMap<String, u32>,
    pub identities: u32,
    pub skipped_identities: u32,
    pub wall_s: f64,
    /// Per-task worker seconds in this run.
    pub task_p50_s: f64,
    pub task_p95_s: f64,
    pub task_max_s: f64,
    /// Sum of the per-task worker seconds: what one worker would have needed.
    pub task_seconds_total: f64,
    /// Mean seconds a task spent loading networks (cold starts).
    pub engine_load_mean_s: f64,
    /// Images per second of wall time in this run.
    pub throughput_img_s: f64,
    /// `task_seconds_total / wall_s`: the speed-up over one worker, from measured task times.
    pub speedup_vs_one_worker: f64,
    /// Speed-up divided by the number of workers.
    pub scaling_efficiency: f64,
    /// Largest peak resident memory any worker reported, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_peak_rss_mib: Option<f64>,
    /// Every retry with its reason, for the log.
    pub retry_reasons: Vec<String>,
}

/// What the finished job is made of, to build its report from.
pub(super) struct Finished<'a> {
    pub config: &'a PrepareConfig,
    pub plan: &'a JobPlan,
    pub executor: &'a str,
    pub output: &'a Location,
    /// Tasks finished by an earlier run and not redone.
    pub tasks_reused: u32,
    /// Tasks (of this run or an earlier one) whose images were run one at a time.
    pub tasks_isolated: u32,
    pub outcomes: Outcomes,
    /// Seconds since the job started.
    pub wall_s: f64,
}

impl Finished<'_> {
    pub fn report(self, manifest: &Manifest) -> PrepareReport {
        let Finished {
            config,
            plan,
            executor,
            output,
            tasks_reused,
            tasks_isolated,
            outcomes:
                Outcomes {
                    attempts,
                    retry_reasons,
                    fresh,
                },
            wall_s,
        } = self;

        let mut times: Vec<f64> = fresh.iter().map(|s| s.seconds).collect();
        times.sort_by(f64::total_cmp);
        // `+ 0.0`: an empty float sum is −0.0, which would print as a speed-up of "-0.00×".
        let task_seconds_total: f64 = times.iter().sum::<f64>() + 0.0;
        let images_this_run: u32 = fresh.iter().map(|s| s.records.len() as u32).sum();
        let speedup = if wall_s > 0.0 {
            task_seconds_total / wall_s
        } else {
            0.0
        };
        let counts = manifest.outcome_counts();
        PrepareReport {
            job: plan.job.clone(),
            output: output.to_string(),
            executor: executor.to_string(),
            workers: config.workers,
            task_size: config.task_size,
            tasks: plan.task_count(),
            tasks_reused,
            tasks_isolated,
            failed_images: manifest
                .records
                .iter()
                .filter(|r| r.outcome == Outcome::Failed)
                .map(|r| format!("{}: {}", r.source, r.reason.as_deref().unwrap_or("failed")))
                .collect(),
            attempts,
            retries: attempts.saturating_sub(u32::try_from(fresh.len()).unwrap_or(u32::MAX)),
            layout: plan.spec.layout,
            images: plan.image_count(),
            images_this_run,
            faces: manifest
                .records
                .iter()
                .filter(|r| r.outcome == Outcome::Ok)
                .map(|r| r.sample_count().max(1))
                .sum(),
            outcomes: counts.iter().map(|(o, n)| (o.to_string(), *n)).collect(),
            identities: u32::try_from(plan.raw.identities.len()).unwrap_or(u32::MAX),
            skipped_identities: plan.raw.skipped_identities,
            wall_s,
            task_p50_s: percentile(&times, 0.50),
            task_p95_s: percentile(&times, 0.95),
            task_max_s: times.last().copied().unwrap_or(0.0),
            task_seconds_total,
            engine_load_mean_s: if fresh.is_empty() {
                0.0
            } else {
                fresh.iter().map(|s| s.engine_load_s).sum::<f64>() / fresh.len() as f64
            },
            throughput_img_s: if wall_s > 0.0 {
                f64::from(images_this_run) / wall_s
            } else {
                0.0
            },
            speedup_vs_one_worker: speedup,
            scaling_efficiency: speedup / config.workers.min(fresh.len().max(1)) as f64,
            worker_peak_rss_mib: fresh.iter().filter_map(|s| s.peak_rss_mib).reduce(f64::max),
            retry_reasons,
        }
    }
}

/// The manifest's record of how the dataset was made.
pub(super) fn job_summary(report: &PrepareReport) -> JobSummary {
    JobSummary {
        job_id: report.job.clone(),
        executor: report.executor.clone(),
        workers: u32::try_from(report.workers).unwrap_or(u32::MAX),
        task_size: report.task_size,
        tasks: report.tasks,
        tasks_reused: report.tasks_reused,
        tasks_isolated: report.tasks_isolated,
        attempts: report.attempts,
        wall_s: report.wall_s,
        task_seconds_total: report.task_seconds_total,
        task_p50_s: report.task_p50_s,
        task_p95_s: report.task_p95_s,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.95), 10.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
