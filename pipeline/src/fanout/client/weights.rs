//! The networks' weights for the workers: local workers read the local model directory,
//! remote ones fetch the files from storage, uploaded here first.

use std::collections::HashMap;

use bytes::Bytes;

use super::PrepareConfig;
use crate::error::{Error, Result};
use crate::fanout::executor::Executor;
use crate::models::{ModelDir, ALL_MODELS};
use crate::storage::{self, Location, Storage};

/// Where the workers find the weights (the `models` of their requests). For remote workers
/// the files are uploaded first when `upload` (some task is still to run).
pub(super) async fn weights_for_workers(
    config: &PrepareConfig,
    executor: &dyn Executor,
    output: &Location,
    upload: bool,
) -> Result<Option<String>> {
    let remote = executor.needs_remote_models();
    // Remote workers fetch the weights from storage.
    let models_location = match &config.models_location {
        Some(l) => Some(l.clone()),
        None if remote => Some(output.child("models")),
        None => None,
    };
    if remote && upload {
        let (Some(models), Some(loc)) = (&config.models, &models_location) else {
            return Err(Error::Invalid(
                "remote workers need the weights, and no local model directory was given to \
                 upload them from"
                    .into(),
            ));
        };
        let store = storage::open(loc, &config.storage).await?;
        upload_models(store.as_ref(), models).await?;
    }
    Ok(match (&models_location, remote, &config.models) {
        (Some(l), true, _) => Some(l.to_string()),
        (_, false, Some(dir)) => Some(dir.root().display().to_string()),
        _ => None,
    })
}

/// Copy the four networks' files to the models location (skipping ones already there).
async fn upload_models(store: &dyn Storage, models: &ModelDir) -> Result<()> {
    let existing: HashMap<String, u64> = store
        .list("")
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    for stem in ALL_MODELS {
        for name in [
            format!("{stem}-weights_manifest.json"),
            format!("{stem}.bin"),
        ] {
            let path = models.root().join(&name);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| Error::io(&path, e))?;
            if existing.get(&name) == Some(&(bytes.len() as u64)) {
                continue;
            }
            store.put(&name, Bytes::from(bytes)).await?;
        }
    }
    Ok(())
}
