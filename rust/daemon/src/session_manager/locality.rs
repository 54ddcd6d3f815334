//! Where objects are, for the scheduler's data-aware policy (#12): the head learns that a
//! node holds an object when a client announces it (`ClientMessage.created`), and forgets a
//! node's objects when the node goes. Submissions whose tasks read objects are placed with
//! it (`events.rs`, `Scheduler::enqueue_reading`).
//!
//! This is a stand-in for the head's object directory (`flame_core::objects::directory`),
//! which also learns of copies, removals and results, and forgets deleted objects (this map
//! does not: it only grows, by one entry per announced object, until its node goes). Once
//! the directory is in, it implements `Locality`, `events.rs` passes it instead, and this
//! file, the `holdings` field and `Event::ObjectsCreated` go.

use flame_core::ids::NodeId;
use flame_core::scheduler::ObjectRead;

use super::actor::Actor;

impl Actor {
    /// A client stored `objects` on `node`. An announcement naming a node that is not
    /// connected is ignored (with a log line): nothing could be placed there anyway.
    pub(super) fn holdings_created(&mut self, conn: u64, node: NodeId, objects: Vec<ObjectRead>) {
        if !self.nodes.contains_key(&node) {
            tracing::warn!(conn, %node, "objects announced on a node that is not connected; ignored");
            return;
        }
        for o in objects {
            self.holdings.add(o.id, node);
        }
    }

    /// `node` left: its copies went with it.
    pub(super) fn forget_holdings(&mut self, node: NodeId) {
        self.holdings.remove_node(node);
    }
}
