//! facepipe-serving: versioned deployments in a registry, the gallery of known people and
//! the HTTP service with its web page.
//!
//! ```no_run
//! use facepipe_serving::server::ConnectionLimits;
//! use facepipe_serving::{serve, AppState, LoadOptions, Registry, ServeOptions, ServiceConfig};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::open("registry")?;
//! let load = LoadOptions::new(facepipe_pipeline::ModelDir::locate(None)?);
//! let state = AppState::load(registry, load, ServiceConfig::default())?;
//! let options = ServeOptions {
//!     listen: "127.0.0.1:8080".parse()?,
//!     tls: None,
//!     poll_interval: None,
//!     connections: ConnectionLimits::default(),
//! };
//! serve(state, options, |addr, scheme| println!("{scheme}://{addr}/")).await?;
//! # Ok(()) }
//! ```
//!
//! Map of the crate:
//! - [`registry`]: numbered deployment versions in a folder or under an `s3://` prefix,
//!   claimed create-if-absent so concurrent publishers never share a number, and the
//!   `CURRENT` pointer.
//! - [`deployment`]: one bundle on disk (`deployment.json`, `gallery.safetensors`, `labels.json`).
//! - [`edits`]: enroll/delete at run time, derived from `CURRENT` and published with its
//!   compare-and-swap in a task of their own.
//! - [`enroll`]: building a gallery from a `Name/photo.jpg` folder for `facepipe deploy`.
//! - [`gallery`]: all embeddings of all people; top-k search (an int8 scan that shortlists,
//!   an exact rerank, and a bound that proves the answer equals the exact scan's).
//! - [`model`]: the model a deployment names, loaded once (a `facepipe_model::Recognizer`).
//! - [`live`]: a loaded deployment and its answers (identify, verify), shared by the HTTP
//!   handlers and `facepipe score --local`.
//! - [`api`]: the axum router, auth, limits, timeouts; [`metrics`]: Prometheus text.
//! - [`admission`]: bounded inference slots, a bounded wait queue, 503 + `Retry-After`;
//!   [`request`]: request ids and the deadline that stops a request's work.
//! - [`review`]: a `facepipe cluster` result held for review (`--review OUT`), and its
//!   routes: name (enrolls), merge, "not this person", ignore.
//! - [`web`]: the page at `/`; [`server`]: TLS, graceful shutdown, the registry watcher.

pub mod admission;
pub mod api;
pub mod deployment;
pub mod edits;
pub mod enroll;
pub mod error;
pub mod gallery;
pub mod live;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod request;
pub mod review;
pub mod server;
/// Test fixtures shared by the crate's unit tests, serving/tests and tests/tests (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod test_fixtures;
pub mod web;

pub use admission::AdmissionConfig;
pub use api::{app, AppState, ServiceConfig};
pub use deployment::{Bundle, DeploymentInfo, ModelRef};
pub use error::{Error, ErrorBody, Result};
pub use gallery::{Candidate, Gallery};
pub use live::{FaceResult, Identification, Live, LoadOptions, Match, Verification};
pub use model::LoadedModel;
pub use registry::Registry;
pub use server::{serve, ServeOptions};
