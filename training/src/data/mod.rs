//! Training data: a prepared dataset's shards read into memory as encoded crops, split by
//! identity, and served as augmented, normalised `N×3×H×W` batches by a prefetching loader.
//!
//! - [`FaceSet`]: every sample of a prepared dataset (JPEG bytes + identity), read shard after
//!   shard with the pipeline's streaming `ShardReader`. Crops stay encoded (~6 KB each) and are
//!   decoded again every epoch by the loader, in parallel, so memory stays small.
//! - [`split`]: train / validation / test by identity.
//! - [`loader`]: shuffled or identity-balanced order; worker threads that decode (and, for
//!   CPU runs, augment) whole batches into a bounded queue; on CUDA, pinned batches copied
//!   without blocking and augmented on the device.
//! - [`decode`]: JPEG crops decoded into a buffer the worker reuses.
//! - [`recycle`]: the buffers of batches the consumer has dropped, written into again.

pub mod decode;
pub mod loader;
pub mod recycle;
pub mod split;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use facepipe_pipeline::dataset::{Manifest, Sample};

use crate::error::{Error, Result};

pub use loader::{default_workers, AugmentOn, Batch, Loader, LoaderConfig, Prefetch};
pub use split::{IdentitySplit, SplitConfig};

/// One encoded aligned crop and who it is.
#[derive(Clone, Debug)]
pub struct FaceItem {
    pub key: String,
    pub identity: String,
    pub jpeg: Arc<[u8]>,
}

/// The samples of a prepared dataset, in shard order.
#[derive(Clone, Debug, Default)]
pub struct FaceSet {
    pub items: Vec<FaceItem>,
}

impl FaceSet {
    /// Read every sample of the prepared dataset at `dir` (manifest + shards on local disk).
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest = Manifest::load(dir)?;
        let mut items = Vec::with_capacity(manifest.sample_count() as usize);
        for sample in manifest.samples(dir) {
            items.push(FaceItem::from(sample?));
        }
        if items.is_empty() {
            return Err(Error::Invalid(format!(
                "the prepared dataset {} holds no face crops: check its manifest outcomes",
                dir.display()
            )));
        }
        Ok(Self { items })
    }

    /// Images per identity.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for it in &self.items {
            *counts.entry(it.identity.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The items of the given people, with a dense class label (index into `people`, which
    /// must be sorted) for each.
    pub fn subset(&self, people: &[String]) -> Subset {
        let mut items = Vec::new();
        let mut labels = Vec::new();
        for it in &self.items {
            if let Ok(label) = people.binary_search(&it.identity) {
                items.push(it.clone());
                labels.push(label as i64);
            }
        }
        Subset {
            items: Arc::new(items),
            labels: Arc::new(labels),
            classes: people.len(),
        }
    }
}

impl From<Sample> for FaceItem {
    fn from(s: Sample) -> Self {
        FaceItem {
            key: s.key,
            identity: s.meta.identity,
            jpeg: s.jpeg.into(),
        }
    }
}

/// Some people's items with dense labels `0..classes`.
#[derive(Clone, Debug)]
pub struct Subset {
    pub items: Arc<Vec<FaceItem>>,
    pub labels: Arc<Vec<i64>>,
    pub classes: usize,
}

impl Subset {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
