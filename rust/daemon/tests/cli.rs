//! The `flame-daemon` binary: starts, prints its address, serves, and exits 0 on SIGTERM;
//! bad flags and config files are named in the error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use flame_core::client::Client;

fn daemon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flame-daemon"))
}

#[test]
fn start_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon()
        .args([
            "start",
            "--port",
            "0",
            "--http-port",
            "0",
            "--slots",
            "1",
            "--state-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let mut dashboard = String::new();
    stdout.read_line(&mut dashboard).unwrap();
    let dashboard = dashboard
        .trim()
        .strip_prefix("dashboard and /metrics on http://")
        .unwrap_or_else(|| panic!("unexpected second line: {dashboard:?}"))
        .trim_end_matches('/')
        .to_string();
    let address = line
        .trim()
        .strip_prefix("flame-daemon listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    // `start` leaves an admin token for the OS user who ran it (README "Security").
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let admin = admin.trim().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect(
            &address,
            &flame_core::client::Credentials::with_token(admin.clone()),
            Duration::from_secs(5),
            "cli-test",
        )
        .await
        .unwrap();
        let info = client
            .frontend()
            .get_cluster_info(flame_core::proto::Empty {})
            .await
            .unwrap()
            .into_inner();
        assert!(info.nodes.len() <= 1);
    });
    let mut http = std::net::TcpStream::connect(&dashboard).unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Connection: close\r\n\r\n"
    );
    std::io::Write::write_all(&mut http, request.as_bytes()).unwrap();
    let mut metrics = String::new();
    std::io::Read::read_to_string(&mut http, &mut metrics).unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("flame_tasks_submitted_total"), "{metrics}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(dir.path().join("flame.db").exists(), "state is kept");
}

#[test]
fn bad_input_is_named() {
    let out = daemon().args(["start", "--slots", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("slots"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("flame.toml");
    std::fs::write(&cfg, "prot = 1\n").unwrap();
    let out = daemon()
        .args(["head", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flame.toml") && err.contains("prot"), "{err}");

    let out = daemon().args(["node"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--head"));

    let out = daemon()
        .args(["head", "--no-http", "--http-port", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-http"));
    let out = daemon()
        .args(["head", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"));

    // An HTTP port asked for explicitly and taken is an error naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = daemon()
        .args(["head", "--port", "0", "--http-port", &port, "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve HTTP on 127.0.0.1:{port}")),
        "{err}"
    );
}
