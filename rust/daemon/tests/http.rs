//! The daemon's HTTP server for real: a head with HTTP on 127.0.0.1:0 and a node of echo
//! executors run a session; `/metrics`, the JSON API and the dashboard's assets are fetched
//! over a plain TCP connection (HTTP/1.1, `Connection: close`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use flame_daemon::http::HttpPort;
use flame_daemon::server::HeadConfig;
use flame_daemon::session_manager::ManagerConfig;

/// GET `path`; the status code and the body.
async fn get(base: &str, path: &str) -> (u16, String) {
    request(base, "GET", path).await
}

/// `method` `path` without a body, as the test process's admin (a bearer token); the
/// status code and the body.
async fn request(base: &str, method: &str, path: &str) -> (u16, String) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let token = common::test_token();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn get_json(base: &str, path: &str) -> (u16, Value) {
    let (status, body) = get(base, path).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_json_api_and_dashboard_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut head = common::head_config(dir.path(), ManagerConfig::default());
    head.http = HttpPort::Exactly(0);
    let node = common::echo_node(dir.path(), 1);
    let cluster = common::start_cluster(head, node).await.unwrap();
    let base = cluster.head.dashboard_url.clone().expect("HTTP is on");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = common::admin_client(&cluster.head, "test").await;
    let sid = common::open_echo_session(&client).await.0;
    let inputs = vec![
        Bytes::from_static(b"a"),
        Bytes::from_static(b"b"),
        Bytes::from_static(b"fail:boom"),
    ];
    let ids = client
        .submit(flame_core::ids::SessionId(sid), inputs)
        .unwrap();
    let mut done = 0;
    while done < ids.len() {
        done += client
            .next_completions(Duration::from_secs(30))
            .await
            .unwrap()
            .len();
    }

    // The overview's tasks/s history leaves out the second in progress: wait it out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let overview = loop {
        let (status, o) = get_json(&base, "/api/overview").await;
        assert_eq!(status, 200, "{o}");
        let finished: u64 = o["tasks_per_second"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        if finished == 3 {
            break o;
        }
        assert!(tokio::time::Instant::now() < deadline, "history: {o}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(overview["tasks_per_second"].as_array().unwrap().len(), 300);
    let s = &overview["sessions"][0];
    assert_eq!(
        (s["id"].as_u64(), s["succeeded"].as_u64()),
        (Some(sid), Some(2))
    );
    assert_eq!(s["failed"].as_u64(), Some(1));
    assert_eq!(overview["nodes"].as_array().unwrap().len(), 1);

    let (status, text) = get(&base, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "flame_tasks_submitted_total 3",
        "flame_tasks_succeeded_total 2",
        "flame_tasks_failed_total 1",
        "flame_task_run_seconds_count 3",
        "flame_nodes 1",
        "flame_executors{state=\"bound\"} 1",
        &format!("flame_session_queue_depth{{session=\"{sid}\"}} 0"),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    for series in [
        "flame_scheduler_decision_seconds_count",
        "flame_storage_commit_seconds_count",
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }

    let (status, page) = get_json(&base, &format!("/api/sessions/{sid}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"].as_u64(), Some(3));
    let failure = &page["failures"][0];
    assert_eq!(failure["state"], "failed");
    assert!(failure["error"]["message"]
        .as_str()
        .unwrap()
        .contains("boom"));
    let (_, failed) = get_json(&base, &format!("/api/sessions/{sid}?state=failed")).await;
    assert_eq!(failed["tasks"].as_array().unwrap().len(), 1);
    let tid = ids[0].0;
    let (status, task) = get_json(&base, &format!("/api/sessions/{sid}/tasks/{tid}")).await;
    assert_eq!((status, task["state"].as_str()), (200, Some("succeeded")));

    let (status, node) = get_json(&base, "/api/nodes/1").await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["executors"].as_array().unwrap().len(), 1);

    // Bad requests name the problem.
    let (status, e) = get_json(&base, "/api/sessions/999").await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("999"), "{e}");
    let (status, e) = get_json(&base, &format!("/api/sessions/{sid}?state=bogus")).await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("bogus"), "{e}");
    let (status, e) = get_json(&base, &format!("/api/sessions/{sid}?limit=5000")).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(get(&base, "/api/sessions/abc").await.0, 400);
    assert_eq!(get_json(&base, "/api/nodes/42").await.0, 404);
    assert_eq!(get(&base, "/nope").await.0, 404);

    let (status, html) = get(&base, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("/app.js"), "{html}");
    let (_, js) = get(&base, "/app.js").await;
    assert!(js.contains("/api/overview"));
    cluster.stop().await;
}

/// Every API error is JSON that names the problem: ids that are not ids (negative, not a
/// number, past u64::MAX) are 400 naming the parameter; well-formed ids that do not exist
/// are 404 whatever their value (0 and u64::MAX included); so are unknown pages under /api/;
/// axum's own rejections (a bad query string, a path that is not UTF-8, a wrong method)
/// are JSON too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_and_unknown_ids_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let head = common::start_head(HeadConfig {
        host: "127.0.0.1".into(),
        port: 0,
        state_dir: dir.path().to_path_buf(),
        state_url: None,
        manager: ManagerConfig::default(),
        http: HttpPort::Exactly(0),
        tls: Default::default(),
        metrics_public: false,
    })
    .await
    .unwrap();
    let base = head.dashboard_url.clone().expect("HTTP is on");
    let client = common::admin_client(&head, "test").await;
    let sid = common::open_echo_session(&client).await.0;

    let json = |method: &'static str, path: String| {
        let base = base.clone();
        async move {
            let (status, body) = request(&base, method, &path).await;
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
                panic!("{method} {path}: {status} with a non-JSON body ({e}): {body}")
            });
            let error = v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}"));
            (status, error.to_string())
        }
    };
    let max = u64::MAX;
    for (path, status, names) in [
        ("/api/sessions/0".to_string(), 404, "0"),
        (format!("/api/sessions/{max}"), 404, "18446744073709551615"),
        (format!("/api/sessions/{sid}/tasks/0"), 404, "0"),
        (
            format!("/api/sessions/{sid}/tasks/{max}"),
            404,
            "18446744073709551615",
        ),
        ("/api/sessions/0/tasks/1".to_string(), 404, "0"),
        ("/api/nodes/0".to_string(), 404, "node 0"),
        (
            "/api/sessions/18446744073709551616".to_string(),
            400,
            "session id",
        ),
        ("/api/sessions/-1".to_string(), 400, "session id"),
        ("/api/sessions/abc".to_string(), 400, "session id"),
        (format!("/api/sessions/{sid}/tasks/x1"), 400, "task id"),
        (format!("/api/sessions/-{sid}/tasks/1"), 400, "session id"),
        ("/api/nodes/1.5".to_string(), 400, "node id"),
        ("/api/sessions/%FF".to_string(), 400, "path"),
        (format!("/api/sessions/{sid}?limit=abc"), 400, "limit"),
        (format!("/api/sessions/{sid}?offset=-3"), 400, "offset"),
        (format!("/api/sessions/{sid}?limit=5000"), 400, "limit"),
        ("/api/nope".to_string(), 404, "no such page"),
        ("/api/sessions".to_string(), 404, "no such page"),
    ] {
        let (got, error) = json("GET", path.clone()).await;
        assert_eq!(got, status, "GET {path}: {error}");
        assert!(
            error.contains(names),
            "GET {path}: '{error}' should name {names}"
        );
    }
    let (status, error) = json("POST", "/api/overview".into()).await;
    assert_eq!(status, 405, "{error}");
    assert!(error.contains("POST"), "{error}");

    client.close();
    head.stop().await;
}
