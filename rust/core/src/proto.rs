//! Generated protocol types (tonic + prost) for `proto/flame.proto`.
//!
//! Proto types stay at the RPC edge: the daemon and the client convert them to the domain
//! types in [`crate::model`] with the `From`/`TryFrom` impls in `model`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("flame");
