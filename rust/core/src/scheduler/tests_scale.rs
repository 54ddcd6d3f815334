//! The cost of placements at cluster scale: 1,000 nodes, 10,000 executors, 10,000 sessions.
//! Timing, so ignored by default: `cargo test -p flame-core --release scale -- --ignored
//! --nocapture`. The figure includes the simulated cluster's own work, so it is an upper
//! bound on the scheduler's. The benchmark proper — sizes from 10 to 1,000 nodes, whole
//! workloads run to completion in virtual time, only the scheduler's calls timed — is
//! `cargo run --release -p scheduler-sim` (`benchmarks/scheduler_sim/`).

use std::time::Instant;

use super::tests_policies::{policies, Sim};
use super::Policies;
use crate::ids::SessionId;

fn run(p: Policies) {
    let nodes = vec![10; 1000];
    let mut sim = Sim::new(p, &nodes);
    let started = Instant::now();
    for id in 1..=10_000u64 {
        let sid = sim.open(id, |s| {
            s.weight = (id % 3 + 1) as f64;
            s.priority = (id % 4) as i32;
            s.user = format!("u{}", id % 50);
        });
        sim.submit(sid, 3);
    }
    let opened = started.elapsed();
    let binds_at_open = sim.binds;
    let t = Instant::now();
    for _ in 0..6 {
        sim.step();
    }
    let stepped = t.elapsed();
    let per = stepped.as_secs_f64() * 1e6 / (sim.binds - binds_at_open).max(1) as f64;
    println!(
        "{:?}: open+submit of 10,000 sessions {opened:?} ({binds_at_open} binds); \
         6 steps {stepped:?}, {} binds, {per:.1} us per placement (with the sim's work)",
        p.names(),
        sim.binds - binds_at_open,
    );
    assert!(sim.held(SessionId(1)) <= 3);
}

#[test]
#[ignore = "timing; run in release"]
fn placements_at_scale() {
    run(Policies::default());
    run(policies(&[
        "priority",
        "fair_share",
        "tenant_fair_share",
        "preemption",
        "data_aware",
    ]));
}
