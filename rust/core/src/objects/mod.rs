//! Objects on nodes (#12): the file format every process shares. The node's store, the
//! head's directory of locations and transfers between nodes build on it.

pub mod directory;
pub mod format;
