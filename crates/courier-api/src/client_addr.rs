//! Who the client is, as far as the failed-login limit cares: the peer's address, or, when the peer is one of the
//! operator's trusted proxies (`COURIER_TRUSTED_PROXIES`), the address the proxies say they received the request
//! from.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to, so only its right end is written by proxies we trust;
//! anything left of the first untrusted hop may be made up by the client. The client is therefore the right-most
//! entry that is not a trusted proxy (walking from the right, skipping trusted hops): with one load balancer in front,
//! the entry it appended. A header is never believed from a peer that is not trusted.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use ipnet::IpNet;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address of a request, by the trusted-proxy rule. `None` when the server was not given the peer's
/// address (tests driving the router directly).
pub(crate) fn client_addr(parts: &Parts, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops = parts
        .headers
        .get_all(FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    hops.reverse();
    let mut client = peer;
    for hop in hops {
        // A hop that is not an address (garbage, `unknown`, an obfuscated node) ends what we can trust: the client
        // is the last proxy that spoke for it.
        let Ok(addr) = parse_hop(hop) else { break };
        client = addr;
        if !is_trusted(&addr) {
            break;
        }
    }
    Some(client)
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443` or `203.0.113.7:5000`.
fn parse_hop(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut req = Request::builder();
        for value in forwarded {
            req = req.header(FORWARDED_FOR, *value);
        }
        let (mut parts, ()) = req.body(()).map(Request::into_parts).unwrap_or_else(|_| unreachable!());
        let peer: SocketAddr = peer.parse().unwrap_or_else(|_| unreachable!());
        parts.extensions.insert(ConnectInfo(peer));
        parts
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap_or_else(|_| unreachable!())).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = parts("198.51.100.1:4000", &["203.0.113.9"]);
        assert_eq!(client_addr(&p, &[]), ip("198.51.100.1"));
        assert_eq!(client_addr(&p, &nets(&["10.0.0.0/8"])), ip("198.51.100.1"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client made up the first entry; the load balancer appended the real one.
        let p = parts("10.0.0.2:4000", &["1.2.3.4, 203.0.113.9"]);
        assert_eq!(client_addr(&p, &trusted), ip("203.0.113.9"));
        // Two proxies, both trusted, across two header lines.
        let p = parts("10.0.0.2:4000", &["203.0.113.9", "10.0.0.7"]);
        assert_eq!(client_addr(&p, &trusted), ip("203.0.113.9"));
        let p = parts("10.0.0.2:4000", &["[2001:db8::5]:443"]);
        assert_eq!(client_addr(&p, &trusted), ip("2001:db8::5"));
    }

    #[test]
    fn garbage_or_no_header_stops_at_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_addr(&parts("10.0.0.2:1", &[]), &trusted), ip("10.0.0.2"));
        assert_eq!(client_addr(&parts("10.0.0.2:1", &["1.2.3.4, unknown, 10.0.0.3"]), &trusted), ip("10.0.0.3"));
    }
}
