//! Identifier newtypes. Ids are plain `u64` on the wire; in Rust they are distinct types so a
//! session id can never be passed where a task id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A session: one service instance with its common data and its tasks.
    SessionId(u64), "ssn-"
);
id_type!(
    /// A task inside a session. High 32 bits: the submitting client; low 32 bits: its counter.
    TaskId(u64), "task-"
);
id_type!(
    /// An executor process, unique for the life of the session manager's state.
    ExecutorId(u64), "exe-"
);
id_type!(
    /// An executor-manager node registered with the session manager.
    NodeId(u64), "node-"
);
id_type!(
    /// A client connection identity, handed out by `Hello` and kept across reconnects.
    ClientId(u32), "client-"
);

/// A stored object (`flame.put`, a spilled task input, a large result). High 32 bits: the
/// client that made it (its owner); low 32 bits: that client's object counter. Shown in hex
/// (`0x300000001`), as every message about objects, Rust or Python, names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub u64);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl From<u64> for ObjectId {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl ObjectId {
    /// The bit that marks a task's result object (ids of puts keep it clear: n < 2^31).
    pub const RESULT_BIT: u64 = 1 << 31;

    /// The client that made this object; its objects go when its lease runs out.
    pub fn owner(self) -> ClientId {
        ClientId((self.0 >> 32) as u32)
    }

    /// The object a task's large result is stored as: owned by the task's client (so it goes
    /// with that client's lease), bit 31 set, then the task's counter (low 31 bits).
    pub fn result_of(task: TaskId) -> Self {
        Self((task.0 & !0xffff_ffff) | Self::RESULT_BIT | (task.0 & 0x7fff_ffff))
    }

    /// The task whose result this object is (lineage: re-run it to rebuild a lost copy);
    /// `None` for a put. Inverts [`ObjectId::result_of`] for task counters below 2^31.
    pub fn producer(self) -> Option<TaskId> {
        (self.0 & Self::RESULT_BIT != 0).then_some(TaskId(self.0 & !Self::RESULT_BIT))
    }
}

impl TaskId {
    /// Compose a task id from the submitting client and that client's counter.
    pub fn compose(client: ClientId, counter: u32) -> Self {
        Self(((client.0 as u64) << 32) | counter as u64)
    }

    /// The client that chose this id.
    pub fn client(self) -> ClientId {
        ClientId((self.0 >> 32) as u32)
    }
}

/// A task is only unique together with its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub session: SessionId,
    pub task: TaskId,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.session, self.task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_object_names_its_task_and_its_owner() {
        let task = TaskId::compose(ClientId(7), 42);
        let object = ObjectId::result_of(task);
        assert_eq!(object.owner(), ClientId(7));
        assert_eq!(object.producer(), Some(task));
        assert_eq!(object.0 & 0xffff_ffff, (1 << 31) | 42);
        // Puts keep bit 31 clear: they have no producer.
        assert_eq!(ObjectId((7u64 << 32) | 42).producer(), None);
        assert_eq!(ObjectId((7u64 << 32) | 0x7fff_ffff).producer(), None);
        // A result never collides with a put of the same client.
        assert_ne!(object, ObjectId((7u64 << 32) | 42));
    }

    #[test]
    fn task_id_round_trips_client() {
        let id = TaskId::compose(ClientId(7), 42);
        assert_eq!(id.client(), ClientId(7));
        assert_eq!(id.0 & 0xffff_ffff, 42);
        assert_eq!(id.to_string(), format!("task-{}", (7u64 << 32) | 42));
    }
}
