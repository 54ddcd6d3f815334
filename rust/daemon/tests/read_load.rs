//! Load test: introspection reads of a big session never starve the control plane.
//!
//! A real head (HTTP on) and a node of echo executors run a session of 100,000 tasks (a few
//! failed) and close it. Then 300 HTTP clients read it over and over — the session page with
//! its counts and failures, a filtered page, a page deep into the session, single tasks —
//! and while they do, new clients say hello one after another and a small session runs. The
//! hellos and the small session must stay prompt: before introspection had its own readers,
//! every read ran on the storage writer, and a hello (which waits for a commit) queued behind
//! seconds of reads. Figures go to stderr (`--nocapture` shows them).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use flame_core::client::Client;
use flame_core::proto;
use flame_daemon::http::HttpPort;
use flame_daemon::session_manager::ManagerConfig;

const BIG_SESSION: usize = 100_000;
/// One task in this many fails, so the session page has failures to show.
const FAIL_EVERY: usize = 1_000;
const READERS_IN_FLIGHT: usize = 300;
const HELLOS: usize = 20;
/// A hello must be answered within this long even under the read load.
const HELLO_P99_LIMIT: Duration = Duration::from_secs(1);

/// GET `path` on `addr` (HTTP/1.1, `Connection: close`); the status code and the body.
async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let token = common::test_token();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Wait for `n` completions, at most `within`; how many came.
async fn wait_done(client: &Client, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut seen = 0;
    while seen < n && Instant::now() < deadline {
        seen += client
            .next_completions(Duration::from_millis(500))
            .await
            .expect("stream open")
            .len();
    }
    seen
}

/// The `q`-quantile of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_of_a_big_session_do_not_delay_hellos_or_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut head = common::head_config(dir.path(), ManagerConfig::default());
    head.http = HttpPort::Exactly(0);
    let node = common::echo_node(dir.path(), 2);
    let cluster = common::start_cluster(head, node).await.unwrap();
    let base = cluster.head.dashboard_url.clone().expect("HTTP is on");
    let http = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    // The big session: run and closed, so that reading it needs storage for everything.
    let started = Instant::now();
    let client = common::admin_client(&cluster.head, "big").await;
    let big = common::open_echo_session(&client).await;
    let inputs: Vec<Bytes> = (0..BIG_SESSION)
        .map(|i| {
            if i % FAIL_EVERY == FAIL_EVERY - 1 {
                Bytes::from_static(b"fail:boom")
            } else {
                Bytes::from_static(b"x")
            }
        })
        .collect();
    let ids = client.submit(big, inputs).unwrap();
    let done = wait_done(&client, ids.len(), Duration::from_secs(120)).await;
    assert_eq!(done, ids.len(), "the big session did not finish");
    client
        .frontend()
        .close_session(proto::SessionRef { session_id: big.0 })
        .await
        .unwrap();
    eprintln!(
        "{BIG_SESSION} tasks run and stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The read load: every reader loops over a mix of reads until told to stop.
    let paths = Arc::new(vec![
        format!("/api/sessions/{}", big.0),
        format!("/api/sessions/{}?state=failed&limit=50", big.0),
        format!(
            "/api/sessions/{}?offset={}&limit=100",
            big.0,
            BIG_SESSION / 2
        ),
        format!("/api/sessions/{}/tasks/{}", big.0, ids[BIG_SESSION / 3].0),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let started_reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for n in 0..READERS_IN_FLIGHT {
        let (http, paths, stop, started_reads) = (
            http.clone(),
            paths.clone(),
            stop.clone(),
            started_reads.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<(u16, Duration)> = Vec::new();
            let mut i = n;
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[i % paths.len()];
                i += 1;
                started_reads.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let read = tokio::time::timeout(Duration::from_secs(60), get(&http, path)).await;
                let status = match read {
                    Ok(Ok((status, body))) => {
                        assert!(
                            body.starts_with('{'),
                            "{path}: {status} without a JSON body: {body}"
                        );
                        status
                    }
                    _ => 0,
                };
                seen.push((status, t.elapsed()));
                if status == 503 {
                    // Refused as overloaded: back off as a polite client would.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            seen
        }));
    }
    // Measure only once every reader has a read in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while started_reads.load(Ordering::Relaxed) < READERS_IN_FLIGHT {
        assert!(Instant::now() < deadline, "the readers never all started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut hellos = Vec::new();
    for i in 0..HELLOS {
        let t = Instant::now();
        let c = Client::connect(
            cluster.address(),
            &common::admin(&cluster.head),
            Duration::from_secs(5),
            &format!("h{i}"),
        )
        .await;
        // A hello that fails (`no hello within 5s`) counts as the full timeout or more.
        hellos.push(match c {
            Ok(c) => {
                let d = t.elapsed();
                c.close();
                d
            }
            Err(_) => t.elapsed().max(Duration::from_secs(5)),
        });
    }
    let small_started = Instant::now();
    let small = common::open_echo_session(&client).await;
    let n = client
        .submit(small, vec![Bytes::from_static(b"y"); 10])
        .unwrap()
        .len();
    let small_done = wait_done(&client, n, Duration::from_secs(30)).await;
    let small_took = small_started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let mut reads: Vec<(u16, Duration)> = Vec::new();
    for r in readers {
        reads.extend(r.await.unwrap());
    }
    client.close();
    cluster.stop().await;

    hellos.sort_unstable();
    let mut ok: Vec<Duration> = reads
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, d)| *d)
        .collect();
    ok.sort_unstable();
    let refused = reads.iter().filter(|(s, _)| *s == 503).count();
    let other: Vec<u16> = reads
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s != 200 && *s != 503)
        .collect();
    eprintln!(
        "reads: {} answered 200 (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms), {refused} refused 503",
        ok.len(),
        ms(quantile(&ok, 0.5)),
        ms(quantile(&ok, 0.99)),
        ms(quantile(&ok, 1.0)),
    );
    eprintln!(
        "hello under load: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         10-task session: {small_done} done in {:.0} ms",
        ms(quantile(&hellos, 0.5)),
        ms(quantile(&hellos, 0.99)),
        ms(quantile(&hellos, 1.0)),
        ms(small_took),
    );
    assert!(other.is_empty(), "reads failed with {other:?}");
    assert!(!ok.is_empty(), "no read was answered");
    assert!(
        quantile(&hellos, 0.99) < HELLO_P99_LIMIT,
        "hello p99 {:?} under read load (limit {HELLO_P99_LIMIT:?})",
        quantile(&hellos, 0.99)
    );
    assert!(
        small_done == n && small_took < Duration::from_secs(5),
        "a 10-task session: {small_done} of {n} done in {small_took:?} under read load"
    );
}
