//! `[rate_limit]` at the HTTP edge: which limits a request meets, keyed by
//! what (the client's address, the account, the user), and the 429 when
//! one is spent. The supervisor keeps the counts for every worker
//! (`drover_protocol::limits`), so the budget is the host's, whichever
//! worker the kernel hands a connection to.
//!
//! The client's address is the connection's peer, unless that peer is one
//! of `server.trusted_proxies`: then the rightmost address of `Forwarded`
//! (or else `X-Forwarded-For`) that is not a trusted proxy. Anything a
//! client can write to the left of that is ignored.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use drover_protocol::limits::{LimitCheck, LimitKind, Verdict};
use drover_worker::{Broadcast, Request};
use http::HeaderMap;

use super::ApiError;
use crate::config::{RateConfig, RateLimitConfig};

/// One named quota.
#[derive(Debug, Clone, Copy)]
struct Quota {
    /// Names the policy in the `RateLimit` headers.
    name: &'static str,
    burst: u32,
    period: Duration,
}

impl Quota {
    fn new(name: &'static str, config: RateConfig, enabled: bool) -> Option<Self> {
        (enabled && config.requests > 0).then_some(Self {
            name,
            burst: config.requests,
            period: config.period,
        })
    }

    fn check(self, key: String) -> (LimitCheck, Policy) {
        let period_ms = u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX);
        (LimitCheck { key, kind: LimitKind::Rate { burst: self.burst, period_ms } }, Policy::Rate(self))
    }
}

/// What a check answers to, for the 429's headers.
#[derive(Debug, Clone, Copy)]
enum Policy {
    Rate(Quota),
    /// A failure backoff, by policy name: one attempt per wait.
    Backoff(&'static str),
}

/// The limits of one worker's routes.
pub struct RateLimits {
    broadcast: Broadcast,
    trusted_proxies: Vec<ipnet::IpNet>,
    login_per_ip: Option<Quota>,
    register_per_ip: Option<Quota>,
    per_ip: Option<Quota>,
    per_user: Option<Quota>,
    /// The account backoff; `None` when rate limits are off.
    login_failures: Option<(u32, Duration, Duration)>,
}

/// The route patterns never limited: the benchmark routes and the probes.
fn exempt(route: &str) -> bool {
    route.starts_with("/bench/") || route == "/healthz" || route == "/readyz"
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig, trusted_proxies: &[ipnet::IpNet], broadcast: Broadcast) -> Self {
        let on = config.enabled;
        Self {
            broadcast,
            trusted_proxies: trusted_proxies.to_vec(),
            login_per_ip: Quota::new("login", config.login_per_ip, on),
            register_per_ip: Quota::new("register", config.register_per_ip, on),
            per_ip: Quota::new("ip", config.per_ip, on),
            per_user: Quota::new("user", config.per_user, on),
            login_failures: on.then_some((
                config.login_free_failures,
                config.login_delay,
                config.login_max_delay,
            )),
        }
    }

    /// The client's address. Only while the worker calls the application
    /// (`drover_worker::peer`): call it in the synchronous part of a handler.
    pub fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let peer = drover_worker::peer::client_addr()?.ip();
        Some(client_ip(peer, request.headers(), &self.trusted_proxies))
    }

    /// The general per-address limit's key for a request to `route`, if it
    /// applies (synchronous: see [`RateLimits::client_ip`]).
    pub fn per_ip_key(&self, route: &str, request: &Request) -> Option<IpAddr> {
        if self.per_ip.is_none() || exempt(route) {
            return None;
        }
        self.client_ip(request)
    }

    /// Whether the per-user limit applies to `route`.
    pub fn per_user_applies(&self, route: &str) -> bool {
        self.per_user.is_some() && !exempt(route)
    }

    pub async fn check_per_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.run(self.per_ip.map(|q| q.check(format!("ip:{}", ip_key(ip)))).into_iter().collect()).await
    }

    pub async fn check_per_user(&self, user: i64) -> Result<(), ApiError> {
        self.run(self.per_user.map(|q| q.check(format!("user:{user}"))).into_iter().collect()).await
    }

    pub async fn before_register(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let check = ip.zip(self.register_per_ip).map(|(ip, q)| q.check(format!("register:{}", ip_key(ip))));
        self.run(check.into_iter().collect()).await
    }

    /// Before any hashing work: the address's login budget, then whether
    /// the account is waiting out a backoff.
    pub async fn before_login(&self, ip: Option<IpAddr>, account: &str) -> Result<(), ApiError> {
        let mut checks: Vec<(LimitCheck, Policy)> = Vec::new();
        if let Some((ip, quota)) = ip.zip(self.login_per_ip) {
            checks.push(quota.check(format!("login:{}", ip_key(ip))));
        }
        if self.login_failures.is_some() {
            let check = LimitCheck { key: account_key(account), kind: LimitKind::Backoff };
            checks.push((check, Policy::Backoff("login-account")));
        }
        self.run(checks).await
    }

    /// A wrong password for `account`: the length of the backoff it starts
    /// (zero while failures are still free).
    pub async fn login_failed(&self, account: &str) -> Duration {
        self.fail(account_key(account)).await
    }

    pub async fn login_succeeded(&self, account: &str) {
        self.forgive(account_key(account)).await;
    }

    /// The same backoff for `current_password` checks (an email or password
    /// change), per user: a stolen access token must not become a way to
    /// guess the password it cannot change.
    pub async fn before_password_check(&self, user: i64) -> Result<(), ApiError> {
        if self.login_failures.is_none() {
            return Ok(());
        }
        let check = LimitCheck { key: format!("password:{user}"), kind: LimitKind::Backoff };
        self.run(vec![(check, Policy::Backoff("current-password"))]).await
    }

    pub async fn password_check_failed(&self, user: i64) -> Duration {
        self.fail(format!("password:{user}")).await
    }

    pub async fn password_check_passed(&self, user: i64) {
        self.forgive(format!("password:{user}")).await;
    }

    async fn fail(&self, key: String) -> Duration {
        let Some((free, delay, max)) = self.login_failures else { return Duration::ZERO };
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let kind = LimitKind::Fail { free, base_ms: millis(delay), max_ms: millis(max) };
        let verdicts = self.broadcast.limit(vec![LimitCheck { key, kind }]).await;
        Duration::from_millis(verdicts.first().map_or(0, |v| v.retry_after_ms))
    }

    async fn forgive(&self, key: String) {
        if self.login_failures.is_some() {
            self.broadcast.limit(vec![LimitCheck { key, kind: LimitKind::Forgive }]).await;
        }
    }

    async fn run(&self, checks: Vec<(LimitCheck, Policy)>) -> Result<(), ApiError> {
        if checks.is_empty() {
            return Ok(());
        }
        let (checks, quotas): (Vec<LimitCheck>, Vec<Policy>) = checks.into_iter().unzip();
        let verdicts = self.broadcast.limit(checks).await;
        match verdicts.iter().zip(&quotas).find(|(verdict, _)| !verdict.allowed) {
            None => Ok(()),
            Some((verdict, quota)) => Err(too_many(verdict, *quota)),
        }
    }
}

fn too_many(verdict: &Verdict, policy: Policy) -> ApiError {
    let retry_after_secs = verdict.retry_after_ms.div_ceil(1000).max(1);
    match policy {
        Policy::Rate(quota) => ApiError::TooManyRequests {
            policy: quota.name,
            limit: quota.burst,
            window_secs: quota.period.as_secs().max(1),
            retry_after_secs,
        },
        Policy::Backoff(name) => ApiError::TooManyRequests {
            policy: name,
            limit: 1,
            window_secs: retry_after_secs,
            retry_after_secs,
        },
    }
}

/// Accounts are keyed by the address as typed, trimmed and lower-cased, as
/// the login looks it up.
fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

/// One key per IPv4 address and per IPv6 /64: a host usually holds a
/// whole /64 and could otherwise rotate through it.
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client's address as [`RateLimits::client_ip`] describes it.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Hops in order, client first; each proxy appends the one before it.
    let mut hops: Vec<IpAddr> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| forwarded_node(value.trim()))?
            })
        })
        .collect();
    if hops.is_empty() {
        hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
    }
    hops.into_iter().rev().find(|hop| !is_trusted(hop)).unwrap_or(peer)
}

/// An RFC 7239 node: `192.0.2.1`, `192.0.2.1:80`, `"[2001:db8::1]:80"`;
/// obfuscated and `unknown` nodes are not addresses.
fn forwarded_node(value: &str) -> Option<IpAddr> {
    let value = value.trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let host = value.split(':').next()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7")]);
        // Not from a trusted proxy: the header is the client's own words.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &spoofed, &trusted), stranger);
        // From one: the rightmost untrusted hop, whatever the client put left of it.
        assert_eq!(client_ip(proxy, &spoofed, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        let chain = headers(&[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(client_ip(proxy, &chain, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        let forwarded = headers(&[("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client_ip(proxy, &forwarded, &trusted), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), proxy, "no header: the proxy itself");
        assert_eq!(client_ip(proxy, &spoofed, &[]), proxy, "no trusted proxies: headers ignored");
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(ip_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(ip_key("192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
