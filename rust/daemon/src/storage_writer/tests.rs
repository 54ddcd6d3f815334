//! The writer against the real SQLite engine on a real full disk: a small tmpfs mounted for
//! the test (tests run as root; without the right to mount, the test says so and passes).
//! A commit that fails for lack of space is kept and retried, its callback runs only once
//! the data is stored, and `failure()` names the file and the cause meanwhile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

use flame_core::ids::{SessionId, TaskId};
use flame_core::model::{SessionRecord, SessionSpec, SessionState};
use flame_core::storage::{NewTask, SqliteStorage, Storage, WriteOp};

use super::StorageWriter;

/// A tmpfs of `size` mounted on a temp dir, unmounted (even on a panic) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fill the file system at `dir` with one file until a write fails; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![7u8; 4096];
    while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    path
}

fn session(id: u64) -> SessionRecord {
    SessionRecord {
        id: SessionId(id),
        spec: SessionSpec {
            application: "echo".into(),
            ..Default::default()
        },
        state: SessionState::Open,
        created_ms: 1,
        closed_ms: None,
    }
}

/// A batch of tasks with `n` inputs of 64 KiB each.
fn tasks(session: u64, first: u64, n: u64) -> WriteOp {
    WriteOp::InsertTasks {
        session: SessionId(session),
        tasks: (first..first + n)
            .map(|t| NewTask {
                id: TaskId(t),
                input: Bytes::from(vec![1u8; 64 << 10]),
            })
            .collect(),
        created_ms: 1,
    }
}

#[test]
fn a_commit_that_fails_for_lack_of_space_is_retried_until_stored() {
    let Some(fs) = Tmpfs::mount("2m") else {
        eprintln!("SKIPPED: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let db = fs.path().join("flame.db");
    let storage = SqliteStorage::open(&db).expect("open");
    let (writer, thread) = StorageWriter::start(Box::new(storage), None);
    let (tx, rx) = mpsc::channel();
    let done = tx.clone();
    writer.write(vec![WriteOp::PutSession(session(1))], move |r| {
        let _ = done.send(r.is_ok());
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    assert_eq!(writer.failure(), None);

    let filler = fill(fs.path());
    writer.write(vec![tasks(1, 0, 8)], move |r| {
        let _ = tx.send(r.is_ok());
    });
    // Not reported while the disk is full: the callback waits (a deadline, not a sleep).
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(2)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "a write was reported done on a full disk"
    );
    let cause = writer.failure().expect("the failure is visible");
    assert!(cause.contains(&db.display().to_string()), "{cause}");
    assert!(cause.contains("full"), "{cause}");

    std::fs::remove_file(&filler).expect("free the space");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)),
        Ok(true),
        "the retried commit succeeds once space returns"
    );
    assert_eq!(writer.failure(), None);
    drop(writer);
    thread.join().expect("storage thread");

    // The ops were kept, not dropped: all eight tasks are in the file.
    let mut reopened = SqliteStorage::open(&db).expect("reopen");
    let snap = reopened.load().expect("load");
    assert_eq!(snap.tasks.len(), 8);
}

#[test]
fn a_stopping_writer_gives_up_and_reports_the_error() {
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("SKIPPED: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let db = fs.path().join("flame.db");
    let storage = SqliteStorage::open(&db).expect("open");
    let (writer, thread) = StorageWriter::start(Box::new(storage), None);
    writer.write_only(vec![WriteOp::PutSession(session(1))]);
    let _filler = fill(fs.path());
    let (tx, rx) = mpsc::channel();
    writer.write(vec![tasks(1, 0, 8)], move |r| {
        let _ = tx.send(r.is_ok());
    });
    drop(writer);
    // Nobody can queue more: after GIVE_UP_AFTER the callback hears the failure.
    let r = rx.recv_timeout(super::GIVE_UP_AFTER + Duration::from_secs(10));
    assert_eq!(r, Ok(false));
    thread.join().expect("storage thread");
}
