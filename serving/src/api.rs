//! The HTTP API: routes, handlers, API-key checks, limits, timeouts and metrics.
//!
//! Every answer is JSON (errors too: `{"error": {"code", "message"}, "request_id"}`) and
//! carries an `x-request-id`. Inference requests are admitted in two stages (see
//! [`crate::admission`]): their upload is received into a bounded byte budget within the
//! body timeout, then they take one of a bounded number of slots; inference runs on the
//! blocking pool only while holding a slot, and stops between stages once the request's
//! deadline (measured from arrival) passes. The deployment is read through an atomic
//! pointer so a new version can be swapped in while requests are in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use facepipe_pipeline::DecodeLimits;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admission::{
    bytes_per_request, Admission, AdmissionConfig, Slot, UploadBudget, UploadPermit,
};
use crate::deployment::ModelRef;
use crate::edits::{Edit, EditQueue};
use crate::error::{json_error, Error, Result};
use crate::live::{Identification, Live, LoadOptions, Verification, DEFAULT_MAX_FACES};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::request::{self, Cancel, CancelOnDrop};
use crate::review::{routes as review, Review};
use crate::web;

/// Service settings resolved from flags and environment.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Bearer token callers must present for enroll/delete (and everything, see below).
    /// `None` disables enroll/delete entirely.
    pub api_key: Option<String>,
    /// Require the key for identify, verify and people too.
    pub require_key_for_all: bool,
    /// Pixel and byte limits checked before decoding.
    pub limits: DecodeLimits,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered with a timeout.
    pub request_timeout: Duration,
    /// Longest a client may take to deliver its request body once its headers are in
    /// (within the request timeout too); slower uploads are answered 408.
    pub body_timeout: Duration,
    /// Largest `top_k` a caller may ask for.
    pub max_top_k: usize,
    /// Faces identified per photo: the largest ones; the answer says when more were found.
    pub max_faces: usize,
    /// Concurrent inference slots, the wait queue and the memory budget.
    pub admission: AdmissionConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            api_key: None,
            require_key_for_all: false,
            limits: DecodeLimits {
                max_pixels: 40_000_000,
                max_bytes: 20 * 1024 * 1024,
                ..DecodeLimits::default()
            },
            max_body_bytes: 20 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(20),
            max_top_k: 50,
            max_faces: DEFAULT_MAX_FACES,
            admission: AdmissionConfig::default(),
        }
    }
}

impl ServiceConfig {
    /// Inference slots: the configured maximum, lowered to fit the memory budget given
    /// what one request may hold under these limits.
    pub fn inference_slots(&self) -> usize {
        self.admission
            .slots(bytes_per_request(&self.limits, self.max_body_bytes))
    }
}

/// Internal failures in a row after which `/readyz` re-checks the networks.
const FAILURES_BEFORE_RECHECK: u32 = 3;

/// Whether recent inference succeeded: a run of internal failures (a panicking or broken
/// network) makes `/readyz` check the embedder before answering ready.
#[derive(Debug, Default)]
struct Health {
    failures_in_a_row: AtomicU32,
}

impl Health {
    fn record<T>(&self, outcome: &Result<T>) {
        match outcome {
            Ok(_) => self.failures_in_a_row.store(0, Ordering::Release),
            Err(Error::Internal(_) | Error::Model(_) | Error::Network(_) | Error::Pipeline(_)) => {
                self.failures_in_a_row.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => {}
        }
    }

    fn suspect(&self) -> bool {
        self.failures_in_a_row.load(Ordering::Acquire) >= FAILURES_BEFORE_RECHECK
    }
}

/// Everything the handlers share.
pub struct AppState {
    live: ArcSwap<Live>,
    registry: Registry,
    load: LoadOptions,
    config: ServiceConfig,
    admission: Arc<Admission>,
    /// Bytes of request bodies being received and held (stage one of admission).
    uploads: Arc<UploadBudget>,
    health: Health,
    metrics: Metrics,
    /// Gallery edits of this process, one at a time, in tasks of their own (see [`crate::edits`]).
    edits: EditQueue,
    /// The clustering result under review (`--review OUT`), if any.
    review: std::sync::OnceLock<Arc<Review>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("version", &self.live.load().info.version)
            .field("registry", &self.registry)
            .finish()
    }
}

impl AppState {
    /// Load the registry's current deployment (blocking: loads the networks).
    pub fn load(registry: Registry, load: LoadOptions, config: ServiceConfig) -> Result<Arc<Self>> {
        let live = Live::load_current(&registry, &load, None)?;
        Ok(AppState::with_live(live, registry, load, config))
    }

    pub fn with_live(
        live: Live,
        registry: Registry,
        load: LoadOptions,
        config: ServiceConfig,
    ) -> Arc<Self> {
        let metrics = Metrics::default();
        metrics.set_deployment(
            live.info.version,
            live.gallery.people().len(),
            live.gallery.len(),
            false,
        );
        Arc::new(AppState {
            live: ArcSwap::from_pointee(live),
            registry,
            load,
            admission: Admission::new(
                config.inference_slots(),
                config.admission.max_queue,
                config.admission.queue_timeout,
            ),
            uploads: UploadBudget::new(config.admission.upload_budget(config.max_body_bytes)),
            health: Health::default(),
            config,
            metrics,
            edits: EditQueue::default(),
            review: std::sync::OnceLock::new(),
        })
    }

    /// The deployment being served now (a cheap pointer copy).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The inference slots and their wait queue.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The bytes of request bodies that may be received and held at once.
    pub fn uploads(&self) -> &Arc<UploadBudget> {
        &self.uploads
    }

    /// Hold `review` for the review routes; false when one is held already.
    pub fn hold_review(&self, review: Review) -> bool {
        self.review.set(Arc::new(review)).is_ok()
    }

    /// The clustering result under review, or the 404 that says how to hold one.
    pub fn review(&self) -> Result<Arc<Review>> {
        self.review.get().cloned().ok_or_else(|| {
            Error::NoReview(
                "this service holds no clustering result: run `facepipe cluster PHOTOS OUT`, then \
                 start the service with `--review OUT`"
                    .into(),
            )
        })
    }

    /// Run `work` for the current request on the blocking pool (it must hold a slot) and
    /// count internal failures for `/readyz`.
    pub(crate) async fn infer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Cancel) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cancel = request::current_cancel().unwrap_or_else(Cancel::never);
        let outcome = blocking(move || work(&cancel)).await;
        self.health.record(&outcome);
        outcome
    }

    /// Make `live` the served deployment when it is newer than the one served (versions
    /// only move forward: a late watcher or edit never swaps an older one back in). Requests
    /// already running keep the old one. Returns whether it swapped.
    pub fn swap(&self, live: Live) -> bool {
        let next = Arc::new(live);
        let mut newer = false;
        self.live.rcu(|served| {
            newer = next.info.version > served.info.version;
            if newer {
                next.clone()
            } else {
                served.clone()
            }
        });
        if !newer {
            tracing::debug!(
                "not swapping in deployment v{:04}: a newer one is served",
                next.info.version
            );
            return false;
        }
        // From what is served now, so racing swaps leave the newest figures.
        let served = self.live();
        self.metrics.set_deployment(
            served.info.version,
            served.gallery.people().len(),
            served.gallery.len(),
            true,
        );
        tracing::info!(
            version = next.info.version,
            people = next.gallery.people().len(),
            "serving deployment v{:04}",
            next.info.version
        );
        true
    }

    /// [`AppState::swap`] for a bundle just read from (or published to) the registry,
    /// reusing the served networks when the model is the same. Blocking.
    pub fn swap_bundle(&self, bundle: crate::deployment::Bundle) -> Result<bool> {
        let served = self.live();
        if bundle.info.version <= served.info.version {
            return Ok(false);
        }
        let next = Live::from_bundle(bundle, &self.registry, &self.load, Some(&served))?;
        Ok(self.swap(next))
    }

    /// Swap in the registry's current version when it is newer than the served one.
    /// Blocking (may load networks); returns the new version when it swapped.
    pub fn reload_if_changed(&self) -> Result<Option<u32>> {
        let Some(current) = self.registry.current_version()? else {
            return Ok(None);
        };
        let served = self.live().info.version;
        if current < served {
            tracing::warn!(
                "the registry's CURRENT names v{current:04}, older than the served v{served:04}: \
                 keeping v{served:04} (CURRENT only moves forward; roll back with a new version)"
            );
        }
        if current <= served {
            return Ok(None);
        }
        let bundle = self.registry.load(current)?;
        Ok(self.swap_bundle(bundle)?.then_some(current))
    }

    /// This process's gallery edits (and its name in the registry's leases).
    pub fn edit_queue(&self) -> &EditQueue {
        &self.edits
    }
}

/// The router: the API under `/v1`, operations endpoints, the web page and its assets.
pub fn app(state: Arc<AppState>) -> Router {
    // Admission is the inner layer: a request without a valid key takes no slot.
    let keyed = Router::new()
        .route("/v1/people/{name}/faces", post(enroll))
        .route("/v1/people/{name}", delete(remove_person))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    // The reviewed collection's faces are private: every review route needs the key.
    let reviewed = Router::new()
        .route("/v1/review/name", post(review::name))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit))
        .route("/v1/review", get(review::show))
        .route("/v1/review/faces/{face}", get(review::face))
        .route("/v1/review/merge", post(review::merge))
        .route("/v1/review/remove", post(review::remove))
        .route("/v1/review/ignore", post(review::ignore))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let mut open = Router::new()
        .route("/v1/identify", post(identify))
        .route("/v1/verify", post(verify))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit))
        .route("/v1/people", get(people));
    if state.config.require_key_for_all {
        open = open.route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    }
    let budget = state.config.request_timeout;
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .merge(web::routes());
    Router::new()
        .merge(keyed)
        .merge(reviewed)
        .merge(open)
        .merge(ops)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeout_and_metrics,
        ))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            request::stamp(budget, req, next)
        }))
        .with_state(state)
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: see /openapi.json",
    )
}

async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method: see /openapi.json",
    )
}

/// Bound every request's time (from its arrival) and record its latency and status.
async fn timeout_and_metrics(
    State(state): State<Arc<AppState>>,
    Extension(cancel): Extension<Cancel>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let run = next.run(req);
    // Edits bound their own reading and embedding by the deadline, then wait for their
    // publish: once it may have succeeded, "timed out" would be a wrong answer.
    let response = if crate::edits::waits_for_publish(&route) {
        run.await
    } else {
        match tokio::time::timeout_at(cancel.deadline().into(), run).await {
            Ok(r) => r,
            Err(_) => {
                // The handler is gone; work it started stops at its next check.
                cancel.cancel();
                Error::Timeout(cancel.budget()).into_response()
            }
        }
    };
    state.metrics.record_request(
        &route,
        response.status().as_u16(),
        cancel.arrival().elapsed().as_secs_f64(),
    );
    response
}

tokio::task_local! {
    /// The inference slot of the request this task answers (set by [`admit`]).
    static SLOT: Slot;
}

/// Admit a request in two stages: receive its body into the upload budget within the body
/// timeout, then take an inference slot (or wait for one in the bounded queue) and run the
/// handler on the buffered body. A slow upload so holds budget bytes, never a slot. Answers
/// 503 + `Retry-After` when the budget or the slots are not to be had, 408 when the body is
/// too slow, 413 when it is too large.
async fn admit(
    State(state): State<Arc<AppState>>,
    Extension(cancel): Extension<Cancel>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    // Held until the handler is done: the buffered bytes live until then.
    let (body, _upload) = match receive_body(&state, &cancel, body).await {
        Ok(received) => received,
        Err(refusal) => return refusal,
    };
    let req = Request::from_parts(parts, body);
    match state.admission.admit(cancel.deadline()).await {
        Ok(slot) => SLOT.scope(slot, next.run(req)).await,
        Err(e) => e.into_response(),
    }
}

/// Stage one of admission: reserve the body's bytes (its `Content-Length`, else the body
/// limit) and read it whole within the body timeout. A request without a body passes as is.
async fn receive_body(
    state: &AppState,
    cancel: &Cancel,
    body: Body,
) -> std::result::Result<(Body, Option<UploadPermit>), Response> {
    use axum::body::HttpBody;
    let max_bytes = state.config.max_body_bytes;
    let declared = body.size_hint().exact();
    if declared == Some(0) {
        return Ok((body, None));
    }
    if let Some(len) = declared.filter(|&len| len > max_bytes as u64) {
        return Err(too_large(len, max_bytes).into_response());
    }
    let reserve = declared.unwrap_or(max_bytes as u64);
    let permit = match state.uploads.reserve(reserve, cancel.deadline()).await {
        Ok(permit) => permit,
        Err(e) => {
            discard_body(body, max_bytes, cancel.remaining()).await;
            return Err(e.into_response());
        }
    };
    let within = state.config.body_timeout.min(cancel.remaining());
    match tokio::time::timeout(within, read_body(body, max_bytes, declared)).await {
        Ok(Ok(bytes)) => Ok((Body::from(bytes), Some(permit))),
        Ok(Err(e)) => Err(e.into_response()),
        Err(_) => {
            let mut refusal = Error::BodyTimeout(format!(
                "the request body did not arrive within {:.1} s of its headers: send it at once \
                 (upload the image whole, not as a stream)",
                within.as_secs_f64()
            ))
            .into_response();
            // The rest of the body is not read: the connection cannot carry another request.
            refusal
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(refusal)
        }
    }
}

/// Read a body whole, refusing it as soon as it passes `max_bytes` (a missing or false
/// `Content-Length` does not get past the limit).
async fn read_body(body: Body, max_bytes: usize, declared: Option<u64>) -> Result<Bytes> {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    // The declared length is within the limit and reserved in the upload budget.
    let mut buffer = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            Error::BadRequest(format!(
                "the request body broke off before it was complete ({e}): send it again"
            ))
        })?;
        let len = buffer.len().saturating_add(chunk.len());
        if len > max_bytes {
            return Err(too_large(len as u64, max_bytes));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

fn too_large(len: u64, max_bytes: usize) -> Error {
    Error::TooLarge(format!(
        "the request body ({len} bytes or more) is larger than the {max_bytes} bytes this \
         service accepts: send a smaller image"
    ))
}

/// Longest a refused request's upload is read (and dropped) before the answer goes out.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Read and drop an upload the service will not process, a chunk at a time: answering
/// and closing with the upload unread makes the kernel reset the connection, and the
/// client sees a broken connection instead of the 503. Bounded by the body limit and time.
async fn discard_body(body: Body, max_bytes: usize, within: Duration) {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = chunks.next().await {
            seen = seen.saturating_add(chunk.len());
            if seen > max_bytes {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within.min(DISCARD_TIMEOUT), drain).await;
}

/// Bearer-token check with a constant-time comparison (of digests, so the length of the
/// key does not leak either).
async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config.api_key.as_deref() else {
        return Error::Forbidden(
            "this service has no API key configured, so enrolment and deletion are disabled: \
             start it with --api-key (or FACEPIPE_API_KEY)"
                .into(),
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        None => {
            let mut r = Error::Unauthorized(
                "this route needs an API key: send `Authorization: Bearer KEY`".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Some(key) => {
            let ok: bool = Sha256::digest(key.as_bytes())
                .ct_eq(&Sha256::digest(expected.as_bytes()))
                .into();
            if ok {
                next.run(req).await
            } else {
                Error::Forbidden("the API key is not valid".into()).into_response()
            }
        }
    }
}

/// The images and text fields of an upload: a multipart form, or a raw image body.
#[derive(Debug, Default)]
struct Upload {
    /// (field name, bytes) of every file-like field, in order.
    images: Vec<(String, Bytes)>,
    fields: HashMap<String, String>,
}

impl Upload {
    fn image(&self, name: &str) -> Option<&Bytes> {
        self.images.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
}

async fn read_upload(req: Request) -> Result<Upload> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut upload = Upload::default();
    if !is_multipart {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|r| rejection(r.status(), r.body_text()))?;
        upload.images.push(("image".into(), body));
        return Ok(upload);
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|r| rejection(r.status(), r.body_text()))?;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| rejection(e.status(), e.body_text()))?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or("image").to_string();
        let is_file = field.file_name().is_some()
            || field
                .content_type()
                .is_some_and(|c| !c.starts_with("text/"))
            || name.starts_with("image");
        let bytes = field
            .bytes()
            .await
            .map_err(|e| rejection(e.status(), e.body_text()))?;
        if is_file {
            upload.images.push((name, bytes));
        } else {
            upload
                .fields
                .insert(name, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Ok(upload)
}

/// Map a framework rejection (body too large, malformed multipart) to our error.
fn rejection(status: StatusCode, text: String) -> Error {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge(format!(
            "the request body is larger than the service accepts: {text}"
        ))
    } else {
        Error::BadRequest(text)
    }
}

/// Run CPU-heavy work on the blocking pool, holding the request's inference slot until the
/// work ends (even when the request was answered first, so slots count real work). A panic
/// there becomes a 500, not a crash; if this future is dropped (timeout, client gone) the
/// request is cancelled and the work stops at its next check.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let slot = SLOT.try_with(Slot::clone).map_err(|_| {
        Error::Internal("inference was started outside admission (a route without `admit`)".into())
    })?;
    let guard = request::current_cancel().map(CancelOnDrop::new);
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f()
    });
    let outcome = job.await;
    if let Some(g) = guard {
        g.disarm();
    }
    outcome.map_err(|e| Error::Internal(format!("the inference job failed: {e}")))?
}

#[derive(Debug, Deserialize)]
struct IdentifyQuery {
    top_k: Option<usize>,
}

async fn identify(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Json<Identification>> {
    let query = parse_identify_query(&q)?;
    let top_k = query.top_k.unwrap_or(3);
    if top_k == 0 || top_k > state.config.max_top_k {
        return Err(Error::BadRequest(format!(
            "top_k must be between 1 and {}",
            state.config.max_top_k
        )));
    }
    let upload = read_upload(req).await?;
    let bytes = upload
        .image("image")
        .or_else(|| upload.images.first().map(|(_, b)| b))
        .cloned()
        .ok_or_else(|| {
            Error::BadRequest(
                "send the photo as the multipart field `image` or as the request body".into(),
            )
        })?;
    let live = state.live();
    let limits = state.config.limits.clone();
    let max_faces = state.config.max_faces;
    let answer = state
        .infer(move |cancel| live.identify_bytes_within(&bytes, &limits, top_k, max_faces, cancel))
        .await?;
    let known = answer.faces.iter().filter(|f| f.person.is_some()).count();
    state
        .metrics
        .record_faces(known, answer.faces.len() - known);
    Ok(Json(answer))
}

fn parse_identify_query(q: &HashMap<String, String>) -> Result<IdentifyQuery> {
    let top_k = match q.get("top_k") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            Error::BadRequest(format!("top_k must be a positive integer, not {v:?}"))
        })?),
    };
    Ok(IdentifyQuery { top_k })
}

async fn verify(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Json<Verification>> {
    let upload = read_upload(req).await?;
    let person = upload
        .fields
        .get("person")
        .or_else(|| q.get("person"))
        .cloned();
    let live = state.live();
    let limits = state.config.limits.clone();
    let first = upload
        .images
        .first()
        .map(|(_, b)| b.clone())
        .ok_or_else(|| Error::BadRequest("send a photo in the multipart field `image`".into()))?;
    let answer = match person {
        Some(person) => {
            state
                .infer(move |cancel| live.verify_person(&first, &person, &limits, cancel))
                .await?
        }
        None => {
            let second = upload.images.get(1).map(|(_, b)| b.clone()).ok_or_else(|| {
                Error::BadRequest(
                    "send two photos (multipart fields `image` and `image2`) or one photo and `person`".into(),
                )
            })?;
            state
                .infer(move |cancel| live.verify_images(&first, &second, &limits, cancel))
                .await?
        }
    };
    Ok(Json(answer))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub faces: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct People {
    pub deployment: u32,
    pub people: Vec<Person>,
}

async fn people(State(state): State<Arc<AppState>>) -> Json<People> {
    let live = state.live();
    let counts = live.gallery.counts();
    let people = live
        .gallery
        .people()
        .iter()
        .zip(counts)
        .map(|(name, faces)| Person {
            name: name.clone(),
            faces,
        })
        .collect();
    Json(People {
        deployment: live.info.version,
        people,
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Edited {
    pub person: String,
    /// Embeddings added (enroll) or removed (delete).
    pub faces: usize,
    /// The new deployment version now being served.
    pub deployment: u32,
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || name.len() > 200
        || name.chars().any(char::is_control)
        || trimmed != name
    {
        return Err(Error::BadRequest(
            "a person's name must be 1 to 200 characters, without control characters or surrounding spaces".into(),
        ));
    }
    Ok(())
}

/// Embed the photos under the request's slot and deadline, then publish through
/// [`crate::edits`]: the publish runs to its end even if this request is dropped, and the
/// answer waits for its outcome (bounded by the registry's own timeouts and retries).
async fn enroll(
    State(state): State<Arc<AppState>>,
    Extension(cancel): Extension<Cancel>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<Edited>)> {
    check_name(&name)?;
    let st = state.clone();
    let prepare = async move {
        let upload = read_upload(req).await?;
        if upload.images.is_empty() {
            return Err(Error::BadRequest(
                "send one or more photos as multipart fields `image`".into(),
            ));
        }
        let at = match upload.fields.get("box") {
            Some(text) if upload.images.len() == 1 => Some(parse_box(text)?),
            Some(_) => {
                return Err(Error::BadRequest(
                    "`box` picks a face of one photo: send exactly one photo with it".into(),
                ))
            }
            None => None,
        };
        let live = st.live();
        let limits = st.config.limits.clone();
        let max_faces = st.config.max_faces;
        st.infer(move |cancel| {
            let embeddings = upload
                .images
                .iter()
                .enumerate()
                .map(|(i, (_, bytes))| {
                    let what = format!("photo #{}", i + 1);
                    match &at {
                        Some(at) => live.embed_at_within(bytes, &limits, at, max_faces, cancel),
                        None => live.embed_largest_within(bytes, &limits, &what, cancel),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((embeddings, live.recognizer.model().clone()))
        })
        .await
    };
    let (embeddings, model) = match tokio::time::timeout_at(cancel.deadline().into(), prepare).await
    {
        Ok(prepared) => prepared?,
        Err(_) => {
            cancel.cancel();
            return Err(Error::Timeout(cancel.budget()));
        }
    };
    let edit = Edit::Enroll {
        person: name,
        embeddings,
        source: "api upload".into(),
        model,
    };
    let edited = crate::edits::submit(state, edit).await?;
    Ok((StatusCode::CREATED, Json(edited)))
}

/// `box` of an enroll: `x,y,width,height` in photo pixels, as `/v1/identify` answers it.
fn parse_box(text: &str) -> Result<facepipe_pipeline::BBox> {
    let bad = || {
        Error::BadRequest(format!(
            "`box` must be four numbers `x,y,width,height` (a face's box from /v1/identify), \
             not {text:?}"
        ))
    };
    let values = text
        .split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|_| bad()))
        .collect::<Result<Vec<f32>>>()?;
    match values[..] {
        [x, y, w, h] if values.iter().all(|v| v.is_finite()) && w > 0.0 && h > 0.0 => {
            Ok(facepipe_pipeline::BBox::new(x, y, w, h))
        }
        _ => Err(bad()),
    }
}

/// Remove a person from the current deployment (see [`enroll`] for how it is published).
async fn remove_person(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Edited>> {
    let edited = crate::edits::submit(state, Edit::Remove { person: name }).await?;
    Ok(Json(edited))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when a deployment is loaded (the state cannot exist without one) and inference
/// works: after a run of internal failures the embedder is checked once more, and the
/// service reports not ready (503) until that check passes.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let live = state.live();
    if state.health.suspect() {
        if let Err(e) = recheck(&state, &live).await {
            tracing::warn!("not ready: {e}");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "inference is failing: the service cannot answer requests now",
            );
        }
        state.health.failures_in_a_row.store(0, Ordering::Release);
    }
    Json(serde_json::json!({
        "status": "ready",
        "deployment": live.info.version,
        "people": live.gallery.people().len(),
        "embeddings": live.gallery.len(),
        "model": public_model_name(&live.info.model),
        "inference_slots": state.admission.capacity(),
    }))
    .into_response()
}

/// The embedder's self-check, in a free slot (a busy service is not made busier).
async fn recheck(state: &AppState, live: &Arc<Live>) -> Result<()> {
    let slot = state
        .admission
        .try_admit()
        .ok_or_else(|| Error::Internal("no free slot for the embedder check".into()))?;
    let recognizer = live.recognizer.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        recognizer.self_check()
    })
    .await
    .map_err(|e| Error::Internal(format!("the embedder check failed: {e}")))?
}

/// The model's name without where it was loaded from (no paths leave the service).
fn public_model_name(model: &ModelRef) -> String {
    match model {
        ModelRef::Pretrained { package } => format!("pretrained ({package})"),
        ModelRef::Artifact { sha256, .. } => {
            format!("artifact {}", &sha256[..sha256.len().min(12)])
        }
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    crate::metrics::write_admission(&mut text, &state.admission.stats());
    crate::metrics::write_uploads(&mut text, &state.uploads.stats());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The OpenAPI document kept in the repository at `assets/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../assets/openapi.json");

async fn openapi() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (headers, Body::from(OPENAPI_JSON)).into_response()
}
