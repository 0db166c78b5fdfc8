//! Failed authentications, per client address and tenant: after [`MAX_FAILURES`] within
//! [`WINDOW`], that address's pushes for that tenant get 429 without their credentials being
//! looked at until the window ends, so a password cannot be guessed at line rate. Keying by
//! tenant too means a client cannot lock other tenants out, even from behind the same proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed per address and tenant within [`WINDOW`].
pub const MAX_FAILURES: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most (address, tenant) pairs tracked; past it new pairs are not throttled (memory stays bounded).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<(IpAddr, Arc<str>), Window>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u32,
}

impl AuthThrottle {
    /// `Err(wait)` while `ip` is throttled for `tenant`.
    pub fn check(&self, ip: IpAddr, tenant: &str, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&(ip, Arc::from(tenant))) {
            Some(w) if w.count >= MAX_FAILURES && now.saturating_duration_since(w.start) < WINDOW => {
                Err(WINDOW.saturating_sub(now.saturating_duration_since(w.start)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication of `ip` for `tenant`.
    pub fn failed(&self, ip: IpAddr, tenant: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let w = failures.entry((ip, Arc::from(tenant))).or_insert(Window { start: now, count: 0 });
        if now.saturating_duration_since(w.start) >= WINDOW {
            *w = Window { start: now, count: 0 };
        }
        w.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_throttle_that_address_for_that_tenant_until_the_window_ends() {
        let t = AuthThrottle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(t.check(a, "x", start).is_ok());
            t.failed(a, "x", start);
        }
        let wait = t.check(a, "x", start + Duration::from_secs(10)).expect_err("throttled");
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.check(b, "x", start).is_ok(), "another address is not");
        assert!(t.check(a, "y", start).is_ok(), "nor another tenant");
        assert!(t.check(a, "x", start + WINDOW).is_ok(), "the window ends");
        t.failed(a, "x", start + WINDOW);
        assert!(t.check(a, "x", start + WINDOW).is_ok(), "and counting starts again");
    }
}
