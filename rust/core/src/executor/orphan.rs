//! An executor process never outlives the node that started it, nor leaves behind what its
//! tasks started.
//!
//! Three layers, each covering what the one before cannot:
//! - The node starts every executor as the leader of its own process group with
//!   `PR_SET_PDEATHSIG = SIGKILL` (`flame-daemon`'s `executor_manager/process.rs`): whatever
//!   the executor program is, the kernel kills it when the node dies, even by SIGKILL.
//! - [`guard`], called by an executor that is its own process, swaps that signal for SIGHUP
//!   and handles SIGHUP by SIGKILLing its whole process group — itself and anything its tasks
//!   started (`subprocess.Popen` children stay in the group; a child that calls `setsid`
//!   itself leaves it and is not covered). A plain SIGKILL could not take the group along.
//!   A task that installs its own SIGHUP handler replaces this one; the next layer remains.
//! - Stream loss ([`watch`]): the session manager never takes an executor back once its stream
//!   has ended or broken — it has already declared it lost and requeued its tasks — so the
//!   stream is not re-established. The executor gives its host [`ORPHAN_GRACE`] to finish
//!   (leave its session and return); a host still busy then (a task running) is not waited
//!   for: the executor takes its group down the same way. This covers a session manager
//!   that is gone while the node is not (another machine, a network partition).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use crate::error::{FlameError, Result};

/// After the stream to the session manager ends, how long the host gets to return by itself
/// before the executor stops it: room for `on_session_leave`, none for another long task.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// Exit code of an executor that stopped because it lost its session manager.
const ORPHAN_EXIT: i32 = 3;

/// Whether this process leads its own process group (set once by [`guard`]); only then does
/// stopping take the group along — never the group of whoever started us by hand.
static GROUP_LEADER: AtomicBool = AtomicBool::new(false);

/// Makes this executor process die with its parent and take its process group along: SIGHUP
/// on the parent's death (`PR_SET_PDEATHSIG`) and a SIGHUP handler that SIGKILLs the group.
///
/// A node starts executors with SIGKILL as the parent-death signal; the handler is installed
/// before the signal is switched, so at no instant is the executor unprotected.
///
/// # Errors
/// [`FlameError::Internal`] when the handler or the parent-death signal cannot be set.
pub fn guard() -> Result<()> {
    // SAFETY: plain syscalls; `on_parent_death` only makes async-signal-safe calls.
    unsafe {
        GROUP_LEADER.store(libc::getpgrp() == libc::getpid(), Ordering::Release);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_parent_death as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut()) != 0 {
            return Err(os_error("cannot handle SIGHUP"));
        }
        // No race to check here: until this call the node's SIGKILL is armed (it survives
        // exec), and the switch is atomic.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGHUP as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(os_error("cannot set the parent-death signal"));
        }
    }
    Ok(())
}

fn os_error(what: &str) -> FlameError {
    FlameError::Internal(format!("{what}: {}", std::io::Error::last_os_error()))
}

extern "C" fn on_parent_death(_: libc::c_int) {
    take_down();
}

/// SIGKILLs this executor's process group (when it leads one) and exits. Async-signal-safe.
fn take_down() -> ! {
    // SAFETY: kill and _exit are async-signal-safe; group 0 is our own.
    unsafe {
        if GROUP_LEADER.load(Ordering::Acquire) {
            libc::kill(0, libc::SIGKILL);
        }
        libc::_exit(ORPHAN_EXIT)
    }
}

/// Held by the host side of the link; dropped when the host is done.
pub(super) struct HostAlive {
    _alive: std_mpsc::Sender<()>,
}

/// Held by the network side; see [`Watch::wait`].
pub(super) struct Watch {
    grace: Duration,
    host_done: std_mpsc::Receiver<()>,
}

/// A pair for one link: the host keeps the first, the network thread the second.
pub(super) fn watch(grace: Duration) -> (HostAlive, Watch) {
    let (alive, host_done) = std_mpsc::channel();
    (HostAlive { _alive: alive }, Watch { grace, host_done })
}

impl Watch {
    /// Called once the stream has ended (`why`): returns as soon as the host is done, or
    /// stops the process (and its group) when it is not done within the grace.
    pub(super) fn wait(&self, why: &str) {
        if let Err(std_mpsc::RecvTimeoutError::Timeout) = self.host_done.recv_timeout(self.grace) {
            eprintln!(
                "flame executor: {why}; the session manager will not take this executor back \
                 and its task is still running after {:?}: stopping it and what it started",
                self.grace
            );
            take_down();
        }
    }
}
