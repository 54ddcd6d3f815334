//! The state file as a whole: its identity (made once, kept by reopening, new for any other
//! file), a file deleted or replaced under an open storage (refused at the next commit, with
//! the path named), and a damaged file (refused at open, named, with what to do about it).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::SqliteStorage;
use crate::error::FlameError;
use crate::storage::{Storage, WriteOp};

fn meta(value: u64) -> WriteOp {
    WriteOp::SetMeta {
        key: "next_session_id".into(),
        value,
    }
}

fn unusable(e: FlameError) -> String {
    match e {
        FlameError::StateFileUnusable(m) => m,
        other => panic!("expected StateFileUnusable, got {other:?}"),
    }
}

#[test]
fn identity_is_kept_by_the_file_and_differs_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    let first = SqliteStorage::open(&path).unwrap().identity().to_string();
    assert_eq!(first.len(), 36, "a UUID: {first}");
    let mut again = SqliteStorage::open(&path).unwrap();
    assert_eq!(again.identity(), first);
    assert_eq!(again.load().unwrap().identity, first);
    drop(again);

    // The same path after the file was deleted is another state.
    std::fs::remove_file(&path).unwrap();
    let fresh = SqliteStorage::open(&path).unwrap();
    assert_ne!(fresh.identity(), first);
    assert_ne!(
        SqliteStorage::open_in_memory().unwrap().identity(),
        SqliteStorage::open_in_memory().unwrap().identity()
    );
}

#[test]
fn a_deleted_state_file_refuses_the_next_commit_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    let mut db = SqliteStorage::open(&path).unwrap();
    db.apply(&[meta(2)]).unwrap();
    std::fs::remove_file(&path).unwrap();
    let m = unusable(db.apply(&[meta(3)]).unwrap_err());
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("was deleted"), "{m}");
}

#[test]
fn a_replaced_state_file_refuses_the_next_commit_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    let other = dir.path().join("other.db");
    let mut db = SqliteStorage::open(&path).unwrap();
    drop(SqliteStorage::open(&other).unwrap());
    std::fs::rename(&other, &path).unwrap();
    let m = unusable(db.apply(&[meta(3)]).unwrap_err());
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("was replaced"), "{m}");
}

fn assert_explains(path: &Path, e: FlameError) {
    let m = unusable(e);
    let p = path.display().to_string();
    assert!(m.contains(&format!("state database {p}")), "{m}");
    assert!(m.contains("Move it aside"), "{m}");
    assert!(m.contains("never deletes it"), "{m}");
}

#[test]
fn a_file_of_garbage_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    std::fs::write(&path, vec![0xA5u8; 64 << 10]).unwrap();
    let e = SqliteStorage::open(&path).unwrap_err();
    assert!(e.to_string().contains("not a database"), "{e}");
    assert_explains(&path, e);
    assert!(path.exists(), "the damaged file is left where it was");
}

#[test]
fn a_database_with_damaged_pages_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flame.db");
    {
        let mut db = SqliteStorage::open(&path).unwrap();
        db.apply(&[meta(2)]).unwrap();
        // Fold the WAL into the file so that the pages overwritten below are the real ones.
        db.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    // Keep the 100-byte header (a valid SQLite file), ruin every page after the first.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&vec![0x5Au8; (len - 4096) as usize]).unwrap();
    drop(f);
    let e = SqliteStorage::open(&path)
        .and_then(|mut db| db.load().map(|_| ()))
        .unwrap_err();
    assert!(e.to_string().contains("malformed"), "{e}");
    assert_explains(&path, e);
}
