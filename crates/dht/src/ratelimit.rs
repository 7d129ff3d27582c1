//! Abuse limits of a DHT node: per-IP and global packet rates, and a cap on
//! the bytes we send back (a bootstrap node's are larger than a client's).
//!
//! Per IP the limit is a token bucket (`per_ip_rate` per second, `per_ip_burst`
//! deep) and running it dry bans the address for `ban`: a flooder is then
//! refused without further bookkeeping until the ban ends, as libtorrent does
//! (it bans above 5 packets/s averaged over 10 s, for 5 minutes). The buckets
//! live in a fixed array indexed by a salted hash of the IP, so memory is the
//! same whether ten or ten million addresses write to us; two addresses that
//! share a slot share a budget, and the salt (drawn from the node's RNG) keeps
//! an attacker from choosing whom to collide with. A ban names the address
//! that ran the budget dry (by a second part of the hash), not the slot:
//! banning whole slots let about 100 spoofed packets silence everyone
//! sharing one, and 22,000 a second silence the node.
//!
//! Loopback sources can be exempted from the per-IP limit (the default): on a
//! public node they are the operator's own tools, and tests and load
//! generators put many clients on 127.0.0.0/8. The global limits still apply.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits; a rate of 0 disables that limit.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Sustained packets per second accepted from one IP.
    pub per_ip_rate: f64,
    /// Packets one IP may send in a burst above the sustained rate.
    pub per_ip_burst: f64,
    /// How long an IP that exceeded its budget is ignored.
    pub ban: Duration,
    /// Loopback sources skip the per-IP limit.
    pub exempt_loopback: bool,
    /// Per-IP slots (rounded up to a power of two); fixes the memory used.
    pub slots: usize,
    /// Packets per second accepted from everyone together.
    pub global_rate: f64,
    /// Bytes per second of answers we send.
    pub reply_bytes_rate: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_ip_rate: 10.0,
            per_ip_burst: 100.0,
            ban: Duration::from_secs(5 * 60),
            exempt_loopback: true,
            slots: 1 << 16,
            global_rate: 1_000_000.0,
            reply_bytes_rate: 200e6,
        }
    }
}

impl RateLimitConfig {
    /// The limits of a node that is no bootstrap node (every torrent
    /// client's): a small slot table, no global packet limit (replies to
    /// its own lookups come in bursts), and a cap on the bytes it answers
    /// with, so that queries from spoofed sources cannot turn it into an
    /// amplifier (a `get_peers` answer is up to nine times the query).
    pub fn client() -> Self {
        Self {
            slots: 1024,
            global_rate: 0.0,
            reply_bytes_rate: 256e3,
            ..Self::default()
        }
    }
}

/// A classic token bucket on a caller-supplied clock.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `cost` tokens if there are that many; rate 0 means unlimited.
    fn take(&mut self, now: Instant, cost: f64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// One per-IP budget: tokens, the time they were counted (ms since the
/// limiter's epoch), the end of a ban and whom it bans (a fingerprint of
/// the address, never 0).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tokens: f32,
    last_ms: u64,
    banned_until_ms: u64,
    banned: u32,
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source IP is over its budget or banned.
    PerIp,
    /// Everyone together is over the global rate.
    Global,
}

/// The limiter; all state is bounded by [`RateLimitConfig::slots`].
#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    epoch: Instant,
    salt: u64,
    slots: Vec<Slot>,
    global: TokenBucket,
    reply_bytes: TokenBucket,
}

impl RateLimiter {
    /// A limiter with every budget full; `salt` should be random.
    pub fn new(config: RateLimitConfig, salt: u64, now: Instant) -> Self {
        let slots = if config.per_ip_rate > 0.0 {
            config.slots.clamp(1, 1 << 24).next_power_of_two()
        } else {
            0
        };
        // A tenth of a second of traffic may arrive in one burst.
        let global = TokenBucket::new(config.global_rate, config.global_rate / 10.0 + 1.0, now);
        let reply_bytes = TokenBucket::new(
            config.reply_bytes_rate,
            config.reply_bytes_rate / 10.0 + 2048.0,
            now,
        );
        Self {
            slots: vec![
                Slot {
                    tokens: config.per_ip_burst as f32,
                    ..Slot::default()
                };
                slots
            ],
            config,
            epoch: now,
            salt,
            global,
            reply_bytes,
        }
    }

    /// The slot `ip` counts in, and its fingerprint there.
    fn slot_of(&self, ip: &IpAddr) -> (usize, u32) {
        // FNV-1a over salt and address: cheap, and salted so collisions
        // cannot be aimed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.salt;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match ip {
            IpAddr::V4(v4) => eat(&v4.octets()),
            // A host usually owns a whole /64: budget it as one.
            IpAddr::V6(v6) => eat(&v6.octets()[..8]),
        }
        let index = (h ^ (h >> 29)) as usize & (self.slots.len() - 1);
        (index, (h >> 32) as u32 | 1)
    }

    /// Whether a packet from `ip` may be processed at `now`.
    pub fn admit(&mut self, ip: &IpAddr, now: Instant) -> Result<(), Refusal> {
        let exempt = self.config.exempt_loopback && ip.is_loopback();
        if !self.slots.is_empty() && !exempt {
            let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
            let (index, fingerprint) = self.slot_of(ip);
            let (rate, burst, ban) = (
                self.config.per_ip_rate,
                self.config.per_ip_burst,
                self.config.ban,
            );
            let slot = &mut self.slots[index];
            if now_ms < slot.banned_until_ms && slot.banned == fingerprint {
                return Err(Refusal::PerIp);
            }
            let elapsed = now_ms.saturating_sub(slot.last_ms) as f64 / 1000.0;
            slot.last_ms = now_ms;
            let tokens = (f64::from(slot.tokens) + elapsed * rate).min(burst);
            if tokens < 1.0 {
                if now_ms < slot.banned_until_ms {
                    // Another address's ban is live: this one is refused
                    // by the empty budget, not handed a fresh one.
                    slot.tokens = tokens as f32;
                    return Err(Refusal::PerIp);
                }
                slot.banned_until_ms = now_ms.saturating_add(ban.as_millis() as u64);
                slot.banned = fingerprint;
                // The others sharing the slot, and the address after its
                // ban, start over with a full budget.
                slot.tokens = burst as f32;
                return Err(Refusal::PerIp);
            }
            slot.tokens = (tokens - 1.0) as f32;
        }
        if !self.global.take(now, 1.0) {
            return Err(Refusal::Global);
        }
        Ok(())
    }

    /// Whether an answer of `bytes` may be sent at `now`.
    pub fn admit_reply(&mut self, bytes: usize, now: Instant) -> bool {
        self.reply_bytes.take(now, bytes as f64)
    }

    /// Memory held, in bytes (for the flood test and the stats line).
    pub fn memory(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RateLimitConfig {
        RateLimitConfig {
            per_ip_rate: 5.0,
            per_ip_burst: 10.0,
            ban: Duration::from_secs(300),
            exempt_loopback: true,
            slots: 1024,
            global_rate: 0.0,
            reply_bytes_rate: 0.0,
        }
    }

    #[test]
    fn a_flooding_ip_is_banned_and_others_are_not() {
        let now = Instant::now();
        let mut l = RateLimiter::new(config(), 42, now);
        let bad: IpAddr = "203.0.113.7".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(l.admit(&bad, now), Ok(()));
        }
        assert_eq!(l.admit(&bad, now), Err(Refusal::PerIp));
        assert_eq!(l.admit(&good, now), Ok(()));
        // Still banned long after its bucket would have refilled.
        assert_eq!(
            l.admit(&bad, now + Duration::from_secs(299)),
            Err(Refusal::PerIp)
        );
        assert_eq!(l.admit(&bad, now + Duration::from_secs(301)), Ok(()));
        // A steady 5/s is fine forever.
        let mut t = now;
        for _ in 0..100 {
            t += Duration::from_millis(200);
            assert_eq!(l.admit(&good, t), Ok(()));
        }
        // Loopback is exempt by default.
        let lo: IpAddr = "127.0.3.4".parse().unwrap();
        for _ in 0..1000 {
            assert_eq!(l.admit(&lo, now), Ok(()));
        }
        assert_eq!(l.memory(), 1024 * std::mem::size_of::<Slot>());
    }

    #[test]
    fn a_ban_silences_the_flooder_not_its_slot() {
        let now = Instant::now();
        let mut l = RateLimiter::new(config(), 42, now);
        // 4,096 flooding /64s, four per slot on average, each banned.
        for i in 0..4096u16 {
            let ip: IpAddr = format!("2001:db8:0:{i:x}::1").parse().unwrap();
            for _ in 0..11 {
                let _ = l.admit(&ip, now);
            }
        }
        // A second later the drained budgets have refilled a little; a
        // ban of the whole slot would have lasted 5 minutes.
        let later = now + Duration::from_secs(1);
        let refused = (0..=255u8)
            .filter(|b| l.admit(&IpAddr::from([198, 51, 100, *b]), later).is_err())
            .count();
        assert!(refused < 26, "{refused} of 256 honest addresses refused");
    }

    #[test]
    fn a_second_flooder_in_a_slot_does_not_lift_the_first_ban() {
        let now = Instant::now();
        let mut l = RateLimiter::new(config(), 42, now);
        // Two addresses that share a slot, found by trying.
        let first: IpAddr = "203.0.113.1".parse().unwrap();
        let slot = l.slot_of(&first).0;
        let second = (2..=255u8)
            .map(|b| IpAddr::from([203, 0, 113, b]))
            .chain((0..=255u8).map(|b| IpAddr::from([198, 51, 100, b])))
            .chain((0..=255u8).map(|b| IpAddr::from([192, 0, 2, b])))
            .find(|ip| l.slot_of(ip).0 == slot)
            .expect("a collision among 767 addresses and 1,024 slots");
        for _ in 0..11 {
            let _ = l.admit(&first, now);
        }
        assert_eq!(l.admit(&first, now), Err(Refusal::PerIp), "banned");
        // The second runs the refilled budget dry in turn; taking turns
        // gets neither of them more than the budget.
        let through = (0..1000)
            .filter(|i| {
                let ip = if i % 2 == 0 { &first } else { &second };
                l.admit(ip, now).is_ok()
            })
            .count();
        assert!(through <= 10, "{through} packets through by taking turns");
        assert_eq!(
            l.admit(&first, now + Duration::from_secs(299)),
            Err(Refusal::PerIp)
        );
    }

    #[test]
    fn global_and_reply_byte_limits() {
        let now = Instant::now();
        let mut l = RateLimiter::new(
            RateLimitConfig {
                per_ip_rate: 0.0,
                global_rate: 100.0,
                reply_bytes_rate: 10_000.0,
                ..config()
            },
            1,
            now,
        );
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let admitted = (0..1000).filter(|_| l.admit(&ip, now).is_ok()).count();
        assert_eq!(admitted, 11); // burst: a tenth of a second, plus one
        assert_eq!(l.admit(&ip, now + Duration::from_secs(1)), Ok(()));
        let sent = (0..100).filter(|_| l.admit_reply(500, now)).count();
        assert_eq!(sent, (1000 + 2048) / 500);
        assert_eq!(l.memory(), 0);
    }
}
