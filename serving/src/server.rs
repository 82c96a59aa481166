//! Running the service: bind, serve plain HTTP or TLS (rustls), watch the registry for a new
//! current deployment and swap it in, stop gracefully on Ctrl-C / SIGTERM.
//!
//! The accept loop is our own (hyper's HTTP/1 connection with a timer) so that connections
//! are bounded: a client has `header_read_timeout` to send each request's headers (idle
//! keep-alive connections too), a TLS client as long for its handshake, and at most
//! `max_connections` are open at once; beyond that new ones wait in the listen backlog.
//! Clients that open sockets and never finish a request cannot lock others out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::{app, AppState};
use crate::error::{Error, Result};
use crate::registry::LEASE_RENEW_EVERY;

/// How to run the service.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: serve HTTPS when both are given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often to look at the registry's `CURRENT` pointer (`None`: never).
    pub poll_interval: Option<Duration>,
    pub connections: ConnectionLimits,
}

/// Bounds on client connections.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionLimits {
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and to start the next request on
    /// an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// How long requests in flight get to finish after Ctrl-C / SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Check the registry every `interval` and swap in a newer current version when it
/// appears (never an older one), and keep this server's lease on the version it serves
/// fresh so `facepipe registry gc` leaves that version alone.
pub fn spawn_watcher(state: Arc<AppState>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut leased: Option<(u32, std::time::Instant)> = None;
        loop {
            tick.tick().await;
            let st = state.clone();
            let due = leased;
            let looked = tokio::task::spawn_blocking(move || {
                let swapped = st.reload_if_changed();
                let served = st.live().info.version;
                let renew = match due {
                    Some((v, at)) => v != served || at.elapsed() >= LEASE_RENEW_EVERY,
                    None => true,
                };
                let lease = renew.then(|| {
                    st.registry()
                        .renew_lease(st.edit_queue().server_id(), served)
                        .map(|()| served)
                });
                (swapped, lease)
            })
            .await;
            match looked {
                Ok((swapped, lease)) => {
                    match swapped {
                        Ok(Some(v)) => tracing::info!("swapped in deployment v{v:04}"),
                        Ok(None) => {}
                        // Keep serving the old version; the next tick tries again.
                        Err(e) => tracing::warn!("could not load the new deployment: {e}"),
                    }
                    match lease {
                        Some(Ok(v)) => leased = Some((v, std::time::Instant::now())),
                        Some(Err(e)) => tracing::warn!("could not renew the registry lease: {e}"),
                        None => {}
                    }
                }
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
    serve_until(state, options, on_ready, shutdown_signal()).await
}

/// [`serve`] until `shutdown` completes (tests stop a server this way).
pub async fn serve_until(
    state: Arc<AppState>,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr, &str),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let tls = match &options.tls {
        None => None,
        Some((cert, key)) => Some(tls_acceptor(cert, key).await?),
    };
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| bind_error(options.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| bind_error(options.listen, e))?;
    if let Some(interval) = options.poll_interval {
        spawn_watcher(state.clone(), interval);
    }
    on_ready(addr, if tls.is_some() { "https" } else { "http" });
    let router = app(state);
    let limits = options.connections;
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(max_connections));
    // Tells every connection to finish its request in flight and close.
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Take a connection slot before accepting: at the cap, clients wait in the backlog.
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let stop = stop_rx.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let served = match tls {
                None => serve_connection(stream, service, &limits, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, service, &limits, stop).await
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = served {
                // Clients that time out or hang up are routine, not the operator's problem.
                tracing::debug!(%peer, "connection closed: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stopping.send(true);
    // Every connection holds a permit until it closes: all back means all done.
    let all_closed = open.acquire_many(max_connections as u32);
    if tokio::time::timeout(SHUTDOWN_GRACE, all_closed)
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}: stopping anyway");
    }
    Ok(())
}

/// One client connection: HTTP/1.1 with a header-read timeout and keep-alive; when `stop`
/// turns true it finishes the request in flight and closes.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<axum::Router>,
    limits: &ConnectionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::result::Result<(), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return done.map_err(|e| e.to_string()),
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(|e| e.to_string())
}

/// Load the certificate and key; HTTP/1.1 only over ALPN (the server speaks HTTP/1.1).
async fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    // Several TLS backends can be linked in; pick one explicitly for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| {
            Error::BadRequest(format!(
                "TLS certificate {} / key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    let mut server_config = (*config.get_inner()).clone();
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config)))
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> Error {
    Error::Listen { addr, source }
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
}
