//! Findings: every panic in the process, the answers a call may get (`Expect` and the sets of
//! status codes), wrong answers recorded once per kind with the input that produced them, and
//! checkpoints that fail the test at once if anything panicked or the daemon stopped answering.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use tonic::{Code, Status};

use flame_core::model::{ErrorKind, TaskState};
use flame_core::proto::{self, frontend_client::FrontendClient};

use crate::wire::Authed;
use crate::CALL_TIMEOUT;

/// Every panic on any thread of this process, with where it happened in Flame's code.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The panic's own location is often in std; the first Flame frames say whose bug.
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            let lines: Vec<&str> = trace.lines().collect();
            let ours = lines
                .iter()
                .position(|l| l.contains("flame_") && !l.contains("fuzz::"))
                .map(|i| lines[i..(i + 4).min(lines.len())].join("\n"))
                .unwrap_or_default();
            if let Ok(mut p) = PANICS.lock() {
                p.push(format!("{info}\n{ours}"));
            }
            previous(info);
        }));
    });
}

pub fn panics() -> Vec<String> {
    PANICS.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Fail because the daemon did not do what any working daemon does; say why, if it panicked.
pub fn broken(what: &str, e: impl std::fmt::Debug) -> ! {
    panic!(
        "expected {what}, got {e:?}\npanics:\n{}",
        panics().join("\n\n")
    )
}

pub const INVALID: &[Code] = &[Code::InvalidArgument];
pub const TOO_BIG: &[Code] = &[Code::ResourceExhausted, Code::InvalidArgument];
pub const TOO_BIG_OR_MISSING: &[Code] = &[
    Code::ResourceExhausted,
    Code::InvalidArgument,
    Code::NotFound,
];
pub const USER_ERRORS: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
];
/// A body that is not protobuf: tonic answers INTERNAL ("failed to decode"), as gRPC has it.
pub const UNDECODABLE: &[Code] = &[Code::Internal, Code::InvalidArgument];

/// What an answer may be: success and/or these error codes.
#[derive(Clone, Copy)]
pub struct Expect {
    ok: bool,
    codes: &'static [Code],
}

pub fn ok_or(codes: &'static [Code]) -> Expect {
    Expect { ok: true, codes }
}

pub fn err(codes: &'static [Code]) -> Expect {
    Expect { ok: false, codes }
}

/// Wrong answers, each kind recorded once with the first input that produced it.
#[derive(Default)]
pub struct Findings {
    pub list: Vec<String>,
    seen: HashSet<String>,
    pub counts: BTreeMap<&'static str, u64>,
}

impl Findings {
    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    pub fn bad(&mut self, kind: String, input: impl std::fmt::Display) {
        if self.seen.insert(kind.clone()) {
            self.list.push(format!("{kind}\n      input: {input}"));
        }
    }

    pub fn judge<T>(&mut self, call: &str, input: &str, r: &Result<T, Status>, e: Expect) {
        let s = match r {
            Ok(_) if e.ok => return,
            Ok(_) => {
                return self.bad(
                    format!("{call} accepted what it must refuse with {:?}", e.codes),
                    input,
                )
            }
            Err(s) => s,
        };
        if !e.codes.contains(&s.code()) {
            let wanted = format!("{}{:?}", if e.ok { "OK or " } else { "" }, e.codes);
            let input = format!("{input}\n      status: {}", short(s.message()));
            self.bad(
                format!("{call} answered {:?} (wanted {wanted})", s.code()),
                input,
            );
        } else if s.message().trim().is_empty() && s.code() != Code::Unimplemented {
            // (tonic's router answers an unknown method by itself, with no message.)
            self.bad(
                format!("{call} answered {:?} with no message", s.code()),
                input,
            );
        }
    }

    /// A completion is final; a failure says what went wrong; a success echoes an input.
    pub fn completion(
        &mut self,
        c: &proto::TaskCompletion,
        sent: &HashMap<(u64, u64), Vec<Bytes>>,
    ) {
        self.count("completions checked");
        let input = format!(
            "task {} of session {}: {}",
            c.task_id,
            c.session_id,
            short(&format!("{c:?}"))
        );
        let internal = [
            ErrorKind::ErrorInternal as i32,
            ErrorKind::Unspecified as i32,
        ];
        match (TaskState::from_i32(c.state), &c.error) {
            (Ok(TaskState::Succeeded), _) => match sent.get(&(c.session_id, c.task_id)) {
                Some(inputs) if inputs.contains(&c.output) => {}
                Some(_) => self.bad(
                    "a task succeeded with an output that was none of its inputs".into(),
                    input,
                ),
                None => self.bad("a completion came for a task never submitted".into(), input),
            },
            (Ok(TaskState::Failed | TaskState::Cancelled), Some(e)) => {
                if e.message.trim().is_empty() {
                    self.bad(format!("a task failed ({}) with no message", e.kind), input);
                } else if internal.contains(&e.kind) {
                    self.bad(format!("a task failed as internal ({})", e.kind), input);
                }
            }
            (Ok(TaskState::Failed | TaskState::Cancelled), None) => {
                self.bad("a task failed without an error".into(), input)
            }
            _ => self.bad(format!("a completion in state {}", c.state), input),
        }
    }
}

pub fn short(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    match end < s.len() {
        true => format!("{}… ({} bytes)", s[..end].escape_debug(), s.len()),
        false => s.escape_debug().to_string(),
    }
}

pub fn describe_bytes(b: &[u8]) -> String {
    format!("{} bytes {:02x?}", b.len(), &b[..b.len().min(24)])
}

/// Fail at once if anything panicked (or, given a stub, if the daemon stopped answering),
/// showing what was sent just before.
pub async fn checkpoint(
    phase: &str,
    ask: Option<&FrontendClient<Authed>>,
    f: &Findings,
    recent: &[String],
) {
    let alive = match ask {
        None => true,
        Some(fe) => {
            let mut fe = fe.clone();
            let info = fe.get_cluster_info(proto::Empty {});
            matches!(tokio::time::timeout(CALL_TIMEOUT, info).await, Ok(Ok(_)))
        }
    };
    let p = panics();
    if p.is_empty() && alive {
        return;
    }
    panic!(
        "during {phase}: {}\npanics:\n{}\ninputs sent just before:\n  {}\nfindings so far:\n  {}",
        if p.is_empty() {
            "the daemon stopped answering"
        } else {
            "something panicked"
        },
        p.join("\n\n"),
        recent.join("\n  "),
        f.list.join("\n  ")
    );
}
