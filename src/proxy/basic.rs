//! Basic authentication at request time: the check of a route's [`BasicAuth`], with a small
//! bounded cache of verified credentials so that a logged-in client does not pay bcrypt's tens
//! of milliseconds on every request (nginx does), and a bound on how many slow checks run at
//! once (they run on blocking threads, never on the reactor's).
//!
//! The cache is direct-mapped: [`SLOTS`] slots, each holding the 128-bit tag of one verified
//! `(Secret digest, Authorization value)` pair and when it expires. The tag is an HMAC-SHA256
//! under a key drawn at start, so a client can neither predict tags nor aim collisions at
//! another's slot; a Secret that changes has another digest, so nothing verified under the
//! old one is reused. Only successes are cached: a wrong password always pays the full check.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tokio::sync::Semaphore;

use crate::snapshot::basic_auth::{BasicAuth, Verdict, decode_authorization};

/// Slots of the verified-credentials cache.
pub const SLOTS: usize = 4096;

/// How long a verified credential is trusted without a new check.
pub const TTL: Duration = Duration::from_secs(300);

/// The outcome of a request's basic authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Let it through.
    Allowed,
    /// 401 with the route's challenge.
    Unauthorized,
    /// 400: more than one Authorization field (nginx refuses duplicates).
    Duplicate,
    /// 500: the user's stored password cannot be checked.
    Error,
}

/// One cache slot: a verified tag and when it expires.
type Slot = Option<([u8; 16], Instant)>;

/// A slow check under way, shared by every request that brought the same credentials.
type Flight = std::sync::Arc<tokio::sync::OnceCell<Verdict>>;

/// The checker every connection shares.
pub struct Checker {
    key: ring::hmac::Key,
    slots: Box<[Mutex<Slot>]>,
    slow: Semaphore,
    /// Slow checks under way, by tag: requests that bring the same credentials while one is
    /// checked wait for its verdict instead of paying bcrypt again (32 connections logging in
    /// at once cost one check, not 32).
    flights: Mutex<std::collections::HashMap<[u8; 16], Flight>>,
    /// Passwords checked against a stored hash (cache misses that reached a user).
    checked: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new()
    }
}

impl Checker {
    /// A checker with an empty cache and a fresh key; as many slow checks at once as there
    /// are cores (at least 2).
    pub fn new() -> Checker {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &nonce()));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Checker {
            key,
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            slow: Semaphore::new(cores),
            flights: Mutex::default(),
            checked: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Checks the request's credentials against the route's users.
    pub async fn check(&self, auth: &std::sync::Arc<BasicAuth>, headers: &HeaderMap) -> Outcome {
        let mut fields = headers.get_all(AUTHORIZATION).iter();
        let Some(value) = fields.next() else {
            return Outcome::Unauthorized;
        };
        if fields.next().is_some() {
            return Outcome::Duplicate;
        }
        let value = value.as_bytes();
        let tag = self.tag(auth, value);
        let slot = &self.slots[usize::from(u16::from_le_bytes([tag[0], tag[1]])) % SLOTS];
        let now = Instant::now();
        if let Ok(s) = slot.lock()
            && let Some((t, expires)) = *s
            && t == tag
            && expires > now
        {
            return Outcome::Allowed;
        }
        let Some((decoded, colon)) = decode_authorization(value) else {
            return Outcome::Unauthorized;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Some(credential) = auth.user(user) else {
            return Outcome::Unauthorized;
        };
        let verdict = if credential.is_slow() {
            let flight = match self.flights.lock() {
                Ok(mut flights) => std::sync::Arc::clone(flights.entry(tag).or_default()),
                Err(_) => return Outcome::Error,
            };
            let _landing = Landing {
                flights: &self.flights,
                tag,
                flight: &flight,
            };
            let checking = flight.get_or_init(|| async {
                self.checked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Ok(_permit) = self.slow.acquire().await else {
                    return Verdict::Error;
                };
                let credential = credential.clone();
                let password = password.to_vec();
                tokio::task::spawn_blocking(move || credential.verify(&password))
                    .await
                    .unwrap_or(Verdict::Error)
            });
            *checking.await
        } else {
            self.checked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            credential.verify(password)
        };
        match verdict {
            Verdict::Valid => {
                if let Ok(mut s) = slot.lock() {
                    *s = Some((tag, now + TTL));
                }
                Outcome::Allowed
            }
            Verdict::Invalid => Outcome::Unauthorized,
            Verdict::Error => Outcome::Error,
        }
    }

    /// How many passwords have been checked against a stored hash.
    pub fn checked(&self) -> u64 {
        self.checked.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn tag(&self, auth: &BasicAuth, value: &[u8]) -> [u8; 16] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&auth.digest);
        ctx.update(value);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&ctx.sign().as_ref()[..16]);
        tag
    }
}

/// Removes a finished (or abandoned) check from the flights when the last request that waited
/// on it is done with it, so the map holds only checks under way.
struct Landing<'c> {
    flights: &'c Mutex<std::collections::HashMap<[u8; 16], Flight>>,
    tag: [u8; 16],
    flight: &'c Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.flights.lock()
            && let Some(current) = flights.get(&self.tag)
            && std::sync::Arc::ptr_eq(current, self.flight)
            && (self.flight.initialized() || std::sync::Arc::strong_count(self.flight) <= 2)
        {
            flights.remove(&self.tag);
        }
    }
}

/// A key from the clock and the address of a stack value, should the system's random source
/// fail (it does not on Linux).
fn nonce() -> [u8; 32] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as usize as u128;
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&t.to_le_bytes());
    out[16..].copy_from_slice(&addr.to_le_bytes());
    out
}

#[cfg(test)]
mod tests;
