//! Who may reach a route by address and by request field: ingress-nginx's
//! `whitelist-source-range` / `allowlist-source-range` / `denylist-source-range` (annotations
//! and ConfigMap keys) and the ConfigMap's `block-cidrs`, `block-user-agents` and
//! `block-referers`, compiled once at build time into sets the proxy only reads: address
//! ranges merged and sorted (a lookup is two binary searches, whatever the list's length),
//! field patterns into one `regex` set (linear time, size-limited).

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;

use super::routes::REGEX_SIZE_LIMIT;

/// A set of addresses: IPv4 and IPv6 ranges, merged, sorted, inclusive. IPv4-mapped IPv6
/// addresses and ranges are IPv4 ones (nginx's access module judges such clients by its IPv4
/// rules). Shared: a clone (one per route using the ConfigMap's list) copies no range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Arc<[(u32, u32)]>,
    v6: Arc<[(u128, u128)]>,
}

impl IpSet {
    /// The set of these ranges (any order, overlaps allowed).
    pub fn new(nets: impl IntoIterator<Item = ipnet::IpNet>) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match canonical(net) {
                ipnet::IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                ipnet::IpNet::V6(n) => {
                    v6.push((u128::from(n.network()), u128::from(n.broadcast())));
                }
            }
        }
        IpSet {
            v4: merge(v4).into(),
            v6: merge(v6).into(),
        }
    }

    /// Whether the set holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The addresses of both sets.
    pub fn union(&self, other: &IpSet) -> IpSet {
        let v4 = self.v4.iter().chain(other.v4.iter()).copied().collect();
        let v6 = self.v6.iter().chain(other.v6.iter()).copied().collect();
        IpSet {
            v4: merge(v4).into(),
            v6: merge(v6).into(),
        }
    }

    /// The set as the fewest CIDR ranges that cover it exactly, in order.
    pub fn cidrs(&self) -> impl Iterator<Item = ipnet::IpNet> + '_ {
        let v4 = self.v4.iter().flat_map(|&(a, b)| {
            ipnet::Ipv4Subnets::new(a.into(), b.into(), 0).map(ipnet::IpNet::V4)
        });
        let v6 = self.v6.iter().flat_map(|&(a, b)| {
            ipnet::Ipv6Subnets::new(a.into(), b.into(), 0).map(ipnet::IpNet::V6)
        });
        v4.chain(v6)
    }
}

impl Serialize for IpSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.cidrs().map(|n| n.to_string()))
    }
}

/// An IPv6 range inside `::ffff:0:0/96` as the IPv4 range it maps.
fn canonical(net: ipnet::IpNet) -> ipnet::IpNet {
    if let ipnet::IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = n.network().to_ipv4_mapped()
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return ipnet::IpNet::V4(mapped);
    }
    net
}

/// Sorts inclusive ranges and merges those that overlap or touch.
fn merge<T: Ord + Copy + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| a <= next) => {
                last.1 = last.1.max(b);
            }
            _ => out.push((a, b)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_like {
    /// The next value, if there is one.
    pub trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

/// Reads a comma-separated list of addresses and CIDR ranges as ingress-nginx's
/// `ParseIPNets` does: each entry trimmed; a range's host bits ignored; one entry that is
/// neither (an empty one included) makes the whole list invalid, and the error names it.
pub fn parse_ranges(value: &str) -> Result<IpSet, String> {
    let mut nets = Vec::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        match parse_net(entry) {
            Some(net) => nets.push(net),
            None if entry.is_empty() => return Err("has an empty entry".to_string()),
            None => {
                let shown: String = entry.chars().take(64).collect();
                return Err(format!("{shown:?} is not an address or a CIDR range"));
            }
        }
    }
    Ok(IpSet::new(nets))
}

/// An address or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.1`), its host bits
/// cleared.
pub fn parse_net(entry: &str) -> Option<ipnet::IpNet> {
    if let Ok(net) = entry.parse::<ipnet::IpNet>() {
        return Some(net.trunc());
    }
    let ip = entry.parse::<IpAddr>().ok()?.to_canonical();
    Some(ipnet::IpNet::from(ip))
}

/// The values of one request field that are refused (`block-user-agents`,
/// `block-referers`), as the entries of an nginx `map` match: a string is the whole value,
/// in any ASCII case; `~regex` searches it case-sensitively, `~*regex` in any case. A
/// missing field is the empty value.
#[derive(Clone, Debug)]
pub struct FieldBlock {
    /// The field (`user-agent`, `referer`).
    pub field: http::HeaderName,
    /// Whole values, ASCII lower-case, sorted.
    exact: Box<[Box<[u8]>]>,
    /// The patterns, `(?i)` before the case-insensitive ones.
    patterns: Option<regex::bytes::RegexSet>,
}

impl FieldBlock {
    /// Compiles the comma-separated entries of a ConfigMap key; the error names the entry
    /// that is not a regex Portico can run.
    pub fn parse(field: http::HeaderName, value: &str) -> Result<FieldBlock, String> {
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Some(re) = entry.strip_prefix("~*") {
                patterns.push((entry, format!("(?i){re}")));
            } else if let Some(re) = entry.strip_prefix('~') {
                patterns.push((entry, re.to_string()));
            } else {
                // nginx's map reads `\~` as a literal '~' at the start.
                let s = entry.strip_prefix('\\').unwrap_or(entry);
                exact.push(s.to_ascii_lowercase().into_bytes().into_boxed_slice());
            }
        }
        for (entry, re) in &patterns {
            super::routes::PathRegex::build(re, false).map_err(|why| {
                let shown: String = entry.chars().take(64).collect();
                format!("{shown:?} {why}")
            })?;
        }
        let patterns = if patterns.is_empty() {
            None
        } else {
            let set = regex::bytes::RegexSetBuilder::new(patterns.iter().map(|(_, re)| re))
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("the patterns together {e}"))?;
            Some(set)
        };
        exact.sort_unstable();
        exact.dedup();
        Ok(FieldBlock {
            field,
            exact: exact.into(),
            patterns,
        })
    }

    /// Whether the request's field (its first value) is refused.
    pub fn refuses(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(&self.field).map_or(&b""[..], |v| v.as_bytes());
        if let Some(set) = &self.patterns
            && set.is_match(value)
        {
            return true;
        }
        !self.exact.is_empty()
            && self
                .exact
                .binary_search_by(|e| cmp_ignore_case(e, value))
                .is_ok()
    }

    /// Whether it refuses nothing (no entry).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_none()
    }

    fn patterns(&self) -> &[String] {
        self.patterns.as_ref().map_or(&[], |s| s.patterns())
    }
}

/// Compares `lower` (ASCII lower-case) with `value` lower-cased, without allocating.
fn cmp_ignore_case(lower: &[u8], value: &[u8]) -> std::cmp::Ordering {
    lower
        .iter()
        .copied()
        .cmp(value.iter().map(u8::to_ascii_lowercase))
}

impl PartialEq for FieldBlock {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field
            && self.exact == other.exact
            && self.patterns() == other.patterns()
    }
}

impl Eq for FieldBlock {}

impl Serialize for FieldBlock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("FieldBlock", 3)?;
        st.serialize_field("field", self.field.as_str())?;
        let exact: Vec<_> = self
            .exact
            .iter()
            .map(|e| String::from_utf8_lossy(e))
            .collect();
        st.serialize_field("values", &exact)?;
        st.serialize_field("patterns", self.patterns())?;
        st.end()
    }
}

/// A route's access rules, in nginx's order: the refused fields (the server's `if
/// ($block_ua)`, before any redirect), then the denied addresses, then the allowed ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    /// `block-user-agents`, `block-referers`: 403 before anything else of the route.
    pub fields: Vec<Arc<FieldBlock>>,
    /// `denylist-source-range` (the annotation's, else the ConfigMap's) and `block-cidrs`:
    /// 403.
    pub deny: IpSet,
    /// `allowlist-source-range` / `whitelist-source-range` (the annotation's, else the
    /// ConfigMap's): when set, any other address gets 403.
    pub allow: Option<IpSet>,
}

impl Access {
    /// Whether the request's fields are refused (403).
    pub fn refuses_fields(&self, headers: &HeaderMap) -> bool {
        self.fields.iter().any(|b| b.refuses(headers))
    }

    /// Whether the client address may reach the route (else 403).
    pub fn admits(&self, client: IpAddr) -> bool {
        !self.deny.contains(client) && self.allow.as_ref().is_none_or(|a| a.contains(client))
    }

    /// Whether the rules check addresses at all.
    pub fn checks_addresses(&self) -> bool {
        !self.deny.is_empty() || self.allow.is_some()
    }
}

#[cfg(test)]
mod tests;
