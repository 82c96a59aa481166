//! What every request carries through the service: an id (the caller's `x-request-id`, or
//! one made up here) that the answer and the log both show, and a [`Cancel`] token holding
//! the deadline measured from arrival. Inference checks the token between stages, so a
//! request that timed out, or whose client went away, stops working and frees its slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::{Error, Result};

/// The header a request id travels in, both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-chosen id kept; longer or odd ones are replaced by a fresh one.
const MAX_ID_LEN: usize = 64;

tokio::task_local! {
    /// The request this task is answering (set by [`stamp`]).
    static CURRENT: Current;
}

#[derive(Clone, Debug)]
struct Current {
    id: String,
    cancel: Cancel,
}

/// The id of the request being answered on this task, if any.
pub fn current_id() -> Option<String> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// The cancellation token of the request being answered on this task, if any.
pub fn current_cancel() -> Option<Cancel> {
    CURRENT.try_with(|c| c.cancel.clone()).ok()
}

/// The caller's id when it is short and printable (it ends up in logs), else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The outermost middleware: give the request its id and its deadline (`budget` from now),
/// and echo the id on the answer.
pub async fn stamp(budget: Duration, mut req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let cancel = Cancel::with_budget(budget);
    req.extensions_mut().insert(cancel.clone());
    let current = Current {
        id: id.clone(),
        cancel,
    };
    // Every log line written while answering carries the id.
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = CURRENT.scope(current, next.run(req)).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    response
}

/// A request's deadline and cancellation flag, shared with the work done for it.
#[derive(Clone, Debug)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Debug)]
struct CancelInner {
    arrival: Instant,
    budget: Duration,
    deadline: Instant,
    cancelled: AtomicBool,
}

/// Stand-in for "no deadline": ~34 years, near enough not to overflow `Instant`.
const FOREVER: Duration = Duration::from_secs(1 << 30);

impl Cancel {
    /// A token whose deadline is `budget` from now.
    pub fn with_budget(budget: Duration) -> Self {
        let arrival = Instant::now();
        let deadline = arrival.checked_add(budget.min(FOREVER)).unwrap_or(arrival);
        Cancel(Arc::new(CancelInner {
            arrival,
            budget,
            deadline,
            cancelled: AtomicBool::new(false),
        }))
    }

    /// A token that never fires (batch callers such as `facepipe score --local`).
    pub fn never() -> Self {
        Cancel::with_budget(FOREVER)
    }

    /// When the request arrived.
    pub fn arrival(&self) -> Instant {
        self.0.arrival
    }

    /// The instant the request must be answered by.
    pub fn deadline(&self) -> Instant {
        self.0.deadline
    }

    pub fn budget(&self) -> Duration {
        self.0.budget
    }

    /// Time left before the deadline (zero once past it).
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Stop the work at its next check (the answer is no longer wanted).
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire) || Instant::now() >= self.deadline()
    }

    /// Between stages of inference: `Err(Timeout)` once cancelled or past the deadline.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Timeout(self.0.budget))
        } else {
            Ok(())
        }
    }
}

/// Cancels its token when dropped unless disarmed: held by the future awaiting a job, so a
/// dropped future (timeout, client gone) tells the job to stop.
#[derive(Debug)]
pub struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    pub fn new(cancel: Cancel) -> Self {
        CancelOnDrop(Some(cancel))
    }

    /// The job finished: nothing to cancel.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_fires_at_its_deadline_or_when_cancelled() {
        let t = Cancel::with_budget(Duration::from_secs(3600));
        assert!(t.check().is_ok());
        t.cancel();
        assert!(matches!(t.check(), Err(Error::Timeout(_))));
        let past = Cancel::with_budget(Duration::ZERO);
        assert!(past.is_cancelled());
        assert!(Cancel::never().check().is_ok());
    }

    #[test]
    fn dropping_the_guard_cancels_unless_disarmed() {
        let t = Cancel::with_budget(Duration::from_secs(3600));
        CancelOnDrop::new(t.clone()).disarm();
        assert!(!t.is_cancelled());
        drop(CancelOnDrop::new(t.clone()));
        assert!(t.is_cancelled());
    }
}
