//! Where the CalDAV adapter may connect, and where an account's credentials
//! may go. CalDAV is the one provider whose server a user names, so every
//! host is hostile until checked:
//!
//! - **Addresses.** Loopback, private, link-local (cloud metadata services
//!   live there), shared (CGNAT), multicast, reserved and documentation
//!   addresses are refused, unless the operator allow-lists a network for
//!   self-hosted servers. Host names are checked after DNS resolution, by
//!   the HTTP client's own resolver, so every connection of every redirect
//!   hop is checked and a name cannot resolve to a public address for the
//!   check and a private one for the connection. Literal IP hosts, which
//!   skip resolution, are checked before each request.
//! - **Sites.** An account's requests go to its calendar home's *site*
//!   (scheme-independent registrable domain, e.g. `icloud.com`, or the IP
//!   address itself): redirects elsewhere are refused, so Basic credentials
//!   never reach another site. iCloud's partition hosts
//!   (`pNN-caldav.icloud.com` under `caldav.icloud.com`) share one site.
//!   A redirect from `https` to `http` is always refused.
//! - **Origins.** Hrefs that calbridge turns into request URLs (calendar
//!   and event ids, which callers hand back) must stay on the home's origin
//!   (scheme, host and port): an absolute or scheme-relative href naming
//!   another host is refused before any request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Which addresses the adapter may connect to: every public address, and
/// the operator's allow-listed networks. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    allowed: Arc<Vec<IpNet>>,
}

/// Why a destination was refused. Its message names the host class, never
/// credentials; it travels through the HTTP client's error chain, where
/// [`blocked_in`] finds it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Blocked(pub String);

impl Egress {
    /// Public addresses, plus `allowed` (networks of self-hosted servers).
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Egress {
            allowed: Arc::new(allowed),
        }
    }

    /// True when the adapter may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|n| n.contains(&ip))
    }

    /// Checks what can be checked of a URL before sending: an `http(s)`
    /// scheme and, for a literal IP host, the address. Host names are
    /// checked when the client resolves them ([`GuardedResolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Blocked("only http and https URLs are used".into()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Blocked("the URL has no host".into())),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(refusal(ip))
        }
    }

    /// The resolver to give the HTTP client.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            egress: self.clone(),
        })
    }
}

fn refusal(ip: IpAddr) -> Blocked {
    Blocked(format!(
        "the server's address is {} and not allowed (an operator can allow-list its network with --allow-private-network)",
        class(canonical(ip))
    ))
}

/// Resolves host names and keeps only the addresses [`Egress`] permits;
/// none left is an error the adapter reports as a refused server.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    egress: Egress,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| {
                    let ok = egress.permits(a.ip());
                    if !ok {
                        refused.get_or_insert(a.ip());
                    }
                    ok
                })
                .collect();
            if kept.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(ip) => Box::new(refusal(ip)),
                    None => "the host name resolves to no address".into(),
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`Blocked`] refusal somewhere in an error's source chain.
pub fn blocked_in(e: &(dyn std::error::Error + 'static)) -> Option<Blocked> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<Blocked>() {
            return Some(b.clone());
        }
        cur = err.source();
    }
    None
}

/// An IPv4 address carried in an IPv6 one (mapped, compatible, NAT64 or
/// 6to4) as the IPv4 address, so it is judged as what it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated);
        // `::` and `::1` stay IPv6.
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail()),
        // 64:ff9b::/96, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        // 2002::/16 (6to4): the IPv4 address follows the prefix.
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    class(canonical(ip)) == "public"
}

/// A name for the class of an address, for messages.
fn class(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() || o[0] == 0 {
                "unspecified"
            } else if v4.is_loopback() {
                "loopback"
            } else if v4.is_private() {
                "private"
            } else if v4.is_link_local() {
                "link-local (where metadata services live)"
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                "shared (carrier-grade NAT)"
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                "multicast or reserved"
            } else if v4.is_documentation()
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
            {
                "reserved"
            } else {
                "public"
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                "unspecified"
            } else if v6.is_loopback() {
                "loopback"
            } else if s[0] & 0xfe00 == 0xfc00 {
                "private (unique local)"
            } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
                "link-local"
            } else if s[0] & 0xff00 == 0xff00 {
                "multicast"
            } else if (s[0] == 0x2001 && (s[1] == 0xdb8 || s[1] == 0))
                || (s[0] == 0x100 && s[1..4] == [0, 0, 0])
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0
            {
                "reserved"
            } else {
                "public"
            }
        }
    }
}

/// The site of a URL: its registrable domain (the public suffix plus one
/// label, lower-cased), the host itself when it has none (`localhost`), or
/// the IP address. `None` without a host.
pub fn site(url: &Url) -> Option<String> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            Some(psl::domain_str(&d).map(str::to_string).unwrap_or(d))
        }
    }
}

/// True when credentials meant for `anchor` may be sent to `url`: the same
/// site, and never from `https` down to `http`.
pub fn same_site(anchor: &Url, url: &Url) -> bool {
    let downgrade = anchor.scheme() == "https" && url.scheme() != "https";
    !downgrade && site(anchor).is_some() && site(anchor) == site(url)
}

/// True when `a` and `b` share scheme, host and port.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        let e = Egress::default();
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!e.permits(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "17.248.160.1",
            "8.8.8.8",
            "172.32.0.1",
            "2a01:4f8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(e.permits(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn an_allow_listed_network_is_permitted_and_nothing_else() {
        let e = Egress::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.2.0.0/16".parse().unwrap(),
        ]);
        assert!(e.permits(ip("127.0.0.1")));
        assert!(e.permits(ip("::ffff:127.0.0.1")));
        assert!(e.permits(ip("10.2.3.4")));
        assert!(!e.permits(ip("10.3.0.1")));
        assert!(!e.permits(ip("169.254.169.254")));
        assert!(!e.permits(ip("::1")));
    }

    #[test]
    fn literal_ip_urls_are_checked_before_sending() {
        let e = Egress::default();
        assert!(e.check_url(&url("http://169.254.169.254/latest/")).is_err());
        assert!(e.check_url(&url("http://[::1]:8080/")).is_err());
        assert!(
            e.check_url(&url("http://2130706433/")).is_err(),
            "decimal form of 127.0.0.1"
        );
        assert!(e.check_url(&url("https://caldav.icloud.com/")).is_ok());
        assert!(e.check_url(&url("ftp://8.8.8.8/")).is_err());
        let err = e.check_url(&url("http://10.0.0.1/")).unwrap_err();
        assert!(err.0.contains("private"), "{err}");
    }

    #[test]
    fn sites_group_partition_hosts_and_refuse_downgrades() {
        let icloud = url("https://caldav.icloud.com/");
        assert!(same_site(
            &icloud,
            &url("https://p12-caldav.icloud.com:443/1/calendars/")
        ));
        assert!(!same_site(&icloud, &url("http://p12-caldav.icloud.com/")));
        assert!(!same_site(
            &icloud,
            &url("https://icloud.com.evil.example/")
        ));
        assert!(!same_site(
            &url("https://a.github.io/"),
            &url("https://b.github.io/")
        ));
        assert!(same_site(
            &url("http://127.0.0.1:1/"),
            &url("http://127.0.0.1:2/x")
        ));
        assert!(same_site(
            &url("http://127.0.0.1:1/"),
            &url("https://127.0.0.1:2/x")
        ));
        assert!(!same_site(
            &url("http://127.0.0.1:1/"),
            &url("http://127.0.0.2:1/")
        ));
        assert!(same_site(
            &url("http://localhost:1/"),
            &url("http://LOCALHOST.:2/")
        ));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let home = url("https://dav.example.com/u/");
        assert!(same_origin(
            &home,
            &url("https://DAV.example.com:443/u/cal/")
        ));
        assert!(!same_origin(&home, &url("https://dav.example.com:8443/u/")));
        assert!(!same_origin(&home, &url("http://dav.example.com/u/")));
        assert!(!same_origin(&home, &url("https://other.example.com/u/")));
    }
}
