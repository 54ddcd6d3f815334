//! Objects on nodes (#12): the file format every process shares, each node's store, and
//! the seam through which a node fetches objects from others. The head's directory of
//! locations and transfers between nodes build on them.

pub mod directory;
pub mod format;
pub mod remote;
pub mod store;
