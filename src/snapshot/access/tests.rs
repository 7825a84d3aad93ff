use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(value: &str) -> IpSet {
    parse_ranges(value).unwrap()
}

#[test]
fn ranges_hold_their_addresses_and_no_others() {
    let s = set("10.0.0.0/8, 192.0.2.7, 2001:db8::/32, 198.51.100.1/24");
    for inside in [
        "10.0.0.0",
        "10.255.255.255",
        "192.0.2.7",
        "2001:db8::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        // Host bits of a range are ignored, as Go's ParseCIDR does.
        "198.51.100.0",
        "198.51.100.255",
        // An IPv4-mapped client is judged as IPv4.
        "::ffff:10.1.2.3",
    ] {
        assert!(s.contains(ip(inside)), "{inside}");
    }
    for outside in [
        "9.255.255.255",
        "11.0.0.0",
        "192.0.2.6",
        "192.0.2.8",
        "2001:db9::",
        "::1",
        "::ffff:11.0.0.0",
    ] {
        assert!(!s.contains(ip(outside)), "{outside}");
    }
}

#[test]
fn the_whole_space_and_its_edges() {
    let s = set("0.0.0.0/0, ::/0");
    for a in ["0.0.0.0", "255.255.255.255", "::", "ffff::ffff"] {
        assert!(s.contains(ip(a)), "{a}");
    }
    let s = set("255.255.255.255, ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert!(s.contains(ip("255.255.255.255")));
    assert!(!s.contains(ip("255.255.255.254")));
    assert!(s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
}

#[test]
fn overlapping_and_touching_ranges_merge() {
    let s = set("10.0.0.0/24, 10.0.1.0/24, 10.0.0.128/25, 10.0.3.0/24");
    let cidrs: Vec<String> = s.cidrs().map(|n| n.to_string()).collect();
    assert_eq!(cidrs, ["10.0.0.0/23", "10.0.3.0/24"]);
    // IPv4-mapped ranges are IPv4 ranges.
    let s = set("::ffff:10.0.0.0/104");
    assert_eq!(s.cidrs().next().unwrap().to_string(), "10.0.0.0/8");
    let union = set("10.0.0.0/9").union(&set("10.128.0.0/9, ::1"));
    let cidrs: Vec<String> = union.cidrs().map(|n| n.to_string()).collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "::1/128"]);
}

#[test]
fn a_list_with_an_entry_that_is_not_an_address_is_invalid() {
    for (value, why) in [
        (
            "10.0.0.0/8, bogus",
            "\"bogus\" is not an address or a CIDR range",
        ),
        ("", "has an empty entry"),
        ("10.0.0.1,", "has an empty entry"),
        (
            "10.0.0.0/33",
            "\"10.0.0.0/33\" is not an address or a CIDR range",
        ),
        (
            "010.0.0.1",
            "\"010.0.0.1\" is not an address or a CIDR range",
        ),
        (
            "10.0.0.1/8/8",
            "\"10.0.0.1/8/8\" is not an address or a CIDR range",
        ),
        (
            "1.2.3.4 5.6.7.8",
            "\"1.2.3.4 5.6.7.8\" is not an address or a CIDR range",
        ),
    ] {
        assert_eq!(parse_ranges(value).unwrap_err(), why, "{value:?}");
    }
    // A long entry is shown cut.
    let long = "x".repeat(100_000);
    assert!(parse_ranges(&long).unwrap_err().len() < 120);
}

#[test]
fn a_list_of_100000_ranges_is_built_and_searched() {
    let value: Vec<String> = (0..100_000u32)
        .map(|i| format!("{}.{}.{}.0/24", 1 + i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let s = set(&value.join(","));
    assert!(s.contains(ip("1.0.0.1")));
    assert!(s.contains(ip("2.134.159.255")));
    assert!(!s.contains(ip("2.134.160.0")));
    // Adjacent /24s merge: a handful of ranges remain.
    assert!(s.cidrs().count() < 10);
}

fn net() -> impl Strategy<Value = ipnet::IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
            ipnet::IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap().trunc())
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
            ipnet::IpNet::V6(ipnet::Ipv6Net::new(a.into(), p).unwrap().trunc())
        }),
        // Near one another, so that ranges overlap and touch.
        (0u32..4096, 20u8..=32).prop_map(|(a, p)| {
            ipnet::IpNet::V4(
                ipnet::Ipv4Net::new((0x0a00_0000 + a).into(), p)
                    .unwrap()
                    .trunc(),
            )
        }),
    ]
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
        any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        (0u32..8192).prop_map(|a| IpAddr::V4((0x0a00_0000 + a).into())),
    ]
}

proptest! {
    /// The merged set answers as the list of ranges it came from.
    #[test]
    fn a_set_answers_as_its_ranges(
        nets in proptest::collection::vec(net(), 0..40),
        probes in proptest::collection::vec(addr(), 1..40),
    ) {
        let s = IpSet::new(nets.iter().copied());
        for p in probes {
            let want = nets.iter().any(|n| n.contains(&p));
            prop_assert_eq!(s.contains(p), want, "{}", p);
        }
        // Its CIDRs are the same set again.
        let again = IpSet::new(s.cidrs());
        prop_assert_eq!(again, s);
    }

    /// Any text: an error or a set, never a panic.
    #[test]
    fn any_list_is_read_without_panic(value in ".{0,200}") {
        let _ = parse_ranges(&value);
    }
}

fn headers(field: header::HeaderName, value: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(field, HeaderValue::from_bytes(value).unwrap());
    h
}

#[test]
fn field_blocks_match_as_an_nginx_map() {
    let b = FieldBlock::parse(
        header::USER_AGENT,
        r"~*bot, Evil/1.0, ~^Mozilla/4\.0\ \(, \~tilde, ~^$",
    )
    .unwrap();
    for (value, refused) in [
        (&b"Googlebot/2.1"[..], true),
        (b"GOOGLEBOT", true),
        (b"evil/1.0", true),
        (b"EVIL/1.0", true),
        (b"Evil/1.0 extra", false),
        (b"Mozilla/4.0 (compatible)", true),
        (b"mozilla/4.0 (compatible)", false),
        (b"~TILDE", true),
        (b"curl/8", false),
        // Not UTF-8: a clear answer.
        (b"\xff\xfe bot", true),
        (b"\xff\xfe", false),
    ] {
        let h = headers(header::USER_AGENT, value);
        assert_eq!(
            b.refuses(&h),
            refused,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    // A missing field is the empty value: `~^$` refuses it.
    assert!(b.refuses(&HeaderMap::new()));
    let b = FieldBlock::parse(header::USER_AGENT, "Evil").unwrap();
    assert!(!b.refuses(&HeaderMap::new()));
}

#[test]
fn field_block_patterns_the_engine_cannot_run_are_errors() {
    let err = FieldBlock::parse(header::REFERER, "ok, ~(?<=a)b").unwrap_err();
    assert!(err.starts_with("\"~(?<=a)b\" is not a regex"), "{err}");
    assert!(err.contains("look-around"), "{err}");
    let err = FieldBlock::parse(header::REFERER, "~(").unwrap_err();
    assert!(err.contains("not a regex"), "{err}");
    let huge = format!("~{}", "a{1000}{1000}");
    assert!(FieldBlock::parse(header::REFERER, &huge).is_err());
}

#[test]
fn access_denies_before_it_allows() {
    let a = Access {
        fields: Vec::new(),
        deny: set("10.0.0.5"),
        allow: Some(set("10.0.0.0/8")),
    };
    assert!(a.admits(ip("10.0.0.4")));
    assert!(!a.admits(ip("10.0.0.5")));
    assert!(!a.admits(ip("11.0.0.1")));
    let deny_only = Access {
        deny: set("10.0.0.5"),
        ..Access::default()
    };
    assert!(deny_only.admits(ip("11.0.0.1")));
    assert!(!Access::default().checks_addresses());
}
