//! Canonical addresses and special-purpose ranges.

use std::net::IpAddr;

use ipnet::IpNet;

/// The canonical form of an address: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4; everything else is kept.
///
/// `Ipv6Addr::to_ipv4` is deliberately not used: it also turns `::1` into `0.0.0.1`.
///
/// ```
/// use vipps_allowlist::addr::canonical;
/// assert_eq!(canonical("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3".parse::<std::net::IpAddr>().unwrap());
/// assert_eq!(canonical("::1".parse().unwrap()), "::1".parse::<std::net::IpAddr>().unwrap());
/// ```
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The special-purpose ranges (RFC 6890 and successors) that a request server's address never lies in:
/// private, loopback, link-local, shared, documentation, benchmarking, multicast, reserved and the like.
pub const SPECIAL_PURPOSE: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::/96",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Whether `ip` (canonicalised first) lies in a special-purpose range.
///
/// ```
/// use vipps_allowlist::addr::is_special_purpose;
/// assert!(is_special_purpose("127.0.0.11".parse().unwrap()));
/// assert!(is_special_purpose("::ffff:192.168.1.1".parse().unwrap()));
/// assert!(!is_special_purpose("104.45.17.199".parse().unwrap()));
/// ```
pub fn is_special_purpose(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    special_nets().iter().any(|n| n.contains(&ip))
}

fn special_nets() -> &'static [IpNet] {
    static NETS: std::sync::OnceLock<Vec<IpNet>> = std::sync::OnceLock::new();
    NETS.get_or_init(|| {
        SPECIAL_PURPOSE
            .iter()
            .map(|s| s.parse().expect("the built-in ranges parse"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical(ip("::ffff:127.0.0.11")), ip("127.0.0.11"));
        assert_eq!(canonical(ip("::127.0.0.11")), ip("::127.0.0.11"));
        assert_eq!(canonical(ip("2a01:4f8::1")), ip("2a01:4f8::1"));
    }

    #[test]
    fn special_ranges() {
        for s in [
            "10.0.0.5",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
            "::",
            "2001:db8::5",
            "ff02::1",
        ] {
            assert!(is_special_purpose(s.parse().unwrap()), "{s}");
        }
        for s in ["104.45.17.199", "51.105.122.48", "2a01:4f8::1", "8.8.8.8"] {
            assert!(!is_special_purpose(s.parse().unwrap()), "{s}");
        }
    }
}
