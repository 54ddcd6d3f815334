//! The fuzzer's inputs: a seeded PRNG, what the test knows of the daemon's state (sessions
//! open and closed, applications, inputs sent), and generators of field values — sizes around
//! the payload limit, odd names, edge integers and time limits — and of unary Frontend calls,
//! typed or as raw, mutated bodies. Task-stream messages are generated in `messages.rs`.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use flame_core::proto;

use crate::unary::Call;
use crate::LIMIT;

pub const PATHS: &[&str] = &[
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
pub const UNKNOWN_PATHS: &[&str] = &["/flame.Frontend/NoSuchMethod", "/flame.Nope/Hello", "/"];
pub const WEIRD: &[&str] = &[
    "é🔥名前",
    "nul\0inside",
    "\u{202e}rtl\u{feff}",
    "../../etc/passwd",
    "%s%n%x{}",
    "'; DROP TABLE sessions; --",
    "line\nbreak",
];

/// xorshift64*: tiny and deterministic; plenty for choosing fuzz inputs.
pub struct Rng(u64);

impl Rng {
    /// Any seed works: splitmix64 spreads it (and the state is never 0).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)).max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new(0)
    }
}

pub fn seed() -> u64 {
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

/// The PRNG, plus what the test knows of the daemon's state.
#[derive(Default)]
pub struct Gen {
    pub rng: Rng,
    pub open: Vec<u64>,
    pub closed: Vec<u64>,
    pub apps: BTreeSet<String>,
    pub next_app: u64,
    /// Every input sent for (session, task) — to check outputs — and the keys in order.
    pub sent: HashMap<(u64, u64), Vec<Bytes>>,
    pub sent_keys: Vec<(u64, u64)>,
    pub counter: u32,
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
    pub fn filled(&mut self, n: usize) -> Bytes {
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
    pub fn text(&mut self, huge: char) -> String {
        match self.rng.below(200) {
            0..=9 => String::new(),
            10..=17 => " \t\r\n ".into(),
            18..=19 => huge.to_string().repeat(LIMIT + 1),
            20..=49 => self.rng.pick(WEIRD).to_string(),
            _ => "echo".into(),
        }
    }

    pub fn u32_edge(&mut self) -> u32 {
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

    pub fn call(&mut self) -> Call {
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
    pub fn mutate(&mut self, mut b: Vec<u8>) -> Vec<u8> {
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
    pub fn raw(&mut self) -> (&'static str, Bytes) {
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
}
