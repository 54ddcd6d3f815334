//! The session manager's side of objects on nodes (#12): it keeps the directory of where
//! objects are (`flame_core::objects::directory`), fed by what clients announce on their
//! task streams (`created`), what executors report of their results (`output_object`) and
//! what nodes report (copies added and removed, store statistics at each heartbeat). It
//! answers `LocateObjects`, `PlaceObject` and `ListObjects`, turns deletes (a creator's, a
//! lease running out) into `delete_objects` commands to every holder, and handles a node's
//! loss: objects only it held are lost, task results among them are rebuilt by running
//! their task again (lineage), once per loss.
//!
//! Everything here runs on the actor, like the rest of its state; the directory itself is
//! pure and unit-tested in the core.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use flame_core::ids::{ClientId, NodeId, ObjectId, TaskKey};
use flame_core::objects::directory::{Added, Directory};
use flame_core::proto::{self, node_command};
use flame_core::storage::WriteOp;

use super::actor::Actor;
use super::object_answers::object_info;
use super::Reply;

/// A node's object store as its heartbeats describe it (the node's own figures).
pub use flame_core::objects::store::ObjectStoreStats as StoreStats;

/// What the session manager hears about objects, and the questions it answers.
pub enum ObjectEvent {
    /// A client stored these objects (id, size) on `node` (its task stream `conn`).
    Created {
        conn: u64,
        node: NodeId,
        objects: Vec<(ObjectId, u64)>,
        /// Refs pickled inside them: (container, contained ids).
        nested: Vec<(ObjectId, Vec<ObjectId>)>,
    },
    /// A node stored copies (or, re-registering, announces all it holds).
    NodeAdded {
        node: NodeId,
        objects: Vec<(ObjectId, u64)>,
    },
    /// A node removed objects (evicted copies, deleted ones).
    NodeRemoved { node: NodeId, ids: Vec<ObjectId> },
    /// A node's store at a heartbeat.
    NodeStats { node: NodeId, stats: StoreStats },
    Locate {
        ids: Vec<ObjectId>,
        reply: Reply<Vec<proto::ObjectLocation>>,
    },
    /// Where an off-node client uploads a new object of `size` bytes.
    Place {
        size: u64,
        reply: Reply<proto::ObjectHolder>,
    },
    /// Every object (held or rebuilding) on `node` (or anywhere), in id order.
    List {
        node: Option<NodeId>,
        reply: Reply<Vec<proto::ObjectInfo>>,
    },
    /// Delete these objects everywhere (authorized by the caller).
    Delete {
        ids: Vec<ObjectId>,
        reply: Reply<()>,
    },
    /// Credentials were revoked (and at start: what was revoked before): every node forgets
    /// its cached token answers and refuses these node certificates (all revoked ones).
    AccessRevoked { fingerprints: Vec<String> },
    /// Internal: storage's answer for the task that must run again to rebuild `object`
    /// (its input and attempts; `None`: not stored).
    Rerun {
        key: TaskKey,
        object: ObjectId,
        found: Result<Option<(Bytes, u32)>, String>,
    },
}

/// A connected node's object server and store.
#[derive(Clone, Debug, Default)]
pub(super) struct NodeStore {
    pub name: String,
    /// "http(s)://ip:port"; empty = the node serves no objects.
    pub address: String,
    pub stats: StoreStats,
}

/// The actor's part for objects.
#[derive(Default)]
pub(super) struct Objects {
    pub dir: Directory,
    pub nodes: HashMap<NodeId, NodeStore>,
    /// Lost results whose task's input is being read back from storage.
    pub reruns: HashSet<ObjectId>,
    /// Fingerprints of the revoked node certificates (from the head's security).
    revoked_certs: Vec<String>,
}

/// One object store's row of the dashboard and `/metrics`.
#[derive(Clone, Debug)]
pub struct NodeObjects {
    pub node: NodeId,
    pub name: String,
    /// Objects the directory says it holds, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// As its last heartbeat said.
    pub stats: StoreStats,
}

impl Actor {
    pub(super) fn handle_objects(&mut self, ev: ObjectEvent) {
        match ev {
            ObjectEvent::Created {
                conn,
                node,
                objects,
                nested,
            } => {
                self.objects_created(conn, node, &objects);
                self.objects_nested(conn, &objects, nested);
            }
            ObjectEvent::NodeAdded { node, objects } => {
                for (id, size) in objects {
                    self.object_added(id, size, node, None, false);
                }
            }
            ObjectEvent::NodeRemoved { node, ids } => {
                let name = self.node_name(node);
                for id in ids {
                    if self.object_dir.dir.remove(id, node, &name) {
                        tracing::warn!(object = %id, node = %name, "object lost: its last holder removed it");
                    }
                }
            }
            ObjectEvent::NodeStats { node, stats } => self.node_store_stats(node, stats),
            ObjectEvent::Locate { ids, reply } => {
                let located = ids.into_iter().map(|id| self.locate(id)).collect();
                let _ = reply.send(Ok(located));
            }
            ObjectEvent::Place { size, reply } => {
                let _ = reply.send(self.place(size));
            }
            ObjectEvent::List { node, reply } => {
                let (page, _) = self.object_dir.dir.list(node, 0, usize::MAX);
                let _ = reply.send(Ok(page.into_iter().map(object_info).collect()));
            }
            ObjectEvent::Delete { ids, reply } => {
                self.delete_objects(&ids);
                let _ = reply.send(Ok(()));
            }
            ObjectEvent::Rerun { key, object, found } => self.rerun(key, object, found),
            ObjectEvent::AccessRevoked { fingerprints } => {
                self.object_dir.revoked_certs = fingerprints;
                for link in self.nodes.values() {
                    let _ = link.tx.send(Ok(self.access_revoked()));
                }
            }
        }
    }

    fn access_revoked(&self) -> proto::NodeCommand {
        let cert_fingerprints = self.object_dir.revoked_certs.clone();
        let revoked = proto::AccessRevoked { cert_fingerprints };
        proto::NodeCommand {
            msg: Some(node_command::Msg::AccessRevoked(revoked)),
        }
    }

    /// A node joined (its NodeRegistered sent on `tx`): remember where its object server
    /// is, and tell it which node certificates are revoked (a node starts knowing none).
    pub(super) fn object_node_joined(
        &mut self,
        node: NodeId,
        name: &str,
        address: &str,
        tx: &super::NodeTx,
    ) {
        if !self.object_dir.revoked_certs.is_empty() {
            let _ = tx.send(Ok(self.access_revoked()));
        }
        self.object_dir.nodes.insert(
            node,
            NodeStore {
                name: name.to_string(),
                address: address.to_string(),
                stats: StoreStats::default(),
            },
        );
    }

    /// A node is gone for good (its stream ended, it was revoked or missed its heartbeats):
    /// what it held goes with it. Objects left without a holder are lost, naming the node;
    /// task results among them are rebuilt by running their task again.
    pub(super) fn object_node_lost(&mut self, node: NodeId) {
        let name = self.node_name(node);
        self.object_dir.nodes.remove(&node);
        let loss = self.object_dir.dir.node_lost(node, &name);
        if !loss.lost.is_empty() {
            tracing::warn!(node = %name, lost = loss.lost.len(), "objects lost with their node");
        }
        for (object, key) in loss.rebuild {
            self.rebuild(object, key, &name);
        }
        for (object, task) in loss.orphans {
            self.rebuild_orphan(object, task, &name);
        }
    }

    /// Delete every object `client` made (its lease ran out).
    pub(super) fn delete_client_objects(&mut self, client: ClientId) {
        let tell = self.object_dir.dir.delete_owner(client);
        let n: usize = tell.values().map(Vec::len).sum();
        if n > 0 {
            tracing::info!(%client, copies = n, "deleting the objects of a client that is gone");
        }
        self.tell_delete(tell);
    }

    /// Store statistics, and their counters into the daemon's.
    fn node_store_stats(&mut self, node: NodeId, stats: StoreStats) {
        let Some(n) = self.object_dir.nodes.get_mut(&node) else {
            return;
        };
        let before = n.stats;
        n.stats = stats;
        // A node's counters start again at 0 when it restarts.
        let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
        let m = &self.metrics;
        m.object_transfers
            .increment(delta(stats.transfers_total, before.transfers_total));
        m.object_transferred_bytes
            .increment(delta(stats.transferred_bytes, before.transferred_bytes));
        m.object_spilled_bytes
            .increment(delta(stats.spilled_total_bytes, before.spilled_total_bytes));
    }

    fn objects_created(&mut self, conn: u64, node: NodeId, objects: &[(ObjectId, u64)]) {
        let client = self.conn_client.get(&conn).copied().unwrap_or(0);
        for &(id, size) in objects {
            // A client announces only its own objects (their ids carry its client id).
            if id.owner().0 != client || client == 0 {
                tracing::warn!(conn, client, object = %id, "an announced object of another client ignored");
                continue;
            }
            if !self.object_dir.nodes.contains_key(&node) {
                tracing::warn!(conn, object = %id, %node, "an object announced on a node that is not connected ignored");
                continue;
            }
            self.object_added(id, size, node, None, true);
        }
    }

    /// Record which objects the announced ones hold refs to; only for objects announced
    /// in the same message (a client names the contents of its own new objects only).
    fn objects_nested(
        &mut self,
        conn: u64,
        objects: &[(ObjectId, u64)],
        nested: Vec<(ObjectId, Vec<ObjectId>)>,
    ) {
        for (container, contains) in nested {
            let client = self.conn_client.get(&conn).copied().unwrap_or(0);
            if container.owner().0 != client || !objects.iter().any(|(id, _)| *id == container) {
                tracing::warn!(conn, object = %container, "refs nested in an object not announced with them ignored");
                continue;
            }
            self.object_dir.dir.contains(container, &contains);
        }
    }

    /// Record a holder; `primary` when its creator announces it.
    pub(super) fn object_added(
        &mut self,
        id: ObjectId,
        size: u64,
        node: NodeId,
        producer: Option<TaskKey>,
        primary: bool,
    ) {
        let dir = &mut self.object_dir.dir;
        let added = if primary {
            dir.add_primary(id, size, node, producer)
        } else {
            dir.add(id, size, node, producer)
        };
        if added == Added::Deleted {
            // Stored while its delete was on its way: delete this copy too.
            let mut tell = std::collections::BTreeMap::new();
            tell.insert(node, vec![id]);
            self.tell_delete(tell);
        }
    }

    fn delete_objects(&mut self, ids: &[ObjectId]) {
        for id in ids {
            self.object_dir.reruns.remove(id);
        }
        let tell = self.object_dir.dir.delete(ids);
        self.tell_delete(tell);
    }

    pub(super) fn tell_delete(&mut self, tell: std::collections::BTreeMap<NodeId, Vec<ObjectId>>) {
        // Every delete passes here: the tasks of deleted results drop their kept inputs.
        let released = self.object_dir.dir.take_released_tasks();
        if !released.is_empty() {
            let ops = released.into_iter().map(|key| WriteOp::DropInput { key });
            self.store.write_only(ops.collect());
        }
        for (node, ids) in tell {
            let cmd = node_command::Msg::DeleteObjects(proto::ObjectRefs {
                object_ids: ids.into_iter().map(|i| i.0).collect(),
            });
            if let Some(link) = self.nodes.get(&node) {
                let _ = link.tx.send(Ok(proto::NodeCommand { msg: Some(cmd) }));
            }
        }
    }

    pub(super) fn node_name(&self, node: NodeId) -> String {
        self.object_dir
            .nodes
            .get(&node)
            .map(|s| s.name.clone())
            .or_else(|| self.nodes.get(&node).map(|l| l.name.clone()))
            .unwrap_or_else(|| node.to_string())
    }
}
