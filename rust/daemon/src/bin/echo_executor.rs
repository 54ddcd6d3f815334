//! `flame-echo-executor`: a native executor with no Python in it.
//!
//! It exists so the daemon (session manager, scheduler, node agent) can be tested and
//! benchmarked on its own: it speaks the real executor protocol through
//! `flame_core::executor::run_executor_process` (dying with its node like any executor), and
//! its service simply echoes each task's input.
//!
//! Inputs with a meaning:
//! - `fail:<message>` — the task fails as a user exception with `<message>`;
//! - `say:<text>` — the task "prints" `<text>` (it becomes the task's log) and echoes;
//! - `sleep:<ms>...` — sleeps `<ms>` milliseconds, then echoes the whole input;
//! - `alloc:<mb>...` — allocates and touches `<mb>` MiB, holds it for 10 s, then echoes the
//!   input (a leaking service, for the node's memory limit);
//! - common data `fail-enter` — entering the session fails.
//!
//! Usage: `flame-echo-executor --address http://127.0.0.1:4567 --executor-id 7`

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flame_core::client::Credentials;
use flame_core::executor::{run_executor_process, ServiceHost, SessionContext};
use flame_core::ids::{ExecutorId, SessionId, TaskId};
use flame_core::model::{ErrorKind, TaskFailure};
use prost::bytes::Bytes;

/// Serve a Flame session manager as an echo executor.
#[derive(Parser)]
#[command(name = "flame-echo-executor")]
struct Args {
    /// Address of the session manager's Backend service.
    #[arg(long)]
    address: String,
    /// The executor id the session manager asked the node to start.
    #[arg(long)]
    executor_id: u64,
}

#[derive(Default)]
struct Echo {
    /// What the current task "printed" (`say:`), until the loop takes it.
    log: String,
}

impl ServiceHost for Echo {
    fn enter(&mut self, ctx: &SessionContext) -> Result<(), TaskFailure> {
        if ctx.common_data.as_ref() == b"fail-enter" {
            return Err(TaskFailure::new(
                ErrorKind::ErrorUserException,
                "enter failed: the common data asked for it",
            ));
        }
        Ok(())
    }

    fn invoke(&mut self, _: SessionId, _: TaskId, input: Bytes) -> Result<Bytes, TaskFailure> {
        if let Some(message) = input.strip_prefix(b"fail:") {
            let message = String::from_utf8_lossy(message);
            return Err(TaskFailure::new(ErrorKind::ErrorUserException, message));
        }
        if let Some(text) = input.strip_prefix(b"say:") {
            self.log = String::from_utf8_lossy(text).into_owned();
        }
        if let Some(rest) = input.strip_prefix(b"sleep:") {
            std::thread::sleep(Duration::from_millis(leading_number(rest)));
        }
        if let Some(rest) = input.strip_prefix(b"alloc:") {
            let mib = usize::try_from(leading_number(rest)).unwrap_or(usize::MAX);
            let mut held = vec![0u8; mib.saturating_mul(1 << 20)];
            // Zeroed pages are not resident until written: touch each one.
            held.iter_mut().step_by(4096).for_each(|b| *b = 1);
            std::hint::black_box(&held);
            std::thread::sleep(Duration::from_secs(10));
        }
        Ok(input)
    }

    fn leave(&mut self) {}

    fn take_log(&mut self) -> String {
        std::mem::take(&mut self.log)
    }
}

/// The decimal number `bytes` starts with; 0 when there is none.
fn leading_number(bytes: &[u8]) -> u64 {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&bytes[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    // The node's credentials, handed down through the environment.
    let run = Credentials::from_env().and_then(|creds| {
        run_executor_process(
            &args.address,
            &creds,
            ExecutorId(args.executor_id),
            &mut Echo::default(),
        )
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flame-echo-executor {}: {e}", args.executor_id);
            ExitCode::FAILURE
        }
    }
}
