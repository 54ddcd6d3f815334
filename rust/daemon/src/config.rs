//! Daemon configuration: command-line flags, optionally on top of a TOML file
//! (`--config flame.toml`). A flag given on the command line wins over the file.
//!
//! ```toml
//! host = "127.0.0.1"
//! port = 8080
//! state_dir = "/var/lib/flame"
//! state_url = "postgres://flame@db:5432/flame"  # state in PostgreSQL, not state_dir/flame.db
//! slots = 8
//! python = "/opt/venv/bin/python"
//! executor_memory_mb = 4096                    # kill an executor resident over this
//! object_store_mb = 4096                       # node object store in memory (default 30 %)
//! object_port = 0                              # a node's object server (0 = any free port)
//! executor_command = ["flame-echo-executor"]   # instead of `{python} -m flame._executor`
//! window = 2                                   # tasks sent ahead to one executor, at least
//! window_max = 64                              # ... and at most, for very short tasks
//! max_payload_mb = 256                         # largest task input or output (at most 1000)
//! client_lease_ms = 60000                       # close a vanished client's sessions after this
//! drain_grace_ms = 10000                        # on SIGTERM, let running tasks finish this long
//! executor_timeout_ms = 5000                    # an executor silent this long is killed (0: never)
//! result_retention_ms = 3600000                 # delete a closed session's results after this
//! result_object_mb = 1                          # larger results stay on their node (0: never)
//! http_port = 8265                              # dashboard, /metrics, JSON API (0 = free port)
//! http = true                                   # false: no HTTP server
//! tls = "auto"                                  # "on", "off" (loopback only); auto: TLS off loopback
//! tls_names = ["flame.example.com"]             # extra names for the head's certificate
//! metrics_public = false                        # true: /metrics without a token
//!
//! [scheduler]
//! policies = ["priority", "fair_share", "data_aware"]   # any of Policies::NAMES
//! release_delay_ms = 2000                       # idle executors stay bound this long
//! data_wait_ms = 100                            # data_aware: a task waits this long for its data's node
//! ```
//!

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use flame_core::scheduler::Policies;
use flame_core::{FlameError, Result};

use crate::session_manager::ManagerConfig;

/// The longest `scheduler.data_wait_ms` accepted.
const MAX_DATA_WAIT_MS: u64 = 3_600_000;

/// Settings a config file may hold; every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub state_dir: Option<PathBuf>,
    pub state_url: Option<String>,
    pub slots: Option<u32>,
    pub python: Option<String>,
    pub name: Option<String>,
    pub head: Option<String>,
    pub work_dir: Option<PathBuf>,
    pub executor_memory_mb: Option<u64>,
    /// Memory a node offers, MiB (default: the machine's).
    pub memory_mb: Option<u64>,
    /// MiB of objects a node's store keeps in memory (default: 30 % of its memory).
    pub object_store_mb: Option<u64>,
    /// Local address of a node's connection to its head.
    pub bind: Option<std::net::IpAddr>,
    /// Port of a node's object server (0 = any free one).
    pub object_port: Option<u16>,
    pub executor_command: Option<Vec<String>>,
    pub window: Option<usize>,
    pub window_max: Option<usize>,
    pub max_payload_mb: Option<usize>,
    /// How often nodes and executors report to the head, ms.
    pub heartbeat_ms: Option<u64>,
    /// A node silent this long is lost (its tasks run elsewhere), and a node that hears
    /// nothing from its head this long stops its executors and registers again, ms.
    pub node_timeout_ms: Option<u64>,
    pub client_lease_ms: Option<u64>,
    pub drain_grace_ms: Option<u64>,
    /// An executor that answers no heartbeat for this long is lost and killed; 0: never.
    pub executor_timeout_ms: Option<u64>,
    /// How long a closed session's results are kept.
    pub result_retention_ms: Option<u64>,
    /// Results larger than this (MiB) stay in their node's object store; 0: never.
    pub result_object_mb: Option<u64>,
    /// Dashboard / metrics port (0 = a free one).
    pub http_port: Option<u16>,
    /// `false` turns the HTTP server off.
    pub http: Option<bool>,
    /// `"auto"` (TLS unless the head binds a loopback address), `"on"` or `"off"`.
    pub tls: Option<String>,
    /// Extra DNS names or IPs for the head's certificate (e.g. a name in front of it).
    pub tls_names: Option<Vec<String>>,
    /// `true`: `/metrics` answers without a token (for a scraper on a trusted network).
    pub metrics_public: Option<bool>,
    pub scheduler: Option<SchedulerTable>,
}

/// The `[scheduler]` table: which policies decide who gets executors.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerTable {
    /// The policies that are on (all others off); absent: the defaults.
    pub policies: Option<Vec<String>>,
    /// How long an idle executor stays bound to its session.
    pub release_delay_ms: Option<u64>,
    /// Data-aware policy: how long a task that reads objects waits for an executor on a node
    /// holding them before it goes anywhere.
    pub data_wait_ms: Option<u64>,
}

impl FileConfig {
    /// Read a TOML config file.
    ///
    /// # Errors
    /// `InvalidArgument` naming the file when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FlameError::InvalidArgument(format!("config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            FlameError::InvalidArgument(format!("config file {}: {e}", path.display()))
        })
    }

    /// The session manager's tunables from this file, defaults elsewhere.
    pub fn manager(&self) -> Result<ManagerConfig> {
        let mut m = ManagerConfig::default();
        let table = self.scheduler.clone().unwrap_or_default();
        if let Some(ms) = table.release_delay_ms {
            m.release_delay = Duration::from_millis(ms);
        }
        if let Some(names) = &table.policies {
            m.policies = Policies::from_names(names)?;
        }
        if let Some(ms) = table.data_wait_ms {
            if ms > MAX_DATA_WAIT_MS {
                return Err(FlameError::InvalidArgument(format!(
                    "scheduler.data_wait_ms ({ms}) is over {MAX_DATA_WAIT_MS} (one hour): a task \
                     would wait that long for its data's node"
                )));
            }
            m.data_wait = Duration::from_millis(ms);
        }
        if let Some(w) = self.window {
            if w == 0 {
                return Err(FlameError::InvalidArgument(
                    "window must be at least 1".into(),
                ));
            }
            m.window = w;
        }
        if let Some(w) = self.window_max {
            if w < m.window {
                return Err(FlameError::InvalidArgument(format!(
                    "window_max ({w}) must be at least window ({})",
                    m.window
                )));
            }
            m.window_max = w;
        }
        if let Some(ms) = self.client_lease_ms {
            m.client_lease = Duration::from_millis(ms);
        }
        if let Some(ms) = self.drain_grace_ms {
            m.drain_grace = Duration::from_millis(ms);
        }
        if let Some(ms) = self.executor_timeout_ms {
            // Heartbeats go out four times per timeout; much shorter would be all heartbeat.
            if ms != 0 && ms < MIN_EXECUTOR_TIMEOUT_MS {
                return Err(FlameError::InvalidArgument(format!(
                    "executor_timeout_ms must be 0 (never) or at least \
                     {MIN_EXECUTOR_TIMEOUT_MS}, got {ms}"
                )));
            }
            m.executor_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.result_retention_ms {
            m.result_retention = Duration::from_millis(ms);
        }
        if let Some(mb) = self.result_object_mb {
            m.result_object_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(mb) = self.max_payload_mb {
            // A payload travels inside one gRPC message (limit 1 GiB with framing).
            if mb == 0 || mb > 1000 {
                return Err(FlameError::InvalidArgument(format!(
                    "max_payload_mb must be between 1 and 1000, got {mb}"
                )));
            }
            m.max_payload_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(ms) = self.heartbeat_ms {
            m.heartbeat = Duration::from_millis(ms.max(50));
        }
        if let Some(ms) = self.node_timeout_ms {
            m.node_timeout = Duration::from_millis(ms);
        }
        if m.node_timeout <= m.heartbeat {
            return Err(FlameError::InvalidArgument(format!(
                "node_timeout_ms ({:?}) must be longer than heartbeat_ms ({:?})",
                m.node_timeout, m.heartbeat
            )));
        }
        Ok(m)
    }
}

/// Shortest `executor_timeout_ms` accepted (other than 0).
const MIN_EXECUTOR_TIMEOUT_MS: u64 = 200;

/// Where state lives when nothing says otherwise: `$FLAME_STATE_DIR`, else `~/.flame/state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLAME_STATE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".flame").join("state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("README has a TOML example") + 8;
        let end = start + readme[start..].find("```").expect("closed block");
        let f: FileConfig = toml::from_str(&readme[start..end]).expect("README example parses");
        f.manager().expect("README example is accepted");
        assert_eq!(f.port, Some(8080));
        assert_eq!(f.http_port, Some(8265));
    }

    #[test]
    fn file_settings_reach_the_manager_and_bad_ones_are_named() {
        let f: FileConfig = toml::from_str("window = 8").unwrap();
        let m = f.manager().unwrap();
        assert_eq!(m.window, 8);
        let f: FileConfig =
            toml::from_str("client_lease_ms = 500\ndrain_grace_ms = 20\nmax_payload_mb = 1\nresult_retention_ms = 1500")
                .unwrap();
        let m = f.manager().unwrap();
        assert_eq!(m.result_retention, Duration::from_millis(1500));
        assert_eq!(m.client_lease, Duration::from_millis(500));
        assert_eq!(m.drain_grace, Duration::from_millis(20));
        assert_eq!(m.max_payload_bytes, 1 << 20);
        assert_eq!(m.result_object_bytes, 1 << 20); // the default
        let f: FileConfig = toml::from_str("result_object_mb = 4").unwrap();
        assert_eq!(f.manager().unwrap().result_object_bytes, 4 << 20);
        let huge: FileConfig = toml::from_str("max_payload_mb = 5000").unwrap();
        assert!(huge
            .manager()
            .unwrap_err()
            .to_string()
            .contains("max_payload_mb"));
        let bad: FileConfig = toml::from_str("window = 0").unwrap();
        assert!(bad.manager().unwrap_err().to_string().contains("window"));
        let bad: FileConfig = toml::from_str("window = 8\nwindow_max = 4").unwrap();
        assert!(bad
            .manager()
            .unwrap_err()
            .to_string()
            .contains("window_max"));
        assert!(
            toml::from_str::<FileConfig>("prot = 1").is_err(),
            "typos are rejected"
        );
    }

    #[test]
    fn the_executor_timeout_is_read_and_a_tiny_one_is_refused() {
        let m = FileConfig::default().manager().unwrap();
        assert_eq!(m.executor_timeout, Duration::from_secs(5));
        let f: FileConfig = toml::from_str("executor_timeout_ms = 1500").unwrap();
        assert_eq!(
            f.manager().unwrap().executor_timeout,
            Duration::from_millis(1500)
        );
        let f: FileConfig = toml::from_str("executor_timeout_ms = 0").unwrap();
        assert!(
            f.manager().unwrap().executor_timeout.is_zero(),
            "0 turns it off"
        );
        let f: FileConfig = toml::from_str("executor_timeout_ms = 10").unwrap();
        let err = f.manager().unwrap_err().to_string();
        assert!(
            err.contains("executor_timeout_ms") && err.contains("10"),
            "{err}"
        );
    }

    #[test]
    fn the_scheduler_table_selects_policies_and_names_bad_ones() {
        let f: FileConfig = toml::from_str(
            "[scheduler]\npolicies = [\"priority\", \"preemption\"]\nrelease_delay_ms = 70",
        )
        .unwrap();
        let m = f.manager().unwrap();
        assert!(m.policies.priority && m.policies.preemption && !m.policies.fair_share);
        assert_eq!(m.release_delay, Duration::from_millis(70));
        let m = FileConfig::default().manager().unwrap();
        assert_eq!(m.policies, Policies::default());
        let f: FileConfig = toml::from_str("[scheduler]\npolicies = [\"fifo\"]").unwrap();
        let err = f.manager().unwrap_err().to_string();
        assert!(err.contains("unknown scheduler policy 'fifo'"), "{err}");
        // One name per setting: the idle-executor delay is scheduler.release_delay_ms only.
        let err = toml::from_str::<FileConfig>("warm_delay_ms = 1").unwrap_err();
        assert!(err.to_string().contains("warm_delay_ms"), "{err}");
        let err = toml::from_str::<FileConfig>("[scheduler]\npreemtion = true").unwrap_err();
        assert!(err.to_string().contains("preemtion"), "{err}");
    }

    #[test]
    fn data_wait_is_set_in_the_scheduler_table_and_bounded() {
        assert_eq!(
            FileConfig::default().manager().unwrap().data_wait,
            Duration::from_millis(100)
        );
        let f: FileConfig = toml::from_str("[scheduler]\ndata_wait_ms = 250").unwrap();
        assert_eq!(f.manager().unwrap().data_wait, Duration::from_millis(250));
        let f: FileConfig = toml::from_str("[scheduler]\ndata_wait_ms = 3600001").unwrap();
        let err = f.manager().unwrap_err().to_string();
        assert!(
            err.contains("data_wait_ms") && err.contains("3600001"),
            "{err}"
        );
    }
}
