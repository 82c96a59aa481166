//! Running the service: bind, serve plain HTTP or TLS (rustls), watch the registry for a new
//! current deployment and swap it in, stop gracefully on Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{app, AppState};
use crate::error::{Error, Result};

/// How to run the service.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: serve HTTPS when both are given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often to look at the registry's `CURRENT` pointer (`None`: never).
    pub poll_interval: Option<Duration>,
}

/// Check the registry every `interval` and swap in a new current version when it appears.
pub fn spawn_watcher(state: Arc<AppState>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let st = state.clone();
            match tokio::task::spawn_blocking(move || st.reload_if_changed()).await {
                Ok(Ok(Some(v))) => tracing::info!("swapped in deployment v{v:04}"),
                Ok(Ok(None)) => {}
                // Keep serving the old version; the next tick tries again.
                Ok(Err(e)) => tracing::warn!("could not load the new deployment: {e}"),
                Err(e) => tracing::warn!("registry watcher failed: {e}"),
            }
        }
    })
}

/// Serve until Ctrl-C or SIGTERM. Calls `on_ready` with the bound address and scheme.
pub async fn serve(
    state: Arc<AppState>,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr, &str),
) -> Result<()> {
    if let Some(interval) = options.poll_interval {
        spawn_watcher(state.clone(), interval);
    }
    let router = app(state);
    match options.tls {
        None => {
            let listener = tokio::net::TcpListener::bind(options.listen)
                .await
                .map_err(|e| bind_error(options.listen, e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| bind_error(options.listen, e))?;
            on_ready(addr, "http");
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|e| Error::Internal(format!("server stopped: {e}")))
        }
        Some((cert, key)) => {
            // Several TLS backends can be linked in; pick one explicitly for the process.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| {
                    Error::BadRequest(format!(
                        "TLS certificate {} / key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                h.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            let server = axum_server::bind_rustls(options.listen, config).handle(handle.clone());
            let listen = options.listen;
            let serving = tokio::spawn(server.serve(router.into_make_service()));
            if let Some(addr) = handle.listening().await {
                on_ready(addr, "https");
            }
            serving
                .await
                .map_err(|e| Error::Internal(format!("server task failed: {e}")))?
                .map_err(|e| bind_error(listen, e))
        }
    }
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> Error {
    Error::BadRequest(format!(
        "cannot listen on {addr}: {e} (is another server using the port? pick one with --listen)"
    ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
