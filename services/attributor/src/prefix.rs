//! Longest-prefix match for the small, user-written tables (network rules, static hosts,
//! the private ranges): one hash map per prefix length in use, probed longest first.
//! The large cloud tables use the flattened form in [`crate::cloud`].

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// One prefix length of one family: (is IPv6, length) and network address -> value.
type Level<T> = ((bool, u8), HashMap<IpAddr, (IpNet, T)>);

#[derive(Clone, Debug)]
pub struct PrefixMap<T> {
    /// Longest lengths first.
    levels: Vec<Level<T>>,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        PrefixMap { levels: Vec::new() }
    }
}

impl<T> PrefixMap<T> {
    /// Adds `value` for `net`; an existing entry for the same prefix is kept (first wins),
    /// and `false` is returned.
    pub fn insert(&mut self, net: IpNet, value: T) -> bool {
        let net = net.trunc();
        let key = (matches!(net, IpNet::V6(_)), net.prefix_len());
        let index = match self.levels.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.levels.push((key, HashMap::new()));
                self.levels
                    .sort_by_key(|level| std::cmp::Reverse(level.0.1));
                self.levels.iter().position(|(k, _)| *k == key).unwrap()
            }
        };
        let level = &mut self.levels[index].1;
        if level.contains_key(&net.network()) {
            return false;
        }
        level.insert(net.network(), (net, value));
        true
    }

    /// The value of the longest prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<(&IpNet, &T)> {
        let v6 = ip.is_ipv6();
        self.levels
            .iter()
            .filter(|((is_v6, _), _)| *is_v6 == v6)
            .find_map(|((_, len), level)| {
                let network = IpNet::new(ip, *len).ok()?.network();
                level.get(&network).map(|(net, value)| (net, value))
            })
    }

    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(|(_, level)| level.is_empty())
    }
}

/// Address space that is private to a network: RFC 1918, carrier-grade NAT (RFC 6598),
/// unique local IPv6 (RFC 4193) and link-local. Traffic to these outside the cluster stays
/// inside the VPC (or a peered/on-prem network reached privately).
pub fn private_ranges() -> PrefixMap<()> {
    let mut map = PrefixMap::default();
    for net in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ] {
        map.insert(net.parse().expect("valid literal"), ());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_per_family() {
        let mut map = PrefixMap::default();
        assert!(map.insert("10.0.0.0/8".parse().unwrap(), "wide"));
        assert!(map.insert("10.1.0.0/16".parse().unwrap(), "narrow"));
        assert!(map.insert("10.1.2.3/32".parse().unwrap(), "host"));
        assert!(map.insert("fd00::/8".parse().unwrap(), "ula"));
        assert!(!map.insert("10.1.0.0/16".parse().unwrap(), "duplicate"));
        let found = |s| map.lookup(ip(s)).map(|(net, v)| (net.to_string(), *v));
        assert_eq!(found("10.9.9.9"), Some(("10.0.0.0/8".into(), "wide")));
        assert_eq!(found("10.1.9.9"), Some(("10.1.0.0/16".into(), "narrow")));
        assert_eq!(found("10.1.2.3"), Some(("10.1.2.3/32".into(), "host")));
        assert_eq!(found("fd12::1"), Some(("fd00::/8".into(), "ula")));
        assert_eq!(found("11.0.0.1"), None);
        assert_eq!(found("::ffff:10.1.2.3"), None);
    }

    #[test]
    fn private_ranges_cover_rfc1918_cgnat_ula_and_link_local() {
        let private = private_ranges();
        for inside in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "100.64.1.1",
            "169.254.169.254",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(private.lookup(ip(inside)).is_some(), "{inside}");
        }
        for outside in ["172.32.0.1", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(private.lookup(ip(outside)).is_none(), "{outside}");
        }
    }
}
