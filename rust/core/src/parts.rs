//! Large task outputs travel in parts: a result (executor → daemon) or a completion (daemon →
//! client) whose output is over [`PART_BYTES`] is preceded on its stream by `OutputPart`
//! messages and carries `output_in_parts` with an empty output; the receiver reassembles it.
//!
//! Why: tonic keeps a stream's receive and send buffers as large as the largest message they
//! ever held, for as long as the stream lives. One 255 MB result on an executor's stream
//! would pin 255 MB in the daemon (and as much again on the client's stream) for good.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::proto;

/// Outputs larger than this are sent in parts of this size.
pub const PART_BYTES: usize = 4 << 20;

/// The parts of `output` if it is large enough to be sent in parts (zero-copy slices), else
/// nothing.
pub fn split(session_id: u64, task_id: u64, output: &Bytes) -> Vec<proto::OutputPart> {
    if output.len() <= PART_BYTES {
        return Vec::new();
    }
    let total = output.len() as u64;
    (0..output.len())
        .step_by(PART_BYTES)
        .map(|at| proto::OutputPart {
            session_id,
            task_id,
            data: output.slice(at..output.len().min(at + PART_BYTES)),
            total,
        })
        .collect()
}

/// Outputs being reassembled on one stream, by (session, task).
#[derive(Debug)]
pub struct Assembler {
    pending: HashMap<(u64, u64), BytesMut>,
    /// Largest output kept: past it, one byte more is kept (so the receiver sees the output
    /// is over its limit) and the rest dropped, so a sender cannot make us hold more.
    limit: usize,
}

impl Assembler {
    pub fn new(limit: usize) -> Self {
        Self {
            pending: HashMap::new(),
            limit,
        }
    }

    /// Add a part; copied out of the message, so the stream's buffer is not held.
    pub fn add(&mut self, part: proto::OutputPart) {
        let cap = usize::try_from(part.total)
            .unwrap_or(usize::MAX)
            .min(self.limit.saturating_add(1));
        let buf = self
            .pending
            .entry((part.session_id, part.task_id))
            .or_insert_with(|| BytesMut::with_capacity(cap));
        let room = self.limit.saturating_add(1).saturating_sub(buf.len());
        buf.extend_from_slice(&part.data[..part.data.len().min(room)]);
    }

    /// The reassembled output of a task (empty if no part came).
    pub fn take(&mut self, session_id: u64, task_id: u64) -> Bytes {
        self.pending
            .remove(&(session_id, task_id))
            .map(BytesMut::freeze)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_output_round_trips_through_parts_and_a_small_one_is_not_split() {
        let small = Bytes::from(vec![1u8; PART_BYTES]);
        assert!(split(1, 2, &small).is_empty());
        let big: Bytes = (0..(2 * PART_BYTES + 5)).map(|i| i as u8).collect();
        let parts = split(1, 2, &big);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.data.len() <= PART_BYTES));
        let mut asm = Assembler::new(usize::MAX);
        for p in parts {
            asm.add(p);
        }
        assert_eq!(asm.take(1, 2), big);
        assert!(asm.take(1, 2).is_empty(), "taken once");
    }

    #[test]
    fn an_output_over_the_limit_keeps_only_one_byte_more() {
        let big = Bytes::from(vec![9u8; 3 * PART_BYTES]);
        let mut asm = Assembler::new(PART_BYTES);
        for p in split(4, 5, &big) {
            asm.add(p);
        }
        assert_eq!(asm.take(4, 5).len(), PART_BYTES + 1);
    }
}
