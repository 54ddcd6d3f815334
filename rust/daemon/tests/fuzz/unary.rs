//! Phase 1, unary Frontend calls: each `Call` as typed or raw bytes, what a correct daemon
//! answers to it given the applications registered so far, and the fuzzing loop sending
//! `IN_FLIGHT` calls at once, each on its own connection.

use std::collections::BTreeSet;

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use flame_core::proto;

use crate::findings::{checkpoint, describe_bytes, err, ok_or, short, Expect, Findings};
use crate::findings::{INVALID, TOO_BIG, TOO_BIG_OR_MISSING, UNDECODABLE, USER_ERRORS};
use crate::gen::{Gen, UNKNOWN_PATHS};
use crate::wire::{hang, none, raw_unary, Wire};
use crate::{CALL_TIMEOUT, IN_FLIGHT, LIMIT, UNARY_CALLS};

#[derive(Clone)]
pub enum Call {
    Hello(proto::HelloRequest),
    Register(proto::Application),
    GetApp(String),
    ListApps,
    Create(proto::CreateSessionRequest),
    Get(u64),
    ListSessions,
    Close(u64),
    Cluster,
}

impl Call {
    pub fn method(&self) -> &'static str {
        match self {
            Call::Hello(_) => "Hello",
            Call::Register(_) => "RegisterApplication",
            Call::GetApp(_) => "GetApplication",
            Call::ListApps => "ListApplications",
            Call::Create(_) => "CreateSession",
            Call::Get(_) => "GetSession",
            Call::ListSessions => "ListSessions",
            Call::Close(_) => "CloseSession",
            Call::Cluster => "GetClusterInfo",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Call::Hello(r) => r.encode_to_vec(),
            Call::Register(a) => a.encode_to_vec(),
            Call::GetApp(name) => proto::ApplicationRef { name: name.clone() }.encode_to_vec(),
            Call::Create(r) => r.encode_to_vec(),
            Call::Get(id) | Call::Close(id) => {
                proto::SessionRef { session_id: *id }.encode_to_vec()
            }
            Call::ListApps | Call::ListSessions | Call::Cluster => Vec::new(),
        }
    }

    /// The request a body decodes to, as the daemon will see it; `None` if it does not decode.
    pub fn decode(method: &str, b: &[u8]) -> Option<Call> {
        Some(match method {
            "Hello" => Call::Hello(proto::HelloRequest::decode(b).ok()?),
            "RegisterApplication" => Call::Register(proto::Application::decode(b).ok()?),
            "GetApplication" => Call::GetApp(proto::ApplicationRef::decode(b).ok()?.name),
            "CreateSession" => Call::Create(proto::CreateSessionRequest::decode(b).ok()?),
            "GetSession" => Call::Get(proto::SessionRef::decode(b).ok()?.session_id),
            "CloseSession" => Call::Close(proto::SessionRef::decode(b).ok()?.session_id),
            "ListApplications" => proto::Empty::decode(b).ok().map(|_| Call::ListApps)?,
            "ListSessions" => proto::Empty::decode(b).ok().map(|_| Call::ListSessions)?,
            _ => proto::Empty::decode(b).ok().map(|_| Call::Cluster)?,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Call::Hello(r) => format!("Hello(name {}, previous {})", short(&r.client_name), r.previous_client_id),
            Call::Register(a) => format!(
                "RegisterApplication(name {}, spec {} B, description {})",
                short(&a.name),
                a.spec.len(),
                short(&a.description)
            ),
            Call::GetApp(name) => format!("GetApplication({})", short(name)),
            Call::Create(proto::CreateSessionRequest { spec: None }) => "CreateSession(spec: None)".into(),
            Call::Create(proto::CreateSessionRequest { spec: Some(s) }) => format!(
                "CreateSession(application {}, app_spec {} B, common_data {} B, slots {}, retries {}, \
                 timeout {:e}, priority {}, python {}, owner {})",
                short(&s.application),
                s.app_spec.len(),
                s.common_data.len(),
                s.slots,
                s.max_retries,
                s.timeout_secs,
                s.priority,
                short(&s.python),
                s.owner
            ),
            Call::Get(id) => format!("GetSession({id})"),
            Call::Close(id) => format!("CloseSession({id})"),
            Call::ListApps | Call::ListSessions | Call::Cluster => self.method().into(),
        }
    }

    /// What a correct daemon answers, given the applications registered so far. A field over
    /// the payload limit must be refused; fields that only add up to more may be.
    pub fn expect(&self, apps: &BTreeSet<String>) -> Expect {
        let blank = |s: &str| s.trim().is_empty();
        match self {
            Call::Hello(_) => ok_or(USER_ERRORS),
            Call::Register(a) if blank(&a.name) => err(INVALID),
            Call::Register(a) => {
                let sizes = [a.name.len(), a.spec.len(), a.description.len()];
                match (
                    sizes.iter().any(|n| *n > LIMIT),
                    sizes.iter().sum::<usize>() > LIMIT,
                ) {
                    (true, _) => err(TOO_BIG),
                    (false, true) => ok_or(TOO_BIG),
                    (false, false) => ok_or(&[]),
                }
            }
            Call::GetApp(_) => ok_or(&[Code::NotFound, Code::InvalidArgument]),
            Call::Create(proto::CreateSessionRequest { spec: None }) => err(INVALID),
            Call::Create(proto::CreateSessionRequest { spec: Some(s) }) => {
                let t = s.timeout_secs;
                if blank(&s.application) || !t.is_finite() || t < 0.0 {
                    return err(TOO_BIG);
                }
                let missing = s.app_spec.is_empty() && !apps.contains(&s.application);
                let data = s.app_spec.len() + s.common_data.len();
                let text = [s.application.len(), s.python.len()];
                let must_refuse = data > LIMIT || text.iter().any(|n| *n > LIMIT);
                // Absurd but finite time limits may be refused, or taken to mean "none".
                let may_refuse = data + text.iter().sum::<usize>() > LIMIT || t > 1e9;
                match (missing, must_refuse, may_refuse) {
                    (true, false, false) => err(&[Code::NotFound]),
                    // Which of "too big" and "no such application" comes first is the daemon's.
                    (true, _, _) => err(TOO_BIG_OR_MISSING),
                    (false, true, _) => err(TOO_BIG),
                    (false, false, true) => ok_or(TOO_BIG),
                    (false, false, false) => ok_or(&[]),
                }
            }
            Call::Get(0) | Call::Close(0) => err(INVALID),
            Call::Get(_) | Call::Close(_) => ok_or(&[Code::NotFound]),
            Call::ListApps | Call::ListSessions | Call::Cluster => ok_or(&[]),
        }
    }
}

/// Send a call, typed or as raw bytes; on success, the id of a session it created.
async fn run(
    w: Wire,
    call: Option<Call>,
    raw: Option<(&'static str, Bytes)>,
) -> Result<Option<u64>, Status> {
    let Wire { mut fe, grpc, .. } = w;
    if let Some((path, body)) = raw {
        let reply = raw_unary(grpc, path, body).await?;
        let created = path
            .ends_with("/CreateSession")
            .then(|| proto::SessionInfo::decode(reply));
        return Ok(created.and_then(|i| i.ok()).map(|i| i.id));
    }
    match call.expect("a typed call") {
        Call::Hello(r) => fe.hello(r).await.map(none),
        Call::Register(a) => fe.register_application(a).await.map(none),
        Call::GetApp(name) => fe
            .get_application(proto::ApplicationRef { name })
            .await
            .map(none),
        Call::ListApps => fe.list_applications(proto::Empty {}).await.map(none),
        Call::Create(r) => fe.create_session(r).await.map(|r| Some(r.into_inner().id)),
        Call::Get(id) => fe
            .get_session(proto::SessionRef { session_id: id })
            .await
            .map(none),
        Call::ListSessions => fe.list_sessions(proto::Empty {}).await.map(none),
        Call::Close(id) => fe
            .close_session(proto::SessionRef { session_id: id })
            .await
            .map(none),
        Call::Cluster => fe.get_cluster_info(proto::Empty {}).await.map(none),
    }
}

/// One unary case: the request as the daemon will see it (if it decodes), the raw bytes if it
/// goes raw, a label, a description, and the answers a correct daemon may give.
type Case = (
    Option<Call>,
    Option<(&'static str, Bytes)>,
    &'static str,
    String,
    Expect,
);

fn unary_case(g: &mut Gen, f: &mut Findings) -> Case {
    if g.rng.chance(30) {
        f.count("unary: raw bodies");
        let (path, body) = g.raw();
        let input = format!("raw {path} {}", describe_bytes(&body));
        if UNKNOWN_PATHS.contains(&path) {
            return (
                None,
                Some((path, body)),
                "unknown method",
                input,
                err(&[Code::Unimplemented]),
            );
        }
        let call = Call::decode(path.rsplit('/').next().unwrap_or_default(), &body);
        let (what, expect) = match &call {
            Some(c) => (c.method(), c.expect(&g.apps)),
            None => ("undecodable body", err(UNDECODABLE)),
        };
        return (call, Some((path, body)), what, input, expect);
    }
    let c = g.call();
    f.count(match c {
        Call::Create(_) => "unary: CreateSession",
        Call::Get(_) | Call::Close(_) => "unary: GetSession/CloseSession",
        Call::Register(_) | Call::GetApp(_) => "unary: applications",
        Call::Hello(_) => "unary: Hello",
        _ => "unary: lists and cluster info",
    });
    let (what, input, expect) = (c.method(), c.describe(), c.expect(&g.apps));
    (Some(c), None, what, input, expect)
}

pub async fn fuzz_unary(g: &mut Gen, f: &mut Findings, wires: &[Wire]) {
    for _ in 0..UNARY_CALLS / IN_FLIGHT {
        let mut running = Vec::new();
        let mut recent = Vec::new();
        for w in wires {
            let (call, raw, what, input, expect) = unary_case(g, f);
            let r = tokio::time::timeout(CALL_TIMEOUT, run(w.clone(), call.clone(), raw));
            running.push((call, what, tokio::spawn(r), expect));
            recent.push(input);
        }
        for ((call, what, task, expect), input) in running.into_iter().zip(&recent) {
            let r = task.await.unwrap().unwrap_or_else(|_| Err(hang()));
            f.judge(what, input, &r, expect);
            let Ok(created) = r else {
                continue;
            };
            g.open.extend(created);
            match call {
                Some(Call::Register(a)) => {
                    g.apps.insert(a.name);
                }
                Some(Call::Close(id)) => {
                    if let Some(at) = g.open.iter().position(|s| *s == id) {
                        g.closed.push(g.open.swap_remove(at));
                    }
                }
                _ => {}
            }
        }
        checkpoint("unary fuzzing", None, f, &recent).await;
    }
    checkpoint("unary fuzzing", Some(&wires[0].fe), f, &[]).await;
}
