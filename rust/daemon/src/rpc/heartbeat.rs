//! Executor heartbeats, as the Backend service keeps them for each executor stream: a ping
//! every quarter of the timeout, which the executor's network thread answers even while a
//! task runs, and the moment by which the executor must have said something. Any message
//! counts; a pong announcing a large message moves the moment by the time that message may
//! take to arrive, so a big result on a slow link is not taken for a frozen executor.

use std::time::Duration;

use tokio::time::Instant;

use flame_core::proto;

/// The slowest transfer assumed for an announced message, bytes per second.
const MIN_BYTES_PER_SEC: f64 = (8 << 20) as f64;
/// Pings go out at least this far apart, whatever the timeout.
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// What one executor stream knows about its executor's liveness.
#[derive(Debug)]
pub(super) struct Liveness {
    timeout: Duration,
    last_heard: Instant,
    deadline: Instant,
    seq: u64,
}

impl Liveness {
    /// `None` when heartbeats are off (a zero timeout).
    pub(super) fn new(timeout: Duration, now: Instant) -> Option<Self> {
        (!timeout.is_zero()).then(|| Self {
            timeout,
            last_heard: now,
            deadline: now + timeout,
            seq: 0,
        })
    }

    /// How often to ping.
    pub(super) fn period(&self) -> Duration {
        (self.timeout / 4).max(MIN_PERIOD)
    }

    /// The executor said something; `announced` bytes are on their way after it.
    pub(super) fn heard(&mut self, now: Instant, announced: u64) {
        self.last_heard = now;
        let transfer = Duration::try_from_secs_f64(announced as f64 / MIN_BYTES_PER_SEC)
            .unwrap_or(Duration::MAX);
        self.deadline = now
            .checked_add(self.timeout.saturating_add(transfer))
            .unwrap_or(self.deadline);
    }

    /// How long the executor has been silent, once that is past its deadline.
    pub(super) fn silent(&self, now: Instant) -> Option<Duration> {
        (now >= self.deadline).then(|| now.saturating_duration_since(self.last_heard))
    }

    /// The next ping to send.
    pub(super) fn ping(&mut self) -> proto::ExecutorCommand {
        self.seq += 1;
        let ping = proto::ExecutorPing { seq: self.seq };
        proto::ExecutorCommand {
            msg: Some(proto::executor_command::Msg::Ping(ping)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_past_the_timeout_is_reported_and_any_message_resets_it() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut l = Liveness::new(timeout, t0).expect("on");
        assert_eq!(l.period(), Duration::from_millis(500));
        assert_eq!(l.silent(t0 + Duration::from_millis(1999)), None);
        assert_eq!(l.silent(t0 + timeout), Some(timeout));
        l.heard(t0 + Duration::from_secs(1), 0);
        assert_eq!(l.silent(t0 + Duration::from_millis(2500)), None);
        assert_eq!(
            l.silent(t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(2))
        );
        assert!(Liveness::new(Duration::ZERO, t0).is_none(), "0 = off");
    }

    #[test]
    fn an_announced_large_message_extends_the_deadline_by_its_transfer_time() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(2), t0).expect("on");
        // 80 MiB at the assumed 8 MiB/s: 10 s more.
        l.heard(t0, 80 << 20);
        assert_eq!(l.silent(t0 + Duration::from_secs(11)), None);
        assert!(l.silent(t0 + Duration::from_secs(12)).is_some());
        l.heard(t0, u64::MAX);
        assert_eq!(l.silent(t0 + Duration::from_secs(1 << 30)), None);
    }

    #[test]
    fn pings_are_numbered() {
        let mut l = Liveness::new(Duration::from_secs(1), Instant::now()).expect("on");
        let seqs: Vec<u64> = (0..3)
            .map(|_| match l.ping().msg {
                Some(proto::executor_command::Msg::Ping(p)) => p.seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
