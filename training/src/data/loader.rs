//! Batches for training and evaluation: an epoch's sample order (shuffled, or identity
//! balanced: P people × K images per batch), parallel decode + augmentation with rayon, and a
//! background thread that keeps `prefetch` batches ready so the model never waits for data.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use tch::{Device, Tensor};

use super::Subset;
use crate::augment::{render, AugmentConfig, Draw, InputSpec};
use crate::error::{Error, Result};

/// How batches are made.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch: usize,
    pub input: InputSpec,
    /// `None`: no augmentation (evaluation).
    pub augment: Option<AugmentConfig>,
    /// `Some(k)`: identity-balanced batches of `batch / k` people × `k` images each.
    pub balanced: Option<usize>,
    /// Shuffle the order each epoch (training) or keep dataset order (evaluation).
    pub shuffle: bool,
    /// Drop the last incomplete batch (training: keeps batch norm statistics sane).
    pub drop_last: bool,
    pub seed: u64,
    /// Batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// Where batches go; CPU tensors are pinned first when this is CUDA.
    pub device: Device,
}

impl LoaderConfig {
    /// Plain in-order batches without augmentation (for embedding a set).
    pub fn eval(batch: usize, input: InputSpec, device: Device) -> Self {
        Self {
            batch,
            input,
            augment: None,
            balanced: None,
            shuffle: false,
            drop_last: false,
            seed: 0,
            prefetch: 2,
            device,
        }
    }
}

/// One batch: images `N×3×H×W` (f32, normalised) and labels `N` (int64) on the device, plus
/// the positions of its samples in the subset.
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// Serves a [`Subset`] as batches.
#[derive(Clone)]
pub struct Loader {
    subset: Subset,
    cfg: LoaderConfig,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64: decorrelates (seed, epoch, index) into independent RNG seeds.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Loader {
    pub fn new(subset: Subset, cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        if let Some(k) = cfg.balanced {
            if k == 0 || !cfg.batch.is_multiple_of(k) {
                return Err(Error::Invalid(format!(
                    "balanced sampling needs the batch ({}) to be a multiple of the images per person ({k})",
                    cfg.batch
                )));
            }
        }
        Ok(Self { subset, cfg })
    }

    pub fn subset(&self) -> &Subset {
        &self.subset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Batches one epoch yields.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.subset.len();
        if self.cfg.drop_last {
            n / self.cfg.batch
        } else {
            n.div_ceil(self.cfg.batch)
        }
    }

    /// Sample positions of `epoch`, in the order they will be served.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.subset.len();
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(self.cfg.seed ^ mix(epoch)));
        match self.cfg.balanced {
            Some(k) if self.cfg.shuffle => {
                let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.subset.classes];
                for (i, &l) in self.subset.labels.iter().enumerate() {
                    by_class[l as usize].push(i);
                }
                by_class.retain(|v| !v.is_empty());
                for v in &mut by_class {
                    v.shuffle(&mut rng);
                }
                let mut cursor = vec![0usize; by_class.len()];
                let mut classes: Vec<usize> = (0..by_class.len()).collect();
                let mut order = Vec::with_capacity(n + k);
                while order.len() < n && !classes.is_empty() {
                    classes.shuffle(&mut rng);
                    for &c in &classes {
                        // K images of this person, cycling through theirs (with repeats when
                        // they have fewer than K).
                        for _ in 0..k {
                            let pool = &by_class[c];
                            order.push(pool[cursor[c] % pool.len()]);
                            cursor[c] += 1;
                        }
                        if order.len() >= n {
                            break;
                        }
                    }
                }
                order.truncate(n);
                order
            }
            _ => {
                let mut order: Vec<usize> = (0..n).collect();
                if self.cfg.shuffle {
                    order.shuffle(&mut rng);
                }
                order
            }
        }
    }

    /// Decode and augment the samples at `indices` into one CHW f32 buffer (CPU, rayon).
    pub fn render_batch(&self, epoch: u64, indices: &[usize]) -> Result<Vec<f32>> {
        let len = self.cfg.input.chw_len();
        let mut buf = vec![0f32; indices.len() * len];
        buf.par_chunks_mut(len)
            .zip(indices.par_iter())
            .try_for_each(|(out, &i)| -> Result<()> {
                let item = &self.subset.items[i];
                let img = image::load_from_memory(&item.jpeg)
                    .map_err(|e| Error::Invalid(format!("crop {} does not decode: {e}", item.key)))?
                    .to_rgb8();
                let draw = match &self.cfg.augment {
                    Some(cfg) => {
                        let seed =
                            mix(self.cfg.seed ^ mix(epoch.wrapping_mul(1_000_003) ^ i as u64));
                        Draw::sample(cfg, &mut rand::rngs::StdRng::seed_from_u64(seed))
                    }
                    None => Draw::identity(),
                };
                render(&img, &self.cfg.input, &draw, out);
                Ok(())
            })?;
        Ok(buf)
    }

    fn make_batch(&self, epoch: u64, indices: Vec<usize>) -> Result<Batch> {
        let buf = self.render_batch(epoch, &indices)?;
        let s = i64::from(self.cfg.input.size);
        let n = indices.len() as i64;
        let labels: Vec<i64> = indices.iter().map(|&i| self.subset.labels[i]).collect();
        let mut images = Tensor::f_from_slice(&buf)?.f_view([n, 3, s, s])?;
        let mut labels = Tensor::f_from_slice(&labels)?;
        if self.cfg.device.is_cuda() {
            // Pinned host memory lets the host→device copy run asynchronously.
            images = images.pin_memory(self.cfg.device);
            labels = labels.pin_memory(self.cfg.device);
        }
        Ok(Batch {
            images,
            labels,
            indices,
        })
    }

    /// Start producing `epoch`'s batches on a background thread.
    pub fn epoch(&self, epoch: u64) -> Prefetch {
        let order = self.order(epoch);
        let batch = self.cfg.batch;
        let mut chunks: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
        if self.cfg.drop_last && chunks.last().is_some_and(|c| c.len() < batch) {
            chunks.pop();
        }
        let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
        let me = self.clone();
        let handle = std::thread::spawn(move || {
            for chunk in chunks {
                let b = me.make_batch(epoch, chunk);
                let failed = b.is_err();
                if tx.send(b).is_err() || failed {
                    break;
                }
            }
        });
        Prefetch {
            rx: Some(rx),
            handle: Some(handle),
            device: self.cfg.device,
        }
    }
}

/// The batches of one epoch, produced ahead on a background thread; moved to the device as
/// they are taken.
pub struct Prefetch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    device: Device,
}

impl Iterator for Prefetch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rx.as_ref()?.recv().ok()?;
        Some(b.map(|mut b| {
            if self.device != Device::Cpu {
                b.images = b
                    .images
                    .to_device_(self.device, tch::Kind::Float, true, false);
                b.labels = b
                    .labels
                    .to_device_(self.device, tch::Kind::Int64, true, false);
            }
            b
        }))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channel first makes the producer stop at its next send.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
