//! Admission control: the service answers only as many inference requests at once as it
//! has slots for, lets a bounded number wait, and turns the rest away with `503` and a
//! `Retry-After` hint instead of queueing without bound.
//!
//! Admission has two stages. First the upload: a request reserves its body's bytes from
//! the [`UploadBudget`] (a share of the memory budget) and must deliver the body within the
//! body timeout, so a slow or stalled client holds bytes of that budget for a bounded time,
//! never an inference slot. Then the slot: slots come from the cores and from the memory
//! budget (an admitted request may hold its upload, the decoded photo and the networks'
//! working set at once), and inference runs only while holding one, so the blocking pool
//! is bounded too.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facepipe_pipeline::DecodeLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Working set of one request beyond its upload and decoded photo: the detector's and the
/// landmark network's inputs and activations, crops, embeddings (measured well under this).
const WORKING_SET_BYTES: u64 = 64 * 1024 * 1024;

/// Memory budget when none is configured and the machine's memory is unknown.
const FALLBACK_MEMORY_BUDGET: u64 = 4 * 1024 * 1024 * 1024;

/// Limits on concurrent inference (`ServiceConfig::admission`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionConfig {
    /// Requests running inference at once (before the memory budget is applied).
    pub max_inflight: usize,
    /// Requests that may wait for a slot; beyond that, 503 at once.
    pub max_queue: usize,
    /// Longest a request waits for a slot before it is answered 503.
    pub queue_timeout: Duration,
    /// Bytes all admitted requests together may hold (upload + decoded photo + working set).
    pub memory_budget: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        AdmissionConfig {
            max_inflight: cores,
            max_queue: 4 * cores,
            queue_timeout: Duration::from_secs(10),
            memory_budget: default_memory_budget(),
        }
    }
}

/// Half of the machine's memory (`MemTotal` in /proc/meminfo), else 4 GiB.
pub fn default_memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024) / 2)
        })
        .unwrap_or(FALLBACK_MEMORY_BUDGET)
}

/// The most one admitted request may hold: its body, what decoding may allocate (the
/// decoder's bound: pixels, their RGB copy, buffers), and the working set.
pub fn bytes_per_request(limits: &DecodeLimits, max_body_bytes: usize) -> u64 {
    (max_body_bytes as u64)
        .saturating_add(limits.max_alloc_bytes)
        .saturating_add(WORKING_SET_BYTES)
}

impl AdmissionConfig {
    /// Bytes of request bodies that may be buffered at once: a quarter of the memory
    /// budget, and at least one largest body (or large uploads could never be accepted).
    pub fn upload_budget(&self, max_body_bytes: usize) -> u64 {
        (self.memory_budget / 4).max(max_body_bytes as u64)
    }

    /// Slots: `max_inflight`, lowered so that all of them fit in the memory budget (at
    /// least one, or the service would refuse everything).
    pub fn slots(&self, per_request: u64) -> usize {
        let by_memory = self.memory_budget / per_request.max(1);
        (by_memory.min(self.max_inflight as u64) as usize).max(1)
    }
}

/// The slots and the wait queue, shared by every request.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    max_queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
    shed: AtomicU64,
    /// Moving average of how long a slot is held, in microseconds (for `Retry-After`).
    held_us: AtomicU64,
}

/// One admitted request's slot. Clones share it; the slot frees when the last clone drops,
/// so work that outlives its request (a job finishing after a timeout) keeps it until done.
#[derive(Clone, Debug)]
pub struct Slot {
    _held: Arc<SlotInner>,
}

#[derive(Debug)]
struct SlotInner {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    since: Instant,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.admission.observe_hold(self.since.elapsed());
    }
}

/// Counts a waiting request for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What `/metrics` shows about admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionStats {
    pub slots: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub shed_total: u64,
}

impl Admission {
    pub fn new(slots: usize, max_queue: usize, queue_timeout: Duration) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(slots)),
            capacity: slots,
            max_queue,
            queue_timeout,
            waiting: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            held_us: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            slots: self.capacity,
            in_flight: self.capacity - self.slots.available_permits(),
            waiting: self.waiting.load(Ordering::Acquire),
            shed_total: self.shed.load(Ordering::Acquire),
        }
    }

    /// A slot now, or after waiting in the queue until `deadline` or the queue timeout
    /// (whichever comes first); `Overloaded` when the queue is full or the wait ran out.
    pub async fn admit(self: &Arc<Self>, deadline: Instant) -> Result<Slot> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(self.slot(permit));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.shed("all inference slots are busy and the wait queue is full"));
        }
        let _waiting = Waiting(&self.waiting);
        let until = deadline.min(Instant::now() + self.queue_timeout);
        match tokio::time::timeout_at(until.into(), self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(self.slot(permit)),
            // The semaphore is never closed; treat it like a full queue all the same.
            Ok(Err(_)) => Err(self.shed("the service is shutting down")),
            Err(_) => Err(self.shed("no inference slot came free in time")),
        }
    }

    /// A slot if one is free now, without queueing.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _held: Arc::new(SlotInner {
                _permit: permit,
                admission: self.clone(),
                since: Instant::now(),
            }),
        }
    }

    fn shed(&self, reason: &str) -> Error {
        self.shed.fetch_add(1, Ordering::AcqRel);
        Error::Overloaded {
            retry_after: self.retry_after(),
            reason: reason.into(),
        }
    }

    /// Roughly when the queue in front of a new request will have drained: the mean time a
    /// slot is held, times the requests per slot ahead of it; 1 to 60 s.
    fn retry_after(&self) -> Duration {
        let held = Duration::from_micros(self.held_us.load(Ordering::Acquire));
        let ahead = self.waiting.load(Ordering::Acquire) + self.capacity;
        let estimate = held.mul_f64(ahead as f64 / self.capacity as f64);
        estimate.clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn observe_hold(&self, held: Duration) {
        let us = held.as_micros().min(u64::MAX as u128) as u64;
        // An exponential moving average (weight 1/8); races only blur the estimate.
        let old = self.held_us.load(Ordering::Acquire);
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.held_us.store(new, Ordering::Release);
    }
}

/// Longest a request waits for its body's bytes in the upload budget before it is answered
/// 503: uploads in flight end within the body timeout, but a client retrying later is
/// better served than one left waiting behind a crowd.
pub const UPLOAD_WAIT: Duration = Duration::from_secs(1);

/// The budget is counted in KiB permits so that one body's reservation fits the
/// semaphore's `u32` permit count whatever the body limit.
const UPLOAD_UNIT: u64 = 1024;

/// The bytes of request bodies being received and held at once, shared by every request.
#[derive(Debug)]
pub struct UploadBudget {
    units: Arc<Semaphore>,
    capacity_units: u64,
    shed: AtomicU64,
}

/// One request's reservation of upload bytes, returned when dropped (after its handler).
#[derive(Debug)]
pub struct UploadPermit {
    _permit: OwnedSemaphorePermit,
}

/// What `/metrics` shows about the upload budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadStats {
    pub capacity_bytes: u64,
    pub reserved_bytes: u64,
    pub shed_total: u64,
}

impl UploadBudget {
    pub fn new(bytes: u64) -> Arc<Self> {
        // The semaphore's own ceiling is far above any memory budget; clamp all the same.
        let units = bytes
            .div_ceil(UPLOAD_UNIT)
            .clamp(1, (Semaphore::MAX_PERMITS as u64).min(u32::MAX as u64));
        Arc::new(UploadBudget {
            units: Arc::new(Semaphore::new(units as usize)),
            capacity_units: units,
            shed: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> UploadStats {
        let free = self.units.available_permits() as u64;
        UploadStats {
            capacity_bytes: self.capacity_units * UPLOAD_UNIT,
            reserved_bytes: (self.capacity_units - free) * UPLOAD_UNIT,
            shed_total: self.shed.load(Ordering::Acquire),
        }
    }

    /// Reserve `bytes` now, or within [`UPLOAD_WAIT`] (and before `deadline`);
    /// `Overloaded` when the budget stays spent.
    pub async fn reserve(&self, bytes: u64, deadline: Instant) -> Result<UploadPermit> {
        // A body never needs more than the whole budget (which holds the largest body).
        let units = bytes.div_ceil(UPLOAD_UNIT).clamp(1, self.capacity_units) as u32;
        if let Ok(permit) = self.units.clone().try_acquire_many_owned(units) {
            return Ok(UploadPermit { _permit: permit });
        }
        let until = deadline.min(Instant::now() + UPLOAD_WAIT);
        let wait = self.units.clone().acquire_many_owned(units);
        match tokio::time::timeout_at(until.into(), wait).await {
            Ok(Ok(permit)) => Ok(UploadPermit { _permit: permit }),
            Ok(Err(_)) | Err(_) => {
                self.shed.fetch_add(1, Ordering::AcqRel);
                Err(Error::Overloaded {
                    retry_after: Duration::from_secs(1),
                    reason: "too many uploads are being received at once".into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn slots_come_from_cores_and_the_memory_budget() {
        let limits = DecodeLimits::default();
        let per = bytes_per_request(&limits, 20 << 20);
        let config = AdmissionConfig {
            max_inflight: 16,
            max_queue: 4,
            queue_timeout: Duration::from_secs(1),
            memory_budget: 3 * per + 1,
        };
        assert_eq!(config.slots(per), 3);
        let tiny = AdmissionConfig {
            memory_budget: 1,
            ..config.clone()
        };
        assert_eq!(tiny.slots(per), 1, "at least one slot");
        let roomy = AdmissionConfig {
            memory_budget: u64::MAX,
            ..config
        };
        assert_eq!(roomy.slots(per), 16);
        let huge = DecodeLimits {
            max_alloc_bytes: u64::MAX,
            ..DecodeLimits::default()
        };
        assert_eq!(bytes_per_request(&huge, usize::MAX), u64::MAX);
    }

    #[tokio::test]
    async fn beyond_slots_and_queue_requests_are_shed_at_once() {
        let admission = Admission::new(1, 1, Duration::from_secs(3600));
        let first = admission.admit(far()).await.unwrap();
        // The second waits in the queue; the third finds the queue full.
        let a = admission.clone();
        let waiter = tokio::spawn(async move { a.admit(far()).await.map(|_| ()) });
        while admission.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        let third = admission.admit(far()).await;
        match third {
            Err(Error::Overloaded { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(admission.stats().shed_total, 1);
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(admission.stats().in_flight, 0);
        assert_eq!(admission.stats().waiting, 0);
    }

    #[tokio::test]
    async fn a_wait_past_the_queue_timeout_or_the_deadline_is_shed() {
        let admission = Admission::new(1, 8, Duration::from_millis(20));
        let held = admission.admit(far()).await.unwrap();
        assert!(matches!(
            admission.admit(far()).await,
            Err(Error::Overloaded { .. })
        ));
        let roomy = Admission::new(1, 8, Duration::from_secs(3600));
        let _held2 = roomy.admit(far()).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            roomy.admit(soon).await,
            Err(Error::Overloaded { .. })
        ));
        // A clone keeps the slot taken until the last one drops.
        let clone = held.clone();
        drop(held);
        assert_eq!(admission.stats().in_flight, 1);
        drop(clone);
        assert_eq!(admission.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn the_upload_budget_sheds_what_does_not_fit_and_frees_on_drop() {
        let budget = UploadBudget::new(3 * 1024 * 1024);
        let first = budget.reserve(2 * 1024 * 1024, far()).await.unwrap();
        assert_eq!(budget.stats().reserved_bytes, 2 * 1024 * 1024);
        let second = budget.reserve(1024 * 1024, far()).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            budget.reserve(1, soon).await,
            Err(Error::Overloaded { .. })
        ));
        assert_eq!(budget.stats().shed_total, 1);
        drop(first);
        // More than the whole budget asks for all of it, never waits forever.
        let all = budget.reserve(u64::MAX, soon).await;
        assert!(all.is_err(), "the second reservation still holds a MiB");
        drop(second);
        let _all = budget.reserve(u64::MAX, far()).await.unwrap();
        assert_eq!(budget.stats().reserved_bytes, budget.stats().capacity_bytes);
    }

    #[test]
    fn the_upload_budget_is_a_quarter_of_memory_and_holds_one_largest_body() {
        let config = AdmissionConfig {
            memory_budget: 400 << 20,
            ..AdmissionConfig::default()
        };
        assert_eq!(config.upload_budget(20 << 20), 100 << 20);
        assert_eq!(config.upload_budget(200 << 20), 200 << 20);
    }
}
