//! The BEP 15 exchange as a sans-IO state machine: fed datagrams and the
//! time, it says what to send and when to wake, so its retries and the
//! connection id's lifetime are tested on virtual time.
//!
//! One request runs at a time. It first needs a connection id (asked for
//! with a connect request, reused for [`UdpConfig::connection_lifetime`]),
//! then sends the announce or scrape. A request unanswered after
//! `base_timeout · 2ⁿ` is sent again, `n` counting from 0, until
//! [`UdpConfig::max_attempts`]; then the request fails with
//! [`TrackerError::Timeout`]. Datagrams that do not parse or carry another
//! transaction id are ignored: UDP sources are easily forged, so a stray
//! packet must not end a request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lodestone_core::{Family, InfoHash};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::packet::{self, Reply};
use crate::announce::{Announce, AnnounceReply, ScrapeStats};
use crate::error::TrackerError;

/// Timing of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpConfig {
    /// Wait for the first reply; each retry doubles it (BEP 15: 15 s).
    /// The tracker's host lookup gets as long.
    pub base_timeout: Duration,
    /// Packets sent for one request before it fails (BEP 15 goes on to 9;
    /// we stop sooner and let the tier try its next tracker).
    pub max_attempts: u32,
    /// How long a connection id is used (BEP 15: one minute).
    pub connection_lifetime: Duration,
}

impl Default for UdpConfig {
    /// 15 s doubling, 4 sends (15 + 30 + 60 + 120 s at most), ids kept 60 s.
    fn default() -> Self {
        Self {
            base_timeout: Duration::from_secs(15),
            max_attempts: 4,
            connection_lifetime: Duration::from_secs(60),
        }
    }
}

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpRequest {
    /// Announce and get peers.
    Announce(Announce),
    /// Counts for one swarm.
    Scrape(InfoHash),
}

/// What a request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpDone {
    /// The announce reply.
    Announced(AnnounceReply),
    /// The scrape reply.
    Scraped(ScrapeStats),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Requesting(u64),
}

#[derive(Debug)]
struct Job {
    request: UdpRequest,
    step: Step,
    tid: u32,
    /// Packets sent for this request so far, connects included: the
    /// backoff and the give-up count run over the whole request, so a
    /// tracker that answers connects but nothing else still ends it.
    attempts: u32,
    deadline: Instant,
    started: Instant,
}

/// One UDP tracker's exchange state.
#[derive(Debug)]
pub struct UdpTracker {
    config: UdpConfig,
    family: Family,
    rng: StdRng,
    /// The connection id and when it was given.
    connection: Option<(u64, Instant)>,
    job: Option<Job>,
    transmit: VecDeque<Vec<u8>>,
    done: Option<Result<UdpDone, TrackerError>>,
}

impl UdpTracker {
    /// A tracker reached over `family`, with transaction ids drawn from a
    /// generator seeded with `rng_seed`.
    pub fn new(config: UdpConfig, family: Family, rng_seed: u64) -> Self {
        Self {
            config,
            family,
            rng: StdRng::seed_from_u64(rng_seed),
            connection: None,
            job: None,
            transmit: VecDeque::new(),
            done: None,
        }
    }

    /// Starts `request`, abandoning any request still in flight.
    pub fn start(&mut self, now: Instant, request: UdpRequest) {
        let step = match self.connection {
            Some((id, at))
                if now.saturating_duration_since(at) < self.config.connection_lifetime =>
            {
                Step::Requesting(id)
            }
            _ => Step::Connecting,
        };
        self.done = None;
        self.transmit.clear();
        self.job = Some(Job {
            request,
            step,
            tid: 0,
            attempts: 0,
            deadline: now,
            started: now,
        });
        self.begin_step(now, step);
    }

    /// A datagram from the tracker.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        let Some(job) = &self.job else { return };
        let Ok((tid, reply)) = packet::parse_reply(bytes, self.family) else {
            return;
        };
        if tid != job.tid {
            return;
        }
        match (job.step, job.request, reply) {
            (_, _, Reply::Error(message)) => self.finish(Err(TrackerError::Refused(message))),
            (Step::Connecting, _, Reply::Connect(id)) => {
                self.connection = Some((id, now));
                self.begin_step(now, Step::Requesting(id));
            }
            (Step::Requesting(_), UdpRequest::Announce(_), Reply::Announce(r)) => {
                self.finish(Ok(UdpDone::Announced(r)));
            }
            (Step::Requesting(_), UdpRequest::Scrape(_), Reply::Scrape(s)) => {
                self.finish(Ok(UdpDone::Scraped(s)));
            }
            // A reply of another kind under our id: a confused or forged
            // packet; the retry timer decides.
            _ => {}
        }
    }

    /// Call when [`Self::poll_timeout`] has passed: resends, or fails the
    /// request after the last attempt.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(job) = &self.job else { return };
        if now < job.deadline {
            return;
        }
        if job.attempts >= self.config.max_attempts || now >= job.started + self.budget() {
            let waited = now.saturating_duration_since(job.started);
            self.finish(Err(TrackerError::Timeout(waited)));
            return;
        }
        let step = match job.step {
            // An id that expired while we waited is asked for again.
            Step::Requesting(_) if !self.connection_fresh(now) => Step::Connecting,
            step => step,
        };
        self.send(now, step);
    }

    /// The next datagram to send to the tracker.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The request's result, once it has one.
    pub fn poll_event(&mut self) -> Option<Result<UdpDone, TrackerError>> {
        self.done.take()
    }

    /// When [`Self::handle_timeout`] is due, while a request runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.job.as_ref().map(|j| j.deadline)
    }

    fn connection_fresh(&self, now: Instant) -> bool {
        self.connection.is_some_and(|(_, at)| {
            now.saturating_duration_since(at) < self.config.connection_lifetime
        })
    }

    /// Enters `step` with a fresh transaction id.
    fn begin_step(&mut self, now: Instant, step: Step) {
        let tid = self.rng.random();
        if let Some(job) = &mut self.job {
            job.tid = tid;
        }
        self.send(now, step);
    }

    /// The longest a request may take: the waits of all its attempts.
    fn budget(&self) -> Duration {
        let n = self.config.max_attempts.min(16);
        self.config.base_timeout.saturating_mul((1u32 << n) - 1)
    }

    /// Sends the packet of `step` (again) and arms the timer.
    fn send(&mut self, now: Instant, step: Step) {
        let budget = self.budget();
        let Some(job) = &mut self.job else { return };
        job.step = step;
        let packet = match (step, &job.request) {
            (Step::Connecting, _) => packet::connect_request(job.tid),
            (Step::Requesting(id), UdpRequest::Announce(a)) => {
                packet::announce_request(id, job.tid, a)
            }
            (Step::Requesting(id), UdpRequest::Scrape(h)) => packet::scrape_request(id, job.tid, h),
        };
        let wait = self
            .config
            .base_timeout
            .saturating_mul(1 << job.attempts.min(16));
        job.attempts += 1;
        // A connect answered at once still counts against the request's
        // total time, which never exceeds the sum of its waits.
        job.deadline = (now + wait).min(job.started + budget);
        self.transmit.push_back(packet);
    }

    fn finish(&mut self, result: Result<UdpDone, TrackerError>) {
        self.job = None;
        self.transmit.clear();
        self.done = Some(result);
    }
}

#[cfg(test)]
mod tests;
