//! Leadership of heads sharing one PostgreSQL database (#13): a lease in the `leader` row,
//! with an epoch that grows by one at every change of leader, and fencing of writes by it.
//!
//! - [`PgLeadership`] (a connection of its own, beside the writer's) acquires the lease when
//!   it is free or expired, renews it while it is held, and tells when it was lost. Times are
//!   the database server's (`clock_timestamp()`), so the heads' clocks never matter.
//! - A [`super::PgStorage`] given the epoch ([`super::PgStorage::fence`]) begins every write
//!   transaction by reading the `leader` row `FOR SHARE` and refuses to write when the epoch
//!   is no longer its own. The share lock is held to the commit, so a takeover (which updates
//!   that row) waits for a write already in flight, and every later write of the old head
//!   sees the new epoch: a head that lost leadership — paused, or cut off from the database
//!   past its lease — can never write again, whatever it believes.
//!
//! What a standby does with this (wait, take over, load, serve) is the daemon's business.

use std::time::Duration;

use super::{connect, pg_err, PgClient};
use crate::error::{FlameError, Result};

/// A leadership epoch: each leader's is larger than every earlier one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch(pub i64);

/// The leader row as seen now.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderInfo {
    pub holder: String,
    pub epoch: Epoch,
    /// Until the lease runs out (zero when it has).
    pub remaining: Duration,
}

/// One head's handle on the leadership lease.
pub struct PgLeadership {
    client: PgClient,
    /// This head's name in the `leader` row (e.g. its address), for the others to see.
    holder: String,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgLeadership {
    /// Connect to the database at `url` (whose schema a `PgStorage::open` has made) as
    /// `holder`. Call from a plain thread, not a tokio worker.
    ///
    /// # Errors
    /// As [`super::PgStorage::open`] for the URL and the connection.
    pub fn connect(url: &str, holder: &str) -> Result<Self> {
        let (client, _) = connect(url)?;
        Ok(Self {
            client,
            holder: holder.to_string(),
        })
    }

    /// Take the lease for `lease` if it is free or has run out: `Some(new epoch)`, or `None`
    /// while another head holds a live lease. Taking it again after losing it (or after
    /// a restart) is a new epoch too.
    ///
    /// # Errors
    /// `FlameError::Storage` when the database cannot be reached.
    pub fn acquire(&mut self, lease: Duration) -> Result<Option<Epoch>> {
        let row = self
            .client
            .query_opt(
                "UPDATE leader SET holder = $1, epoch = epoch + 1, \
                 expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
                 WHERE one = 1 AND expires_at < clock_timestamp() RETURNING epoch",
                &[&self.holder, &(millis(lease) as f64)],
            )
            .map_err(pg_err)?;
        row.map(|r| r.try_get(0).map(Epoch).map_err(pg_err))
            .transpose()
    }

    /// Extend the lease of `epoch` by `lease` from now: `false` when that epoch is no longer
    /// the leader's (another head took over) — this head must stop serving.
    ///
    /// # Errors
    /// `FlameError::Storage` when the database cannot be reached (the lease then runs out
    /// by itself; treat it as lost once its time is up).
    pub fn renew(&mut self, epoch: Epoch, lease: Duration) -> Result<bool> {
        let n = self
            .client
            .execute(
                "UPDATE leader SET expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
                 WHERE one = 1 AND epoch = $1",
                &[&epoch.0, &(millis(lease) as f64)],
            )
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    /// Give the lease up at once (a clean stop), if `epoch` still holds it.
    ///
    /// # Errors
    /// `FlameError::Storage` when the database cannot be reached.
    pub fn release(&mut self, epoch: Epoch) -> Result<()> {
        self.client
            .execute(
                "UPDATE leader SET expires_at = '-infinity' WHERE one = 1 AND epoch = $1",
                &[&epoch.0],
            )
            .map_err(pg_err)?;
        Ok(())
    }

    /// Who leads now, under which epoch, and for how much longer.
    ///
    /// # Errors
    /// `FlameError::Storage` when the database cannot be reached.
    pub fn current(&mut self) -> Result<LeaderInfo> {
        let row = self
            .client
            .query_one(
                "SELECT holder, epoch, GREATEST(0, EXTRACT(EPOCH FROM \
                 (expires_at - clock_timestamp())) * 1000)::FLOAT8 FROM leader WHERE one = 1",
                &[],
            )
            .map_err(pg_err)?;
        let ms: f64 = row.try_get(2).map_err(pg_err)?;
        Ok(LeaderInfo {
            holder: row.try_get(0).map_err(pg_err)?,
            epoch: Epoch(row.try_get(1).map_err(pg_err)?),
            remaining: Duration::from_secs_f64(ms.max(0.0) / 1000.0),
        })
    }
}

/// The fencing check, first in every write transaction of a fenced storage (see the module
/// doc for why `FOR SHARE`).
///
/// # Errors
/// `FlameError::StateFileUnusable` (the head must stop: no retry can help) when the leader
/// row's epoch is not `epoch`.
pub(super) fn check_epoch(tx: &mut postgres::Transaction<'_>, epoch: Epoch) -> Result<()> {
    let row = tx
        .query_one(
            "SELECT epoch, holder FROM leader WHERE one = 1 FOR SHARE",
            &[],
        )
        .map_err(pg_err)?;
    let now: i64 = row.try_get(0).map_err(pg_err)?;
    if now != epoch.0 {
        let holder: String = row.try_get(1).map_err(pg_err)?;
        return Err(FlameError::StateFileUnusable(format!(
            "this head lost leadership of the shared PostgreSQL state (its epoch {}, now \
             epoch {now} held by {holder}); it must not write any more and stops",
            epoch.0
        )));
    }
    Ok(())
}
