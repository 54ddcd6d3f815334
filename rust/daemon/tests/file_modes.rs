//! File modes of the head's state with a real `flame-daemon` started under umask 0: the state
//! dir and objects dir are 0700, every file in them 0600 (the database with its -wal and
//! -shm, the lock, the object token, objects); an existing state dir that is too open is
//! tightened with a warning naming it, one owned by another user is refused naming its
//! owner; and `GetObject` refuses an object file another user owns or others can write.
//!
//! The umask is set in the daemon's process only (`pre_exec`): it is process-wide, and the
//! test harness runs tests on threads of one process.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::FlameError;

mod common;

/// The uid of `nobody`, which owns what "another user" owns in these tests.
const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    flame_core::private_files::euid() == 0
}

/// A daemon process, killed if a failing test drops it still running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `flame-daemon head` on `dir` with umask 0.
fn spawn_head(dir: &Path) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flame-daemon"));
    cmd.args(["head", "--port", "0", "--no-http", "--state-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: umask is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    Daemon(cmd.spawn().unwrap())
}

/// Its announced address, or its exit code and stderr if it exits instead.
fn address_of(daemon: &mut Daemon) -> Result<String, (Option<i32>, String)> {
    let mut line = String::new();
    BufReader::new(daemon.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if let Some(a) = line.trim().strip_prefix("flame-daemon listening on ") {
        return Ok(a.to_string());
    }
    // stdout closed: it is exiting; bounded wait for its code.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut err = String::new();
            daemon
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Err((status.code(), err));
        }
        assert!(
            Instant::now() < deadline,
            "flame-daemon neither listened nor exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything it wrote to stderr, once killed.
fn stderr_of(mut daemon: Daemon) -> String {
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    let mut err = String::new();
    if let Some(mut pipe) = daemon.0.stderr.take() {
        pipe.read_to_string(&mut err).unwrap();
    }
    err
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// Put one object through the head's object RPC; its id.
async fn put_object(client: &Client) -> flame_core::ids::ObjectId {
    let id = client.next_object_id().unwrap();
    let data = vec![Bytes::from_static(b"the users' data")];
    client.objects().put(id, data).await.unwrap();
    id
}

#[test]
fn a_fresh_state_dir_and_its_files_are_private_under_umask_0() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new").join("state");
    let mut daemon = spawn_head(&dir);
    let address = address_of(&mut daemon).expect("head starts");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let object = rt.block_on(async {
        let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin.token");
        let creds = flame_core::client::Credentials::with_token(token.trim().to_string());
        let client = Client::connect(&address, &creds, Duration::from_secs(5), "modes-test")
            .await
            .unwrap();
        put_object(&client).await
    });
    let objects = dir.join("objects");
    for d in [parent.path().join("new"), dir.clone(), objects.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let files = [
        dir.join("flame.db"),
        dir.join("flame.db-wal"),
        dir.join("flame.db-shm"),
        dir.join("flame.lock"),
        objects.join("token"),
        objects.join(format!("{:016x}", object.0)),
    ];
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // And whatever else the head keeps there (credentials, certificates...): the same.
    for (path, is_dir) in tree(&dir) {
        let expected = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
}

/// Every entry under `dir`, recursively, and whether it is a directory.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, bool)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let is_dir = std::fs::symlink_metadata(&path).unwrap().is_dir();
        if is_dir {
            all.extend(tree(&path));
        }
        all.push((path, is_dir));
    }
    all
}

#[test]
fn an_open_state_dir_is_tightened_with_a_warning_and_a_foreign_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = spawn_head(dir.path());
    address_of(&mut daemon).expect("head starts");
    assert_eq!(mode(dir.path()), 0o700);
    let err = stderr_of(daemon);
    assert!(
        err.contains("could be read by other users (mode 755)"),
        "{err}"
    );
    assert!(err.contains(&dir.path().display().to_string()), "{err}");

    if !running_as_root() {
        eprintln!("not root: cannot chown to another user, the foreign-owner case is skipped");
        return;
    }
    let foreign = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(foreign.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let mut daemon = spawn_head(foreign.path());
    let (code, err) = address_of(&mut daemon).expect_err("a foreign state dir is refused");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&foreign.path().display().to_string()), "{err}");
    assert!(err.contains(&format!("belongs to uid {NOBODY}")), "{err}");
    assert!(
        std::fs::read_dir(foreign.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_object_refuses_a_file_another_user_owns_or_others_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::head_config(dir.path(), Default::default());
    let head = flame_daemon::server::Head::start(config).await.unwrap();
    let creds = common::admin(&head);
    let client = Client::connect(&head.address, &creds, Duration::from_secs(5), "modes-test")
        .await
        .unwrap();
    let objects = Path::new(client.object_dir().0).to_path_buf();
    let file_of = |id: flame_core::ids::ObjectId| objects.join(format!("{:016x}", id.0));
    let ours = flame_core::private_files::euid();

    // Writable by others: whoever could write it may have changed the pickle in it.
    let writable = put_object(&client).await;
    std::fs::set_permissions(file_of(writable), std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = client.objects().get(writable).await.unwrap_err();
    assert!(matches!(err, FlameError::FailedPrecondition(_)), "{err}");
    let m = err.to_string();
    assert!(m.contains(&format!("{:#x}", writable.0)), "{m}");
    assert!(m.contains(&file_of(writable).display().to_string()), "{m}");
    assert!(
        m.contains("can be written by other users (mode 666)"),
        "{m}"
    );

    // A symbolic link in the object's place is not followed.
    let linked = put_object(&client).await;
    let target = dir.path().join("elsewhere");
    std::fs::rename(file_of(linked), &target).unwrap();
    std::os::unix::fs::symlink(&target, file_of(linked)).unwrap();
    let m = client.objects().get(linked).await.unwrap_err().to_string();
    assert!(m.contains("is a symbolic link"), "{m}");

    if running_as_root() {
        let foreign = put_object(&client).await;
        std::os::unix::fs::chown(file_of(foreign), Some(NOBODY), None).unwrap();
        let err = client.objects().get(foreign).await.unwrap_err();
        assert!(matches!(err, FlameError::FailedPrecondition(_)), "{err}");
        let m = err.to_string();
        assert!(m.contains(&file_of(foreign).display().to_string()), "{m}");
        assert!(
            m.contains(&format!("belongs to uid {NOBODY}, not to uid {ours}")),
            "{m}"
        );
    } else {
        eprintln!("not root: cannot chown to another user, the foreign-owner case is skipped");
    }

    // Ours and private: still read.
    let fine = put_object(&client).await;
    assert_eq!(
        client.objects().get(fine).await.unwrap(),
        b"the users' data"
    );
    head.stop().await;
}
