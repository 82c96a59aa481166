//! Batch buffers handed back to the loader's workers. A CPU batch is 10–17 MB of `f32` at
//! batch 64, and a fresh one costs a new allocation's page faults: measured at 150 px on 2
//! workers, the loader reached 0.85 of decode+augment with a new tensor per batch and 0.98
//! with reused ones. Once the consumer has dropped a batch, its tensor is taken back and
//! the next batch is written into it.
//!
//! A tensor is taken back only when nothing else can see its memory (libtorch's reference
//! counts, read through the C++ shim): a batch the caller kept, viewed or saved for autograd
//! is left alone. CUDA batches are not recycled here: libtorch's pinned-memory allocator
//! already reuses their host buffers, and knows when the asynchronous copy is done.

// The shim call below is the only unsafe code here: one pointer in, one int out.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex, PoisonError};

use tch::{Device, Kind, Tensor};

mod ffi {
    extern "C" {
        pub fn facepipe_tensor_sole_owner(tensor: *const std::ffi::c_void) -> i32;
    }
}

/// Whether `t` is the only handle on its memory: no other tensor, view or autograd record
/// shares its storage.
pub fn sole_owner(t: &Tensor) -> bool {
    // SAFETY: `as_ptr` is tch's live `at::Tensor*` for `t`, valid for the call; the shim only
    // reads reference counts and catches C++ exceptions.
    unsafe { ffi::facepipe_tensor_sole_owner(t.as_ptr().cast()) == 1 }
}

/// Tensors lent out, and the ones that came back, shared by every clone of a loader.
#[derive(Clone, Debug)]
pub struct Spares {
    inner: Arc<Mutex<Pool>>,
}

#[derive(Debug, Default)]
struct Pool {
    /// Handles on the batches served and not yet back (the consumer may still hold them).
    lent: Vec<Tensor>,
    /// Buffers free for the next batch, each the sole owner of its memory.
    free: Vec<Tensor>,
    /// Most buffers kept free: enough for every batch that can be in flight at once.
    cap: usize,
    /// Buffers handed out again so far.
    reused: usize,
}

impl Spares {
    /// A pool keeping at most `cap` free buffers.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Pool {
                cap,
                ..Pool::default()
            })),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // The pool holds no invariant a panic could break: a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remember a CPU batch tensor just handed to the consumer.
    pub fn lend(&self, t: &Tensor) {
        if t.device() != Device::Cpu {
            return;
        }
        let mut pool = self.pool();
        pool.lent.push(t.shallow_clone());
        // A consumer that keeps every batch must not make the pool grow without bound.
        let keep = pool.cap.max(1) * 2;
        if pool.lent.len() > keep {
            let extra = pool.lent.len() - keep;
            pool.lent.drain(..extra);
        }
    }

    /// Move the lent tensors nobody else holds any more to the free list.
    pub fn reclaim(&self) {
        let mut pool = self.pool();
        let lent = std::mem::take(&mut pool.lent);
        for t in lent {
            if sole_owner(&t) {
                if pool.free.len() < pool.cap {
                    pool.free.push(t);
                }
            } else {
                pool.lent.push(t);
            }
        }
    }

    /// A free buffer of exactly `shape` and `kind`, if one came back.
    pub fn take(&self, shape: &[i64], kind: Kind) -> Option<Tensor> {
        let mut pool = self.pool();
        let at = pool
            .free
            .iter()
            .position(|t| t.kind() == kind && t.size() == shape)?;
        pool.reused += 1;
        Some(pool.free.swap_remove(at))
    }

    /// How many batches were written into a buffer that came back.
    pub fn reused(&self) -> usize {
        self.pool().reused
    }

    /// Buffers free now.
    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.pool().free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_is_sole_owner_only_while_nothing_shares_its_memory() {
        let t = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
        assert!(sole_owner(&t));
        let alias = t.shallow_clone();
        assert!(!sole_owner(&t), "a second handle");
        drop(alias);
        assert!(sole_owner(&t));
        let view = t.narrow(0, 1, 2);
        assert!(!sole_owner(&t), "a view shares the storage");
        drop(view);
        assert!(sole_owner(&t));
        let w = Tensor::ones([3, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = t.matmul(&w);
        assert!(
            !sole_owner(&t),
            "autograd saved the input for the backward pass"
        );
        y.sum(Kind::Float).backward();
        drop(y);
        assert!(sole_owner(&t), "the graph is gone after backward");
    }

    #[test]
    fn only_batches_the_consumer_let_go_come_back() {
        let spares = Spares::new(4);
        let kept = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        spares.lend(&kept);
        {
            let dropped = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
            spares.lend(&dropped);
        }
        spares.reclaim();
        assert_eq!(
            spares.free_count(),
            1,
            "the dropped batch, not the kept one"
        );
        assert!(spares.take(&[3, 2], Kind::Float).is_none(), "another shape");
        assert!(spares.take(&[2, 3], Kind::Uint8).is_none(), "another kind");
        let back = spares
            .take(&[2, 3], Kind::Float)
            .expect("the dropped batch");
        assert!(sole_owner(&back));
        assert_eq!(spares.free_count(), 0);
        drop(kept);
        spares.reclaim();
        assert_eq!(spares.free_count(), 1, "the kept batch once it was dropped");
    }

    #[test]
    fn the_pool_stays_bounded() {
        let spares = Spares::new(2);
        let held: Vec<Tensor> = (0..10)
            .map(|_| Tensor::zeros([1], (Kind::Float, Device::Cpu)))
            .collect();
        for t in &held {
            spares.lend(t);
        }
        assert!(spares.pool().lent.len() <= 4, "lent handles are capped");
        drop(held);
        spares.reclaim();
        assert_eq!(spares.free_count(), 2, "at most `cap` free buffers");
    }
}
