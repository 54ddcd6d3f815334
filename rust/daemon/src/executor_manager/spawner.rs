//! The one thread that forks executors, so that they die with this process and not before.
//!
//! Executors are started with `PR_SET_PDEATHSIG` (see [`super::process`]): the kernel kills
//! them when their parent dies — and "parent" there is the *thread* that forked them, not the
//! process. A child forked from a tokio worker would die whenever that thread ends (a blocking
//! thread retiring after its idle time, a runtime shut down while the process goes on). So
//! every fork happens here, on a thread started on first use that never ends: it lives exactly
//! as long as the process, which is what the signal is meant to track.

use std::io;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;

/// One fork to make: the child is registered with `runtime` (which reaps it).
struct Job {
    command: Command,
    runtime: Handle,
    reply: std_mpsc::SyncSender<io::Result<Child>>,
}

/// The spawner thread's queue; set on first use and never dropped, so the thread never ends.
static JOBS: Mutex<Option<std_mpsc::Sender<Job>>> = Mutex::new(None);

/// Spawns `command` on the spawner thread, registered with the current tokio runtime.
/// Blocks for the fork and exec only (the same as spawning here would).
///
/// # Errors
/// Outside a tokio runtime, when the spawner thread cannot be started, or what the spawn says.
pub(super) fn spawn(command: Command) -> io::Result<Child> {
    let runtime = Handle::try_current().map_err(io::Error::other)?;
    let (reply, answer) = std_mpsc::sync_channel(1);
    let job = Job {
        command,
        runtime,
        reply,
    };
    {
        let mut jobs = JOBS
            .lock()
            .map_err(|_| io::Error::other("executor spawner poisoned"))?;
        let jobs = match &mut *jobs {
            Some(jobs) => jobs,
            none => none.insert(start()?),
        };
        jobs.send(job)
            .map_err(|_| io::Error::other("the executor spawner thread is gone"))?;
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("the executor spawner thread is gone"))?
}

fn start() -> io::Result<std_mpsc::Sender<Job>> {
    let (jobs, queue) = std_mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("flame-spawner".into())
        .spawn(move || {
            for mut job in queue {
                let entered = job.runtime.enter();
                let child = job.command.spawn();
                drop(entered);
                let _ = job.reply.send(child);
            }
        })?;
    Ok(jobs)
}
