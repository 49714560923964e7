//! Rate limits on auth endpoints, per client IP and per action (sign-in,
//! sign-up, emails), answering `429 resource-exhausted` with `Retry-After`.
//! These counters live in each instance; the per-account lock after repeated
//! failed sign-ins is kept in the database so all instances share it.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AuthError;

#[derive(Debug, Clone, Copy)]
pub enum Action {
    SignIn,
    SignUp,
    Email,
}

pub struct RateLimits {
    signin: DefaultKeyedRateLimiter<IpAddr>,
    signup: DefaultKeyedRateLimiter<IpAddr>,
    email: DefaultKeyedRateLimiter<IpAddr>,
    /// Auth emails per recipient address, whoever asks for them.
    recipient: DefaultKeyedRateLimiter<String>,
}

fn per_minute<K: std::hash::Hash + Eq + Clone>(n: u32) -> DefaultKeyedRateLimiter<K> {
    RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)))
}

impl RateLimits {
    pub fn new(signin_per_minute: u32, signup_per_minute: u32, email_per_minute: u32) -> RateLimits {
        RateLimits {
            signin: per_minute(signin_per_minute),
            signup: per_minute(signup_per_minute),
            email: per_minute(email_per_minute),
            recipient: per_minute(email_per_minute),
        }
    }

    /// Takes one auth email for `address`, or says how long to wait.
    pub fn check_recipient(&self, address: &str) -> Result<(), AuthError> {
        take(&self.recipient, &address.to_owned())
    }

    /// Takes one unit of `action` for `ip`, or says how long to wait.
    pub fn check(&self, action: Action, ip: IpAddr) -> Result<(), AuthError> {
        let limiter = match action {
            Action::SignIn => &self.signin,
            Action::SignUp => &self.signup,
            Action::Email => &self.email,
        };
        take(limiter, &ip)
    }
}

fn take<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), AuthError> {
    if limiter.len() > 10_000 {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        AuthError::RateLimited { retry_after_secs: wait.as_secs().max(1) }
    })
}
