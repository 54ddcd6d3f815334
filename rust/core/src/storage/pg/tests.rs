//! PostgreSQL-only tests of [`PgStorage`]: what makes a database unusable is a clear error at
//! open (a malformed URL, a newer schema, someone else's tables), and two heads opening one
//! new database at once both end up on the one schema. The trait's contract is in
//! `storage/conformance.rs`. Skip, saying why, where no test server can run.

use std::sync::Arc;

use super::PgStorage;
use crate::error::FlameError;
use crate::storage::pg_test_server::PgServer;
use crate::storage::Storage;

fn database() -> Option<(Arc<PgServer>, String)> {
    match PgServer::shared() {
        Ok(s) => {
            let url = s.fresh_database().unwrap();
            Some((s, url))
        }
        Err(why) => {
            eprintln!("skipped: no PostgreSQL test server: {why}");
            None
        }
    }
}

fn exec(url: &str, sql: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(sql).unwrap();
}

#[test]
fn malformed_urls_are_named() {
    for (url, says) in [
        ("sqlite:///tmp/x", "must start with postgres://"),
        (
            "postgres://flame@127.0.0.1:notaport/db",
            "invalid state URL",
        ),
    ] {
        let e = PgStorage::open(url).unwrap_err();
        assert!(matches!(e, FlameError::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains(says), "{url}: {e}");
    }
}

#[test]
fn a_newer_schema_is_refused_naming_the_database() {
    let Some((_server, url)) = database() else {
        return;
    };
    drop(PgStorage::open(&url).unwrap());
    exec(&url, "UPDATE schema_version SET version = 99");
    let e = PgStorage::open(&url).unwrap_err().to_string();
    assert!(e.contains("schema version 99 is newer"), "{e}");
    assert!(
        e.contains("PostgreSQL database t"),
        "names the database: {e}"
    );
}

#[test]
fn a_database_with_foreign_tables_is_refused() {
    let Some((_server, url)) = database() else {
        return;
    };
    exec(&url, "CREATE TABLE tasks (x INT)");
    let e = PgStorage::open(&url).unwrap_err().to_string();
    assert!(e.contains("no Flame schema version"), "{e}");
}

#[test]
fn two_heads_creating_one_schema_at_once_share_it() {
    let Some((_server, url)) = database() else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                PgStorage::open(&url).map(|mut db| db.load().unwrap().identity)
            })
        })
        .collect();
    let ids: Vec<String> = opens
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one identity: {ids:?}"
    );
}

#[test]
fn commits_wait_for_the_server_not_its_disk_unless_the_url_says() {
    let Some((_server, url)) = database() else {
        return;
    };
    let setting = |url: &str| -> String {
        let mut db = PgStorage::open(url).unwrap();
        db.client
            .query_one("SHOW synchronous_commit", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(setting(&url), "off");
    let strict = format!("{url}?options=-c%20synchronous_commit%3Don");
    assert_eq!(setting(&strict), "on");
}
