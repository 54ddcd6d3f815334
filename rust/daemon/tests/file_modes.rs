//! File modes of the head's state with a real `flame-daemon` started under umask 0: the state
//! dir is 0700, every file in it 0600 (the database with its -wal and -shm, the lock,
//! credentials), and it holds no objects (they live on the nodes; a node's refusal of an
//! unsafe object file is in `object_transfer.rs`); an existing state dir that is too open
//! is tightened with a warning naming it, one owned by another user is refused naming its
//! owner.
//!
//! The umask is set in the daemon's process only (`pre_exec`): it is process-wide, and the
//! test harness runs tests on threads of one process.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flame_core::client::Client;

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

#[test]
fn a_fresh_state_dir_and_its_files_are_private_under_umask_0() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new").join("state");
    let mut daemon = spawn_head(&dir);
    let address = address_of(&mut daemon).expect("head starts");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin.token");
        let creds = flame_core::client::Credentials::with_token(token.trim().to_string());
        Client::connect(&address, &creds, Duration::from_secs(5), "modes-test")
            .await
            .unwrap();
    });
    for d in [parent.path().join("new"), dir.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    // The head stores no objects of its own (#12).
    assert!(
        !dir.join("objects").exists(),
        "the head made an objects dir"
    );
    let files = [
        dir.join("flame.db"),
        dir.join("flame.db-wal"),
        dir.join("flame.db-shm"),
        dir.join("flame.lock"),
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
