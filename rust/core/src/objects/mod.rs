//! Objects on nodes (#12): the file format every process shares, each node's store, the
//! head's directory of locations, the seam through which a node fetches objects from others,
//! and moving objects between nodes and clients ([`transfer`]).

pub mod directory;
pub mod format;
pub mod remote;
pub mod store;
#[cfg(test)]
mod tests_transfer;
pub mod transfer;
