//! [`PgStorage`]: the [`Storage`] engine on a PostgreSQL database (`--state-url`, #13), for
//! state that must outlive the head's machine and be shared with a standby head.
//!
//! The sync `postgres` client, not `tokio-postgres` directly: the trait is synchronous and
//! runs on the storage writer's own thread, and the sync client is exactly tokio-postgres
//! driven by a private current-thread runtime — so the daemon's runtime is never blocked
//! and no second async layer is needed. It must therefore never be called from a thread
//! that is inside a tokio runtime (opening it from async code goes through a plain thread:
//! [`crate::storage::open_state`]).
//!
//! No TLS (`NoTls`): the URL must name a server reached over a trusted network (loopback,
//! a private link, a Kubernetes pod network). Schema in `pg/schema.rs`, per-op SQL in
//! `pg/write.rs`, reads and row decoding in `pg/read.rs`.

mod leader;
mod read;
mod schema;
mod write;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

pub use self::leader::{Epoch, LeaderInfo, PgLeadership};
pub use self::read::PgReader;
use super::{Snapshot, Storage, WriteOp};
use crate::error::{FlameError, Result};
use crate::ids::{SessionId, TaskKey};
use crate::model::{SessionRecord, TaskCounts, TaskRecord, TaskState};
use crate::view::TaskView;

/// How long connecting may take when the URL does not say (`connect_timeout`): a head that
/// cannot reach its database says so at start instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed PostgreSQL call as a storage error, with the server's own message when it sent one.
pub(crate) fn pg_err(e: postgres::Error) -> FlameError {
    match e.as_db_error() {
        Some(db) => FlameError::Storage(format!(
            "PostgreSQL: {} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        )),
        None => FlameError::Storage(format!("PostgreSQL: {e}")),
    }
}

/// Parse a `postgres://` URL (or key=value string) and say where it points, without the
/// password, for messages.
///
/// # Errors
/// `FlameError::InvalidArgument` naming what is wrong with the URL.
pub fn parse_url(url: &str) -> Result<(Config, String)> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(FlameError::InvalidArgument(format!(
            "state URL must start with postgres:// (e.g. postgres://flame@db.example:5432/flame), \
             got '{}'",
            url.split('@').next_back().unwrap_or(url)
        )));
    }
    let mut cfg = Config::from_str(url)
        .map_err(|e| FlameError::InvalidArgument(format!("invalid state URL: {e}")))?;
    if cfg.get_hosts().is_empty() {
        return Err(FlameError::InvalidArgument(
            "invalid state URL: it names no host".into(),
        ));
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    cfg.application_name("flame-daemon");
    if cfg.get_options().is_none() {
        // The same durability as the SQLite engine's default (WAL, synchronous=NORMAL): a
        // commit survives a crash of the head at once (it is in the server's memory), and
        // the server flushes it within a fraction of a second; only a crash of the database
        // server itself can lose that last fraction. Waiting for a disk flush per group
        // commit would cost ~5x throughput. `options=-c synchronous_commit=on` in the URL
        // (any `options` given) restores the server's own setting.
        cfg.options("-c synchronous_commit=off");
    }
    let host = match &cfg.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg
        .get_dbname()
        .or(cfg.get_user())
        .unwrap_or("postgres")
        .to_string();
    Ok((cfg, format!("PostgreSQL database {db} at {host}:{port}")))
}

/// Connect to `url`; the second value names the database for messages.
pub(crate) fn connect(url: &str) -> Result<(PgClient, String)> {
    let (cfg, place) = parse_url(url)?;
    let client = cfg
        .connect(NoTls)
        .map_err(|e| FlameError::Storage(format!("cannot connect to {place}: {e}")))?;
    Ok((PgClient(Some(client)), place))
}

/// The sync client, dropped safely anywhere: its drop blocks on its private runtime (to say
/// goodbye to the server), which panics on a thread that drives a tokio runtime — and the
/// daemon drops its readers and, after a failed start, its storage from async code. There
/// the drop moves to a plain thread.
pub(crate) struct PgClient(Option<Client>);

impl std::ops::Deref for PgClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(c)).join();
            } else {
                drop(c);
            }
        }
    }
}

/// Durable storage in PostgreSQL: one connection, used by the storage writer's thread.
pub struct PgStorage {
    client: PgClient,
    /// The next `tasks.seq`, mirroring the `counters` row (rewritten by inserting batches).
    next_seq: i64,
    identity: String,
    place: String,
    /// Set by [`PgStorage::fence`]: every write first checks the leader row holds it.
    epoch: Option<Epoch>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("place", &self.place)
            .finish()
    }
}

impl PgStorage {
    /// Connect to the database at `url`, creating or migrating the schema.
    ///
    /// # Errors
    /// `FlameError::InvalidArgument` for a malformed URL; `FlameError::Storage` naming the
    /// database when it cannot be reached, or has a schema this build does not know.
    pub fn open(url: &str) -> Result<Self> {
        let (mut client, place) = connect(url)?;
        let named = |e: FlameError| match e {
            FlameError::Storage(m) => FlameError::Storage(format!("{place}: {m}")),
            other => other,
        };
        schema::migrate(&mut client).map_err(named)?;
        let (identity, next_seq) = schema::read_identity_and_seq(&mut client).map_err(named)?;
        Ok(Self {
            client,
            next_seq,
            identity,
            place,
            epoch: None,
        })
    }

    /// Write only while `epoch` leads (see `pg/leader.rs`): from now on a batch fails,
    /// writing nothing, once another head has taken the lease.
    pub fn fence(&mut self, epoch: Epoch) {
        self.epoch = Some(epoch);
    }

    /// The state's identity: a random UUID made with the schema.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Run `f` here, or on a scoped plain thread when this thread drives a tokio runtime
    /// (the session manager loads its snapshot from async code): the sync client would
    /// panic there.
    fn off_runtime<T: Send>(&mut self, f: impl FnOnce(&mut Self) -> Result<T> + Send) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_err() {
            return f(self);
        }
        std::thread::scope(|s| {
            s.spawn(|| f(self))
                .join()
                .unwrap_or_else(|_| Err(FlameError::Internal("a PostgreSQL call panicked".into())))
        })
    }

    fn commit_ops<'a>(&mut self, ops: impl Iterator<Item = &'a WriteOp>) -> Result<()> {
        let mut ops = ops.peekable();
        if ops.peek().is_none() {
            return Ok(());
        }
        // Dropping `tx` on any error rolls the whole batch back.
        let mut tx = self.client.transaction().map_err(pg_err)?;
        if let Some(epoch) = self.epoch {
            leader::check_epoch(&mut tx, epoch)?;
        }
        let mut seq = self.next_seq;
        write::apply_ops(&mut tx, ops, &mut seq)?;
        if seq != self.next_seq {
            write::store_next_seq(&mut tx, seq)?;
        }
        tx.commit().map_err(pg_err)?;
        self.next_seq = seq;
        Ok(())
    }
}

impl PgStorage {
    /// [`Storage::load`] on this thread.
    fn load_now(&mut self) -> Result<Snapshot> {
        let mut tx = self.client.transaction().map_err(pg_err)?;
        if let Some(epoch) = self.epoch {
            leader::check_epoch(&mut tx, epoch)?;
        }
        let unfinished = schema::unfinished();
        tx.execute(
            &format!("UPDATE tasks SET state = $1 WHERE {unfinished} AND state = $2"),
            &[
                &i64::from(TaskState::Pending.as_i32()),
                &i64::from(TaskState::Running.as_i32()),
            ],
        )
        .map_err(pg_err)?;
        let mut snap = Snapshot::default();
        let sql = format!(
            "SELECT {} FROM applications ORDER BY name",
            read::APPLICATION_COLS
        );
        for row in tx.query(&sql, &[]).map_err(pg_err)? {
            snap.applications.push(read::application(&row)?);
        }
        let sql = format!(
            "SELECT {} FROM sessions WHERE state = 'open' ORDER BY id",
            read::SESSION_COLS
        );
        for row in tx.query(&sql, &[]).map_err(pg_err)? {
            let s = read::session(&row)?;
            snap.counts.insert(s.id, TaskCounts::default());
            snap.sessions.push(s);
        }
        let rows = tx
            .query(
                "SELECT t.session_id, t.state, COUNT(*) FROM sessions AS s \
                 JOIN tasks AS t ON t.session_id = s.id WHERE s.state = 'open' \
                 GROUP BY t.session_id, t.state",
                &[],
            )
            .map_err(pg_err)?;
        for row in &rows {
            let id = SessionId(row.try_get::<_, i64>(0).map_err(pg_err)? as u64);
            read::add_count(snap.counts.entry(id).or_default(), id, row)?;
        }
        let sql = format!(
            "SELECT t.session_id, t.task_id, t.attempts, t.created_ms, t.input \
             FROM tasks AS t JOIN sessions AS s ON s.id = t.session_id \
             WHERE t.{unfinished} AND s.state = 'open' ORDER BY t.seq"
        );
        for row in tx.query(&sql, &[]).map_err(pg_err)? {
            snap.tasks.push(read::unfinished_task(&row)?);
        }
        for row in tx
            .query("SELECT key, value FROM meta", &[])
            .map_err(pg_err)?
        {
            let key: String = row.try_get(0).map_err(pg_err)?;
            let value: i64 = row.try_get(1).map_err(pg_err)?;
            snap.meta.insert(key, value as u64);
        }
        tx.commit().map_err(pg_err)?;
        snap.identity = self.identity.clone();
        Ok(snap)
    }
}

impl Storage for PgStorage {
    fn location(&self) -> String {
        self.place.clone()
    }

    /// Also rewrites every `running` row to `pending`, as on SQLite.
    fn load(&mut self) -> Result<Snapshot> {
        self.off_runtime(Self::load_now)
    }

    fn apply(&mut self, ops: &[WriteOp]) -> Result<()> {
        self.off_runtime(|db| db.commit_ops(ops.iter()))
    }

    fn apply_all(&mut self, batches: &[Vec<WriteOp>]) -> Result<()> {
        self.off_runtime(|db| db.commit_ops(batches.iter().flatten()))
    }

    fn get_task(&mut self, key: TaskKey) -> Result<Option<TaskRecord>> {
        read::get_task(&mut *self.client, key)
    }

    fn get_task_log(&mut self, key: TaskKey) -> Result<Option<String>> {
        read::task_log(&mut *self.client, key)
    }

    fn get_session(&mut self, id: SessionId) -> Result<Option<(SessionRecord, TaskCounts)>> {
        read::get_session(&mut *self.client, id)
    }

    fn list_sessions(&mut self, limit: usize) -> Result<Vec<(SessionRecord, TaskCounts)>> {
        read::list_sessions(&mut *self.client, limit, &HashSet::new())
    }

    fn get_task_view(&mut self, key: TaskKey) -> Result<Option<TaskView>> {
        read::get_task_view(&mut *self.client, key)
    }

    fn list_task_views(
        &mut self,
        session: SessionId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TaskView>> {
        read::list_task_views(&mut *self.client, session, state, limit, offset)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_leader;
