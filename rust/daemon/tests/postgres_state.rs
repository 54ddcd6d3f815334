//! The head with its state in PostgreSQL (`--state-url`, #13), end to end on loopback: a real
//! head and node of echo executors over a throw-away PostgreSQL server. A head restarted on
//! ANOTHER state dir (its machine's disk gone) resumes from the database: open sessions stay
//! open, pending tasks run, finished ones are not run again. And a database that cannot be
//! used is a clear error at start. Skips, saying why, where no PostgreSQL server can run.

mod common;

use std::time::Duration;

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::SessionId;
use flame_core::model::SessionSpec;
use flame_core::storage::pg_test_server::PgServer;
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;

fn server() -> Option<PgServer> {
    match PgServer::start() {
        Ok(s) => Some(s),
        Err(why) => {
            eprintln!("skipped: no PostgreSQL test server: {why}");
            None
        }
    }
}

/// A head with its state at `url` (local files in `dir`) and a node of `slots` echo executors.
async fn start(dir: &std::path::Path, url: &str, slots: u32) -> LocalCluster {
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let mut head = common::head_config(dir, manager);
    head.state_url = Some(url.to_string());
    common::start_cluster(head, common::echo_node(dir, slots))
        .await
        .expect("cluster starts")
}

async fn connect(cluster: &LocalCluster) -> Client {
    let creds = common::admin(&cluster.head);
    Client::connect(cluster.address(), &creds, Duration::from_secs(5), "test")
        .await
        .expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_in_postgres_survives_a_restart_on_a_fresh_state_dir() {
    let Some(pg) = server() else { return };
    let url = tokio::task::spawn_blocking(move || {
        let url = pg.fresh_database().unwrap();
        (pg, url)
    })
    .await
    .unwrap();
    let (pg, url) = url;
    let first_dir = tempfile::tempdir().unwrap();
    let cluster = start(first_dir.path(), &url, 1).await;
    let client = connect(&cluster).await;
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        max_retries: 3,
        ..Default::default()
    };
    let sid: SessionId = common::create_session(&client, spec).await;
    let first = client
        .submit(sid, vec![Bytes::from_static(b"quick")])
        .unwrap();
    common::collect(&client, &first).await;
    let inputs = (0..8)
        .map(|i| Bytes::from(format!("sleep:{}", 50 + i)))
        .collect();
    let rest = client.submit(sid, inputs).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(client);
    cluster.stop().await;
    drop(first_dir);

    // Another state dir: nothing of the first head's disk is left, only the database.
    let second_dir = tempfile::tempdir().unwrap();
    let cluster = start(second_dir.path(), &url, 1).await;
    let client = connect(&cluster).await;
    common::assert_resumed(&client, sid, &first, &rest).await;
    drop(client);
    cluster.stop().await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_url_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut head = common::head_config(dir.path(), ManagerConfig::default());
    // Nothing listens on this port: the error names the database and the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    head.state_url = Some(format!("postgres://flame@127.0.0.1:{port}/flame"));
    let err = common::start_head(head.clone())
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot connect to PostgreSQL database flame at 127.0.0.1"),
        "{msg}"
    );
    head.state_url = Some("mysql://flame@127.0.0.1/flame".into());
    let err = common::start_head(head).await.err().expect("refused");
    assert!(
        err.to_string().contains("must start with postgres://"),
        "{err}"
    );
}
