//! The daemon's HTTP server: Prometheus text at `/metrics`, a small JSON API under `/api/`,
//! and the dashboard — static HTML/CSS/JS compiled into the binary (no build step), which
//! polls the JSON API every second. Every answer comes through the same paths the gRPC
//! introspection uses — memory from the actor, stored rows from the reader connections
//! ([`crate::reads`]); nothing here holds state. Every error, axum's own rejections of a bad
//! path or query string included, is JSON `{"error": "..."}`.

mod api;
pub mod login;
mod params;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use flame_core::{FlameError, Result};

use crate::reads::Reads;

pub use login::HttpAuth;

/// The dashboard's port when none is configured.
pub const DEFAULT_PORT: u16 = 8265;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Where the head serves HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpPort {
    /// No HTTP server.
    Off,
    /// Exactly this port (0 = a free one); failing to bind it is an error.
    Exactly(u16),
    /// [`DEFAULT_PORT`], or a free port when another daemon on this machine has it.
    Default,
}

/// A running HTTP server; stop it with [`HttpServer::stop`].
pub struct HttpServer {
    pub local_addr: SocketAddr,
    /// Serving HTTPS (the head's TLS identity).
    pub tls: bool,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Listen on `host` as `port` says and serve until stopped (HTTPS with `tls`); `None`
    /// when it is `Off`.
    ///
    /// # Errors
    /// `InvalidArgument` naming the address when it cannot be bound.
    pub async fn start(
        host: &str,
        port: HttpPort,
        reads: Reads,
        auth: HttpAuth,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Result<Option<Self>> {
        let (port, fallback) = match port {
            HttpPort::Off => return Ok(None),
            HttpPort::Exactly(p) => (p, false),
            // The default port must not stop a daemon from starting next to another one.
            HttpPort::Default => (DEFAULT_PORT, true),
        };
        let listener = match tokio::net::TcpListener::bind((host, port)).await {
            Ok(l) => l,
            Err(e) if fallback => {
                tracing::warn!(port, error = %e, "dashboard port taken; using a free one");
                tokio::net::TcpListener::bind((host, 0))
                    .await
                    .map_err(|e| bind_error(host, 0, e))?
            }
            Err(e) => return Err(bind_error(host, port, e)),
        };
        let local_addr = listener
            .local_addr()
            .map_err(|e| FlameError::Internal(e.to_string()))?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let app = router(reads, auth);
        let https = tls.is_some();
        let task = match tls {
            Some(config) => {
                let listener = tls::TlsListener::new(listener, config)
                    .map_err(|e| FlameError::Internal(format!("HTTPS listener: {e}")))?;
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped.cancelled_owned());
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "HTTPS server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                let serve =
                    axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            }),
        };
        Ok(Some(Self {
            local_addr,
            tls: https,
            stop,
            task,
        }))
    }

    /// `http://host:port/` (`https://` with TLS), the dashboard's address.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.local_addr {
            SocketAddr::V6(a) => format!("{scheme}://[{}]:{}/", a.ip(), a.port()),
            SocketAddr::V4(a) => format!("{scheme}://{}:{}/", a.ip(), a.port()),
        }
    }

    /// Stop serving; a browser polling with keep-alive must not hold the daemon's exit.
    pub async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(std::time::Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn bind_error(host: &str, port: u16, e: std::io::Error) -> FlameError {
    FlameError::InvalidArgument(format!("cannot serve HTTP on {host}:{port}: {e}"))
}

fn router(reads: Reads, auth: HttpAuth) -> Router {
    let login = auth.clone();
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/login",
            post(move |headers, body| {
                login::post_login(axum::extract::State(login), headers, body)
            }),
        )
        .route("/metrics", get(api::metrics))
        .route("/api/overview", get(api::overview))
        .route("/api/sessions/{id}", get(api::session))
        .route("/api/sessions/{id}/tasks/{task}", get(api::task))
        .route("/api/nodes/{id}", get(api::node))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError(FlameError::NotFound(format!(
                "no such page: {}",
                uri.path()
            )))
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            let e = FlameError::InvalidArgument(format!("{method} is not allowed here; use GET"));
            (StatusCode::METHOD_NOT_ALLOWED, ApiError(e))
        })
        .with_state(reads)
        // Every route, the fallbacks included, behind the login (README "Security").
        .layer(axum::middleware::from_fn_with_state(
            auth,
            login::require_login,
        ))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A failed API call: JSON `{"error": message}` with the status its kind deserves.
pub struct ApiError(pub FlameError);

impl From<FlameError> for ApiError {
    fn from(e: FlameError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            FlameError::NotFound(_)
            | FlameError::SessionNotFound(_)
            | FlameError::ApplicationNotFound(_) => StatusCode::NOT_FOUND,
            FlameError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            FlameError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            // 403, not 404: the same answer as the RPCs' PERMISSION_DENIED, naming the owner
            // (session ids are sequential, so hiding that one exists would protect nothing).
            FlameError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            FlameError::ShuttingDown | FlameError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.0.to_string() });
        (status, axum::Json(body)).into_response()
    }
}
