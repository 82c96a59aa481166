//! Row-major f32 matrix products through the `gemm` crate, and the process-wide number of
//! threads one product may use. (`::gemm` below is the crate, not this module.)

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads per GEMM when nobody called [`set_gemm_threads`].
pub const DEFAULT_GEMM_THREADS: usize = 1;

/// The value given to [`set_gemm_threads`]; 0 means "not set" (use the default).
static GEMM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many threads one GEMM may use: [`DEFAULT_GEMM_THREADS`] (1) unless
/// [`set_gemm_threads`] chose another count. One by default because the callers that
/// process many photos parallelise over photos (one per core), and threads inside each GEMM
/// on top of that would oversubscribe the cores.
pub fn gemm_threads() -> usize {
    match GEMM_THREADS.load(Ordering::Relaxed) {
        0 => DEFAULT_GEMM_THREADS,
        n => n,
    }
}

/// Set, for the whole process, how many threads each GEMM may use. A service answering one
/// photo at a time on an idle machine sets it to the core count to cut latency; a binary
/// that takes the count from its command line or environment passes it here once at start.
///
/// `None` (or `Some(0)`) restores the default, [`DEFAULT_GEMM_THREADS`]. A plain `usize`
/// is accepted too: `set_gemm_threads(4)`.
pub fn set_gemm_threads(n: impl Into<Option<usize>>) {
    GEMM_THREADS.store(n.into().unwrap_or(0), Ordering::Relaxed);
}

/// `a · b` into a new `m × n` vector, without first zeroing it (the product overwrites
/// every element; zeroing large outputs cost ~6 % of a detector's time).
#[allow(unsafe_code)]
pub fn gemm_new(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    if k == 0 {
        return vec![0.0; m * n];
    }
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m × n values; with k > 0 and `read_dst` false the product
    // writes every one of them before `set_len` exposes them, and reads none.
    unsafe {
        gemm_raw(a, b, c.as_mut_ptr(), m, k, n, false);
        c.set_len(m * n);
    }
    c
}

/// `c += a · b` with `a: m × k`, `b: k × n`, all row-major.
#[allow(unsafe_code)]
pub fn gemm_acc(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    // Shapes are built by this module from checked weights: a mismatch is a bug, not input.
    assert!(c.len() == m * n, "gemm output is not {m}x{n}");
    // SAFETY: `c` holds m × n values and is borrowed mutably, so it aliases neither input.
    unsafe { gemm_raw(a, b, c.as_mut_ptr(), m, k, n, true) }
}

/// # Safety
/// `c` must point to `m * n` writable values (initialised when `read_dst`) that alias
/// neither `a` nor `b`.
#[allow(unsafe_code)]
unsafe fn gemm_raw(
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    read_dst: bool,
) {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "gemm shape mismatch: {m}x{k} · {k}x{n}"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = gemm_threads();
    // Below a few MFLOP a second thread costs more than it saves.
    let parallelism = if threads > 1 && m * k * n >= 1 << 21 {
        ::gemm::Parallelism::Rayon(threads)
    } else {
        ::gemm::Parallelism::None
    };
    // SAFETY: the shapes were checked above, so every index the row-major strides reach
    // lies inside `a`, `b` and the caller's `m * n` values at `c`.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by its definition.
    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn products_match_the_definition_with_one_or_several_threads() {
        // Big enough (m·k·n ≥ 2²¹) for several threads to be used when allowed.
        let (m, k, n) = (4096, 32, 16);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 4) as f32 * 0.5).collect();
        let want = naive(&a, &b, m, k, n);
        // The count is process-wide; another test running meanwhile only changes its speed.
        for threads in [None, Some(3)] {
            set_gemm_threads(threads);
            assert_eq!(gemm_threads(), threads.unwrap_or(DEFAULT_GEMM_THREADS));
            assert_eq!(gemm_new(&a, &b, m, k, n), want, "{threads:?} threads");
            let mut acc = vec![1.0; m * n];
            gemm_acc(&a, &b, &mut acc, m, k, n);
            let want_acc: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
            assert_eq!(acc, want_acc, "{threads:?} threads");
        }
        set_gemm_threads(None);
        assert_eq!(gemm_threads(), DEFAULT_GEMM_THREADS);
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros() {
        assert_eq!(gemm_new(&[], &[], 2, 0, 3), vec![0.0; 6]);
    }
}
