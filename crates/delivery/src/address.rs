//! Where a webhook may be sent. With an allow-list (`--allow-destination`), only the hosts it lists (names,
//! `*.domain` wildcards or IP addresses), wherever they resolve; without one, any host that resolves only to
//! public addresses: loopback, private, link-local, carrier-grade NAT, multicast and unspecified addresses
//! are refused unless the host is listed (a portal must not be a way into the network it runs in).

use std::net::{IpAddr, SocketAddr};

/// The hosts webhooks may be sent to.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    entries: Vec<String>,
}

impl Allow {
    pub fn new(entries: &[String]) -> Allow {
        Allow { entries: entries.iter().map(|e| e.trim().trim_end_matches('.').to_ascii_lowercase()).collect() }
    }

    fn lists(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|e| match e.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => *e == host,
        })
    }

    /// Whether `host`, resolving to `addrs`, may be sent to (`Err` says why not).
    pub fn check(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if self.lists(bare) {
            return Ok(());
        }
        if !self.entries.is_empty() {
            return Err(format!("`{bare}` is not in the server's allowed destinations (--allow-destination)"));
        }
        if addrs.is_empty() {
            return Err(format!("`{bare}` resolves to no address"));
        }
        match addrs.iter().find(|a| !public(a.ip())) {
            Some(a) => Err(format!(
                "`{bare}` resolves to {}, a private, loopback or link-local address; allow it with --allow-destination",
                a.ip()
            )),
            None => Ok(()),
        }
    }
}

/// Whether an address is on the public internet.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Vec<SocketAddr> {
        vec![SocketAddr::new(ip.parse().expect("ip"), 443)]
    }

    #[test]
    fn private_addresses_need_listing_and_a_list_allows_only_itself() {
        let open = Allow::default();
        assert!(open.check("hooks.example.com", &at("93.184.216.34")).is_ok());
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "172.20.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(open.check("x", &at(ip)).is_err(), "{ip} refused");
        }
        let listed = Allow::new(&["127.0.0.1".into(), "*.corp.example".into()]);
        assert!(listed.check("127.0.0.1", &at("127.0.0.1")).is_ok());
        assert!(listed.check("ci.corp.example", &at("10.0.0.5")).is_ok());
        assert!(listed.check("hooks.example.com", &at("93.184.216.34")).is_err(), "a list allows only what it lists");
        assert!(listed.check("corp.example.evil", &at("93.184.216.34")).is_err());
    }
}
