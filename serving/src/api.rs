//! The HTTP API: routes, handlers, API-key checks, limits, timeouts and metrics.
//!
//! Every answer is JSON (errors too: `{"error": {"code", "message"}}`), inference runs on
//! the blocking pool, and the deployment is read through an atomic pointer so a new version
//! can be swapped in while requests are in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, Query, Request, State,
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

use crate::error::{json_error, Error, Result};
use crate::live::{Identification, Live, LoadOptions, Verification};
use crate::metrics::Metrics;
use crate::registry::Registry;
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
    /// Largest `top_k` a caller may ask for.
    pub max_top_k: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            api_key: None,
            require_key_for_all: false,
            limits: DecodeLimits {
                max_pixels: 40_000_000,
                max_bytes: 20 * 1024 * 1024,
            },
            max_body_bytes: 20 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_top_k: 50,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    live: ArcSwap<Live>,
    registry: Registry,
    load: LoadOptions,
    config: ServiceConfig,
    metrics: Metrics,
    /// Serialises gallery edits so each one starts from the version the last one published.
    edit_lock: tokio::sync::Mutex<()>,
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
            config,
            metrics,
            edit_lock: tokio::sync::Mutex::new(()),
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

    /// Make `live` the served deployment; requests already running keep the old one.
    pub fn swap(&self, live: Live) {
        self.metrics.set_deployment(
            live.info.version,
            live.gallery.people().len(),
            live.gallery.len(),
            true,
        );
        tracing::info!(
            version = live.info.version,
            people = live.gallery.people().len(),
            "serving deployment v{:04}",
            live.info.version
        );
        self.live.store(Arc::new(live));
    }

    /// Swap in the registry's current version when it differs from the served one.
    /// Blocking (may load networks); returns the new version when it swapped.
    pub fn reload_if_changed(&self) -> Result<Option<u32>> {
        let current = self.registry.current_version()?;
        let live = self.live();
        match current {
            Some(v) if v != live.info.version => {
                let next = Live::load_current(&self.registry, &self.load, Some(&live))?;
                let version = next.info.version;
                self.swap(next);
                Ok(Some(version))
            }
            _ => Ok(None),
        }
    }
}

/// The router: the API under `/v1`, operations endpoints, the web page and its assets.
pub fn app(state: Arc<AppState>) -> Router {
    let keyed = Router::new()
        .route("/v1/people/{name}/faces", post(enroll))
        .route("/v1/people/{name}", delete(remove_person))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let mut open = Router::new()
        .route("/v1/identify", post(identify))
        .route("/v1/verify", post(verify))
        .route("/v1/people", get(people));
    if state.config.require_key_for_all {
        open = open.route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    }
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .merge(web::routes());
    Router::new()
        .merge(keyed)
        .merge(open)
        .merge(ops)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeout_and_metrics,
        ))
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

/// Bound every request's time and record its latency and status.
async fn timeout_and_metrics(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let limit = state.config.request_timeout;
    let response = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Error::Timeout(limit).into_response(),
    };
    state.metrics.record_request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
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

/// Run CPU-heavy work on the blocking pool; a panic there becomes a 500, not a crash.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("the worker failed: {e}")))?
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
    let answer = blocking(move || live.identify_bytes(&bytes, &limits, top_k)).await?;
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
        Some(person) => blocking(move || live.verify_person(&first, &person, &limits)).await?,
        None => {
            let second = upload.images.get(1).map(|(_, b)| b.clone()).ok_or_else(|| {
                Error::BadRequest(
                    "send two photos (multipart fields `image` and `image2`) or one photo and `person`".into(),
                )
            })?;
            blocking(move || live.verify_images(&first, &second, &limits)).await?
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

fn check_name(name: &str) -> Result<()> {
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

async fn enroll(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<Edited>)> {
    check_name(&name)?;
    let upload = read_upload(req).await?;
    if upload.images.is_empty() {
        return Err(Error::BadRequest(
            "send one or more photos as multipart fields `image`".into(),
        ));
    }
    let _guard = state.edit_lock.lock().await;
    let st = state.clone();
    let info = blocking(move || {
        let live = st.live();
        let mut embeddings = Vec::with_capacity(upload.images.len());
        for (i, (_, bytes)) in upload.images.iter().enumerate() {
            embeddings.push(live.embed_largest(
                bytes,
                &st.config.limits,
                &format!("photo #{}", i + 1),
            )?);
        }
        let bundle = live.bundle_with(&name, &embeddings, "api upload")?;
        let info = st.registry.publish(bundle.clone())?;
        let mut bundle = bundle;
        bundle.info = info.clone();
        let next = Live::from_bundle(bundle, &st.registry, &st.load, Some(&live))?;
        st.swap(next);
        Ok(Edited {
            person: name,
            faces: embeddings.len(),
            deployment: info.version,
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn remove_person(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Edited>> {
    let _guard = state.edit_lock.lock().await;
    let st = state.clone();
    let edited = blocking(move || {
        let live = st.live();
        let index = live
            .gallery
            .person_index(&name)
            .ok_or_else(|| Error::NotFound(format!("nobody called {name:?} is enrolled")))?;
        let faces = live.gallery.counts()[index];
        let bundle = live.bundle_without(&name)?;
        let info = st.registry.publish(bundle.clone())?;
        let mut bundle = bundle;
        bundle.info = info.clone();
        let next = Live::from_bundle(bundle, &st.registry, &st.load, Some(&live))?;
        st.swap(next);
        Ok(Edited {
            person: name,
            faces,
            deployment: info.version,
        })
    })
    .await?;
    Ok(Json(edited))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    // The state cannot exist without a loaded deployment, so being here means ready.
    let live = state.live();
    Json(serde_json::json!({
        "status": "ready",
        "deployment": live.info.version,
        "people": live.gallery.people().len(),
        "embeddings": live.gallery.len(),
        "model": live.info.model.describe(),
    }))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
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
