//! The HTTP server's login (#11) on a real head: the dashboard, the JSON API and `/metrics`
//! refuse callers without credentials; `/?token=` logs in with an HttpOnly, SameSite=Strict
//! cookie that then works for the API; the login form's POST is refused from another
//! origin; one user's cookie cannot read another user's session.

use std::path::Path;

use flame_core::auth::{TokenKind, AUTHORIZATION_HEADER};
use flame_core::proto::{self, frontend_client::FrontendClient};
use flame_daemon::http::HttpPort;
use flame_daemon::server::{Head, HeadConfig};
use flame_daemon::session_manager::ManagerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request with `headers` (each line ending in CRLF) and `body`.
async fn http(base: &str, method: &str, path: &str, headers: &str, body: &str) -> Reply {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n{headers}\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    Reply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn head(dir: &Path, metrics_public: bool) -> Head {
    Head::start(HeadConfig {
        host: "127.0.0.1".into(),
        port: 0,
        state_dir: dir.to_path_buf(),
        state_url: None,
        manager: ManagerConfig::default(),
        http: HttpPort::Exactly(0),
        metrics_public,
        tls: Default::default(),
    })
    .await
    .unwrap()
}

/// Log in with `/?token=`; the cookie header line to send afterwards.
async fn login(base: &str, token: &str) -> String {
    let r = http(base, "GET", &format!("/?token={token}"), "", "").await;
    assert_eq!(r.status, 303, "{}", r.head);
    assert_eq!(r.header("location"), Some("/"), "no token left in the URL");
    let cookie = r.header("set-cookie").expect("a cookie").to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(
        !cookie.contains(token),
        "the cookie must not hold the token"
    );
    let pair = cookie.split(';').next().unwrap();
    format!("Cookie: {pair}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_a_login_and_shows_each_user_its_own_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path(), false).await;
    let base = head.dashboard_url.clone().unwrap();
    let alice = head.security.issue(TokenKind::User, "alice", false, 0);
    let bob = head.security.issue(TokenKind::User, "bob", false, 0);

    // Without credentials: the login page, and 401 for the API and the metrics.
    let page = http(&base, "GET", "/", "", "").await;
    assert_eq!(page.status, 401);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\""),
        "{}",
        page.body
    );
    for path in ["/api/overview", "/api/sessions/1", "/metrics"] {
        let r = http(&base, "GET", path, "", "").await;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.body.contains("no token"), "{path}: {}", r.body);
    }
    let wrong = http(&base, "GET", "/?token=flame_user_1_x", "", "").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("not a Flame token"), "{}", wrong.body);
    let bearer = format!("Authorization: Bearer {alice}\r\n");
    assert_eq!(
        http(&base, "GET", "/metrics", &bearer, "").await.status,
        200
    );

    // Alice's session, opened over gRPC with her token.
    let mut fe = FrontendClient::connect(head.address.clone()).await.unwrap();
    let mut req = tonic::Request::new(proto::CreateSessionRequest {
        spec: Some(proto::SessionSpec {
            application: "echo".into(),
            app_spec: bytes::Bytes::from_static(b"inline"),
            ..Default::default()
        }),
    });
    let value = alice.bearer().parse().unwrap();
    req.metadata_mut().insert(AUTHORIZATION_HEADER, value);
    let sid = fe.create_session(req).await.unwrap().into_inner().id;

    let alice_cookie = login(&base, &alice.to_string()).await;
    let bob_cookie = login(&base, &bob.to_string()).await;
    let dashboard = http(&base, "GET", "/", &alice_cookie, "").await;
    assert_eq!(dashboard.status, 200);
    let overview = |cookie: String| {
        let base = base.clone();
        async move {
            let r = http(&base, "GET", "/api/overview", &cookie, "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["sessions"].as_array().unwrap().len()
        }
    };
    assert_eq!(overview(alice_cookie.clone()).await, 1);
    assert_eq!(
        overview(bob_cookie.clone()).await,
        0,
        "bob sees no session of alice"
    );
    let path = format!("/api/sessions/{sid}");
    assert_eq!(
        http(&base, "GET", &path, &alice_cookie, "").await.status,
        200
    );
    let theirs = http(&base, "GET", &path, &bob_cookie, "").await;
    assert_eq!(theirs.status, 403, "{}", theirs.body);
    assert!(
        theirs.body.contains("belongs to user alice; you are bob"),
        "{}",
        theirs.body
    );
    let task = format!("/api/sessions/{sid}/tasks/1");
    assert_eq!(http(&base, "GET", &task, &bob_cookie, "").await.status, 403);

    // The form's POST: only from this server's own page.
    let form = format!("token={alice}");
    let forged =
        "Origin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\n";
    let r = http(&base, "POST", "/login", forged, &form).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    let host = base.trim_end_matches('/');
    let own = format!("Origin: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n");
    let r = http(&base, "POST", "/login", &own, &form).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("HttpOnly"));
    head.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_public_opens_only_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path(), true).await;
    let base = head.dashboard_url.clone().unwrap();
    assert_eq!(http(&base, "GET", "/metrics", "", "").await.status, 200);
    assert_eq!(
        http(&base, "GET", "/api/overview", "", "").await.status,
        401
    );
    head.stop().await;
}
