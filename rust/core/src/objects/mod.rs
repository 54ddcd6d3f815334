//! Objects on nodes (#12): the file format every process shares, and moving objects
//! between nodes and clients ([`transfer`]). The node's store, the head's directory of
//! locations and transfers between nodes build on it.

pub mod format;
#[cfg(test)]
mod tests_transfer;
pub mod transfer;
