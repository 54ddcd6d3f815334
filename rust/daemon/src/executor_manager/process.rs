//! One executor child process: starting it, draining its output, delivering signals and
//! reporting its exit.
//!
//! Each child gets a watcher task that owns the `Child`. Signals go through the watcher, which
//! delivers them only while the child is not yet reaped — so a kill can never hit a recycled
//! pid. Both pipes are read continuously: a chatty child must never block on a full pipe.
//!
//! Each child dies with the node: it leads its own process group and has `PR_SET_PDEATHSIG`
//! set to SIGKILL between fork and exec, forked on the [`spawner`] thread (the signal tracks
//! the forking thread). A Flame executor then hands the signal on to its process group
//! (`flame_core::executor::orphan`), so what its tasks started dies too.
//!
//! A kill may carry a note (the node's reason, e.g. a memory limit): it opens the exit
//! report's `stderr_tail`, so whoever reads the failure learns why before the child's own words.

use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flame_core::ids::ExecutorId;
use flame_core::proto::ExecutorExited;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::spawner;

/// Lines of stderr kept for the exit report.
const TAIL_LINES: usize = 50;
/// Longest line kept; the rest of a longer line is dropped (binary junk, giant tracebacks).
const MAX_LINE: usize = 4096;
/// After the child exits its pipes close — unless a grandchild inherited them. Bounded wait.
const PIPE_DRAIN: Duration = Duration::from_millis(500);

/// The node's side of a running child.
pub(super) struct Executor {
    pub(super) pid: u32,
    signals: mpsc::UnboundedSender<Signal>,
    /// Killed with a note already: don't kill (and log) again while it dies.
    noted: bool,
}

/// A signal for the watcher to deliver, and what to say about it in the exit report.
struct Signal {
    number: i32,
    note: Option<String>,
}

impl Executor {
    /// Asks the watcher to signal the child's process group (the executor and anything it
    /// started). A no-op once the child has exited.
    pub(super) fn signal(&self, number: i32) {
        let _ = self.signals.send(Signal { number, note: None });
    }

    /// SIGKILLs the child's group; if that is what ends it, its exit report's `stderr_tail`
    /// starts with `note`. Only the first note counts.
    pub(super) fn kill_with_note(&mut self, note: String) {
        if !self.noted {
            self.noted = true;
            let signal = Signal {
                number: libc::SIGKILL,
                note: Some(note),
            };
            let _ = self.signals.send(signal);
        }
    }

    pub(super) fn noted(&self) -> bool {
        self.noted
    }
}

/// Starts `argv` as executor `id`; its exit report goes to `exits` as soon as it is reaped.
///
/// # Errors
/// The reason the process could not be started, ready for an exit report's `stderr_tail`.
pub(super) fn spawn(
    id: ExecutorId,
    argv: &[String],
    work_dir: &Path,
    env: &[(String, String)],
    tracker: &TaskTracker,
    exits: mpsc::UnboundedSender<ExecutorExited>,
) -> Result<Executor, String> {
    let (program, args) = argv.split_first().ok_or("empty executor command")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(work_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so one signal reaches whatever the service itself started.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: getpid is a plain syscall.
    let node = unsafe { libc::getpid() };
    // SAFETY: runs in the forked child before exec, and only makes async-signal-safe calls
    // (prctl, getppid, _exit); nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The node died between the fork and the prctl: the signal is missed, leave now.
            if libc::getppid() != node {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = spawner::spawn(command)
        .map_err(|e| format!("failed to start executor `{}`: {e}", argv.join(" ")))?;
    let pid = child
        .id()
        .ok_or("executor exited before it could be watched")?;
    let tail = Arc::new(Mutex::new(Tail::default()));
    let mut drains = Vec::new();
    if let Some(out) = child.stdout.take() {
        drains.push(tracker.spawn(drain(id, "stdout", out, None)));
    }
    if let Some(err) = child.stderr.take() {
        drains.push(tracker.spawn(drain(id, "stderr", err, Some(tail.clone()))));
    }
    let (signals, signal_rx) = mpsc::unbounded_channel();
    tracker.spawn(watch(id, pid, child, signal_rx, drains, tail, exits));
    tracing::info!(executor = %id, pid, "started executor: {}", argv.join(" "));
    Ok(Executor {
        pid,
        signals,
        noted: false,
    })
}

async fn watch(
    id: ExecutorId,
    pid: u32,
    mut child: Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    drains: Vec<tokio::task::JoinHandle<()>>,
    tail: Arc<Mutex<Tail>>,
    exits: mpsc::UnboundedSender<ExecutorExited>,
) {
    let mut note = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signals.recv() => {
                // `id()` is None once reaped; only this task reaps, so the pid is still ours.
                if let Some(pid) = child.id() {
                    // SAFETY: plain syscall; a negative pid addresses the child's group.
                    unsafe { libc::kill(-(pid as libc::pid_t), signal.number) };
                    note = note.or(signal.note);
                }
            }
        }
    };
    // Anything the service started is orphaned in the child's group now: take it down too, so
    // the node leaves nothing behind (and inherited pipes close). The group id cannot have been
    // recycled this soon: pids are handed out cyclically and the child was reaped just now.
    // SAFETY: plain syscall; ESRCH when the group is already empty.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    let mut drains = drains;
    let drained = async {
        for drain in &mut drains {
            let _ = drain.await;
        }
    };
    if tokio::time::timeout(PIPE_DRAIN, drained).await.is_err() {
        tracing::debug!(executor = %id, "output pipe still open after exit; not waiting");
        drains.iter().for_each(|d| d.abort());
    }
    let mut stderr_tail = tail.lock().map(|t| t.text()).unwrap_or_default();
    let report = match status {
        Ok(status) => {
            // A child that exited by itself just as the kill went out was not killed by us.
            if let Some(note) = note.filter(|_| status.signal() == Some(libc::SIGKILL)) {
                stderr_tail = if stderr_tail.is_empty() {
                    note
                } else {
                    format!("{note}\n{stderr_tail}")
                };
            }
            ExecutorExited {
                executor_id: id.0,
                exit_code: status.code().unwrap_or(-1),
                signal: status.signal().unwrap_or(0),
                stderr_tail,
            }
        }
        Err(e) => ExecutorExited {
            executor_id: id.0,
            exit_code: -1,
            signal: 0,
            stderr_tail: format!("{stderr_tail}\n(node could not wait for the executor: {e})"),
        },
    };
    tracing::info!(executor = %id, code = report.exit_code, signal = report.signal, "executor exited");
    let _ = exits.send(report);
}

/// Reads one pipe to its end, logging each line; stderr lines also go to the tail.
async fn drain(
    id: ExecutorId,
    stream: &'static str,
    mut pipe: impl AsyncRead + Unpin,
    tail: Option<Arc<Mutex<Tail>>>,
) {
    let mut buf = vec![0u8; 8192];
    let mut lines = Lines::default();
    let mut emit = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        tracing::debug!(executor = %id, stream, "{line}");
        if let Some(tail) = &tail {
            if let Ok(mut tail) = tail.lock() {
                tail.push(line.into_owned());
            }
        }
    };
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.feed(&buf[..n], &mut emit),
        }
    }
    lines.finish(&mut emit);
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes, without the newline.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, bytes: &[u8], emit: &mut impl FnMut(&[u8])) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, complete) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&text[..text.len().min(room)]);
            if complete {
                emit(&self.partial);
                self.partial.clear();
            }
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// The last [`TAIL_LINES`] lines of stderr.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = Lines::default();
        let mut emit = |l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        for chunk in chunks {
            lines.feed(chunk, &mut emit);
        }
        lines.finish(&mut emit);
        out
    }

    #[test]
    fn lines_span_chunks_and_are_capped() {
        assert_eq!(split(&[b"ab", b"c\nde", b"\n\nf"]), ["abc", "de", "", "f"]);
        let long = vec![b'x'; MAX_LINE * 3];
        let lines = split(&[&long, b"\nnext\n"]);
        assert_eq!((lines[0].len(), lines[1].as_str()), (MAX_LINE, "next"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        for i in 0..TAIL_LINES + 10 {
            tail.push(format!("line {i}"));
        }
        let text = tail.text();
        assert!(
            text.starts_with("line 10\n") && text.ends_with(&format!("line {}", TAIL_LINES + 9))
        );
    }
}
