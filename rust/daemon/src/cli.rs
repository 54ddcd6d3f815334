//! The `flame-daemon` command line: `start` (head and node on one machine), `head`, `node`,
//! and `drain` (empty a node of a running cluster).

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flame_core::client::{normalize_address, stub, Credentials, StateStamp, Transport};
use flame_core::proto;
use tokio_util::sync::CancellationToken;

use flame_core::{FlameError, Result};

use crate::config::{default_state_dir, FileConfig};
use crate::executor_manager::join::{default_node_state_dir, node_credentials};
use crate::executor_manager::{run_node, NodeConfig};
use crate::http::HttpPort;
use crate::local::LocalCluster;
use crate::security::tls_mode::{TlsMode, TlsSettings};
use crate::server::{Head, HeadConfig};
use crate::shutdown::shutdown_signal;
use crate::state_guard::Fatal;

#[derive(Parser, Debug)]
#[command(
    name = "flame-daemon",
    version,
    about = "Flame session manager and executor manager"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: text or json. Filter with RUST_LOG (default: info).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the session manager and an executor manager for this machine.
    Start(StartArgs),
    /// Run only the session manager (the head of a multi-node cluster).
    Head(HeadArgs),
    /// Run only an executor manager that joins a head (SIGTERM drains it first).
    Node(NodeArgs),
    /// Drain a node of a running cluster: nothing new goes there, its tasks finish, it exits.
    Drain(DrainArgs),
    /// Create, list and revoke tokens (users, join tokens for nodes), and revoke nodes.
    Token(crate::token_cli::TokenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DrainArgs {
    /// Address of the head, e.g. http://head:8080.
    #[arg(long)]
    pub head: String,
    /// Name of the node to drain (as `flame.nodes()` lists it).
    #[arg(long)]
    pub node: String,
}

#[derive(Args, Debug, Clone)]
pub struct HeadArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Directory of the SQLite state and the head's local files (certificates, sockets).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Keep the durable state in PostgreSQL instead of SQLite, e.g.
    /// postgres://flame@db.example:5432/flame (no TLS: a trusted network only).
    #[arg(long, env = "FLAME_STATE_URL")]
    pub state_url: Option<String>,
    /// Port of the dashboard, /metrics and the JSON API, on the same host (0 picks a free
    /// one; default 8265, or a free port when that one is taken).
    #[arg(long, conflicts_with = "no_http")]
    pub http_port: Option<u16>,
    /// Serve no HTTP at all (no dashboard, no /metrics).
    #[arg(long)]
    pub no_http: bool,
    /// Serve TLS even on a loopback address (same as `tls = "on"` in the config; a head on
    /// any other address always serves TLS).
    #[arg(long)]
    pub tls: bool,
}

#[derive(Args, Debug, Clone)]
pub struct NodeOpts {
    /// Executor processes this node may run (default: CPU count).
    #[arg(long)]
    pub slots: Option<u32>,
    /// Python interpreter for executors when a session names none that exists here.
    #[arg(long)]
    pub python: Option<String>,
    /// Node name (default: host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Working directory of the executors.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Kill an executor whose resident memory exceeds this many MiB (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub executor_memory_mb: Option<u64>,
    /// Memory this node offers, MiB (default: the machine's total); with
    /// --executor-memory-mb, no more executors start than fit in it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_mb: Option<u64>,
    /// Local address the node connects to its head from (e.g. 127.0.0.2); its object
    /// server listens there too.
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// MiB of objects this node's store keeps in memory before evicting cached copies and
    /// spilling to disk (default: 30 % of the node's memory).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub object_store_mb: Option<u64>,
    /// Port of the node's object server, where other nodes and off-node clients fetch and
    /// put objects (default: any free port; the node tells the head).
    #[arg(long)]
    pub object_port: Option<u16>,
    /// Command that starts an executor instead of `{python} -m flame._executor`, split on
    /// whitespace (e.g. `flame-echo-executor`); `--address A --executor-id N` are appended.
    #[arg(long)]
    pub executor_command: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    #[command(flatten)]
    pub head: HeadArgs,
    #[command(flatten)]
    pub node: NodeOpts,
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the head, e.g. https://head:8080.
    #[arg(long)]
    pub head: Option<String>,
    /// Join token (printed by `flame-daemon head`, or `flame-daemon token create --node`);
    /// needed only the first time: the node keeps its credentials in --state-dir.
    #[arg(long)]
    pub join_token: Option<String>,
    /// Where the node keeps its certificate, key and CA (default ~/.flame/node, mode 0700).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeOpts,
}

fn file(path: &Option<PathBuf>) -> Result<FileConfig> {
    path.as_deref()
        .map_or(Ok(FileConfig::default()), FileConfig::load)
}

fn head_config(args: &HeadArgs) -> Result<HeadConfig> {
    let f = file(&args.config)?;
    let mode = match (&f.tls, args.tls) {
        (_, true) => TlsMode::On,
        (Some(text), false) => TlsMode::parse(text)?,
        (None, false) => TlsMode::Auto,
    };
    Ok(HeadConfig {
        host: args
            .host
            .clone()
            .or(f.host.clone())
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: args.port.or(f.port).unwrap_or(8080),
        state_dir: args
            .state_dir
            .clone()
            .or(f.state_dir.clone())
            .unwrap_or_else(default_state_dir),
        state_url: match args.state_url.clone().or(f.state_url.clone()) {
            // Checked here so a bad URL is an error at start that names the flag.
            Some(url) => {
                flame_core::storage::parse_state_url(&url).map_err(|e| match e {
                    FlameError::InvalidArgument(m) => {
                        FlameError::InvalidArgument(format!("--state-url / state_url: {m}"))
                    }
                    other => other,
                })?;
                Some(url)
            }
            None => None,
        },
        manager: f.manager()?,
        http: if args.no_http || f.http == Some(false) {
            HttpPort::Off
        } else {
            args.http_port
                .or(f.http_port)
                .map_or(HttpPort::Default, HttpPort::Exactly)
        },
        tls: TlsSettings {
            mode,
            names: f.tls_names.clone().unwrap_or_default(),
        },
        metrics_public: f.metrics_public.unwrap_or(false),
    })
}

fn node_config(head: String, opts: &NodeOpts, f: &FileConfig) -> NodeConfig {
    let mut n = NodeConfig::new(head);
    if let Some(s) = opts.slots.or(f.slots) {
        n.slots = s;
    }
    if let Some(p) = opts.python.clone().or(f.python.clone()) {
        n.python = p;
    }
    if let Some(name) = opts.name.clone().or(f.name.clone()) {
        n.name = name;
    }
    if let Some(w) = opts.work_dir.clone().or(f.work_dir.clone()) {
        n.work_dir = w;
    }
    if let Some(mb) = opts.executor_memory_mb.or(f.executor_memory_mb) {
        n.executor_memory_bytes = Some(mb.saturating_mul(1 << 20));
    }
    if let Some(mb) = opts.memory_mb.or(f.memory_mb) {
        n.memory_bytes = Some(mb.saturating_mul(1 << 20));
    }
    if let Some(mb) = opts.object_store_mb.or(f.object_store_mb) {
        n.object_store_bytes = Some(mb.saturating_mul(1 << 20));
    }
    n.bind = opts.bind.or(f.bind);
    n.object_port = opts.object_port.or(f.object_port).unwrap_or(0);
    let command = opts.executor_command.as_ref();
    let command = command.map(|c| c.split_whitespace().map(String::from).collect());
    if let Some(c) = command.or(f.executor_command.clone()) {
        n.executor_command = Some(c);
    }
    n
}

/// Run a parsed command until Ctrl-C / SIGTERM (or a fatal error).
///
/// # Errors
/// Bad configuration, an address that cannot be bound, state that cannot be opened, or a
/// node that cannot reach its head.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Start(args) => {
            let head_cfg = head_config(&args.head)?;
            if args.node.slots == Some(0) {
                return Err(FlameError::InvalidArgument(
                    "--slots must be at least 1".into(),
                ));
            }
            let node_cfg = node_config(String::new(), &args.node, &file(&args.head.config)?);
            node_cfg.validate()?;
            let cluster = LocalCluster::start(head_cfg, node_cfg).await?;
            let signal = shutdown_signal();
            announce(&cluster.head);
            let fatal = cluster.head.fatal.clone();
            let stopped = until_stopped(signal, &fatal).await;
            cluster.stop().await;
            stopped?;
        }
        Command::Head(args) => {
            let head = Head::start(head_config(&args)?).await?;
            let signal = shutdown_signal();
            announce(&head);
            announce_join(&head)?;
            let fatal = head.fatal.clone();
            let stopped = until_stopped(signal, &fatal).await;
            head.stop().await;
            stopped?;
        }
        Command::Node(args) => {
            let f = file(&args.config)?;
            let head = args.head.clone().or(f.head.clone()).ok_or_else(|| {
                FlameError::InvalidArgument(
                    "a node needs --head ADDRESS (e.g. http://head:8080)".into(),
                )
            })?;
            let mut cfg = node_config(head, &args.node, &f);
            let state_dir = args
                .state_dir
                .clone()
                .unwrap_or_else(default_node_state_dir);
            let join_token = args
                .join_token
                .clone()
                .or_else(|| std::env::var("FLAME_JOIN_TOKEN").ok());
            cfg.credentials =
                node_credentials(&cfg.head, join_token.as_deref(), &state_dir, &cfg.name).await?;
            // A node stopped by a signal drains first (see README, "Running a cluster").
            cfg.drain_grace = Duration::from_millis(f.drain_grace_ms.unwrap_or(10_000));
            let stop = CancellationToken::new();
            let mut node = tokio::spawn(run_node(cfg, stop.clone()));
            let result = tokio::select! {
                r = &mut node => r,
                _ = shutdown_signal() => {
                    stop.cancel();
                    (&mut node).await
                }
            };
            return result.map_err(|e| FlameError::Internal(format!("node task: {e}")))?;
        }
        Command::Drain(args) => drain(&args).await?,
        Command::Token(args) => crate::token_cli::run(args).await?,
    }
    Ok(())
}

/// Wait for Ctrl-C / SIGTERM (`Ok`) or for something that stops the head by itself (`Err`,
/// so the process exits 1 with the reason).
async fn until_stopped(signal: impl std::future::Future<Output = ()>, fatal: &Fatal) -> Result<()> {
    tokio::select! {
        () = signal => Ok(()),
        reason = fatal.raised() => Err(FlameError::StateFileUnusable(reason)),
    }
}

/// Print where the daemon listens. One write, errors ignored: whoever started the daemon may
/// stop reading after the first line, and a closed pipe must not bring the daemon down.
fn announce(head: &Head) {
    use std::io::Write;
    let mut text = format!("flame-daemon listening on {}\n", head.address);
    if let Some(url) = &head.dashboard_url {
        text.push_str(&format!("dashboard and /metrics on {url}\n"));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Print one join token (valid 24 h) as a ready-to-paste node command, after the
/// listening line (which stays first: scripts read it).
fn announce_join(head: &Head) -> Result<()> {
    use std::io::Write;
    let expiry = crate::token_cli::DEFAULT_JOIN_EXPIRY;
    let expires_ms =
        (flame_core::model::now_ms().max(0) as u64).saturating_add(expiry.as_millis() as u64);
    let token =
        head.security
            .issue_stored(flame_core::auth::TokenKind::Join, "", false, expires_ms)?;
    let text = format!(
        "join a node (this token joins any number of nodes for 24 h; more with \
         `flame-daemon token create --node`):\n  flame-daemon node --head {} --join-token {token}\n",
        dialable(&head.address)
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

/// `address` with a wildcard host (0.0.0.0, [::]) replaced by a name other machines can
/// dial: the first non-loopback name of the head's certificate.
fn dialable(address: &str) -> String {
    for wildcard in ["0.0.0.0", "[::]"] {
        if address.contains(&format!("//{wildcard}:")) {
            let name = flame_core::tls::server_names(wildcard)
                .into_iter()
                .find(|n| !crate::security::tls_mode::is_loopback(n));
            if let Some(name) = name {
                let name = if name.contains(':') {
                    format!("[{name}]")
                } else {
                    name
                };
                return address.replacen(wildcard, &name, 1);
            }
        }
    }
    address.to_string()
}

/// `flame-daemon drain`: ask the head to drain a node and wait until it has left.
/// It uses an admin's credentials: `FLAME_TOKEN` (and `FLAME_CA_FILE`), else the `admin.token` of
/// the default state dir (a head on this machine run by this OS user).
async fn drain(args: &DrainArgs) -> Result<()> {
    let address = normalize_address(&args.head);
    let mut creds = Credentials::from_env()?;
    if creds.token.is_none() {
        // On the head's machine, as its OS user: the head's own admin token. Discover names
        // the head's state dir to a loopback caller; else the default state dir's.
        let found = flame_core::client::discover(&address, &creds, Duration::from_secs(5))
            .await
            .ok()
            .map(|d| d.state_dir)
            .filter(|d| !d.is_empty());
        let dir = found.map_or_else(default_state_dir, std::path::PathBuf::from);
        creds.token = std::fs::read_to_string(dir.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string());
    }
    let transport = Transport::resolve(&address, &creds, Duration::from_secs(10)).await?;
    let channel = transport.channel(Duration::from_secs(10)).await?;
    let mut head = stub(
        channel,
        StateStamp::default().with_bearer(transport.bearer().cloned()),
    );
    let target = proto::NodeRef {
        id: 0,
        name: args.node.clone(),
    };
    let info = head
        .drain_node(target)
        .await
        .map_err(FlameError::from)?
        .into_inner();
    println!(
        "draining node '{}' (id {}, {} executors, {} busy)",
        info.name, info.id, info.executors, info.busy
    );
    // The node leaves the cluster info once drained; it is alive until then.
    loop {
        let cluster = head
            .get_cluster_info(proto::Empty {})
            .await
            .map_err(FlameError::from)?;
        let cluster = cluster.into_inner();
        if !cluster.nodes.iter().any(|n| n.id == info.id && n.alive) {
            println!("node '{}' drained", info.name);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Set up logging once: RUST_LOG filter (default `info`), text or JSON lines on stderr.
pub fn init_logging(format: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    init_logging_with(&filter, format);
}

/// Set up logging once with an explicit filter (`"warn"`, `"flame_daemon=debug"`, ...);
/// later calls are ignored. An unparsable filter falls back to `info`.
pub fn init_logging_with(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Entry point shared by the `flame-daemon` binary and `flame._core.daemon_main`: parse
/// `argv`, run, and return the process exit code.
pub fn main_with_args(argv: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging(&cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flame-daemon: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flame-daemon: {e}");
            1
        }
    }
}
