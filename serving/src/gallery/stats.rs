//! Counters of the search paths taken, for benchmarks and tests.
//!
//! A module of its own because they are process-wide, not part of a [`super::Gallery`]: a
//! deployment swap or an edit replaces the gallery value, and a benchmark reads the totals
//! across all of them. Relaxed atomics: they count, they order nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many queries took each path, for benchmarks and tests (process-wide).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Answered by the exact scan because the gallery is small or k is large.
    pub exact: u64,
    /// Answered by the two stages, the bound proving the answer exact.
    pub two_stage: u64,
    /// Two stages tried, bound check failed, answered by the exact scan.
    pub fallback: u64,
}

/// The path one query took.
#[derive(Clone, Copy, Debug)]
pub(super) enum SearchPath {
    Exact,
    TwoStage,
    Fallback,
}

static EXACT: AtomicU64 = AtomicU64::new(0);
static TWO_STAGE: AtomicU64 = AtomicU64::new(0);
static FALLBACK: AtomicU64 = AtomicU64::new(0);

/// Count one query answered by `path`.
pub(super) fn record(path: SearchPath) {
    let counter = match path {
        SearchPath::Exact => &EXACT,
        SearchPath::TwoStage => &TWO_STAGE,
        SearchPath::Fallback => &FALLBACK,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counters of the search paths taken so far in this process.
pub fn search_stats() -> SearchStats {
    SearchStats {
        exact: EXACT.load(Ordering::Relaxed),
        two_stage: TWO_STAGE.load(Ordering::Relaxed),
        fallback: FALLBACK.load(Ordering::Relaxed),
    }
}
