//! The `flame-daemon` binary's credential parts: `head` prints a join command after its
//! listening line (which stays first) and writes admin.token; `token` refuses bad flags
//! and a missing admin token by name.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use flame_core::proto::{self, frontend_client::FrontendClient};

fn daemon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flame-daemon"))
}

/// Stops the child on every exit from the test, panics included.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn head_prints_a_join_command_after_its_listening_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon()
        .args(["head", "--port", "0", "--no-http", "--state-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _reaped = Reaped(child);
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    let address = lines[0]
        .strip_prefix("flame-daemon listening on ")
        .unwrap_or_else(|| panic!("the listening line is not first: {lines:?}"))
        .to_string();
    assert!(lines[1].contains("join a node"), "{lines:?}");
    let prefix = format!("flame-daemon node --head {address} --join-token ");
    let token = lines[2]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("no node command: {lines:?}"))
        .to_string();
    assert!(token.starts_with("flame_join_"), "{token}");

    let admin = dir.path().join("admin.token");
    let mode = std::fs::metadata(&admin).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The printed token joins (a loopback head answers with a node token).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        let mut head = FrontendClient::connect(address).await.unwrap();
        head.join_node(proto::JoinRequest {
            join_token: token,
            node_name: "n1".into(),
            csr_pem: String::new(),
        })
        .await
    });
    let reply = reply.expect("the printed join token works").into_inner();
    assert!(reply.node_token.starts_with("flame_node_"));
}

#[test]
fn token_commands_name_a_bad_expiry_and_a_missing_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = daemon()
        .args(["token", "create", "--user", "alice", "--expires", "3x"])
        .arg("--state-dir")
        .arg(dir.path())
        .env_remove("FLAME_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--expires") && err.contains("\"3x\" is not a duration"),
        "{err}"
    );
    let out = daemon()
        .args(["token", "list", "--state-dir"])
        .arg(dir.path())
        .env_remove("FLAME_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no admin token") && err.contains("admin.token"),
        "{err}"
    );
}
