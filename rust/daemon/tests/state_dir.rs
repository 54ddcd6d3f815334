//! The state dir guarded, with real `flame-daemon` processes: a second daemon on the same
//! dir exits 1 naming the first one's pid; a state database deleted or damaged stops the
//! daemon with an error that names the file (and, when damaged, what to do about it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flame_core::client::Client;
use flame_core::model::SessionSpec;
use flame_core::proto;

fn daemon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flame-daemon"))
}

/// A daemon process, killed if a failing test drops it still running.
struct Daemon(Option<Child>);

impl Daemon {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
    fn take(mut self) -> Child {
        self.0.take().expect("not taken yet")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A head (no node, no HTTP) on `dir`, and the address it announced.
fn head(dir: &Path) -> (Daemon, String) {
    let mut child = daemon()
        .args(["head", "--port", "0", "--no-http", "--state-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("flame-daemon listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (Daemon(Some(child)), address)
}

/// Wait (bounded) for `child` to exit; its exit code and stderr.
fn exit_of(daemon: Daemon, within: Duration) -> (Option<i32>, String) {
    let mut child = daemon.take();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flame-daemon did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(daemon: &Daemon) {
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
}

#[test]
fn a_second_daemon_on_one_state_dir_exits_1_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = head(dir.path());
    let second = Daemon(Some(
        daemon()
            .args(["start", "--port", "0", "--no-http", "--state-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let (code, err) = exit_of(second, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");

    // The lock goes with its holder: a new daemon starts once the first has stopped.
    sigterm(&first);
    let (code, err) = exit_of(first, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    let (again, _) = head(dir.path());
    sigterm(&again);
    assert_eq!(exit_of(again, Duration::from_secs(20)).0, Some(0));
}

#[test]
fn a_state_db_deleted_under_the_daemon_stops_it_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = head(dir.path());
    let db = dir.path().join("flame.db");
    std::fs::remove_file(&db).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Anything that commits finds the file gone; the session is never confirmed.
        let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let admin = flame_core::client::Credentials::with_token(admin.trim().to_string());
        let client =
            Client::connect(&address, &admin, Duration::from_secs(5), "state-dir-test").await;
        if let Ok(client) = client {
            let spec = SessionSpec {
                application: "echo".into(),
                app_spec: bytes::Bytes::from_static(b"{}"),
                ..Default::default()
            };
            let req = proto::CreateSessionRequest {
                spec: Some(spec.into()),
            };
            assert!(client.frontend().create_session(req).await.is_err());
        }
    });
    let (code, err) = exit_of(child, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("was deleted"), "{err}");
}

#[test]
fn a_damaged_state_db_stops_the_daemon_naming_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("flame.db");
    std::fs::write(&db, vec![0x6Bu8; 32 << 10]).unwrap();
    let out = daemon()
        .args(["start", "--port", "0", "--no-http", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("Move it aside"), "{err}");
    assert!(err.contains("never deletes it"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![0x6Bu8; 32 << 10],
        "the file is left as it was"
    );
}
