//! Resuming: write each task's descriptor, and find the tasks an earlier run of the same job
//! already finished (same descriptor, status `done`), so that only the others run again.

use std::collections::BTreeMap;

use super::plan::JobPlan;
use super::read_status;
use crate::error::{Error, Result};
use crate::fanout::protocol::{status_key, task_key, TaskDescriptor, TaskState, TaskStatus};
use crate::storage::{self, Storage};

/// Which tasks are finished and which still have to run.
pub(super) struct Resumed {
    /// The finished tasks' statuses, by task id.
    pub done: BTreeMap<u32, TaskStatus>,
    /// The tasks to run, in order.
    pub pending: Vec<u32>,
}

impl Resumed {
    pub fn tasks_done(&self) -> u32 {
        u32::try_from(self.done.len()).unwrap_or(u32::MAX)
    }
}

/// Describe the tasks; find the ones an earlier run of this job already finished.
pub(super) async fn resume(output: &dyn Storage, plan: &JobPlan) -> Result<Resumed> {
    let job = &plan.job;
    let mut done: BTreeMap<u32, TaskStatus> = BTreeMap::new();
    let mut pending = Vec::new();
    for t in &plan.tasks {
        let key = task_key(job, t.task);
        let same = match output.get(&key).await {
            Ok(bytes) => {
                serde_json::from_slice::<TaskDescriptor>(&bytes)
                    .ok()
                    .as_ref()
                    == Some(t)
            }
            Err(Error::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        if same {
            if let Some(status) = read_status(output, &status_key(job, t.task)).await? {
                if status.state == TaskState::Done {
                    done.insert(t.task, status);
                    continue;
                }
            }
        } else {
            storage::put_json(output, &key, t).await?;
        }
        pending.push(t.task);
    }
    Ok(Resumed { done, pending })
}
