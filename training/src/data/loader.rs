//! Batches for training and evaluation: an epoch's sample order (shuffled, or identity
//! balanced: P people × K images per batch), made by a pool of worker threads and served in
//! order from a bounded queue of ready batches, so the model never waits for data while the
//! workers keep up.
//!
//! Each worker makes whole batches (batch `k` is worker `k mod W`'s), written straight into
//! the tensor it hands over, with its own reused JPEG decoder: no fork-join per batch, no
//! allocation per crop, nothing shared between workers but the read-only subset and the
//! buffers of batches the consumer has let go ([`super::recycle`]).
//!
//! Where augmentation runs is [`AugmentOn`]: on the host, a worker renders the finished
//! `f32` batch; on the device, it only decodes, and the `u8` crops are augmented on the
//! training device after the copy. On CUDA the host tensors are pinned and copied
//! without blocking. The pixels never depend on the worker count: every image's draw is
//! seeded by (seed, epoch, sample).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use image::{ImageBuffer, Rgb};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use super::decode::{self, CropDecoder};
use super::recycle::Spares;
use super::Subset;
use crate::augment::{augment_batch, render, AugmentConfig, Draw, InputSpec};
use crate::error::{Error, Result};

/// Where a batch's augmentation and normalisation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentOn {
    /// Loader workers render finished batches on the CPU (CPU runs).
    #[default]
    Host,
    /// Workers only decode; the batch is augmented as tensor ops on the training device
    /// (CUDA runs: the CPU is left to decoding and the copy carries bytes, not floats).
    Device,
}

impl AugmentOn {
    /// Device augmentation on CUDA, host augmentation on the CPU.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Self::Device
        } else {
            Self::Host
        }
    }
}

impl std::str::FromStr for AugmentOn {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "host" | "cpu" => Ok(Self::Host),
            "device" => Ok(Self::Device),
            other => Err(format!(
                "unknown augmentation place `{other}` (expected host or device)"
            )),
        }
    }
}

/// Worker threads when none are asked for: every core this process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

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
    /// Batches kept ready ahead of the consumer (at least one per worker).
    pub prefetch: usize,
    /// Where batches go; CPU tensors are pinned first when this is CUDA.
    pub device: Device,
    /// Threads making batches.
    pub workers: usize,
    /// Where augmentation and normalisation run.
    pub augment_on: AugmentOn,
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
            workers: default_workers(),
            augment_on: AugmentOn::for_device(device),
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

/// A batch as a worker leaves it, still on the host.
struct HostBatch {
    images: HostImages,
    labels: Tensor,
    indices: Vec<usize>,
}

enum HostImages {
    /// Augmented and normalised: `N×3×S×S` f32.
    Ready(Tensor),
    /// Decoded only: `N×H×W×3` u8, with each image's draw, for [`augment_batch`].
    Decoded { pixels: Tensor, draws: Vec<Draw> },
}

/// A CPU tensor of `shape` whose elements `fill` writes in place: the batch is made where it
/// will live, with no staging buffer to copy from. It is a buffer handed back from an earlier
/// batch when `spares` has one of this shape, else a new tensor, cleared here on the
/// worker's own thread: a libtorch fill would run on libtorch's thread pool, and every
/// worker entering that pool at once oversubscribes the cores.
#[allow(unsafe_code)]
fn filled_tensor<T: tch::kind::Element>(
    shape: &[i64],
    spares: Option<&Spares>,
    fill: impl FnOnce(&mut [T]) -> Result<()>,
) -> Result<Tensor> {
    let reused = spares
        .and_then(|s| s.take(shape, T::KIND))
        .filter(Tensor::is_contiguous);
    let fresh = reused.is_none();
    let t = match reused {
        Some(t) => t,
        None => Tensor::f_empty(shape, (T::KIND, Device::Cpu))?,
    };
    let len = t.numel();
    let ptr = t.data_ptr().cast::<T>();
    // SAFETY: `t` is a contiguous CPU tensor holding `len` elements of T's kind (a plain
    // number type, for which all-zero bytes are a valid value), and the only handle on its
    // memory: either new, or a spare, which the pool takes back only once it is the sole
    // owner (no other tensor, view or autograd record) and never hands out twice. A new
    // tensor is zeroed, a spare holds the earlier batch's numbers: either way every element
    // is initialised, and the slice lives only while `fill` runs.
    let data = unsafe {
        if fresh {
            std::ptr::write_bytes(ptr, 0, len);
        }
        std::slice::from_raw_parts_mut(ptr, len)
    };
    fill(data)?;
    Ok(t)
}

/// Keep the memory of dropped batches in the process for the next ones. glibc gives blocks
/// above its mmap threshold back to the OS when they are freed, so each new batch (10–17 MB
/// at batch 64) page-faults and zeroes its memory afresh: measured, a quarter of a worker's
/// time at 150 px. Raising the thresholds (to glibc's 32 MiB ceiling) makes freed batches
/// reusable. Done once per process, when the first epoch starts.
#[allow(unsafe_code)]
fn keep_batch_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            const CEILING: libc::c_int = 32 << 20;
            // SAFETY: mallopt only changes glibc's thresholds for later allocations; it is
            // safe to call at any time from any thread.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, CEILING);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * CEILING);
            }
        }
    });
}

/// Serves a [`Subset`] as batches.
#[derive(Clone)]
pub struct Loader {
    subset: Subset,
    cfg: LoaderConfig,
    /// Batch buffers the consumer let go, for the workers to write the next batches into
    /// (CPU batches augmented on the host; see [`super::recycle`]).
    spares: Spares,
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
        if cfg.workers == 0 {
            return Err(Error::Invalid("the loader needs at least 1 worker".into()));
        }
        if let Some(k) = cfg.balanced {
            if k == 0 || !cfg.batch.is_multiple_of(k) {
                return Err(Error::Invalid(format!(
                    "balanced sampling needs the batch ({}) to be a multiple of the images per person ({k})",
                    cfg.batch
                )));
            }
        }
        // Every batch that can be alive at once: each worker's queue and the one it is
        // making, and the one or two the consumer holds.
        let workers = cfg.workers;
        let in_flight = workers * (Self::queue_depth(&cfg, workers) + 1) + 2;
        Ok(Self {
            subset,
            cfg,
            spares: Spares::new(in_flight),
        })
    }

    /// Ready batches each of `workers` workers may queue: the prefetch spread over them.
    fn queue_depth(cfg: &LoaderConfig, workers: usize) -> usize {
        cfg.prefetch.div_ceil(workers).max(1)
    }

    /// Whether served batches come back as buffers: CPU batches augmented on the host.
    fn recycles(&self) -> bool {
        self.cfg.device == Device::Cpu && self.cfg.augment_on == AugmentOn::Host
    }

    pub fn subset(&self) -> &Subset {
        &self.subset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Batches made so far in the buffer of a batch the consumer had dropped.
    pub fn buffers_reused(&self) -> usize {
        self.spares.reused()
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

    /// The augmentation of sample `i` in `epoch` (identity without augmentation).
    pub fn draw(&self, epoch: u64, i: usize) -> Draw {
        match &self.cfg.augment {
            Some(cfg) => {
                let seed = mix(self.cfg.seed ^ mix(epoch.wrapping_mul(1_000_003) ^ i as u64));
                Draw::sample(cfg, &mut rand::rngs::StdRng::seed_from_u64(seed))
            }
            None => Draw::identity(),
        }
    }

    /// The batches of `epoch` as lists of sample positions.
    fn chunks(&self, epoch: u64) -> Vec<Vec<usize>> {
        let batch = self.cfg.batch;
        let order = self.order(epoch);
        let mut chunks: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
        if self.cfg.drop_last && chunks.last().is_some_and(|c| c.len() < batch) {
            chunks.pop();
        }
        chunks
    }

    /// Make one batch on the host (a worker's job).
    fn host_batch(
        &self,
        epoch: u64,
        indices: Vec<usize>,
        decoder: &mut CropDecoder,
    ) -> Result<HostBatch> {
        let n = indices.len() as i64;
        let images = match self.cfg.augment_on {
            AugmentOn::Host => {
                let len = self.cfg.input.chw_len();
                let s = i64::from(self.cfg.input.size);
                let spares = self.recycles().then_some(&self.spares);
                let images = filled_tensor::<f32>(&[n, 3, s, s], spares, |out| {
                    for (&i, out) in indices.iter().zip(out.chunks_exact_mut(len)) {
                        let item = &self.subset.items[i];
                        let img = decoder.decode(&item.jpeg, &item.key)?;
                        render(&img, &self.cfg.input, &self.draw(epoch, i), out);
                    }
                    Ok(())
                })?;
                HostImages::Ready(images)
            }
            AugmentOn::Device => {
                // One batch tensor needs one crop size: the first crop's (a prepared dataset
                // has one size; an odd crop is resized to it).
                let first = &self.subset.items[indices[0]];
                let (w, h) = decode::dimensions(&first.jpeg, &first.key)?;
                let len = (w * h * 3) as usize;
                let shape = [n, i64::from(h), i64::from(w), 3];
                let pixels = filled_tensor::<u8>(&shape, None, |out| {
                    for (&i, out) in indices.iter().zip(out.chunks_exact_mut(len)) {
                        let item = &self.subset.items[i];
                        let img = decoder.decode(&item.jpeg, &item.key)?;
                        if img.dimensions() == (w, h) {
                            out.copy_from_slice(img.as_raw());
                        } else {
                            let fitted: ImageBuffer<Rgb<u8>, Vec<u8>> = image::imageops::resize(
                                &img,
                                w,
                                h,
                                image::imageops::FilterType::Triangle,
                            );
                            out.copy_from_slice(fitted.as_raw());
                        }
                    }
                    Ok(())
                })?;
                HostImages::Decoded {
                    pixels,
                    draws: indices.iter().map(|&i| self.draw(epoch, i)).collect(),
                }
            }
        };
        let labels: Vec<i64> = indices.iter().map(|&i| self.subset.labels[i]).collect();
        let mut batch = HostBatch {
            images,
            labels: Tensor::f_from_slice(&labels)?,
            indices,
        };
        if self.cfg.device.is_cuda() {
            // Pinned host memory lets the copy to the device run without blocking.
            let device = self.cfg.device;
            batch.images = match batch.images {
                HostImages::Ready(t) => HostImages::Ready(t.pin_memory(device)),
                HostImages::Decoded { pixels, draws } => HostImages::Decoded {
                    pixels: pixels.pin_memory(device),
                    draws,
                },
            };
            batch.labels = batch.labels.pin_memory(device);
        }
        Ok(batch)
    }

    /// Start making `epoch`'s batches on the worker threads.
    pub fn epoch(&self, epoch: u64) -> Prefetch {
        keep_batch_memory();
        let chunks = self.chunks(epoch);
        let total = chunks.len();
        let workers = self.cfg.workers.clamp(1, total.max(1));
        let depth = Self::queue_depth(&self.cfg, workers);
        let mut own: Vec<Vec<Vec<usize>>> = vec![Vec::new(); workers];
        for (k, c) in chunks.into_iter().enumerate() {
            own[k % workers].push(c);
        }
        let mut rxs = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for mine in own {
            let (tx, rx) = sync_channel(depth);
            let me = self.clone();
            handles.push(std::thread::spawn(move || me.work(epoch, mine, &tx)));
            rxs.push(rx);
        }
        Prefetch {
            rxs,
            handles,
            next: 0,
            total,
            device: self.cfg.device,
            input: self.cfg.input.clone(),
            spares: self.recycles().then(|| self.spares.clone()),
        }
    }

    /// A worker: make its batches in order until done, failed, or nobody is listening.
    fn work(&self, epoch: u64, mine: Vec<Vec<usize>>, tx: &SyncSender<Result<HostBatch>>) {
        let mut decoder = CropDecoder::default();
        for chunk in mine {
            let b = self.host_batch(epoch, chunk, &mut decoder);
            let failed = b.is_err();
            if tx.send(b).is_err() || failed {
                break;
            }
        }
    }
}

/// The batches of one epoch, made ahead by the workers and taken in order; moved to the
/// device (and augmented there, with [`AugmentOn::Device`]) as they are taken.
pub struct Prefetch {
    rxs: Vec<Receiver<Result<HostBatch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
    device: Device,
    input: InputSpec,
    /// Where served batches go back once the consumer drops them (`None`: not recycled).
    spares: Option<Spares>,
}

impl Prefetch {
    fn to_device(&self, b: HostBatch) -> Result<Batch> {
        let on = self.device;
        let moved = |t: Tensor, kind| {
            if on == Device::Cpu {
                t
            } else {
                t.to_device_(on, kind, true, false)
            }
        };
        let images = match b.images {
            HostImages::Ready(t) => moved(t, Kind::Float),
            HostImages::Decoded { pixels, draws } => {
                augment_batch(&moved(pixels, Kind::Uint8), &draws, &self.input)?
            }
        };
        Ok(Batch {
            images,
            labels: moved(b.labels, Kind::Int64),
            indices: b.indices,
        })
    }
}

impl Iterator for Prefetch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        if let Some(spares) = &self.spares {
            // The batch served last has usually been dropped by now: its buffer goes back.
            spares.reclaim();
        }
        // Batch k is worker k mod W's, so taking them round-robin keeps the epoch's order.
        let b = self.rxs[self.next % self.rxs.len()].recv().ok()?;
        self.next += 1;
        let batch = b.and_then(|b| self.to_device(b));
        if let (Some(spares), Ok(batch)) = (&self.spares, &batch) {
            spares.lend(&batch.images);
        }
        Some(batch)
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channels first makes every worker stop at its next send.
        self.rxs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        // The next epoch's workers start with the buffers given back by then.
        if let Some(spares) = &self.spares {
            spares.reclaim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FaceItem;

    /// `n` distinct 150 px JPEG crops of `n / 2` people.
    fn synthetic_subset(n: usize) -> Subset {
        let items: Vec<FaceItem> = (0..n)
            .map(|i| {
                let img = image::RgbImage::from_fn(150, 150, |x, y| {
                    image::Rgb([(x + 7 * i as u32) as u8, (y * 2) as u8, (i * 31) as u8])
                });
                let mut jpeg = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                    .encode_image(&img)
                    .unwrap();
                FaceItem {
                    key: format!("k{i}"),
                    identity: format!("p{}", i / 2),
                    jpeg: jpeg.into(),
                }
            })
            .collect();
        Subset {
            labels: std::sync::Arc::new((0..n).map(|i| (i / 2) as i64).collect()),
            classes: n.div_ceil(2),
            items: std::sync::Arc::new(items),
        }
    }

    #[test]
    fn dropped_batches_are_written_again_and_kept_ones_never_are() {
        let cfg = LoaderConfig {
            batch: 4,
            input: InputSpec::pretrained_resnet(),
            augment: Some(AugmentConfig::default()),
            balanced: None,
            shuffle: true,
            drop_last: true,
            seed: 3,
            prefetch: 2,
            device: Device::Cpu,
            workers: 2,
            augment_on: AugmentOn::Host,
        };
        let loader = Loader::new(synthetic_subset(24), cfg).unwrap();
        // Epoch 1 with every batch kept: nothing can come back while they are held.
        let kept: Vec<Batch> = loader.epoch(1).collect::<Result<_>>().unwrap();
        assert_eq!(kept.len(), 6);
        assert_eq!(loader.buffers_reused(), 0);
        let copies: Vec<Tensor> = kept.iter().map(|b| b.images.copy()).collect();
        // Epochs 2 and 1 again, each batch dropped as a training loop drops it.
        for b in loader.epoch(2) {
            drop(b.unwrap());
        }
        for (k, b) in loader.epoch(1).enumerate() {
            let b = b.unwrap();
            assert!(b.images.equal(&copies[k]), "batch {k} of epoch 1 changed");
        }
        assert!(
            loader.buffers_reused() >= 6,
            "only {} batches reused a buffer",
            loader.buffers_reused()
        );
        for (k, (b, c)) in kept.iter().zip(&copies).enumerate() {
            assert!(b.images.equal(c), "kept batch {k} was written over");
        }
    }

    #[test]
    fn augment_place_parses_and_defaults_by_device() {
        assert_eq!("host".parse::<AugmentOn>(), Ok(AugmentOn::Host));
        assert_eq!("CPU".parse::<AugmentOn>(), Ok(AugmentOn::Host));
        assert_eq!("device".parse::<AugmentOn>(), Ok(AugmentOn::Device));
        let err = "gpu0".parse::<AugmentOn>().unwrap_err();
        assert!(err.contains("host or device"), "{err}");
        assert_eq!(AugmentOn::for_device(Device::Cpu), AugmentOn::Host);
        assert_eq!(AugmentOn::for_device(Device::Cuda(0)), AugmentOn::Device);
    }

    #[test]
    fn filled_tensor_holds_what_was_written() {
        let t = filled_tensor::<f32>(&[2, 3], None, |out| {
            for (i, x) in out.iter_mut().enumerate() {
                *x = i as f32;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap(),
            [0., 1., 2., 3., 4., 5.]
        );
        assert_eq!(t.size(), [2, 3]);
        let failed = filled_tensor::<u8>(&[4], None, |_| Err(Error::Invalid("bad crop".into())));
        assert!(failed.is_err());
    }
}
