//! Which addresses a webhook may reach.
//!
//! Unless `notify.allow_private = true`, a webhook may not reach the machine runyard runs on or
//! its private networks: loopback, private (RFC 1918, IPv6 unique local), link-local (cloud
//! metadata services live there), shared (CGNAT), unspecified, multicast, broadcast, reserved and
//! documentation ranges, the other special-purpose ranges IANA lists as not globally reachable,
//! every IPv6 address outside global unicast (`2000::/3`), and the IPv6 forms that embed a
//! forbidden IPv4 address (mapped, NAT64, 6to4). A host name is resolved and *every* address
//! must pass.
//!
//! The check runs at submit ([`check_url`]) and again at every send: the delivery client resolves
//! names through [`CheckedResolver`], so the connection goes only to addresses that passed the
//! check (a name that resolves elsewhere later, DNS rebinding, is caught then).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::lookup::resolve;

/// Why a webhook's target was refused at submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// For good: an address not allowed, a name that does not exist.
    Target(String),
    /// For now: the name did not resolve in time (the resolver is slow or away, or too many
    /// lookups are on their way): trying again later may pass.
    Unresolved(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Target(m) | Refused::Unresolved(m) => f.write_str(m),
        }
    }
}

/// Why `ip` may not be reached without `allow_private`, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let r = if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if o[0] == 0 {
        "unspecified (0.0.0.0/8)"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared (100.64.0.0/10)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if o[0] >= 240 {
        "reserved (240.0.0.0/4)"
    } else if ip.is_documentation() {
        "documentation"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "benchmarking (198.18.0.0/15)"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "IETF protocol assignments (192.0.0.0/24)"
    } else if o[0] == 192 && o[1] == 88 && o[2] == 99 {
        "6to4 relay anycast (192.88.99.0/24, deprecated)"
    } else {
        return None;
    };
    Some(r)
}

/// IPv6: only global unicast (`2000::/3`) less its special-purpose ranges that are not globally
/// reachable (the IANA IPv6 special-purpose registry), and the forms embedding an IPv4 address
/// judged by that address (mapped, NAT64, 6to4).
fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "IPv4-mapped, of a forbidden IPv4 range");
    }
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let r = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "unique local (fc00::/7)"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local (fe80::/10)"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "site-local (fec0::/10)"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        // SIIT's IPv4-translated form embeds an IPv4 address too, and is never routed as is.
        "IPv4-translated (::ffff:0:0:0/96)"
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible (::/96)"
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1 {
        "NAT64 local use (64:ff9b:1::/48)"
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96): the IPv4 address at the end.
        return forbidden_v4(embedded(s[6], s[7])).map(|_| "NAT64, of a forbidden IPv4 range");
    } else if s[0] == 0x0100 && s[1..3] == [0, 0] && s[3] <= 1 {
        "discard-only or dummy prefix (100::/64, 100:0:0:1::/64)"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation (2001:db8::/32)"
    } else if s[0] == 0x2001 && s[1] < 0x0200 {
        "IETF protocol assignments (2001::/23, Teredo 2001::/32 included)"
    } else if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2])).map(|_| "6to4, of a forbidden IPv4 range");
    } else if s[0] == 0x3fff && s[1] < 0x1000 {
        "documentation (3fff::/20)"
    } else if s[0] == 0x5f00 {
        "SRv6 SIDs (5f00::/16)"
    } else if (s[0] & 0xe000) != 0x2000 {
        "not global unicast (outside 2000::/3)"
    } else {
        return None;
    };
    Some(r)
}

/// The refusal message for `ip` reached from `host`. The address a name resolves to is not
/// said: whoever may submit would otherwise map the server's internal names to their addresses.
fn refusal(host: &str, ip: IpAddr, why: &str) -> String {
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok();
    let what = if literal {
        format!("`{ip}` is a forbidden address")
    } else {
        format!("`{host}` resolves to a forbidden address")
    };
    format!("{what} ({why}): webhooks may not reach it unless `notify.allow_private = true`")
}

/// Checks the addresses of `url`'s host (resolved when it is a name; every address must pass).
/// With `allow_private`, only that the host resolves. The error says what was refused, and
/// whether for good.
pub async fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), Refused> {
    let host = url.host_str().unwrap_or("").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        _ => resolve(&host, port).await?,
    };
    if addrs.is_empty() {
        return Err(Refused::Target(format!("`{host}` resolves to no address")));
    }
    if !allow_private {
        for ip in addrs {
            if let Some(why) = forbidden(ip) {
                return Err(Refused::Target(refusal(&host, ip, why)));
            }
        }
    }
    Ok(())
}

/// Checks an address written literally in a URL (no resolution): for config checks.
pub fn check_literal(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    match forbidden(ip) {
        Some(why) if !allow_private => Err(refusal(url.host_str().unwrap_or(""), ip, why)),
        _ => Ok(()),
    }
}

/// The delivery client's resolver: the system's, then every address checked (unless
/// `allow_private`), so a connection only ever goes to an address that passed.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    /// `notify.allow_private`.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves to no address").into());
            }
            if !allow {
                for a in &addrs {
                    if let Some(why) = forbidden(a.ip()) {
                        return Err(refusal(&host, a.ip(), why).into());
                    }
                }
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_ranges_are_forbidden_public_ones_not() {
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "::127.0.0.1",
            "192.88.99.1",
            "2002:c058:6301::",
            // SIIT (IPv4-translated): 127.0.0.1, 169.254.169.254, and a public one too.
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:808:808",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1ff:ffff::1",
            "2001:20::1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1::808:808",
            "3fff::1",
            "3fff:fff:ffff::1",
            "5f00::1",
            "4000::1",
            "1::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(forbidden(ip).is_some(), "{bad} should be refused");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
            "2001:200::1",
            "2001:4860:4860::8888",
            "3fff:1000::1",
            "2a00:1450::1",
            "192.88.100.1",
            "192.31.196.1",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(forbidden(ip), None, "{good} should be allowed");
        }
    }

    /// A batch of items naming one host resolved it once an item, one after another (1,000
    /// items past the request's timeout with a resolver of 50 ms: probe s53c): the answer is
    /// kept a few seconds, names in any case alike.
    #[tokio::test]
    async fn a_name_checked_again_soon_is_not_resolved_again() {
        for i in 0..20 {
            let host = if i % 2 == 0 { "localhost" } else { "LocalHost" };
            let u = reqwest::Url::parse(&format!("http://{host}:54329/x")).unwrap();
            assert!(check_url(&u, true).await.is_ok());
            let e = check_url(&u, false).await.unwrap_err();
            assert!(matches!(e, Refused::Target(_)), "{e:?}");
        }
        assert_eq!(super::super::lookup::times_looked_up("localhost", 54329), 1);
    }

    #[tokio::test]
    async fn names_are_resolved_and_every_address_checked() {
        let u = reqwest::Url::parse("http://localhost:9/x").unwrap();
        let e = check_url(&u, false).await.unwrap_err().to_string();
        assert!(e.contains("loopback") && e.contains("allow_private"), "{e}");
        // The address a name resolves to is not told.
        assert!(!e.contains("127.0.0.1") && !e.contains("::1"), "{e}");
        assert!(check_url(&u, true).await.is_ok());
        let lit = reqwest::Url::parse("http://[::1]:9/x").unwrap();
        let e = check_literal(&lit, false).unwrap_err();
        assert!(e.contains("`::1` is a forbidden address"), "{e}");
        assert!(check_literal(&lit, true).is_ok());
    }
}
