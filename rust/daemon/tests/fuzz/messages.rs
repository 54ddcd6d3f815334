//! Generated task-stream messages: submissions (empty, duplicated, zero and junk ids, inputs
//! over the limit), watches, cancels and empty messages, with the inputs remembered so that
//! outputs can be checked; and a one-line description of each for the findings.

use bytes::Bytes;

use flame_core::proto::{self, client_message};

use crate::gen::Gen;
use crate::LIMIT;

impl Gen {
    fn any_session(&mut self) -> u64 {
        match self.rng.below(100) {
            0..=7 => 0,
            8..=15 => self.rng.next(),
            16..=18 => u64::MAX,
            19..=28 if !self.closed.is_empty() => self.rng.pick(&self.closed),
            _ if !self.open.is_empty() => self.rng.pick(&self.open),
            _ => 1,
        }
    }

    fn task_id(&mut self, client: u32) -> u64 {
        match self.rng.below(100) {
            0..=3 => 0,
            4..=7 => (client as u64) << 32,
            8..=12 => self.rng.next(),
            13..=15 => u64::MAX,
            16..=25 if !self.sent_keys.is_empty() => self.rng.pick(&self.sent_keys).1,
            _ => {
                self.counter += 1;
                ((client as u64) << 32) | self.counter as u64
            }
        }
    }

    pub fn input(&mut self) -> Bytes {
        match self.rng.below(1000) {
            0..=99 => Bytes::from(format!("fail:fuzz {}", self.rng.below(100))),
            100..=109 => {
                let n = LIMIT + 1 + self.rng.below(64) as usize;
                self.filled(n)
            }
            110..=114 => self.filled(LIMIT),
            _ => {
                let n = self.rng.below(64) as usize;
                self.filled(n)
            }
        }
    }

    pub fn remember(&mut self, session: u64, task: u64, input: &Bytes) {
        if input.len() > LIMIT {
            return;
        }
        let inputs = self.sent.entry((session, task)).or_default();
        if inputs.is_empty() {
            self.sent_keys.push((session, task));
        }
        if inputs.len() < 8 {
            inputs.push(input.clone());
        }
    }

    /// A submission (empty, duplicated, zero and junk ids, inputs over the limit), a watch
    /// (sometimes of 2000 ids), a cancel, or a message with nothing in it.
    pub fn client_message(&mut self, client: u32) -> proto::ClientMessage {
        let session_id = self.any_session();
        let msg = match self.rng.below(100) {
            0..=4 => None,
            5..=64 => {
                let n = match self.rng.below(100) {
                    0..=7 => 0,
                    8..=96 => 1 + self.rng.below(8),
                    _ => 20 + self.rng.below(80),
                };
                let mut tasks: Vec<proto::TaskSubmission> = Vec::new();
                for _ in 0..n {
                    let task_id = match tasks.last() {
                        Some(prev) if self.rng.chance(10) => prev.task_id,
                        _ => self.task_id(client),
                    };
                    let input = self.input();
                    self.remember(session_id, task_id, &input);
                    tasks.push(proto::TaskSubmission {
                        task_id,
                        input,
                        reads: Vec::new(),
                    });
                }
                Some(client_message::Msg::Submit(proto::SubmitBatch {
                    session_id,
                    tasks,
                }))
            }
            65..=84 => {
                let n = if self.rng.chance(3) {
                    2000
                } else {
                    self.rng.below(6)
                };
                let task_ids = (0..n).map(|_| self.task_id(client)).collect();
                Some(client_message::Msg::Watch(proto::Watch {
                    session_id,
                    task_ids,
                }))
            }
            _ => Some(client_message::Msg::Cancel(proto::CancelTask {
                session_id,
                task_id: self.task_id(client),
            })),
        };
        proto::ClientMessage { msg }
    }
}

pub fn describe_message(m: &proto::ClientMessage) -> String {
    match &m.msg {
        None => "ClientMessage { msg: None }".into(),
        Some(client_message::Msg::Created(c)) => {
            format!("Created node {} {} objects", c.node_id, c.objects.len())
        }
        Some(client_message::Msg::Submit(b)) => {
            let tasks = b
                .tasks
                .iter()
                .take(6)
                .map(|t| format!("{}:{}B", t.task_id, t.input.len()));
            let tasks: Vec<String> = tasks.collect();
            format!(
                "Submit session {} {} tasks [{}]",
                b.session_id,
                b.tasks.len(),
                tasks.join(", ")
            )
        }
        Some(client_message::Msg::Watch(w)) => {
            format!("Watch session {} {} ids", w.session_id, w.task_ids.len())
        }
        Some(client_message::Msg::Cancel(c)) => {
            format!("Cancel session {} task {}", c.session_id, c.task_id)
        }
    }
}
