//! Which addresses a webhook may target (DESIGN.md §4).
//!
//! The worker applies this at connect time to the addresses DNS returned; the API applies it at creation to
//! IP-literal URLs and to what a host name resolves to then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Forbidden addresses, except the CIDRs the operator allowed (`COURIER_ALLOWED_TARGETS`).
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
}

/// Every range no webhook may reach unless allowed, with why: the one list the API and the worker check.
/// IPv6 forms that route to an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address instead.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/3", "multicast, reserved, broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0:0/96", "IPv4-translated (SIIT)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments, Teredo included"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

fn forbidden_nets() -> &'static [IpNet] {
    static NETS: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
        // The table is a constant checked by the tests; a typo fails them all.
        FORBIDDEN.iter().filter_map(|(cidr, _)| cidr.parse().ok()).collect()
    });
    &NETS
}

/// The IPv4 address an IPv6 address stands for, in the forms that route to IPv4: mapped, compatible, NAT64, 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail), // ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => Some(tail), // ::a.b.c.d (deprecated)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail), // 64:ff9b::/96 NAT64
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)), // 6to4
        _ => None,
    }
}

/// The range of [`FORBIDDEN`] that holds `ip` (after unwrapping an embedded IPv4 address), if any.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static (&'static str, &'static str)> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    forbidden_nets().iter().zip(FORBIDDEN).find(|(net, _)| net.contains(&ip)).map(|(_, entry)| entry)
}

/// True when `ip` is in a range no webhook may reach unless allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_range(ip).is_some()
}

impl TargetPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let allowed = |ip: IpAddr| self.allowed.iter().any(|net| net.contains(&ip));
        let as_v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        allowed(ip) || as_v4.is_some_and(allowed) || !is_forbidden(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid address")
    }

    #[test]
    fn every_range_of_the_table_parses_and_is_forbidden_from_first_to_last_address() {
        for (cidr, why) in FORBIDDEN {
            let net: IpNet = cidr.parse().unwrap_or_else(|_| panic!("{cidr} is a CIDR"));
            for edge in [net.network(), net.broadcast()] {
                let (hit, _) = forbidden_range(edge).unwrap_or_else(|| panic!("{edge} ({why}) must be forbidden"));
                // An embedded IPv4 address may be judged by another entry; a plain address by its own.
                assert!(hit == cidr || matches!(edge, IpAddr::V6(v6) if embedded_v4(v6).is_some()), "{edge}: {hit}");
            }
        }
        assert_eq!(forbidden_nets().len(), FORBIDDEN.len());
    }

    #[test]
    fn the_ranges_issue_11_added_are_forbidden() {
        for addr in ["::ffff:0:808:808", "::ffff:0:0:1", "3fff::1", "3fff:fff:ffff::1"] {
            assert!(is_forbidden(ip(addr)), "{addr} must be forbidden");
        }
        assert!(!is_forbidden(ip("3fff:1000::1")), "just past 3fff::/20");
    }

    #[test]
    fn forbids_every_private_and_special_range() {
        for addr in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001::1",
            "100::1",
        ] {
            assert!(is_forbidden(ip(addr)), "{addr} must be forbidden");
        }
    }

    #[test]
    fn allows_public_addresses_in_every_form() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "203.0.114.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_forbidden(ip(addr)), "{addr} must be allowed");
        }
    }

    #[test]
    fn allow_list_opens_exceptions_including_mapped_forms() {
        let policy = TargetPolicy::new(vec!["127.0.0.0/8".parse().expect("cidr"), "fd00::/8".parse().expect("cidr")]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(policy.permits(ip("fd00::5")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("::1")));
        assert!(policy.permits(ip("8.8.8.8")));
        assert!(!TargetPolicy::default().permits(ip("127.0.0.1")));
    }
}
