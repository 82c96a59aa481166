//! facepipe-serving: versioned deployments in a registry, the gallery of known people and
//! the HTTP service with its web page.
//!
//! ```no_run
//! use facepipe_serving::{app, AppState, LoadOptions, Registry, ServiceConfig};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::open("registry")?;
//! let load = LoadOptions::new(facepipe_pipeline::ModelDir::locate(None)?);
//! let state = AppState::load(registry, load, ServiceConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app(state)).await?;
//! # Ok(()) }
//! ```
//!
//! Map of the crate:
//! - [`registry`]: numbered deployment versions in a folder or under an `s3://` prefix,
//!   claimed create-if-absent so concurrent publishers never share a number, and the
//!   `CURRENT` pointer.
//! - [`deployment`]: one bundle on disk (`deployment.json`, `gallery.safetensors`, `labels.json`).
//! - [`enroll`]: building a gallery from a `Name/photo.jpg` folder for `facepipe deploy`.
//! - [`gallery`]: all embeddings of all people; top-k search (an int8 scan that shortlists,
//!   an exact rerank, and a bound that proves the answer equals the exact scan's).
//! - [`recognizer`]: the networks (face engine + embedder), loaded once.
//! - [`live`]: a loaded deployment and its answers (identify, verify), shared by the HTTP
//!   handlers and `facepipe score --local`.
//! - [`api`]: the axum router, auth, limits, timeouts; [`metrics`]: Prometheus text.
//! - [`web`]: the page at `/`; [`server`]: TLS, graceful shutdown, the registry watcher.

pub mod api;
pub mod deployment;
pub mod enroll;
pub mod error;
pub mod gallery;
pub mod live;
pub mod metrics;
pub mod recognizer;
pub mod registry;
pub mod server;
pub mod web;

pub use api::{app, AppState, ServiceConfig};
pub use deployment::{Bundle, DeploymentInfo, ModelRef};
pub use error::{Error, ErrorBody, Result};
pub use gallery::{Candidate, Gallery};
pub use live::{FaceResult, Identification, Live, LoadOptions, Match, Verification};
pub use recognizer::Recognizer;
pub use registry::Registry;
pub use server::{serve, ServeOptions};
