//! Fuzz-style end-to-end test: hostile and malformed input is answered with a status a user can
//! act on (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, with a
//! message), never panics anything in the daemon, and does not stop it serving.
//!
//! One real cluster on loopback (a head, and a node running `flame-echo-executor`), then, all
//! drawn from one seeded PRNG (the seed is printed; `FLAME_FUZZ_SEED=<n>` replays the inputs,
//! though ids the daemon hands out may differ with timing):
//! 1. unary Frontend calls with random and mutated fields, and raw, often undecodable, bodies;
//! 2. random messages on task streams, then raw frames on streams;
//! 3. hostile Backend streams: bad registrations, raw frames, a node and an executor that lie;
//! 4. a normal session of 500 echo tasks: each must complete once, with its output.
//!
//! Wrong answers are collected, once per kind, and reported together at the end. A panic on
//! any thread of the process (the daemon runs in it) fails the test at the next checkpoint,
//! which shows where it happened and the inputs sent just before.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use flame_core::client::{Client, CLIENT_ID_HEADER};
use flame_core::ids::{SessionId, TaskId};
use flame_core::model::{ErrorKind, SessionSpec, TaskState};
use flame_core::proto::{self, backend_client::BackendClient, frontend_client::FrontendClient};
use flame_core::proto::{client_message, executor_command, executor_message};
use flame_core::proto::{node_command, node_message, server_message};
use flame_daemon::executor_manager::NodeConfig;
use flame_daemon::local::LocalCluster;
use flame_daemon::server::HeadConfig;
use flame_daemon::session_manager::ManagerConfig;

/// The head's payload limit: small, so going over it costs little memory.
const LIMIT: usize = 1 << 20;
const UNARY_CALLS: usize = 2000;
/// Unary calls sent at once, each on its own connection.
const IN_FLIGHT: usize = 8;
const STREAM_MESSAGES: usize = 1200;
const TASK_STREAMS: usize = 3;
const RAW_STREAMS: usize = 60;
const RAW_BACKEND_STREAMS: usize = 40;
const FINAL_TASKS: usize = 500;
/// Longest any one answer may take; longer is reported as a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = 1 << 30;

const INVALID: &[Code] = &[Code::InvalidArgument];
const TOO_BIG: &[Code] = &[Code::ResourceExhausted, Code::InvalidArgument];
const TOO_BIG_OR_MISSING: &[Code] = &[
    Code::ResourceExhausted,
    Code::InvalidArgument,
    Code::NotFound,
];
const USER_ERRORS: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
];
/// A body that is not protobuf: tonic answers INTERNAL ("failed to decode"), as gRPC has it.
const UNDECODABLE: &[Code] = &[Code::Internal, Code::InvalidArgument];
const PATHS: &[&str] = &[
    "/flame.Frontend/Hello",
    "/flame.Frontend/RegisterApplication",
    "/flame.Frontend/GetApplication",
    "/flame.Frontend/ListApplications",
    "/flame.Frontend/CreateSession",
    "/flame.Frontend/GetSession",
    "/flame.Frontend/ListSessions",
    "/flame.Frontend/CloseSession",
    "/flame.Frontend/GetClusterInfo",
];
const UNKNOWN_PATHS: &[&str] = &["/flame.Frontend/NoSuchMethod", "/flame.Nope/Hello", "/"];
const WEIRD: &[&str] = &[
    "é🔥名前",
    "nul\0inside",
    "\u{202e}rtl\u{feff}",
    "../../etc/passwd",
    "%s%n%x{}",
    "'; DROP TABLE sessions; --",
    "line\nbreak",
];

// ---------------------------------------------------------------- panics and the PRNG

/// Every panic on any thread of this process, with where it happened in Flame's code.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
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

fn panics() -> Vec<String> {
    PANICS.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Fail because the daemon did not do what any working daemon does; say why, if it panicked.
fn broken(what: &str, e: impl std::fmt::Debug) -> ! {
    panic!(
        "expected {what}, got {e:?}\npanics:\n{}",
        panics().join("\n\n")
    )
}

/// xorshift64*: tiny and deterministic; plenty for choosing fuzz inputs.
struct Rng(u64);

impl Rng {
    /// Any seed works: splitmix64 spreads it (and the state is never 0).
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new(0)
    }
}

fn seed() -> u64 {
    let Ok(s) = std::env::var("FLAME_FUZZ_SEED") else {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        return now.map(|d| d.as_nanos() as u64).unwrap_or(1);
    };
    let parsed = match s.trim().strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.trim().parse(),
    };
    parsed.unwrap_or_else(|_| panic!("FLAME_FUZZ_SEED={s} is not a u64"))
}

// ---------------------------------------------------------------- the wire

/// One connection to the head, with the typed stubs and a raw one.
#[derive(Clone)]
struct Wire {
    fe: FrontendClient<Channel>,
    be: BackendClient<Channel>,
    grpc: Grpc<Channel>,
}

impl Wire {
    async fn connect(address: &str) -> Wire {
        let channel = Endpoint::from_shared(address.to_string())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("the head answers");
        Wire {
            fe: FrontendClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            be: BackendClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            grpc: Grpc::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }
}

/// A codec that passes message bodies through as they are, so any bytes can be sent.
#[derive(Clone, Copy)]
struct RawCodec;

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

async fn raw_unary(
    mut grpc: Grpc<Channel>,
    path: &'static str,
    body: Bytes,
) -> Result<Bytes, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let r = grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    );
    Ok(r.await?.into_inner())
}

/// Send `frames` on a streaming method and read the answer to its end, in the background:
/// `Ok` if the stream ended cleanly, its status if it ended with one.
fn exchange(
    grpc: &Grpc<Channel>,
    path: &'static str,
    frames: Vec<Bytes>,
) -> JoinHandle<Result<(), Status>> {
    let mut grpc = grpc.clone();
    tokio::spawn(async move {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = tonic::Request::new(tokio_stream::iter(frames));
        let call = grpc.streaming(req, PathAndQuery::from_static(path), RawCodec);
        let mut s = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| hang())??
            .into_inner();
        drain(&mut s).await.map(|_| ())
    })
}

async fn drain<T>(s: &mut Streaming<T>) -> Result<Vec<T>, Status> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, s.message())
            .await
            .map_err(|_| hang())??
        {
            Some(m) => got.push(m),
            None => return Ok(got),
        }
    }
}

/// For calls whose answer does not matter, only whether there is one.
fn none<T>(_: T) -> Option<u64> {
    None
}

fn hang() -> Status {
    Status::deadline_exceeded(format!("(test) no answer within {CALL_TIMEOUT:?}"))
}

// ---------------------------------------------------------------- findings

/// What an answer may be: success and/or these error codes.
#[derive(Clone, Copy)]
struct Expect {
    ok: bool,
    codes: &'static [Code],
}

fn ok_or(codes: &'static [Code]) -> Expect {
    Expect { ok: true, codes }
}

fn err(codes: &'static [Code]) -> Expect {
    Expect { ok: false, codes }
}

/// Wrong answers, each kind recorded once with the first input that produced it.
#[derive(Default)]
struct Findings {
    list: Vec<String>,
    seen: HashSet<String>,
    counts: BTreeMap<&'static str, u64>,
}

impl Findings {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn bad(&mut self, kind: String, input: impl std::fmt::Display) {
        if self.seen.insert(kind.clone()) {
            self.list.push(format!("{kind}\n      input: {input}"));
        }
    }

    fn judge<T>(&mut self, call: &str, input: &str, r: &Result<T, Status>, e: Expect) {
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
    fn completion(&mut self, c: &proto::TaskCompletion, sent: &HashMap<(u64, u64), Vec<Bytes>>) {
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

fn short(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    match end < s.len() {
        true => format!("{}… ({} bytes)", s[..end].escape_debug(), s.len()),
        false => s.escape_debug().to_string(),
    }
}

fn describe_bytes(b: &[u8]) -> String {
    format!("{} bytes {:02x?}", b.len(), &b[..b.len().min(24)])
}

/// Fail at once if anything panicked (or, given a stub, if the daemon stopped answering),
/// showing what was sent just before.
async fn checkpoint(
    phase: &str,
    ask: Option<&FrontendClient<Channel>>,
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

// ---------------------------------------------------------------- input generation

/// The PRNG, plus what the test knows of the daemon's state.
#[derive(Default)]
struct Gen {
    rng: Rng,
    open: Vec<u64>,
    closed: Vec<u64>,
    apps: BTreeSet<String>,
    next_app: u64,
    /// Every input sent for (session, task) — to check outputs — and the keys in order.
    sent: HashMap<(u64, u64), Vec<Bytes>>,
    sent_keys: Vec<(u64, u64)>,
    counter: u32,
}

impl Gen {
    /// Mostly small, sometimes large, now and then at, just over or far over the limit.
    fn payload(&mut self) -> Bytes {
        let n = match self.rng.below(1000) {
            0..=599 => self.rng.below(32),
            600..=899 => self.rng.below(4096),
            900..=979 => self.rng.below(64 << 10),
            980..=994 => LIMIT as u64 - 2 + self.rng.below(5),
            _ => 2 * LIMIT as u64,
        };
        self.filled(n as usize)
    }

    /// `n` bytes, random when few; never an echo executor `sleep:` command.
    fn filled(&mut self, n: usize) -> Bytes {
        let mut b = if n <= 4096 {
            self.rng.bytes(n)
        } else {
            vec![b'z'; n]
        };
        if b.starts_with(b"sleep:") {
            b[0] = b'S';
        }
        Bytes::from(b)
    }

    /// A name: empty, blank, weird, plain, now and then over the payload limit.
    fn text(&mut self, huge: char) -> String {
        match self.rng.below(200) {
            0..=9 => String::new(),
            10..=17 => " \t\r\n ".into(),
            18..=19 => huge.to_string().repeat(LIMIT + 1),
            20..=49 => self.rng.pick(WEIRD).to_string(),
            _ => "echo".into(),
        }
    }

    fn u32_edge(&mut self) -> u32 {
        let random = self.rng.next() as u32;
        self.rng.pick(&[
            0,
            1,
            u32::MAX,
            u32::MAX - 1,
            1 << 31,
            random,
            random,
            random,
        ])
    }

    /// A task time limit: mostly none; invalid; absurdly long; rarely (each task then costs
    /// an executor) absurdly short.
    fn timeout(&mut self) -> f64 {
        match self.rng.below(1000) {
            0..=699 => 0.0,
            700..=799 => self.rng.pick(&[0.5, 30.0, -0.0]),
            800..=899 => self
                .rng
                .pick(&[f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY]),
            900..=997 => self.rng.pick(&[1e300, f64::MAX, 1e19, 9.3e18, 1e12]),
            _ => self.rng.pick(&[5e-324, 1e-9]),
        }
    }

    fn app_name(&mut self) -> String {
        match self.apps.len() as u64 {
            0 => self.text('c'),
            n => self
                .apps
                .iter()
                .nth(self.rng.below(n) as usize)
                .cloned()
                .unwrap_or_default(),
        }
    }

    // The proto grows: fields added later keep their defaults.
    #[allow(clippy::needless_update)]
    fn spec(&mut self) -> proto::SessionSpec {
        let application = if self.rng.chance(20) {
            self.app_name()
        } else {
            self.text('c')
        };
        let app_spec = if self.rng.chance(30) {
            Bytes::new()
        } else {
            self.payload()
        };
        let common_data = if self.rng.chance(60) {
            Bytes::new()
        } else {
            self.payload()
        };
        let python = match self.rng.below(100) {
            0..=79 => String::new(),
            80..=97 => self
                .rng
                .pick(&["python3", "/no/such/python", "nul\0python"])
                .into(),
            _ => "p".repeat(LIMIT + 1),
        };
        proto::SessionSpec {
            application,
            app_spec,
            common_data,
            slots: self.u32_edge(),
            max_retries: self.u32_edge(),
            timeout_secs: self.timeout(),
            priority: self.u32_edge() as i32,
            python,
            owner: if self.rng.chance(80) {
                0
            } else {
                self.u32_edge()
            },
            ..Default::default()
        }
    }

    fn application(&mut self) -> proto::Application {
        self.next_app += 1;
        let name = match self.rng.below(20) {
            0 => String::new(),
            1 => " \t ".into(),
            2 => format!("{}-{}", self.rng.pick(WEIRD), self.next_app),
            3 if self.rng.chance(20) => "r".repeat(LIMIT + 1),
            _ => format!("fuzz-app-{}", self.next_app),
        };
        let description = match self.rng.chance(1) {
            true => "d".repeat(LIMIT + 1),
            false => self.rng.pick(WEIRD).into(),
        };
        proto::Application {
            name,
            spec: self.payload(),
            description,
        }
    }

    fn session_ref(&mut self) -> u64 {
        match self.rng.below(10) {
            0 => 0,
            1..=3 if !self.open.is_empty() => self.rng.pick(&self.open),
            4 if !self.closed.is_empty() => self.rng.pick(&self.closed),
            5 => u64::MAX,
            6 => 1 << 63,
            7 => self.rng.below(1000),
            _ => self.rng.next(),
        }
    }

    fn call(&mut self) -> Call {
        let method = match self.rng.below(100) {
            0..=34 => "CreateSession",
            35..=46 => "GetSession",
            47..=55 => "CloseSession",
            56..=65 => "GetApplication",
            66..=81 => "RegisterApplication",
            82..=96 => "Hello",
            97 => "ListApplications",
            98 => "ListSessions",
            _ => "GetClusterInfo",
        };
        self.call_for(method)
    }

    fn call_for(&mut self, method: &str) -> Call {
        match method {
            "CreateSession" => Call::Create(proto::CreateSessionRequest {
                spec: if self.rng.chance(5) {
                    None
                } else {
                    Some(self.spec())
                },
            }),
            "GetSession" => Call::Get(self.session_ref()),
            "CloseSession" => Call::Close(self.session_ref()),
            "GetApplication" if self.rng.chance(50) => Call::GetApp(self.app_name()),
            "GetApplication" => Call::GetApp(self.text('g')),
            "RegisterApplication" => Call::Register(self.application()),
            "Hello" => Call::Hello(proto::HelloRequest {
                client_name: self.text('h'),
                previous_client_id: self.u32_edge(),
            }),
            "ListApplications" => Call::ListApps,
            "ListSessions" => Call::ListSessions,
            _ => Call::Cluster,
        }
    }

    /// Flip, cut, insert, overwrite and repeat bytes of an encoded message.
    fn mutate(&mut self, mut b: Vec<u8>) -> Vec<u8> {
        for _ in 0..=self.rng.below(3) {
            let at = self.rng.below(b.len() as u64 + 1) as usize;
            match self.rng.below(6) {
                0 if at < b.len() => b[at] ^= 1 << self.rng.below(8),
                1 => b.truncate(at),
                2 => b.insert(at, self.rng.next() as u8),
                3 if at < b.len() => b[at] = self.rng.pick(&[0x00, 0x7f, 0x80, 0xff]),
                4 => {
                    let n = 1 + self.rng.below(8) as usize;
                    let junk = self.rng.bytes(n);
                    b.splice(at..at, junk);
                }
                _ => {
                    let tail = b[at..].to_vec();
                    b.extend_from_slice(&tail);
                }
            }
        }
        b
    }

    /// A unary call's path and body: random bytes, nothing, or a mutated valid message.
    fn raw(&mut self) -> (&'static str, Bytes) {
        if self.rng.chance(5) {
            return (self.rng.pick(UNKNOWN_PATHS), Bytes::from(self.rng.bytes(8)));
        }
        let path = self.rng.pick(PATHS);
        let method = path.rsplit('/').next().unwrap_or_default();
        let body = match self.rng.below(10) {
            0..=2 => {
                let n = self.rng.below(48) as usize;
                self.rng.bytes(n)
            }
            3 => Vec::new(),
            _ => {
                let valid = self.call_for(method).encode();
                self.mutate(valid)
            }
        };
        (path, Bytes::from(body))
    }

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

    fn input(&mut self) -> Bytes {
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

    fn remember(&mut self, session: u64, task: u64, input: &Bytes) {
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
    fn client_message(&mut self, client: u32) -> proto::ClientMessage {
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
                    tasks.push(proto::TaskSubmission { task_id, input });
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

fn describe_message(m: &proto::ClientMessage) -> String {
    match &m.msg {
        None => "ClientMessage { msg: None }".into(),
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

// ---------------------------------------------------------------- 1. unary calls

#[derive(Clone)]
enum Call {
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
    fn method(&self) -> &'static str {
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

    fn encode(&self) -> Vec<u8> {
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
    fn decode(method: &str, b: &[u8]) -> Option<Call> {
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

    fn describe(&self) -> String {
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
    fn expect(&self, apps: &BTreeSet<String>) -> Expect {
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

async fn fuzz_unary(g: &mut Gen, f: &mut Findings, wires: &[Wire]) {
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

// ---------------------------------------------------------------- 2. task streams

/// One task stream: messages go in through `tx`, completions come out of `completions`.
struct TaskStream {
    client: u32,
    tx: Option<mpsc::UnboundedSender<proto::ClientMessage>>,
    completions: mpsc::UnboundedReceiver<proto::TaskCompletion>,
    reader: JoinHandle<Result<(), Status>>,
}

impl TaskStream {
    async fn open(fe: &FrontendClient<Channel>, header: &str, client: u32) -> TaskStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut req = tonic::Request::new(UnboundedReceiverStream::new(rx));
        if let Ok(v) = header.parse() {
            req.metadata_mut().insert(CLIENT_ID_HEADER, v);
        }
        let mut inbound = fe
            .clone()
            .stream(req)
            .await
            .unwrap_or_else(|e| broken("a task stream opens", e))
            .into_inner();
        let (done, completions) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(m) = inbound.message().await? {
                if let Some(server_message::Msg::Completions(b)) = m.msg {
                    for c in b.items {
                        let _ = done.send(c);
                    }
                }
            }
            Ok(())
        });
        TaskStream {
            client,
            tx: Some(tx),
            completions,
            reader,
        }
    }

    fn send(&self, m: proto::ClientMessage) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(m).is_ok())
    }

    fn check(&mut self, f: &mut Findings, sent: &HashMap<(u64, u64), Vec<Bytes>>) {
        while let Ok(c) = self.completions.try_recv() {
            f.completion(&c, sent);
        }
    }
}

async fn create_echo(fe: &FrontendClient<Channel>) -> u64 {
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        max_retries: 3,
        ..Default::default()
    };
    let req = proto::CreateSessionRequest {
        spec: Some(spec.into()),
    };
    let created = fe.clone().create_session(req).await;
    created
        .unwrap_or_else(|e| broken("a valid session can be created", e))
        .into_inner()
        .id
}

async fn fuzz_streams(g: &mut Gen, f: &mut Findings, fe: &FrontendClient<Channel>) {
    let hello = proto::HelloRequest {
        client_name: "fuzz".into(),
        previous_client_id: 0,
    };
    let id = fe
        .clone()
        .hello(hello)
        .await
        .map(|r| r.into_inner().client_id)
        .unwrap_or(0);
    let mut streams = Vec::new();
    for k in 0..TASK_STREAMS as u32 {
        // The client-id header: a real one, then junk the daemon must shrug off.
        let header = match k {
            0 => id.to_string(),
            _ => g
                .rng
                .pick(&["", "abc", "-5", "4294967296", "0", " 7"])
                .to_string(),
        };
        streams.push(TaskStream::open(fe, &header, 100 + k).await);
    }
    let mut recent = Vec::new();
    let mut closing = Vec::new();
    for i in 0..STREAM_MESSAGES {
        if g.rng.chance(3) && !g.open.is_empty() {
            // Close a session while tasks stream into it (judged when the fuzzing is over).
            let sid = g
                .open
                .swap_remove(g.rng.below(g.open.len() as u64) as usize);
            let mut fe = fe.clone();
            let req = proto::SessionRef { session_id: sid };
            let close = async move { fe.close_session(req).await };
            closing.push((sid, tokio::spawn(tokio::time::timeout(CALL_TIMEOUT, close))));
            g.closed.push(sid);
        } else if g.rng.chance(1) {
            g.open.push(create_echo(fe).await);
        }
        let k = g.rng.below(TASK_STREAMS as u64) as usize;
        let m = g.client_message(streams[k].client);
        f.count(match &m.msg {
            Some(client_message::Msg::Submit(_)) => "stream: submits",
            Some(client_message::Msg::Watch(_)) => "stream: watches",
            Some(client_message::Msg::Cancel(_)) => "stream: cancels",
            None => "stream: empty messages",
        });
        recent.push(format!("stream {k}: {}", describe_message(&m)));
        if recent.len() > 25 {
            recent.remove(0);
        }
        if !streams[k].send(m) {
            f.bad(
                "a task stream closed during the fuzzing".into(),
                recent.join("; "),
            );
        }
        if i % 25 == 24 {
            streams.iter_mut().for_each(|s| s.check(f, &g.sent));
            tokio::time::sleep(Duration::from_millis(2)).await;
            checkpoint("stream fuzzing", None, f, &recent).await;
        }
    }
    for (sid, close) in closing {
        let input = format!("CloseSession({sid}) while tasks stream in");
        let r = close.await.unwrap().unwrap_or_else(|_| Err(hang()));
        f.judge("CloseSession", &input, &r, ok_or(&[]));
    }
    checkpoint("stream fuzzing", Some(fe), f, &recent).await;

    // Every stream still carries tasks both ways, and ends cleanly when its client closes it.
    let probe = create_echo(fe).await;
    for (k, s) in streams.iter_mut().enumerate() {
        let task_id = ((9000 + k as u64) << 32) | 1;
        let input = Bytes::from(format!("probe-{k}"));
        g.remember(probe, task_id, &input);
        let tasks = vec![proto::TaskSubmission { task_id, input }];
        let submit = client_message::Msg::Submit(proto::SubmitBatch {
            session_id: probe,
            tasks,
        });
        s.send(proto::ClientMessage { msg: Some(submit) });
        // Generous: the probe queues behind everything the fuzzing submitted.
        let deadline = tokio::time::Instant::now() + 3 * CALL_TIMEOUT;
        let mut seen = false;
        while !seen {
            let Ok(Some(c)) = tokio::time::timeout_at(deadline, s.completions.recv()).await else {
                break;
            };
            seen = c.session_id == probe && c.task_id == task_id;
            f.completion(&c, &g.sent);
        }
        if !seen {
            let why = if s.reader.is_finished() {
                "it ended"
            } else {
                "no completion"
            };
            f.bad(
                format!("a task stream stopped working after the fuzzing ({why})"),
                format!("stream {k}"),
            );
        }
    }
    for (k, mut s) in streams.into_iter().enumerate() {
        s.tx = None;
        let end = tokio::time::timeout(CALL_TIMEOUT, &mut s.reader).await;
        if !matches!(end, Ok(Ok(Ok(())))) {
            let end = format!("stream {k}: {end:?}");
            f.bad(
                "a task stream did not end cleanly when its client closed it".into(),
                end,
            );
        }
        s.check(f, &g.sent);
    }
}

/// Wait until the daemon has no unfinished task; how long that took.
async fn wait_idle(f: &mut Findings, fe: &FrontendClient<Channel>) -> Duration {
    let start = Instant::now();
    loop {
        let info = fe
            .clone()
            .get_cluster_info(proto::Empty {})
            .await
            .unwrap_or_else(|e| broken("cluster info answers", e));
        let info = info.into_inner();
        if info.tasks_pending + info.tasks_running == 0 {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let left = format!(
                "{} pending, {} running",
                info.tasks_pending, info.tasks_running
            );
            f.bad(
                "accepted tasks were still unfinished 20 s after the fuzzing".into(),
                left,
            );
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn close_all(g: &mut Gen, f: &mut Findings, fe: &FrontendClient<Channel>) {
    for sid in std::mem::take(&mut g.open) {
        let r = fe
            .clone()
            .close_session(proto::SessionRef { session_id: sid })
            .await;
        f.judge(
            "CloseSession",
            &format!("CloseSession({sid})"),
            &r,
            ok_or(&[]),
        );
        g.closed.push(sid);
    }
}

/// Raw frames on the task stream: a frame that does not decode must end the stream with a
/// status saying so; frames that decode are messages like any other.
async fn fuzz_raw_streams(g: &mut Gen, f: &mut Findings, grpc: &Grpc<Channel>) {
    let mut running = Vec::new();
    for _ in 0..RAW_STREAMS {
        f.count("stream: raw frame sequences");
        let mut frames = Vec::new();
        for _ in 0..=g.rng.below(3) {
            let valid = g.client_message(7777).encode_to_vec();
            let n = 1 + g.rng.below(48) as usize;
            let b = match g.rng.below(10) {
                0..=2 => valid,
                3..=5 => g.rng.bytes(n),
                _ => g.mutate(valid),
            };
            frames.push(Bytes::from(b));
        }
        let decodes = frames
            .iter()
            .all(|b| proto::ClientMessage::decode(&b[..]).is_ok());
        let expect = if decodes {
            ok_or(&[])
        } else {
            err(UNDECODABLE)
        };
        let input: Vec<String> = frames.iter().map(|b| describe_bytes(b)).collect();
        let input = format!("raw frames on Stream: {}", input.join(" | "));
        running.push((
            exchange(grpc, "/flame.Frontend/Stream", frames),
            input,
            expect,
        ));
    }
    for (task, input, expect) in running {
        f.judge("Stream", &input, &task.await.unwrap(), expect);
    }
}

// ---------------------------------------------------------------- 3. the backend

fn exec_msg(m: executor_message::Msg) -> proto::ExecutorMessage {
    proto::ExecutorMessage { msg: Some(m) }
}

fn node_msg(m: node_message::Msg) -> proto::NodeMessage {
    proto::NodeMessage { msg: Some(m) }
}

fn exec_register(executor_id: u64) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Register(proto::ExecutorRegister {
        executor_id,
    }))
}

fn node_register(slots: u32, previous_node_id: u64) -> proto::NodeMessage {
    let name = "fuzz-node".into();
    let r = proto::NodeRegister {
        name,
        slots,
        memory_bytes: u64::MAX,
        previous_node_id,
    };
    node_msg(node_message::Msg::Register(r))
}

fn exited(executor_id: u64) -> proto::NodeMessage {
    let stderr_tail = "fuzz".into();
    let e = proto::ExecutorExited {
        executor_id,
        exit_code: 1,
        signal: 0,
        stderr_tail,
    };
    node_msg(node_message::Msg::Exited(e))
}

fn heartbeat() -> proto::NodeMessage {
    node_msg(node_message::Msg::Heartbeat(proto::Heartbeat {}))
}

fn results(results: Vec<proto::TaskResult>) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Results(proto::TaskResultBatch {
        results,
    }))
}

fn entered(session_id: u64) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Entered(proto::SessionEntered {
        session_id,
        error: None,
    }))
}

fn left(session_id: u64) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Left(proto::SessionLeft {
        session_id,
    }))
}

/// The next message of a stream within `wait`; `None` on timeout, error or end.
async fn next<T>(s: &mut Streaming<T>, wait: Duration) -> Option<T> {
    tokio::time::timeout(wait, s.message()).await.ok()?.ok()?
}

/// Raw frames on the backend streams: only a node's valid registration opens one; after it,
/// a frame that does not decode must end the stream with a status.
async fn fuzz_raw_backend(g: &mut Gen, f: &mut Findings, grpc: &Grpc<Channel>) {
    let mut running = Vec::new();
    for _ in 0..RAW_BACKEND_STREAMS {
        f.count("backend: raw frame sequences");
        let node = g.rng.chance(50);
        let mut frames = Vec::new();
        for _ in 0..=g.rng.below(2) {
            let valid = match (node, g.rng.below(4)) {
                (true, 0) => node_register(g.u32_edge(), g.rng.below(4)).encode_to_vec(),
                (true, 1) => heartbeat().encode_to_vec(),
                (true, 2) => exited(g.rng.next()).encode_to_vec(),
                (true, _) => proto::NodeMessage { msg: None }.encode_to_vec(),
                (false, 0 | 1) => exec_register((1 << 40) | g.rng.next() >> 24).encode_to_vec(),
                (false, 2) => entered(g.rng.next()).encode_to_vec(),
                (false, _) => results(vec![Default::default()]).encode_to_vec(),
            };
            let n = 1 + g.rng.below(32) as usize;
            let b = match g.rng.below(10) {
                0..=3 => valid,
                4..=5 => g.rng.bytes(n),
                _ => g.mutate(valid),
            };
            frames.push(Bytes::from(b));
        }
        let (path, expect) = if node {
            let decoded: Vec<_> = frames
                .iter()
                .map(|b| proto::NodeMessage::decode(&b[..]))
                .collect();
            let later = decoded[1..].iter().all(|m| m.is_ok());
            let path = "/flame.Backend/NodeStream";
            match &decoded[0] {
                Err(_) => (path, err(UNDECODABLE)),
                Ok(proto::NodeMessage {
                    msg: Some(node_message::Msg::Register(r)),
                }) if r.slots > 0 => (path, if later { ok_or(&[]) } else { err(UNDECODABLE) }),
                Ok(_) => (path, err(INVALID)),
            }
        } else {
            let first = proto::ExecutorMessage::decode(&frames[0][..]);
            (
                "/flame.Backend/ExecutorStream",
                err(if first.is_ok() { INVALID } else { UNDECODABLE }),
            )
        };
        let input: Vec<String> = frames.iter().map(|b| describe_bytes(b)).collect();
        let input = format!("raw frames on {path}: {}", input.join(" | "));
        running.push((exchange(grpc, path, frames), path, input, expect));
    }
    for (task, path, input, expect) in running {
        f.judge(path, &input, &task.await.unwrap(), expect);
    }
}

/// Executor streams from no executor this daemon started, node streams that do not register
/// properly: each refused with a clear status.
async fn bad_registrations(g: &mut Gen, f: &mut Findings, mut be: BackendClient<Channel>) {
    let junk = g.rng.next();
    let none = proto::ExecutorMessage { msg: None };
    let execs: Vec<(Vec<proto::ExecutorMessage>, String)> = vec![
        (vec![], "no message at all".into()),
        (vec![exec_register(0)], "Register executor 0".into()),
        (
            vec![exec_register(u64::MAX)],
            "Register executor u64::MAX".into(),
        ),
        (
            vec![exec_register(junk)],
            format!("Register executor {junk}"),
        ),
        (vec![none], "msg: None".into()),
        (vec![entered(1)], "SessionEntered first".into()),
        (vec![results(vec![])], "an empty result batch first".into()),
        (vec![left(1)], "SessionLeft first".into()),
    ];
    for (msgs, input) in execs {
        f.count("backend: bad executor registrations");
        let call = be.executor_stream(tokio_stream::iter(msgs));
        let r = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(hang()));
        f.judge(
            "ExecutorStream",
            &format!("ExecutorStream: {input}"),
            &r,
            err(INVALID),
        );
    }
    let nodes = vec![
        (vec![], "no message at all", err(INVALID)),
        (
            vec![proto::NodeMessage { msg: None }],
            "msg: None",
            err(INVALID),
        ),
        (vec![heartbeat()], "Heartbeat first", err(INVALID)),
        (vec![exited(1)], "ExecutorExited first", err(INVALID)),
        (
            vec![node_register(0, 0)],
            "Register with 0 slots",
            err(INVALID),
        ),
        (
            vec![node_register(0, u64::MAX)],
            "Register with 0 slots as node u64::MAX",
            err(INVALID),
        ),
        (
            vec![node_register(1, u64::MAX)],
            "Register as node u64::MAX",
            ok_or(INVALID),
        ),
        (
            vec![node_register(u32::MAX, 1)],
            "Register u32::MAX slots as node 1",
            ok_or(INVALID),
        ),
    ];
    for (msgs, input, expect) in nodes {
        f.count("backend: bad node registrations");
        // An accepted node leaves at once: its message stream is already over.
        let call = be.node_stream(tokio_stream::iter(msgs));
        let r = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(hang()));
        f.judge("NodeStream", &format!("NodeStream: {input}"), &r, expect);
    }
}

/// A node that registers properly, and the executor it is asked to start, lie: forged,
/// oversized, error-less, duplicated results; sessions never entered; then the node reports
/// that the real node's executors exited. The session they served must still finish every
/// task once — each lie answered by a classified failure, or ignored.
async fn fake_node(
    g: &mut Gen,
    f: &mut Findings,
    mut be: BackendClient<Channel>,
    address: &str,
    dir: &Path,
) {
    f.count("backend: fake node and executor");
    let (ntx, nrx) = mpsc::unbounded_channel();
    ntx.send(node_register(4, 0)).unwrap();
    let node = be.node_stream(UnboundedReceiverStream::new(nrx)).await;
    let mut cmds = node
        .unwrap_or_else(|e| broken("a node that registers properly is accepted", e))
        .into_inner();
    match next(&mut cmds, CALL_TIMEOUT).await.and_then(|c| c.msg) {
        Some(node_command::Msg::Registered(_)) => {}
        other => f.bad(
            "a node's first command was not Registered".into(),
            format!("{other:?}"),
        ),
    }
    let client = Client::connect(address, Duration::from_secs(5), "fuzz-hostile").await;
    let client = client.unwrap_or_else(|e| broken("a client connects", e));
    let sid = SessionId(create_echo(&client.frontend()).await);
    let inputs: Vec<Bytes> = (0..16)
        .map(|i| Bytes::from(format!("sleep:150 hostile-{i}")))
        .collect();
    let ids = client.submit(sid, inputs.clone()).unwrap();
    let mut spawned = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while spawned.is_none() && Instant::now() < deadline {
        if let Some(node_command::Msg::Spawn(s)) = next(&mut cmds, Duration::from_millis(200))
            .await
            .and_then(|c| c.msg)
        {
            spawned = Some(s.executor_id);
        }
    }
    let mut answered = HashMap::new();
    match spawned {
        Some(eid) => {
            let never = TaskId(ids[ids.len() - 1].0 + 1000);
            fake_executor(g, f, be.clone(), eid, sid, never, &mut answered).await
        }
        None => f.bad(
            "the fake node was never asked to start an executor".into(),
            "a 16-task session",
        ),
    }
    let mut lies = live_executors(dir);
    lies.extend([spawned.unwrap_or(0), u64::MAX, g.rng.next()]);
    for id in lies {
        let _ = ntx.send(exited(id));
    }
    for m in [
        heartbeat(),
        node_register(4, 0),
        proto::NodeMessage { msg: None },
    ] {
        let _ = ntx.send(m);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(ntx);
    let _ = drain(&mut cmds).await;

    let done = collect(&client, &ids, f).await;
    for (i, id) in ids.iter().enumerate() {
        let Some(c) = done.get(&id.0) else {
            continue;
        };
        let error = c.error.as_ref();
        let right = match answered.get(&id.0) {
            Some(0) => error.is_some_and(|e| e.kind == ErrorKind::ErrorPayloadTooLarge as i32),
            Some(1 | 2) => error.is_some_and(|e| !e.message.trim().is_empty()),
            _ => c.state == TaskState::Succeeded.as_i32() && c.output == inputs[i],
        };
        if !right {
            let how = match answered.get(&id.0) {
                Some(n) => format!("lie #{n} of a fake executor was taken wrongly"),
                None => {
                    "a task that the fake node and executor only lied about did not succeed".into()
                }
            };
            f.bad(
                how,
                short(&format!("task {i} of the session they served: {c:?}")),
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = client.frontend().get_cluster_info(proto::Empty {}).await;
        let info = info
            .unwrap_or_else(|e| broken("cluster info answers", e))
            .into_inner();
        if info.nodes.iter().filter(|n| n.alive).count() == 1 {
            break;
        }
        if Instant::now() > deadline {
            f.bad(
                "a node that left still counts as alive".into(),
                format!("{info:?}"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ids of the echo executors running now on the real node (read from their command lines).
fn live_executors(dir: &Path) -> Vec<u64> {
    let me = std::process::id().to_string();
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = entry.path();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        let cwd = std::fs::read_link(p.join("cwd")).ok();
        if ppid != Some(me.as_str()) || cwd.as_deref() != Some(dir) {
            continue;
        }
        let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let at = args.iter().position(|a| *a == b"--executor-id");
        let id: Option<u64> =
            at.and_then(|i| std::str::from_utf8(args.get(i + 1)?).ok()?.parse().ok());
        ids.extend(id);
    }
    ids
}

async fn fake_executor(
    g: &mut Gen,
    f: &mut Findings,
    mut be: BackendClient<Channel>,
    eid: u64,
    sid: SessionId,
    never: TaskId,
    answered: &mut HashMap<u64, usize>,
) {
    let (etx, erx) = mpsc::unbounded_channel();
    etx.send(exec_register(eid)).unwrap();
    let call = be.executor_stream(UnboundedReceiverStream::new(erx));
    let mut cmds = match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(s)) => s.into_inner(),
        other => {
            let other = format!("{:?}", other.map(|r| r.map(|_| ())));
            return f.bad(
                "the executor a node was asked to start could not register".into(),
                other,
            );
        }
    };
    // The same executor registering a second time.
    let again = be.executor_stream(tokio_stream::iter(vec![exec_register(eid)]));
    let r = tokio::time::timeout(CALL_TIMEOUT, again)
        .await
        .unwrap_or_else(|_| Err(hang()));
    f.judge(
        "ExecutorStream",
        &format!("executor {eid} registering twice"),
        &r,
        err(INVALID),
    );
    // Lies before it is given anything: a result for a task never submitted (one it may already
    // have been given would be its own to answer), sessions it was never in.
    let forged = proto::TaskResult {
        session_id: sid.0,
        task_id: never.0,
        ok: true,
        output: Bytes::from_static(b"forged"),
        error: None,
    };
    let none = proto::ExecutorMessage { msg: None };
    for m in [
        results(vec![forged]),
        entered(g.rng.next()),
        left(g.rng.next()),
        none,
        exec_register(eid),
    ] {
        let _ = etx.send(m);
    }
    let mut batch = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while batch.is_none() && Instant::now() < deadline {
        match next(&mut cmds, Duration::from_millis(200))
            .await
            .and_then(|c| c.msg)
        {
            Some(executor_command::Msg::Bind(b)) => {
                let _ = etx.send(entered(b.session_id));
            }
            Some(executor_command::Msg::Tasks(t)) => batch = Some(t),
            _ => {}
        }
    }
    let Some(batch) = batch else {
        return f.bad(
            "the fake executor was given no tasks".into(),
            format!("session {sid}"),
        );
    };
    // Its answers: over the limit, failed without an error, an unknown error kind, right —
    // and then every one again, as a success.
    let mut lies = Vec::new();
    let mut again = Vec::new();
    for (i, t) in batch.tasks.iter().enumerate() {
        let r = proto::TaskResult {
            session_id: batch.session_id,
            task_id: t.task_id,
            ..Default::default()
        };
        let error = proto::TaskError {
            kind: 9999,
            message: "a kind nobody knows".into(),
            ..Default::default()
        };
        let r = match i % 4 {
            0 => proto::TaskResult {
                ok: true,
                output: Bytes::from(vec![b'o'; LIMIT + 1]),
                ..r
            },
            1 => proto::TaskResult { ok: false, ..r },
            2 => proto::TaskResult {
                ok: false,
                error: Some(error),
                ..r
            },
            _ => proto::TaskResult {
                ok: true,
                output: t.input.clone(),
                ..r
            },
        };
        if batch.session_id == sid.0 {
            answered.insert(t.task_id, i % 4);
        }
        again.push(proto::TaskResult {
            ok: true,
            output: Bytes::from_static(b"again"),
            ..r.clone()
        });
        lies.push(r);
    }
    let _ = etx.send(results(lies));
    let _ = etx.send(results(again));
    tokio::time::sleep(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------- 4. a normal session

/// The completions of `ids`, waiting up to 30 s; a task that completes twice, or not at all,
/// is a finding.
async fn collect(
    client: &Client,
    ids: &[TaskId],
    f: &mut Findings,
) -> HashMap<u64, proto::TaskCompletion> {
    let mut done = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done.len() < ids.len() && tokio::time::Instant::now() < deadline {
        let Some(batch) = client.next_completions(Duration::from_millis(200)).await else {
            f.bad("a client's task stream ended".into(), client.address());
            break;
        };
        for c in batch {
            let key = format!("task {} of session {}", c.task_id, c.session_id);
            if !ids.contains(&TaskId(c.task_id)) {
                f.bad("a completion came for a task never submitted".into(), key);
            } else if done.insert(c.task_id, c).is_some() {
                f.bad("a task completed twice".into(), key);
            }
        }
    }
    if done.len() < ids.len() {
        let left = format!("{} of {} tasks", ids.len() - done.len(), ids.len());
        f.bad("tasks did not complete within 30 s".into(), left);
    }
    done
}

async fn normal_session(f: &mut Findings, address: &str, fe: &FrontendClient<Channel>) {
    let client = Client::connect(address, Duration::from_secs(5), "fuzz-final").await;
    let client = client.unwrap_or_else(|e| broken("a client connects after the fuzzing", e));
    let sid = create_echo(fe).await;
    let inputs: Vec<Bytes> = (0..FINAL_TASKS)
        .map(|i| Bytes::from(format!("final-{i}")))
        .collect();
    let ids = client.submit(SessionId(sid), inputs.clone()).unwrap();
    let done = collect(&client, &ids, f).await;
    for (id, input) in ids.iter().zip(&inputs) {
        match done.get(&id.0) {
            Some(c) if c.state != TaskState::Succeeded.as_i32() || c.output != input => {
                let c = short(&format!("{c:?}"));
                f.bad(
                    "a task of the normal session after the fuzzing went wrong".into(),
                    c,
                );
            }
            _ => {}
        }
    }
    let info = fe
        .clone()
        .get_session(proto::SessionRef { session_id: sid })
        .await;
    let info = info
        .unwrap_or_else(|e| broken("the session is there", e))
        .into_inner();
    if info.succeeded != FINAL_TASKS as u64 {
        f.bad(
            "the normal session's counts are wrong".into(),
            format!("{info:?}"),
        );
    }
    let cluster = fe.clone().get_cluster_info(proto::Empty {}).await;
    let cluster = cluster
        .unwrap_or_else(|e| broken("cluster info answers", e))
        .into_inner();
    if !cluster.nodes.iter().any(|n| n.alive && n.slots == 2) {
        f.bad(
            "the real node is missing from cluster info".into(),
            format!("{cluster:?}"),
        );
    }
}

// ---------------------------------------------------------------- the test

async fn start(state_dir: &Path) -> LocalCluster {
    let manager = ManagerConfig {
        warm_delay: Duration::from_millis(200),
        max_payload_bytes: LIMIT,
        ..Default::default()
    };
    let state_dir = state_dir.to_path_buf();
    let head = HeadConfig {
        host: "127.0.0.1".into(),
        port: 0,
        state_dir: state_dir.clone(),
        manager,
    };
    let mut node = NodeConfig::new("");
    node.slots = 2;
    node.executor_command = Some(vec![env!("CARGO_BIN_EXE_flame-echo-executor").into()]);
    node.work_dir = state_dir;
    LocalCluster::start(head, node)
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_the_daemon_keeps_working() {
    record_panics();
    let seed = seed();
    eprintln!("fuzz seed {seed} (replay with FLAME_FUZZ_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    // Several connections, so that calls in flight do not wait behind one another.
    let mut wires = Vec::new();
    for _ in 0..IN_FLIGHT {
        wires.push(Wire::connect(cluster.address()).await);
    }
    let Wire { fe, be, grpc } = wires[0].clone();
    let mut g = Gen {
        rng: Rng::new(seed),
        ..Default::default()
    };
    let mut f = Findings::default();
    let mut times = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &'static str| {
        times.push((name, t.elapsed()));
        t = Instant::now();
    };

    fuzz_unary(&mut g, &mut f, &wires).await;
    lap("unary calls");
    fuzz_streams(&mut g, &mut f, &fe).await;
    lap("task streams");
    let drained = wait_idle(&mut f, &fe).await;
    close_all(&mut g, &mut f, &fe).await;
    lap("draining and closing sessions");
    fuzz_raw_streams(&mut g, &mut f, &grpc).await;
    checkpoint("raw stream frames", Some(&fe), &f, &[]).await;
    lap("raw stream frames");
    fuzz_raw_backend(&mut g, &mut f, &grpc).await;
    bad_registrations(&mut g, &mut f, be.clone()).await;
    checkpoint("bad backend registrations", Some(&fe), &f, &[]).await;
    fake_node(&mut g, &mut f, be, cluster.address(), dir.path()).await;
    checkpoint("the fake node and executor", Some(&fe), &f, &[]).await;
    lap("hostile backend");
    normal_session(&mut f, cluster.address(), &fe).await;
    checkpoint("the normal session", Some(&fe), &f, &[]).await;
    lap("normal session");
    let stopped = tokio::time::timeout(Duration::from_secs(20), cluster.stop()).await;
    lap("stop");

    eprintln!("fuzz seed {seed}: the fuzzed tasks drained {drained:?} after the stream fuzzing");
    for (what, n) in &f.counts {
        eprintln!("  {n:>6}  {what}");
    }
    for (phase, d) in &times {
        eprintln!("  {:>6} ms  {phase}", d.as_millis());
    }
    assert!(stopped.is_ok(), "the cluster did not stop within 20 s");
    assert!(panics().is_empty(), "panics:\n{}", panics().join("\n\n"));
    let (n, list) = (f.list.len(), f.list.join("\n  "));
    assert!(
        f.list.is_empty(),
        "{n} kinds of wrong answers (seed {seed}):\n  {list}"
    );
}
