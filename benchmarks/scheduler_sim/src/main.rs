//! `scheduler-sim`: the Flame scheduler alone, on simulated clusters of growing size (10
//! executors per node, 10 sessions per node up to 10,000), in virtual time. It reports the
//! wall-clock cost of the scheduler's decisions: per placement (an executor given to a
//! session, including the `schedule()` pass around it) and per completion event (a task
//! result handled, including feeding that executor its next task).
//!
//! `cargo run --release -p scheduler-sim -- [--nodes 10,100,1000] [--append]`; `--append`
//! adds the table to `benchmarks/RESULTS.md` with the command, date and machine.

mod cluster;

use std::io::Write;
use std::time::{Duration, Instant};

use cluster::{Costs, Shape, Sim};
use flame_core::scheduler::Policies;

/// One size's figures.
struct Row {
    nodes: u32,
    executors: u32,
    sessions: u64,
    tasks: u64,
    costs: Costs,
    wall: Duration,
}

fn run(nodes: u32, policies: Policies) -> Row {
    let shape = Shape {
        nodes,
        slots_per_node: 10,
        sessions: u64::from(nodes * 10).min(10_000),
        max_tasks: 8,
        policies,
    };
    let wall = Instant::now();
    let mut sim = Sim::new(&shape);
    sim.open_all(&shape);
    sim.run(Duration::from_secs(24 * 3600));
    assert_eq!(sim.unfinished_sessions(), 0, "every session finishes");
    Row {
        nodes,
        executors: nodes * 10,
        sessions: shape.sessions,
        tasks: sim.costs.completions,
        costs: sim.costs.clone(),
        wall: wall.elapsed(),
    }
}

fn table(rows: &[Row], policies: &str) -> String {
    let mut out = format!(
        "policies: {policies}\n\n| nodes | executors | sessions | tasks | placements | ns/placement | ns/completion | scheduler total | virtual makespan | sim wall |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2?} | {:.1?} | {:.2?} |\n",
            r.nodes,
            r.executors,
            r.sessions,
            r.tasks,
            r.costs.placements,
            r.costs.ns_per_placement(),
            r.costs.ns_per_completion(),
            r.costs.total(),
            r.costs.makespan,
            r.wall,
        );
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A shared machine's load moves these figures by 2-3x: say what it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into());
    format!("{cpu}, {cpus} CPUs available, load average {load}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = vec![10, 100, 1000];
    let mut append = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => {
                let list = it.next().map(String::as_str).unwrap_or("");
                sizes = list
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                if sizes.is_empty() || sizes.contains(&0) {
                    eprintln!("--nodes takes a comma-separated list of node counts, e.g. 10,100");
                    std::process::exit(2);
                }
            }
            "--append" => append = true,
            other => {
                eprintln!("unknown argument '{other}'; usage: scheduler-sim [--nodes 10,100,1000] [--append]");
                std::process::exit(2);
            }
        }
    }
    let all = [
        "priority",
        "fair_share",
        "tenant_fair_share",
        "preemption",
        "data_aware",
    ];
    let variants = [
        Policies::default(),
        Policies::from_names(&all).expect("valid policy names"),
    ];
    let mut report = String::new();
    for p in variants {
        let rows: Vec<Row> = sizes.iter().map(|&n| run(n, p)).collect();
        report += &table(&rows, &p.names().join(", "));
        report += "\n";
    }
    print!("{report}");
    if append {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../RESULTS.md");
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let text = format!(
            "\n## Scheduler simulation ({date})\n\n`cargo run --release -p scheduler-sim -- --nodes {} --append` on {}. \
             Virtual time; wall-clock cost of the scheduler's own calls. A placement is an \
             executor bound to a session; ns/placement is the time in `schedule()` passes divided \
             by the placements they made (feeding and re-indexing included, so an upper bound). \
             ns/completion is the time in `task_results()` per finished task (it also feeds the \
             executor its next task).\n\n{report}",
            sizes.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            machine(),
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        println!("appended to {path}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_cluster_runs_every_task_once() {
        let row = run(2, Policies::default());
        // 20 sessions with 1..=8 tasks each (id % 8 + 1).
        let expected: u64 = (1..=20u64).map(|id| 1 + id % 8).sum();
        assert_eq!(row.tasks, expected);
        assert!(row.costs.placements >= 20, "each session got an executor");
        assert!(row.costs.makespan > Duration::ZERO);
    }
}
