//! `flame-daemon`: the session manager (frontend and backend gRPC, scheduler, SQLite state)
//! and the executor manager (spawns and supervises executor processes on a node).
//!
//! # Layout
//! - [`cli`] — the command line (`start`, `head`, `node`) and [`config`] (flags + TOML).
//! - [`server`] — the head: actor + storage + gRPC server as one unit; [`local`] — head and
//!   node in one process (`flame-daemon start`, the embedded cluster of `flame.init()`),
//!   whose executors reach the head over [`local_socket`].
//! - [`session_manager`] — the actor that owns all scheduling state and applies the
//!   scheduler's decisions; [`rpc`] — the gRPC handlers that feed it events.
//! - [`storage_writer`] — the storage thread with group commit; [`reads`] — introspection
//!   reads on read-only connections beside it, so they never delay a commit.
//! - [`executor_manager`] — the node agent: executor processes, heartbeats, exit reports;
//!   [`node_objects`] — its object server over TCP and its transfers from other nodes.
//! - [`shutdown`] — Ctrl-C / SIGTERM; [`state_guard`] — one head per state dir, and the
//!   stop when the state file is deleted, replaced or damaged under it.
//! - [`security`] — tokens, credentials and who may do what (README "Security");
//!   [`token_cli`] — `flame-daemon token ...` against a running head.
//! - [`metrics`] — Prometheus series and the tasks/s history; [`http`] — `/metrics`, the
//!   JSON API and the embedded dashboard.

pub mod cli;
pub mod config;
pub mod executor_manager;
pub mod http;
pub mod local;
pub mod local_socket;
pub mod metrics;
pub mod node_objects;
pub mod reads;
pub mod rpc;
pub mod security;
pub mod server;
pub mod session_manager;
pub mod shutdown;
pub mod state_guard;
pub mod storage_writer;
pub mod token_cli;
