//! The head: the session manager's actor, its SQLite state, its gRPC server (Frontend and
//! Backend services on one port) and its HTTP server (dashboard, metrics), started and
//! stopped as one unit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use flame_core::proto::{backend_server::BackendServer, frontend_server::FrontendServer};
use flame_core::storage::StateLocation;
use flame_core::{FlameError, Result};

use crate::executor_manager::LocalNodeReport;
use crate::http::{HttpPort, HttpServer};
use crate::reads::Reads;
use crate::rpc::{backend::BackendService, frontend::FrontendService};
use crate::security::tls_mode::TlsSettings;
use crate::security::Security;
use crate::session_manager::{self, ManagerConfig, ManagerHandle};
use crate::state_guard::{Fatal, StateLock};

/// Largest gRPC message accepted or sent; task payloads are limited separately.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// What the head needs to start.
#[derive(Clone, Debug)]
pub struct HeadConfig {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub state_dir: PathBuf,
    /// The durable state in PostgreSQL (`--state-url postgres://...`) instead of the SQLite
    /// file `state_dir/flame.db`; `state_dir` still holds the local files.
    pub state_url: Option<String>,
    pub manager: ManagerConfig,
    /// The dashboard, `/metrics` and the JSON API, on the same host.
    pub http: HttpPort,
    /// TLS or not (`tls = "auto" | "on" | "off"`), and extra names for the certificate.
    pub tls: TlsSettings,
    /// `/metrics` without a token (config `metrics_public`; README "Security").
    pub metrics_public: bool,
}

/// A running head. Stop it with [`Head::stop`].
pub struct Head {
    /// `http://host:port`, or `https://host:port` with TLS — what clients, nodes and
    /// executors connect to.
    pub address: String,
    pub local_addr: SocketAddr,
    pub manager: ManagerHandle,
    /// The dashboard's URL (`http://host:port/`, https with TLS), when HTTP is on.
    pub dashboard_url: Option<String>,
    /// Raised when the head must stop by itself (its state file was deleted, replaced or
    /// damaged); whoever runs the head waits on it beside the shutdown signal.
    pub fatal: Fatal,
    /// Tokens, the CA and who may do what (README "Security").
    pub security: Arc<Security>,
    /// `state_dir/head.sock`, served beside the TCP port for the executors of this
    /// machine's local node (see [`crate::local_socket`]); `None` when it could not be made.
    pub local_socket: Option<PathBuf>,
    /// The object store of the head's own node (#12), once that node has registered:
    /// `flame-daemon start` and the embedded cluster give it to their node to fill in, and
    /// `Hello` hands it to clients (a head with no node of its own keeps `None`).
    pub local_node: LocalNodeReport,
    /// Held for the head's whole life: one head per state dir.
    _lock: StateLock,
    http: Option<HttpServer>,
    server_stop: CancellationToken,
    server: JoinHandle<()>,
    local_server: Option<JoinHandle<()>>,
    actor: JoinHandle<()>,
    storage_thread: std::thread::JoinHandle<()>,
}

impl Head {
    /// Open the state in `state_dir`, start the actor and listen.
    ///
    /// # Errors
    /// `FailedPrecondition` naming the holder's pid if another head has the state dir,
    /// `Storage` or `StateFileUnusable` if the state cannot be opened, `InvalidArgument` if
    /// the address cannot be bound (port in use, bad host).
    pub async fn start(cfg: HeadConfig) -> Result<Head> {
        // 0700 and ours (tightened with a warning if it was more open): it holds the users'
        // credentials.
        flame_core::private_files::private_dir(&cfg.state_dir).map_err(|e| {
            FlameError::InvalidArgument(format!("state dir {}: {e}", cfg.state_dir.display()))
        })?;
        // Before anything reads the state: a second head must not even open the database.
        let lock = StateLock::acquire(&cfg.state_dir)?;
        // `tls = "off"` on a non-loopback host is refused (InvalidArgument naming it).
        let tls = cfg.tls.mode.enabled_for(&cfg.host)?;
        // The CA, the head's certificate and auth.db: blocking file work, done once.
        let security = {
            let dir = cfg.state_dir.clone();
            let names = tls.then(|| {
                let mut names = flame_core::tls::server_names(&cfg.host);
                names.extend(cfg.tls.names.iter().cloned());
                names
            });
            tokio::task::spawn_blocking(move || Security::open(&dir, names.as_deref()))
                .await
                .map_err(|e| FlameError::Internal(format!("opening the head's security: {e}")))??
        };
        let security = Arc::new(security);
        let http_tls = match &security.identity {
            Some(id) => Some(flame_core::tls::server_rustls_config(id)?),
            None => None,
        };
        let fatal = Fatal::default();
        let db = match &cfg.state_url {
            Some(url) => StateLocation::Postgres(url.clone()),
            None => StateLocation::File(cfg.state_dir.join("flame.db")),
        };
        let storage = fatal.watch(db.open()?);
        let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| {
                FlameError::InvalidArgument(format!(
                    "cannot listen on {}:{}: {e}",
                    cfg.host, cfg.port
                ))
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| FlameError::Internal(e.to_string()))?;
        let (manager, actor, storage_thread) =
            session_manager::start(cfg.manager.clone(), storage)?;
        // Node certificates revoked before this start: nodes refuse them (#12).
        let fingerprints = security.revoked_cert_fingerprints();
        manager.send(session_manager::Event::Objects(
            session_manager::ObjectEvent::AccessRevoked { fingerprints },
        ));
        // Introspection reads the file the writer just created, on connections of its own.
        let reads = match Reads::open(manager.clone(), &db) {
            Ok(r) => r,
            Err(e) => {
                manager.shutdown().await;
                return Err(e);
            }
        };
        let http_auth =
            crate::http::HttpAuth::new(security.clone(), cfg.metrics_public, http_tls.is_some());
        let http = match HttpServer::start(&cfg.host, cfg.http, reads.clone(), http_auth, http_tls)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                manager.shutdown().await;
                return Err(e);
            }
        };
        let dashboard_url = http.as_ref().map(HttpServer::url);
        // A request may carry one task payload plus a batch around it; tonic reserves what a
        // frame declares, so a larger limit would let one request pin that much memory.
        let decode_limit = cfg
            .manager
            .max_payload_bytes
            .saturating_add(16 << 20)
            .min(MAX_MESSAGE_BYTES);
        // The state dir's Unix socket: the head's own node's executors and same-user clients
        // on this machine reach the same services there (see `local_socket`).
        let local = crate::local_socket::LocalSocket::bind(&cfg.state_dir);
        let local_socket = local.as_ref().map(|l| l.path.clone());
        let local_node: LocalNodeReport = Arc::new(tokio::sync::watch::channel(None).0);
        let frontend = FrontendService::new(reads, security.clone())
            .with_local_node(local_node.clone())
            .with_head_socket(local_socket.clone());
        let frontend = FrontendServer::new(frontend)
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // Authentication first (README "Security"), then the state check.
        let mut auth = crate::security::interceptor::interceptor(security.clone());
        let mut state = crate::rpc::state_check::interceptor(manager.state_id.clone());
        let frontend = tonic::service::interceptor::InterceptedService::new(frontend, move |req| {
            state(auth(req)?)
        });
        let backend = BackendServer::new(BackendService::new(manager.clone()))
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let backend = tonic::service::interceptor::InterceptedService::new(
            backend,
            crate::security::interceptor::interceptor(security.clone()),
        );
        // `tcp_nodelay` on the builder only reaches sockets tonic accepts itself; these come
        // from our listener. Without it, Nagle's algorithm meets delayed ACKs and every
        // small message waits ~40 ms.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            let conn = conn?;
            conn.set_nodelay(true)?;
            Ok::<_, std::io::Error>(conn)
        });
        // #13: a client cut off (its link down, no FIN) must be noticed well within its lease,
        // or the lease would only start once TCP gave up. HTTP/2 pings every 10 s, answered
        // within 20 s, as before for the default 60 s lease; each at most half a shorter one.
        let half_lease = cfg.manager.client_lease / 2;
        let ping_every = Duration::from_secs(10)
            .min(half_lease)
            .max(Duration::from_millis(100));
        let ping_answer = Duration::from_secs(20)
            .min(half_lease)
            .max(Duration::from_millis(100));
        let mut builder =
            tonic::transport::Server::builder().http2_keepalive_timeout(Some(ping_answer));
        if let (Some(identity), Some(ca_pem)) = (&security.identity, security.ca_pem()) {
            // Client certificates are optional: users come with tokens, nodes with
            // certificates the cluster CA signed.
            let tls_config = flame_core::tls::server_tls(identity, ca_pem);
            builder = match builder.tls_config(tls_config) {
                Ok(b) => b,
                Err(e) => {
                    manager.shutdown().await;
                    return Err(FlameError::Internal(format!("the head's TLS: {e}")));
                }
            };
        }
        let server_stop = CancellationToken::new();
        // The same services, interceptors included, on the state dir's Unix socket.
        let local_server = local.map(|socket| {
            let stop = server_stop.clone();
            let (frontend, backend) = (frontend.clone(), backend.clone());
            tokio::spawn(async move {
                let result = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(10)))
                    .add_service(frontend)
                    .add_service(backend)
                    .serve_with_incoming_shutdown(socket.incoming(), stop.cancelled())
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "gRPC server on the local socket failed");
                }
            })
        });
        let stop = server_stop.clone();
        let server = tokio::spawn(async move {
            let result = builder
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(ping_every))
                .add_service(frontend)
                .add_service(backend)
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        let host = match local_addr {
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
            SocketAddr::V4(a) => a.ip().to_string(),
        };
        let scheme = if security.tls { "https" } else { "http" };
        let address = format!("{scheme}://{host}:{}", local_addr.port());
        tracing::info!(%address, state_dir = %cfg.state_dir.display(), dashboard = ?dashboard_url, "session manager listening");
        Ok(Head {
            address,
            local_addr,
            manager,
            dashboard_url,
            fatal,
            security,
            local_socket,
            local_node,
            _lock: lock,
            http,
            server_stop,
            server,
            local_server,
            actor,
            storage_thread,
        })
    }

    /// Stop executors, persist everything, stop serving.
    pub async fn stop(self) {
        self.manager.shutdown().await;
        if let Some(http) = self.http {
            http.stop().await;
        }
        self.server_stop.cancel();
        // The actor has stopped and ended every stream; idle client connections would keep a
        // graceful shutdown waiting for as long as the clients live, so bound it.
        let servers = std::iter::once(self.server).chain(self.local_server);
        for mut server in servers {
            if tokio::time::timeout(Duration::from_millis(500), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
        if let Some(path) = &self.local_socket {
            let _ = std::fs::remove_file(path);
        }
        let _ = self.actor.await;
        drop(self.manager);
        let thread = self.storage_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}
