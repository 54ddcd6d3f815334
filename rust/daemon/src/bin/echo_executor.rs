//! `flame-echo-executor`: a native executor with no Python in it.
//!
//! It exists so the daemon (session manager, scheduler, node agent) can be tested and
//! benchmarked on its own: it speaks the real executor protocol through
//! `flame_core::executor::run_executor`, and its service simply echoes each task's input.
//!
//! Inputs with a meaning:
//! - `fail:<message>` — the task fails as a user exception with `<message>`;
//! - `sleep:<ms>...` — sleeps `<ms>` milliseconds, then echoes the whole input;
//! - common data `fail-enter` — entering the session fails.
//!
//! Usage: `flame-echo-executor --address http://127.0.0.1:4567 --executor-id 7`

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flame_core::executor::{run_executor, ServiceHost, SessionContext};
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

struct Echo;

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
        if let Some(rest) = input.strip_prefix(b"sleep:") {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let ms = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(input)
    }

    fn leave(&mut self) {}
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match run_executor(&args.address, ExecutorId(args.executor_id), &mut Echo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flame-echo-executor {}: {e}", args.executor_id);
            ExitCode::FAILURE
        }
    }
}
