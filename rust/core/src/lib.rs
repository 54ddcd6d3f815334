//! Flame core: everything about Flame that is not Python and not a running server.
//!
//! # Layout
//! - [`auth`] — tokens' text, the caller's identity ([`auth::Principal`]), bearer metadata.
//! - [`ids`] — `SessionId`, `TaskId`, `ExecutorId`, `NodeId`, `ClientId` newtypes.
//! - [`error`] — [`FlameError`], the one error enum of this layer, and its gRPC mapping.
//! - [`proto`] — generated tonic/prost types for `proto/flame.proto`, plus conversions.
//! - [`model`] — domain types: task and session records, their states and transitions.
//! - [`private_files`] — files only their OS user reads: 0700 dirs, 0600 files, owner checks.
//! - [`parts`] — large task outputs sent as several small messages, and their reassembly.
//! - [`scheduler`] — the pure, event-driven scheduling policy (no I/O, virtual time).
//! - [`storage`] — the `Storage` trait and its SQLite engine.
//! - [`view`] — what introspection shows of a task (`TaskView`), and page limits.
//! - [`client`] — the Rust client used by the Python binding and the CLI.
//! - [`executor`] — the executor loop: talks to the session manager, runs a `ServiceHost`.
//! - [`tls`] — the cluster CA, head and node certificates, CA pinning, rustls/tonic TLS configs.

pub mod auth;
pub mod client;
pub mod error;
pub mod executor;
pub mod ids;
pub mod model;
pub mod objects;
pub mod parts;
pub mod private_files;
pub mod proto;
pub mod scheduler;
pub mod storage;
pub mod tls;
pub mod view;

pub use error::{FlameError, Result};
