//! Leadership and fencing with two storage handles racing on one database (two heads): one
//! holds the lease and writes; the other cannot take a live lease; once the lease runs out
//! the other takes it under a new epoch, and from then on the old holder cannot renew and
//! none of its writes lands — while the new one's do.

use std::time::{Duration, Instant};

use super::{Epoch, PgLeadership, PgStorage};
use crate::error::FlameError;
use crate::ids::{SessionId, TaskId};
use crate::model::key;
use crate::storage::pg_test_server::PgServer;
use crate::storage::sqlite::tests::{insert, session};
use crate::storage::{Storage, WriteOp};

#[test]
fn a_head_that_lost_its_lease_can_never_write_again() {
    let server = match PgServer::shared() {
        Ok(s) => s,
        Err(why) => return eprintln!("skipped: no PostgreSQL test server: {why}"),
    };
    let url = server.fresh_database().unwrap();
    let (mut a_db, mut b_db) = (
        PgStorage::open(&url).unwrap(),
        PgStorage::open(&url).unwrap(),
    );
    let mut a = PgLeadership::connect(&url, "head-a").unwrap();
    let mut b = PgLeadership::connect(&url, "head-b").unwrap();

    let lease = Duration::from_millis(300);
    let ea = a.acquire(lease).unwrap().expect("a free lease is taken");
    assert_eq!(ea, Epoch(1));
    assert_eq!(b.acquire(lease).unwrap(), None, "a live lease is not taken");
    a_db.fence(ea);
    a_db.apply(&[WriteOp::PutSession(session(1, 0)), insert(1, [1])])
        .unwrap();
    assert!(a.renew(ea, lease).unwrap());

    // A stops renewing (paused, cut off); B takes over once the lease has run out.
    let deadline = Instant::now() + Duration::from_secs(10);
    let eb = loop {
        if let Some(e) = b.acquire(lease).unwrap() {
            break e;
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(eb, Epoch(2));
    b_db.fence(eb);
    let info = b.current().unwrap();
    assert_eq!((info.holder.as_str(), info.epoch), ("head-b", eb));

    // A wakes up: it cannot renew, and its writes are refused, writing nothing.
    assert!(!a.renew(ea, lease).unwrap(), "the old epoch cannot renew");
    let e = a_db.apply(&[insert(1, [2])]).unwrap_err();
    assert!(matches!(e, FlameError::StateFileUnusable(_)), "{e}");
    assert!(e.to_string().contains("lost leadership"), "{e}");
    assert!(e.to_string().contains("head-b"), "{e}");
    assert!(a_db.load().is_err(), "load writes too: fenced");
    assert_eq!(b_db.get_task(key(SessionId(1), TaskId(2))).unwrap(), None);

    // B writes and reads everything A wrote under its epoch.
    b_db.apply(&[insert(1, [3])]).unwrap();
    let snap = b_db.load().unwrap();
    let ids: Vec<_> = snap.tasks.iter().map(|t| t.key.task.0).collect();
    assert_eq!(ids, [1, 3]);
    // A clean stop gives the lease up at once: A takes it back under a third epoch.
    b.release(eb).unwrap();
    assert_eq!(a.acquire(lease).unwrap(), Some(Epoch(3)));
    assert!(b_db.apply(&[insert(1, [4])]).is_err(), "B is fenced now");
}

/// A write in flight when another head takes over either commits before the takeover or is
/// refused: the takeover waits for the writer's share lock on the leader row.
#[test]
fn a_takeover_waits_for_a_write_in_flight() {
    let server = match PgServer::shared() {
        Ok(s) => s,
        Err(why) => return eprintln!("skipped: no PostgreSQL test server: {why}"),
    };
    let url = server.fresh_database().unwrap();
    let mut a_db = PgStorage::open(&url).unwrap();
    let mut a = PgLeadership::connect(&url, "head-a").unwrap();
    let ea = a.acquire(Duration::from_millis(1)).unwrap().unwrap();
    a_db.fence(ea);
    a_db.apply(&[WriteOp::PutSession(session(1, 0))]).unwrap();
    // Hold A's write transaction open past its lease: its FOR SHARE lock is taken.
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = raw.transaction().unwrap();
    super::leader::check_epoch(&mut tx, ea).unwrap();
    tx.execute("INSERT INTO meta (key, value) VALUES ('in-flight', 1)", &[])
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let taker = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut b = PgLeadership::connect(&url, "head-b").unwrap();
            let started = Instant::now();
            let e = b.acquire(Duration::from_secs(30)).unwrap();
            (e, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !taker.is_finished(),
        "the takeover waits for the write in flight"
    );
    tx.commit().unwrap();
    let (eb, waited) = taker.join().unwrap();
    assert_eq!(eb, Some(Epoch(ea.0 + 1)));
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(
        a_db.apply(&[insert(1, [1])]).is_err(),
        "fenced after the takeover"
    );
}
