//! Fuzz-style end-to-end test: hostile and malformed input is answered with a status a user can
//! act on (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, with a
//! message), never panics anything in the daemon, and does not stop it serving.
//!
//! One real cluster on loopback (a head, and a node running `flame-echo-executor`), then, all
//! drawn from one seeded PRNG (the seed is printed; `FLAME_FUZZ_SEED=<n>` replays the inputs,
//! though ids the daemon hands out may differ with timing):
//! 1. unary Frontend calls with random and mutated fields, and raw, often undecodable, bodies;
//! 2. random messages on task streams, then raw frames on streams;
//! 3. hostile Backend streams: bad registrations, raw frames, a node and an executor that lie;
//! 4. a normal session of 500 echo tasks: each must complete once, with its output.
//!
//! All of it with valid tokens (#11: an admin user on the Frontend, the node token of
//! `fuzz-node` on the Backend). A second test sends hostile calls without a valid token
//! (`unauthenticated.rs`): each is refused and none reaches the session manager.
//!
//! Wrong answers are collected, once per kind, and reported together at the end. A panic on
//! any thread of the process (the daemon runs in it) fails the test at the next checkpoint,
//! which shows where it happened and the inputs sent just before.
//!
//! # Layout
//! - `main.rs`: the sizes of each phase, the cluster, and the test running the phases in order;
//! - `gen.rs`: the seeded PRNG and the fuzzer's state, generating fields and unary calls;
//! - `messages.rs`: generated task-stream messages (submits, watches, cancels);
//! - `wire.rs`: connections, a raw-bytes codec, raw unary calls and raw frames on streams;
//! - `findings.rs`: panics, the answers a call may get, wrong answers, checkpoints;
//! - `unary.rs`: phase 1, unary Frontend calls;
//! - `streams.rs`: phase 2, task streams, typed and raw;
//! - `backend.rs`: phase 3, Backend message builders, raw frames and bad registrations;
//! - `fake_node.rs`: phase 3, a registered node and its executor that lie;
//! - `normal_session.rs`: phase 4, a normal session after all that.

use std::path::Path;
use std::time::{Duration, Instant};

use flame_daemon::executor_manager::NodeConfig;
use flame_daemon::local::LocalCluster;
use flame_daemon::server::HeadConfig;
use flame_daemon::session_manager::ManagerConfig;

mod backend;
#[path = "../common/mod.rs"]
mod common;
mod fake_node;
mod findings;
mod gen;
mod messages;
mod normal_session;
mod streams;
mod unary;
mod unauthenticated;
mod wire;

use backend::{bad_registrations, fuzz_raw_backend};
use fake_node::fake_node;
use findings::{checkpoint, panics, record_panics, Findings};
use gen::{seed, Gen, Rng};
use normal_session::normal_session;
use streams::{close_all, fuzz_raw_streams, fuzz_streams, wait_idle};
use unary::fuzz_unary;
use wire::Wire;

/// The head's payload limit: small, so going over it costs little memory.
const LIMIT: usize = 1 << 20;
const UNARY_CALLS: usize = 2000;
/// Unary calls sent at once, each on its own connection.
const IN_FLIGHT: usize = 8;
const STREAM_MESSAGES: usize = 1200;
const TASK_STREAMS: usize = 3;
const RAW_STREAMS: usize = 60;
const RAW_BACKEND_STREAMS: usize = 40;
const FINAL_TASKS: usize = 500;
/// Longest any one answer may take; longer is reported as a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn start(state_dir: &Path) -> LocalCluster {
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        max_payload_bytes: LIMIT,
        ..Default::default()
    };
    let state_dir = state_dir.to_path_buf();
    let head = HeadConfig {
        host: "127.0.0.1".into(),
        port: 0,
        state_dir: state_dir.clone(),
        state_url: None,
        manager,
        http: flame_daemon::http::HttpPort::Off,
        tls: Default::default(),
        metrics_public: false,
    };
    let mut node = NodeConfig::new("");
    node.slots = 2;
    node.executor_command = Some(vec![env!("CARGO_BIN_EXE_flame-echo-executor").into()]);
    node.work_dir = state_dir;
    common::start_cluster(head, node)
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_the_daemon_keeps_working() {
    record_panics();
    let seed = seed();
    eprintln!("fuzz seed {seed} (replay with FLAME_FUZZ_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    // The authenticated path: an admin user on the Frontend, a node on the Backend.
    let node =
        cluster
            .head
            .security
            .issue(flame_core::auth::TokenKind::Node, "fuzz-node", false, 0);
    wire::set_tokens(&common::test_token().bearer(), &node.bearer());
    // Several connections, so that calls in flight do not wait behind one another.
    let mut wires = Vec::new();
    for _ in 0..IN_FLIGHT {
        wires.push(Wire::connect(cluster.address()).await);
    }
    let Wire { fe, be, grpc } = wires[0].clone();
    let mut g = Gen {
        rng: Rng::new(seed),
        ..Default::default()
    };
    let mut f = Findings::default();
    let mut times = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &'static str| {
        times.push((name, t.elapsed()));
        t = Instant::now();
    };

    fuzz_unary(&mut g, &mut f, &wires).await;
    lap("unary calls");
    fuzz_streams(&mut g, &mut f, &fe).await;
    lap("task streams");
    let drained = wait_idle(&mut f, &fe).await;
    close_all(&mut g, &mut f, &fe).await;
    lap("draining and closing sessions");
    fuzz_raw_streams(&mut g, &mut f, &grpc).await;
    checkpoint("raw stream frames", Some(&fe), &f, &[]).await;
    lap("raw stream frames");
    fuzz_raw_backend(&mut g, &mut f, &grpc).await;
    bad_registrations(&mut g, &mut f, be.clone()).await;
    checkpoint("bad backend registrations", Some(&fe), &f, &[]).await;
    fake_node(&mut g, &mut f, be, cluster.address(), dir.path()).await;
    checkpoint("the fake node and executor", Some(&fe), &f, &[]).await;
    lap("hostile backend");
    normal_session(&mut f, cluster.address(), &fe).await;
    checkpoint("the normal session", Some(&fe), &f, &[]).await;
    lap("normal session");
    let stopped = tokio::time::timeout(Duration::from_secs(20), cluster.stop()).await;
    lap("stop");

    eprintln!("fuzz seed {seed}: the fuzzed tasks drained {drained:?} after the stream fuzzing");
    for (what, n) in &f.counts {
        eprintln!("  {n:>6}  {what}");
    }
    for (phase, d) in &times {
        eprintln!("  {:>6} ms  {phase}", d.as_millis());
    }
    assert!(stopped.is_ok(), "the cluster did not stop within 20 s");
    assert!(panics().is_empty(), "panics:\n{}", panics().join("\n\n"));
    let (n, list) = (f.list.len(), f.list.join("\n  "));
    assert!(
        f.list.is_empty(),
        "{n} kinds of wrong answers (seed {seed}):\n  {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_hostile_input_never_reaches_the_session_manager() {
    record_panics();
    let seed = seed();
    eprintln!("fuzz seed {seed} (replay with FLAME_FUZZ_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(cluster.address().to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut g = Gen {
        rng: Rng::new(seed),
        ..Default::default()
    };
    let mut f = Findings::default();
    unauthenticated::fuzz_unauthenticated(&mut g, &mut f, channel.clone(), 600).await;
    // Nothing reached the manager: as the admin, the state is as the cluster started.
    let admin = cluster.head.security.admin_token.bearer();
    let mut fe = flame_core::proto::frontend_client::FrontendClient::new(channel);
    fn req<T>(bearer: &str, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        r
    }
    let empty = flame_core::proto::Empty {};
    let sessions = fe
        .list_sessions(req(&admin, empty))
        .await
        .unwrap()
        .into_inner();
    assert!(sessions.sessions.is_empty(), "{sessions:?}");
    let info = fe
        .get_cluster_info(req(&admin, empty))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.nodes.len(), 1, "only the cluster's own node: {info:?}");
    let hello = fe
        .hello(req(&admin, Default::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hello.client_id, 1, "no client id was handed out before");
    cluster.stop().await;
    assert!(panics().is_empty(), "panics:\n{}", panics().join("\n\n"));
    for (what, n) in &f.counts {
        eprintln!("  {n:>6}  {what}");
    }
    let (n, list) = (f.list.len(), f.list.join("\n  "));
    assert!(
        f.list.is_empty(),
        "{n} kinds of wrong answers (seed {seed}):\n  {list}"
    );
}
